"""Installing a snapshot in place of a log that no voter can complete (``snapshot_install``):
the start-up swap (old ledger kept, interrupted swaps finished), which snapshot may replace a
log, and when the running node stops for it. The whole path on real node processes, fetching
and verifying the snapshot over TLS: ``tests/integration/test_storage_faults``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from consortium_node.common.canonical import canonical_json
from consortium_node.ledger.snapshot_store import SnapshotStore
from consortium_node.server import snapshot_install
from consortium_node.server.snapshot_install import (
    STAGING,
    install_staged,
    install_when_stranded,
    must_cover,
)


def _ledger(data_dir: Path) -> Path:
    ledger = data_dir / "ledger"
    (ledger / "tree").mkdir(parents=True)
    (ledger / "ledger_1-40.chunk").write_bytes(b"history")
    (ledger / "tree" / "state.json").write_bytes(b"{}")
    return ledger


def _staged(data_dir: Path, index: int, commit: bool) -> Path:
    store = SnapshotStore(data_dir / STAGING / "snapshots")
    digest, _ = store.write(index, b"snapshot bytes")
    if commit:
        assert store.commit(index, digest, {"txid": f"3.{index}"})
    return store.directory


def test_nothing_staged_leaves_the_ledger_alone(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    assert install_staged(tmp_path) is None
    assert (ledger / "ledger_1-40.chunk").read_bytes() == b"history"


def test_a_snapshot_not_committed_is_discarded_and_the_ledger_kept(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    _staged(tmp_path, 400, commit=False)
    assert install_staged(tmp_path) is None
    assert not (tmp_path / STAGING).exists()
    assert (ledger / "ledger_1-40.chunk").read_bytes() == b"history"


def test_a_committed_snapshot_replaces_the_ledger_which_is_kept_aside(tmp_path: Path) -> None:
    _ledger(tmp_path)
    _staged(tmp_path, 400, commit=True)
    aside = install_staged(tmp_path)
    assert aside is not None and aside.name.startswith("retired-")
    assert aside.name.endswith("-behind-snapshot")
    assert (aside / "ledger" / "ledger_1-40.chunk").read_bytes() == b"history"
    assert (aside / "ledger" / "tree" / "state.json").exists()
    ledger = tmp_path / "ledger"
    assert sorted(p.name for p in ledger.iterdir()) == ["snapshots"]  # starts as a joiner
    newest = SnapshotStore(ledger / "snapshots").newest_committed()
    assert newest is not None and newest.index == 400
    assert newest.receipt_path.read_bytes() == canonical_json({"txid": "3.400"})
    assert not (tmp_path / STAGING).exists()
    assert install_staged(tmp_path) is None  # done once


def test_a_swap_interrupted_between_its_renames_is_finished(tmp_path: Path) -> None:
    _staged(tmp_path, 400, commit=True)  # the old ledger already moved aside, then a crash
    assert install_staged(tmp_path) is None
    newest = SnapshotStore(tmp_path / "ledger" / "snapshots").newest_committed()
    assert newest is not None and newest.index == 400


def _position(index: int) -> SimpleNamespace:
    return SimpleNamespace(index=index)


@pytest.mark.parametrize(
    ("missing", "unvouched", "cover"),
    [
        (None, None, 0),
        (_position(70), None, 70),
        (None, _position(90), 90),
        (_position(70), _position(90), 90),
    ],
)
def test_a_log_that_lost_acknowledged_entries_needs_a_snapshot_covering_them(
    missing: Any, unvouched: Any, cover: int
) -> None:
    ledger: Any = SimpleNamespace(missing_committed=missing, unvouched=unvouched)
    assert must_cover(ledger) == cover


class _Raft:
    def __init__(self, stranded: tuple[int, float] | None) -> None:
        self.stranded = stranded
        self.timing = SimpleNamespace(election_timeout=0.01)
        self.node_id, self.address = "me", "me:1"
        self.leader_address = "leader:1"

    def unfetchable(self) -> tuple[int, float] | None:
        return self.stranded

    def voters(self) -> dict[str, str]:
        return {"me": "me:1", "l": "leader:1", "o": "other:1"}


def _node(tmp_path: Path, last: int, missing: int | None = None) -> Any:
    ledger = SimpleNamespace(
        last_index=last,
        missing_committed=None if missing is None else _position(missing),
        unvouched=None,
        secrets=object(),
    )
    return SimpleNamespace(
        data_dir=tmp_path, ledger=ledger, service=SimpleNamespace(certificate=object())
    )


async def _run(
    node: Any, raft: _Raft, found: list[int | None], monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], list[Any]]:
    """Run the watcher with ``stage`` answering ``found`` in turn, until it stops the node
    or asked them all: (stop reasons, the arguments of each ``stage`` call)."""
    stops: list[str] = []
    calls: list[Any] = []
    answers = iter(found)

    def fake_stage(*args: Any) -> int | None:
        calls.append(args)
        return next(answers)

    monkeypatch.setattr(snapshot_install, "stage", fake_stage)
    task = asyncio.create_task(install_when_stranded(node, raft, stops.append))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not task.done() and len(calls) < len(found):
        assert loop.time() < deadline, f"the watcher staged {len(calls)} of {len(found)}"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # more election timeouts: no further call may come
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return stops, calls


async def test_a_node_that_is_not_stranded_long_enough_does_not_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raft = _Raft((500, 0.03))  # stranded for less than INSTALL_AFTER election timeouts
    stops, calls = await _run(_node(tmp_path, 69), raft, [], monkeypatch)
    assert (stops, calls) == ([], [])


async def test_a_stranded_node_stages_a_snapshot_after_its_end_and_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    raft = _Raft((500, 1.0))
    caplog.set_level(logging.WARNING)
    stops, calls = await _run(_node(tmp_path, 69), raft, [None, 60, 60, 444], monkeypatch)
    sources, after = calls[0][1], calls[0][4]
    assert sources == ["leader:1", "other:1"] and after == 69
    assert len(stops) == 1 and "the snapshot at 444 is verified and staged" in stops[0]
    said = [r.getMessage() for r in caplog.records if "no snapshot after" in r.getMessage()]
    assert len(said) == 2, said  # once per different answer: none, then 60
    assert "none served" in said[0] and "the newest is at 60" in said[1]


async def test_a_log_that_lost_entries_waits_for_a_snapshot_covering_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raft = _Raft((500, 1.0))
    stops, calls = await _run(_node(tmp_path, 69, missing=300), raft, [200, 300], monkeypatch)
    assert [c[4] for c in calls] == [299, 299]  # 200 is after the log's end, not after 299
    assert len(stops) == 1 and "the snapshot at 300" in stops[0]
