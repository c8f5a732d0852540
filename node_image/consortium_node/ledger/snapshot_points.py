"""Where a ledger takes its snapshots, and which ones its committed evidence covers.

Why separate from ``Ledger``: committing applies entries; deciding that a committed signature
is a snapshot point, capturing the state there and pairing committed evidence with receipts
is bookkeeping of its own, with one rule every node must apply alike. A point is the first
committed signature entry that is

- at least ``interval`` entries after the previous point (from index 0), and
- (with ``writes_percent`` p > 0) preceded, since the previous point, by committed write sets
  writing at least p % as many rows as the state held at that point (a row written twice
  counts twice, a deletion counts).

Why the second rule: a snapshot costs every node time in proportion to the whole state
(hashed, encrypted and written in full), so at a fixed interval its cost per transaction
grows with the state without bound; with it, a snapshot costs at most ~100/p times a
write's share of the state, and a restart replays at most p % of a state's worth of rows
(or ``interval`` entries) after the newest snapshot. The same rule as Kafka's
``min.cleanable.dirty.ratio`` (0.5 by default there, 50 here).

Both rules read only the committed log (entries, write sets, the state they make), so a node
that commits the same log with the same settings picks the same points, and a restarted node
does not take again the points up to its newest snapshot file. A node whose points differ
from the primary's (its settings changed before the primary's did, during a roll) takes up
the primary's at the next committed evidence for a snapshot it did not take itself
(``book_evidence``): otherwise none of its snapshots would ever be committed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consortium_node.ledger.entries import TxId
from consortium_node.ledger.kv import Changes
from consortium_node.ledger.secrets import PartsCipher
from consortium_node.ledger.snapshot import SnapshotError, SnapshotState, parse_evidence
from consortium_node.ledger.snapshot_store import SnapshotStore

log = logging.getLogger("consortium_node.ledger")


@dataclass(frozen=True)
class Capture:
    """The committed state at a snapshot point, to be encoded (off the event loop) with
    ``snapshot.encode_snapshot(state, cipher, encodings, changes)`` and written to
    ``Ledger.snapshots``."""

    state: SnapshotState
    cipher: PartsCipher  # of the ledger secret version in force at the snapshot point
    changes: Changes | None = None  # the keys written since the previous capture


@dataclass(frozen=True)
class SnapshotReceipt:
    """Committed evidence for snapshot ``index``: its digest and the evidence's receipt."""

    index: int
    digest: bytes
    receipt: dict[str, Any]


class SnapshotPoints:
    """The snapshot points of one ledger (owned by it; not thread-safe).

    The ledger counts the rows its committed write sets wrote (``written``, from its KV
    store's start) and passes that count, and how many rows the state holds, with every
    committed signature (``due``) and with a state it starts from (``passed``)."""

    RECENT = 4096  # committed signatures remembered, to take up the primary's points

    def __init__(self, store: SnapshotStore, interval: int, writes_percent: int = 0) -> None:
        self.store = store
        self.interval = interval
        self.writes_percent = writes_percent
        self._on_disk = store.indices()
        self.point = max(self._on_disk, default=0)  # the newest point committed
        # (rows written, rows held) at ``point``; None until known (a restart learns them as
        # it replays through the point, or from the snapshot it starts from)
        self._at_point: tuple[int, int] | None = (0, 0) if self.point == 0 else None
        # committed signatures (oldest first) → (rows written, rows held) there
        self._recent: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self._taken: deque[int] = deque(maxlen=64)  # this node's latest points
        self._floor = 0  # no point before it (``floor``)
        self._captures: list[Capture] = []
        self._evidence: list[tuple[TxId, int, bytes]] = []  # committed, awaiting a receipt

    def passed(self, index: int, written: int = 0, rows: int = 0) -> None:
        """The ledger's committed state starts at ``index`` (a snapshot it opened from),
        holding ``rows`` rows, its count of rows written being ``written``."""
        self._recent.clear()  # counts of another store
        if index >= self.point:
            self.point, self._at_point = index, (written, rows)

    def floor(self, index: int) -> None:
        """No point before ``index``, and the first committed signature at or after it is one.

        For a ledger recovered from a disaster (``server/recover.py``): the entries before the
        recovery were signed by node certificates the *previous* service identity issued, so
        a snapshot there would not verify with the current service certificate (a joiner
        could not start from it, nor a restart); the recovery's own signature is the first
        point, and the points follow from it."""
        self._floor = max(self._floor, index)

    def due(self, index: int, written: int = 0, rows: int = 0) -> bool:
        """The committed signature ``index`` is a snapshot point to capture now (moves the
        point whether or not the caller can capture: the points stay the same on every node).
        ``written``: the ledger's count of rows written up to it; ``rows``: the rows its
        state holds there."""
        self._recent[index] = (written, rows)
        if len(self._recent) > self.RECENT:
            self._recent.popitem(last=False)
        if index == self.point:  # replayed through the newest point after a restart
            self._at_point = (written, rows)
        if not self.interval or index < self._floor:
            return False
        if self.point >= self._floor and not self._far_enough(index, written):
            return False
        self.point, self._at_point = index, (written, rows)
        self._taken.append(index)
        return index not in self._on_disk

    def _far_enough(self, index: int, written: int) -> bool:
        if index < self.point + self.interval:
            return False
        if not self.writes_percent:
            return True
        if self._at_point is None:  # a restart's log no longer passes its newest point:
            return True  # the interval alone (``book_evidence`` aligns the next points)
        since, held = written - self._at_point[0], self._at_point[1]
        return since * 100 >= self.writes_percent * held

    def captured(self, capture: Capture) -> None:
        self._on_disk.add(capture.state.index)
        self._captures.append(capture)

    def book_evidence(self, txid: TxId, rows: dict[str, Any]) -> None:
        """A committed evidence entry ``txid`` writing ``rows`` of ``T_SNAPSHOTS``."""
        for key, record in rows.items():
            try:
                snapshot_txid, digest, _ = parse_evidence(key, record)
            except SnapshotError as exc:
                log.error("ledger: evidence entry %s ignored: %s", txid, exc)
                continue
            self._evidence.append((txid, snapshot_txid.index, digest))
            self._take_up(snapshot_txid.index, txid.index)

    def _take_up(self, index: int, at: int) -> None:
        """Committed evidence (at index ``at``) for a snapshot at ``index``: if that was not
        one of this node's points, its points differ from the primary's; they are reckoned
        again from ``index`` over the signatures committed since (the primary's later points,
        which the node has passed without a snapshot), so that the next ones agree. Evidence
        a restart replays before its newest point or for a snapshot at or before its newest
        committed one, before the floor, or for a signature no longer remembered changes
        nothing."""
        if index == self.point or index in self._taken or index in self._on_disk:
            return
        if index < self._floor or self.point > at:  # (a restart replaying up to its newest file)
            return
        counts = self._recent.get(index)
        if counts is None:
            return
        newest = self.store.newest_committed()
        if newest is not None and index <= newest.index:
            return
        mine = self.point
        self.point, self._at_point = index, counts
        self._taken.append(index)
        for later, (written, rows) in self._recent.items():
            if later > index and self._far_enough(later, written):
                self.point, self._at_point = later, (written, rows)
                self._taken.append(later)  # its evidence, when it commits, is no news
        log.warning(
            "ledger: the primary took a snapshot at %d, not this node (its points differed: "
            "its newest was %d; settings not the same on every node?); its points now follow "
            "the primary's (the newest %d)",
            index,
            mine,
            self.point,
        )

    def captures(self) -> list[Capture]:
        """The snapshots taken since the last call, to be encoded and written (in order)."""
        captures, self._captures = self._captures, []
        return captures

    def receipts(
        self, covered: Callable[[int], bool], receipt: Callable[[TxId], dict[str, Any]]
    ) -> list[SnapshotReceipt]:
        """Evidence entries a committed signature covers (``covered(index)``), with their
        receipts, to commit the snapshots they record, oldest first."""
        ready, waiting = [], []
        for txid, index, digest in self._evidence:
            if covered(txid.index):
                ready.append(SnapshotReceipt(index, digest, receipt(txid)))
            else:
                waiting.append((txid, index, digest))
        self._evidence = waiting
        return ready
