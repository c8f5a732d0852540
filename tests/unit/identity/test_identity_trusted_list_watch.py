"""The node's watcher of the mounted list (server/watch.py): stale is not tampering.

A list older than the held one but validly signed is counted as stale and logged at INFO once
per version; a forged or inconsistent list is refused at ERROR and counted by reason. The
watcher only needs the node's store and metrics, so a stand-in node carries the real ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from consortium_node.identity.trusted_list import REFUSALS, NodeStatus
from consortium_node.identity.trusted_list_store import TrustedListStore
from consortium_node.server.metrics import NodeMetrics
from consortium_node.server.watch import Seen, check_list_file

WATCHER = "consortium_node.watch"


@pytest.fixture
def node(store: TrustedListStore) -> Any:
    metrics = NodeMetrics(
        consortium="demo",
        node_id="00" * 32,
        name="demo-0",
        platform="insecure-virtual",
        version="0.1.0",
    )
    return SimpleNamespace(membership=SimpleNamespace(store=store), metrics=metrics)


@pytest.fixture
def mounted(tmp_path: Path) -> Path:
    return tmp_path / "mounted" / "trusted-nodes.cose"


def sample(node: Any, name: str, **labels: str) -> float:
    value = node.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


def rejections(node: Any) -> dict[str, float]:
    return {
        reason: sample(node, "consortium_trusted_list_rejections_total", reason=reason)
        for reason in (*REFUSALS, "Rollback")
    }


def offer(node: Any, mounted: Path, envelope: bytes, seen: Seen) -> Seen:
    mounted.parent.mkdir(parents=True, exist_ok=True)
    mounted.write_bytes(envelope)
    return check_list_file(node, mounted, seen)


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    out = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == WATCHER]
    caplog.clear()
    return out


def test_stale_list_is_counted_apart_and_logged_once_per_version(
    node: Any, mounted: Path, signed: Callable[..., bytes], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, WATCHER)
    seen = offer(node, mounted, signed(3), Seen())
    assert records(caplog) == [
        (logging.INFO, f"adopted trusted-node list version 3 from {mounted}")
    ]
    assert sample(node, "consortium_trusted_list_version") == 3
    before = rejections(node)

    seen = offer(node, mounted, signed(1), seen)
    assert sample(node, "consortium_trusted_list_stale_total") == 1
    assert records(caplog) == [
        (
            logging.INFO,
            f"the trusted-node list in {mounted} is version 1, older than the held version 3, "
            "which is kept (the file lags behind the ledger)",
        )
    ]
    seen = check_list_file(node, mounted, seen)  # the same file again: nothing new
    assert sample(node, "consortium_trusted_list_stale_total") == 1
    assert records(caplog) == []

    seen = offer(node, mounted, signed(1), seen)  # re-signed: other bytes, same version
    assert sample(node, "consortium_trusted_list_stale_total") == 2
    assert [level for level, _ in records(caplog)] == [logging.DEBUG]
    offer(node, mounted, signed(2), seen)  # the next version the ConfigMap catches up to
    assert [level for level, _ in records(caplog)] == [logging.INFO]

    assert rejections(node) == before == dict.fromkeys(before, 0.0)
    assert node.membership.store.current.version == 3


def test_refused_list_is_an_error_counted_by_reason(
    node: Any, mounted: Path, signed: Callable[..., bytes], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, WATCHER)
    held = signed(2)
    seen = offer(node, mounted, held, Seen())
    records(caplog)
    reused = signed(2, status_1=NodeStatus.TRUSTED)
    seen = offer(node, mounted, reused, seen)
    tampered = bytearray(signed(1))
    tampered[len(tampered) // 2] ^= 0x01
    offer(node, mounted, bytes(tampered), seen)

    logged = records(caplog)
    assert [level for level, _ in logged] == [logging.ERROR, logging.ERROR]
    assert "VersionReused" in logged[0][1] and "BadSignature" in logged[1][1]
    assert all("(keeping version 2)" in message for _, message in logged)
    counts = rejections(node)
    assert (counts["VersionReused"], counts["BadSignature"]) == (1, 1)
    assert sum(counts.values()) == 2
    assert sample(node, "consortium_trusted_list_stale_total") == 0
    assert node.membership.store.current_envelope == held


def test_every_refusal_reason_is_exposed_from_the_start(node: Any) -> None:
    """A counter series that appears only at its first increment hides it from increase()."""
    exposed = node.metrics.render().decode()
    for reason in REFUSALS:
        assert f'consortium_trusted_list_rejections_total{{reason="{reason}"}} 0.0' in exposed
    assert 'reason="Rollback"' not in exposed
    assert "consortium_trusted_list_stale_total 0.0" in exposed
