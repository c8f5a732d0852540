"""The node's event loop and collector settings (``server/runtime.py``)."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys

import pytest

from consortium_node.server import runtime


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_the_node_runs_on_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONSORTIUM_NODE_EVENT_LOOP", raising=False)
    assert runtime.run(_loop_module()).startswith("uvloop")


def test_asyncio_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSORTIUM_NODE_EVENT_LOOP", "asyncio")
    assert runtime.run(_loop_module()).startswith("asyncio")


def test_without_uvloop_the_node_runs_on_asyncio() -> None:
    code = (
        "import sys, asyncio; sys.modules['uvloop'] = None\n"  # an import of it now fails
        "from consortium_node.server import runtime\n"
        "async def m(): return type(asyncio.get_running_loop()).__module__\n"
        "print(runtime.run(m()))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().startswith("asyncio")


def test_settling_freezes_what_start_up_left_and_sets_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        runtime.settle_memory()
        assert gc.get_threshold() == runtime.GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
