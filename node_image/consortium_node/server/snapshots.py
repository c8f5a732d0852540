"""Snapshot duties of a running node: write what the ledger captured, record the evidence,
commit snapshots with their evidence receipts.

Why a task of its own: encoding a snapshot costs time proportional to the state, so it runs in
a worker thread and never holds up the event loop (heartbeats, ``/healthz``); the ledger only
hands out captures (copies of the committed state at a snapshot point) and receipts. Every
node writes its own snapshots (they are deterministic); the primary also appends the evidence
entry for its newest snapshot if the ledger does not hold one yet (after a leader change the
new primary records what the old one did not get to), and every node commits a snapshot of its
own once a committed signature covers the evidence, with the receipt beside it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from consortium_node.ledger import EntryKind, Ledger, TxId
from consortium_node.ledger.snapshot import T_SNAPSHOTS, evidence_write_set, snapshot_parts
from consortium_node.ledger.snapshot_rows import PartialCaptureError, RowEncodings
from consortium_node.server.duty import Duty, Submit

log = logging.getLogger("consortium_node")


class SnapshotKeeper(Duty):
    """Runs as one task beside consensus (``run``); ``wake`` after every commit."""

    what = "snapshot duties"

    def __init__(
        self,
        ledger: Ledger,
        *,
        is_primary: Callable[[], bool],
        submit: Submit,
        on_written: Callable[[int, int, float], None] | None = None,
        on_committed: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__()
        self._ledger = ledger
        self._is_primary = is_primary
        self._submit = submit
        self._on_written = on_written
        self._on_committed = on_committed
        self._written: dict[int, tuple[TxId, bytes, int]] = {}  # index → txid, sha256, size
        self._encodings = RowEncodings()  # rows unchanged since the last snapshot: not re-encoded
        ledger.capture_partially()  # every capture is encoded here, in order, with them

    async def once(self) -> None:
        """Write every capture, record evidence if primary, commit what is covered."""
        ledger = self._ledger
        for capture in ledger.snapshot_captures():
            started = time.monotonic()
            try:
                parts = await asyncio.to_thread(
                    snapshot_parts, capture.state, capture.cipher, self._encodings, capture.changes
                )
            except PartialCaptureError as exc:  # one before it was not encoded
                ledger.snapshot_encoding_lost()
                log.warning(
                    "snapshot at %s skipped (%s); the next is taken whole", capture.state.txid, exc
                )
                continue
            except Exception:
                ledger.snapshot_encoding_lost()  # the next capture is whole, then encoded
                raise
            index = capture.state.index
            digest, size = await asyncio.to_thread(ledger.snapshots.write, index, parts)
            del parts
            self._written = {index: (capture.state.txid, digest, size)}  # the newest only
            log.info(
                "snapshot at %s written (%d bytes, sha256 %s)",
                capture.state.txid,
                size,
                digest.hex()[:16],
            )
            if self._on_written is not None:
                self._on_written(index, size, time.monotonic() - started)
        await self._record_evidence()
        for ready in ledger.snapshot_receipts():
            committed = await asyncio.to_thread(
                ledger.snapshots.commit, ready.index, ready.digest, ready.receipt
            )
            if committed:
                log.info("snapshot at index %d committed (evidence receipt stored)", ready.index)
                if self._on_committed is not None:
                    self._on_committed(ready.index)

    async def _record_evidence(self) -> None:
        if not self._written or not self._is_primary():
            return
        [(index, (txid, digest, size))] = self._written.items()
        if self._ledger.public_get(T_SNAPSHOTS, str(index)) is not None:
            self._written = {}
            return
        try:
            await self._submit([evidence_write_set(txid, digest, size)], EntryKind.PUBLIC)
        except Exception as exc:  # not primary any more, or no quorum: the next primary does
            log.warning("snapshot %s: evidence not recorded (%s); retried", txid, exc)
            return
        self._written = {}
