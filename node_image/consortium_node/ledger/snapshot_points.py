"""Where a ledger takes its snapshots, and which ones its committed evidence covers.

Why separate from ``Ledger``: committing applies entries; deciding that a committed signature
is a snapshot point, capturing the state there and pairing committed evidence with receipts
is bookkeeping of its own, with one rule every node must apply alike: the points are the
first committed signature entry at least ``interval`` entries after the previous point, from
index 0 (so a node that commits the same log with the same interval picks the same points,
and a restarted node does not take again the points up to its newest snapshot file).
"""

from __future__ import annotations

import logging
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
    """The snapshot points of one ledger (owned by it; not thread-safe)."""

    def __init__(self, store: SnapshotStore, interval: int) -> None:
        self.store = store
        self.interval = interval
        self._on_disk = store.indices()
        self.point = max(self._on_disk, default=0)  # the newest point committed
        self._floor = 0  # no point before it (``floor``)
        self._captures: list[Capture] = []
        self._evidence: list[tuple[TxId, int, bytes]] = []  # committed, awaiting a receipt

    def passed(self, index: int) -> None:
        """The ledger's committed state starts at ``index`` (a snapshot it opened from)."""
        self.point = max(self.point, index)

    def floor(self, index: int) -> None:
        """No point before ``index``, and the first committed signature at or after it is one.

        For a ledger recovered from a disaster (``server/recover.py``): the entries before the
        recovery were signed by node certificates the *previous* service identity issued, so
        a snapshot there would not verify with the current service certificate (a joiner
        could not start from it, nor a restart); the recovery's own signature is the first
        point, and the points follow from it."""
        self._floor = max(self._floor, index)

    def due(self, index: int) -> bool:
        """The committed signature ``index`` is a snapshot point to capture now (moves the
        point whether or not the caller can capture: the points stay the same on every node)."""
        if not self.interval or index < self._floor:
            return False
        if self.point >= self._floor and index < self.point + self.interval:
            return False
        self.point = index
        return index not in self._on_disk

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
