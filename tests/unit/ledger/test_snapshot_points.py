"""Where a ledger takes its snapshots (``SnapshotPoints``): the rule every node applies alike,
and the floor a recovered ledger sets (no point in the previous identity's history)."""

from __future__ import annotations

from pathlib import Path

import pytest

from consortium_node.ledger.snapshot_points import SnapshotPoints
from consortium_node.ledger.snapshot_store import SnapshotStore


def points(tmp_path: Path, interval: int) -> SnapshotPoints:
    return SnapshotPoints(SnapshotStore(tmp_path / "snapshots"), interval)


def due_among(p: SnapshotPoints, signatures: list[int]) -> list[int]:
    return [index for index in signatures if p.due(index)]


SIGNATURES = [5, 9, 12, 21, 30, 33, 41, 52, 60, 71, 80, 95]


@pytest.mark.parametrize(
    ("interval", "floor", "expected"),
    [
        pytest.param(20, 0, [21, 41, 71, 95], id="no-floor: every 20 from 0"),
        pytest.param(0, 0, [], id="interval-0: never"),
        pytest.param(20, 34, [41, 71, 95], id="floor: the first signature at or after it"),
        pytest.param(20, 42, [52, 80], id="floor-between-points: restarts the sequence"),
        pytest.param(20, 96, [], id="floor-after-every-signature"),
        pytest.param(0, 34, [], id="interval-0-with-floor: never"),
    ],
)
def test_points(tmp_path: Path, interval: int, floor: int, expected: list[int]) -> None:
    p = points(tmp_path, interval)
    if floor:
        p.floor(floor)
    assert due_among(p, SIGNATURES) == expected


def test_a_floor_never_moves_back(tmp_path: Path) -> None:
    p = points(tmp_path, 20)
    p.floor(42)
    p.floor(10)
    assert due_among(p, SIGNATURES) == [52, 80]


def test_a_floor_after_points_already_taken(tmp_path: Path) -> None:
    """Set late (the history record arrived after some points): the next point is the
    first signature at or after the floor, then every interval."""
    p = points(tmp_path, 20)
    assert due_among(p, SIGNATURES[:4]) == [21]
    p.floor(50)
    assert due_among(p, SIGNATURES[4:]) == [52, 80]
