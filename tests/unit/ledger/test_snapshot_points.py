"""Where a ledger takes its snapshots (``SnapshotPoints``): the rules every node applies alike
(the interval, and the rows written since the previous point against the rows it held), the
floor a recovered ledger sets (no point in the previous identity's history), and a node whose
points differ taking up the primary's at its committed evidence."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from consortium_node.ledger.entries import TxId
from consortium_node.ledger.snapshot import evidence_record
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


# -- the writes rule ---------------------------------------------------------------------------

# (signature index, rows written up to it, rows the state holds there)
GROWING = [(10, 10, 10), (20, 20, 20), (30, 25, 25), (40, 28, 28), (50, 40, 40), (60, 41, 41),
           (70, 60, 60), (80, 61, 61), (90, 90, 90), (100, 91, 91)]  # fmt: skip
# the same 20 rows written over and over: the state stays at 20 rows
REWRITING = [(i, 2 * i, 20) for i in range(10, 110, 10)]


def due_with(p: SnapshotPoints, signatures: list[tuple[int, int, int]]) -> list[int]:
    return [index for index, written, rows in signatures if p.due(index, written, rows)]


@pytest.mark.parametrize(
    ("interval", "percent", "signatures", "expected"),
    [
        pytest.param(10, 0, GROWING, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100], id="percent-0"),
        # after 10 (10 rows held): 10 written by 20; after 20 (20 held): 8 by 40, 20 by 50;
        # after 50 (40 held): 20 by 70; after 70 (60 held): 30 by 90
        pytest.param(10, 50, GROWING, [10, 20, 50, 70, 90], id="growing-50"),
        pytest.param(10, 100, GROWING, [10, 20, 50, 90], id="growing-100: doubling"),
        # 30 entries first; after 30 (25 held): 16 written by 60; after 60 (41): 49 by 90
        pytest.param(30, 50, GROWING, [30, 60, 90], id="interval-first, then writes"),
        # 20 rows written per 10 entries, 20 rows held: 100 % is met at every interval
        pytest.param(
            10, 100, REWRITING, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100], id="rewriting-100"
        ),
        pytest.param(10, 200, REWRITING, [10, 30, 50, 70, 90], id="rewriting-200"),
        pytest.param(0, 50, GROWING, [], id="interval-0: never"),
    ],
)
def test_points_with_writes(
    tmp_path: Path,
    interval: int,
    percent: int,
    signatures: list[tuple[int, int, int]],
    expected: list[int],
) -> None:
    p = SnapshotPoints(SnapshotStore(tmp_path / "snapshots"), interval, percent)
    assert due_with(p, signatures) == expected


def test_a_restart_learns_the_counts_at_its_newest_point_as_it_replays_through_it(
    tmp_path: Path,
) -> None:
    """Two nodes commit the same log; one restarts after the point at 50 (its file on disk),
    replays from the start with counts that begin again at 0, and picks the same points."""
    store = SnapshotStore(tmp_path / "snapshots")
    through = SnapshotPoints(store, 10, 50)
    assert due_with(through, GROWING) == [10, 20, 50, 70, 90]
    store.write(50, b"snapshot at 50")
    restarted = SnapshotPoints(SnapshotStore(tmp_path / "snapshots"), 10, 50)
    shifted = [(i, w + 1000, r) for i, w, r in GROWING]  # another store's count of writes
    assert due_with(restarted, shifted) == [70, 90]  # nothing up to its newest point


def test_a_state_started_from_counts_from_there(tmp_path: Path) -> None:
    """A node that starts from a snapshot at 40 (28 rows) takes the next point once 14 rows
    were written after it, counting from its new store's 0."""
    p = SnapshotPoints(SnapshotStore(tmp_path / "snapshots"), 10, 50)
    p.passed(40, 0, 28)
    assert due_with(p, [(50, 12, 40), (60, 13, 41), (70, 32, 60), (90, 62, 90)]) == [70, 90]


def test_a_restart_whose_log_no_longer_passes_its_point_follows_the_interval(
    tmp_path: Path,
) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    store.write(40, b"snapshot at 40")
    p = SnapshotPoints(store, 10, 50)
    # its log was cut below 40 and grew again: no signature at 40 this time
    assert due_with(p, [(35, 20, 20), (45, 21, 21), (52, 22, 22), (63, 34, 34)]) == [52, 63]


# -- taking up the primary's points ------------------------------------------------------------


def evidence(index: int) -> dict[str, Any]:
    return {str(index): evidence_record(TxId(1, index), bytes(32), 1)}


def test_a_node_behind_the_primarys_point_takes_it_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The primary's settings rolled (interval 10), a node's not yet (interval 30): at the
    evidence for the primary's point 50 the node, whose point is 30, reckons from 50, and
    from then on both take the same points."""
    primary = SnapshotPoints(SnapshotStore(tmp_path / "primary"), 10, 50)
    node = SnapshotPoints(SnapshotStore(tmp_path / "node"), 30, 50)
    assert due_with(primary, GROWING[:5]) == [10, 20, 50]
    assert due_with(node, GROWING[:5]) == [30]
    node.interval = 10  # its settings roll
    with caplog.at_level(logging.WARNING):
        primary.book_evidence(TxId(1, 55), evidence(50))
        assert not caplog.records  # its own point
        node.book_evidence(TxId(1, 55), evidence(50))
    assert "the primary took a snapshot at 50" in caplog.text
    assert node.point == 50
    assert due_with(primary, GROWING[5:]) == [70, 90]
    assert due_with(node, GROWING[5:]) == [70, 90]


def test_a_node_ahead_of_the_primarys_point_takes_it_up_back(tmp_path: Path) -> None:
    """A node (interval 15, 0 %) took 20, 40 and 60; the primary 10, 20 and 50. Its settings
    roll, and the evidence for 50 arrives after 60: the node reckons from 50 again."""
    primary = SnapshotPoints(SnapshotStore(tmp_path / "primary"), 10, 50)
    node = SnapshotPoints(SnapshotStore(tmp_path / "node"), 15, 0)
    assert due_with(primary, GROWING[:6]) == [10, 20, 50]
    assert due_with(node, GROWING[:6]) == [20, 40, 60]
    node.book_evidence(TxId(1, 25), evidence(20))
    assert node.point == 60  # 20 was its point too: nothing to take up
    node.interval, node.writes_percent = 10, 50  # its settings roll
    node.book_evidence(TxId(1, 65), evidence(50))
    assert node.point == 50
    assert due_with(node, GROWING[6:]) == [70, 90]
    assert due_with(primary, GROWING[6:]) == [70, 90]


def test_evidence_arriving_after_the_primarys_next_point(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The evidence for the primary's 50 arrives after its next point (70): the node reckons
    the primary's points from 50 over the signatures it committed since, so its next point
    is the primary's next (90), not the first signature far enough from 50."""
    primary = SnapshotPoints(SnapshotStore(tmp_path / "primary"), 10, 50)
    node = SnapshotPoints(SnapshotStore(tmp_path / "node"), 30, 50)
    assert due_with(primary, GROWING[:8]) == [10, 20, 50, 70]
    assert due_with(node, GROWING[:8]) == [30, 60]
    node.interval = 10  # its settings roll
    node.book_evidence(TxId(1, 85), evidence(50))
    assert node.point == 70
    # Later still: the evidence for 50 comes after two more of the primary's points (70, 90);
    # the node reckons both, and the evidence for 70, when it commits, is no news.
    late = SnapshotPoints(SnapshotStore(tmp_path / "late"), 55, 50)
    assert due_with(late, GROWING[:9]) == [60]
    late.interval = 10
    late.book_evidence(TxId(1, 95), evidence(50))
    assert late.point == 90
    caplog.clear()  # (the take-up's own WARNING)
    with caplog.at_level(logging.WARNING):
        late.book_evidence(TxId(1, 96), evidence(70))
    assert not caplog.records and late.point == 90
    assert due_with(node, GROWING[8:]) == [90]
    assert due_with(primary, GROWING[8:]) == [90]


def test_evidence_that_changes_nothing(tmp_path: Path) -> None:
    """Evidence replayed at a restart for a point at or before the newest committed
    snapshot, evidence for a signature not remembered, or before the floor."""
    store = SnapshotStore(tmp_path / "snapshots")
    digest, _ = store.write(60, b"snapshot at 60")
    assert store.commit(60, digest, {"receipt": "of 60"})
    p = SnapshotPoints(store, 10, 50)
    due_with(p, GROWING[:6])
    p.book_evidence(TxId(1, 42), evidence(40))  # replayed: 60 is committed here
    assert p.point == 60
    q = SnapshotPoints(SnapshotStore(tmp_path / "q"), 10, 50)
    assert due_with(q, GROWING[:4]) == [10, 20]
    q.book_evidence(TxId(1, 42), evidence(35))  # not a signature it committed
    assert q.point == 20
    q.floor(45)
    q.book_evidence(TxId(1, 42), evidence(30))  # before the floor
    assert q.point == 20
    # A restart whose newest file (70, never committed: its points differed) is ahead of
    # the log it replays: evidence replayed below 70 is of points it has been through.
    store = SnapshotStore(tmp_path / "r")
    store.write(70, b"snapshot at 70")
    r = SnapshotPoints(store, 10, 50)
    assert due_with(r, GROWING[:5]) == []
    r.book_evidence(TxId(1, 55), evidence(50))
    assert r.point == 70
    assert due_with(r, GROWING[5:]) == [90]  # from 70 (60 rows held): 30 written by 90
