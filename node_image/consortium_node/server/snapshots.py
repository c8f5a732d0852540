"""Snapshot duties of a running node: write what the ledger captured, record the evidence,
commit snapshots with their evidence receipts, fetch the primary's.

Why a task of its own: encoding a snapshot costs time proportional to the state, so it runs in
a worker thread and never holds up the event loop (heartbeats, ``/healthz``); the ledger only
hands out captures (copies of the committed state at a snapshot point) and receipts.

Who encodes: the primary (``Ledger.own_snapshots``). It appends the evidence entry for its
newest snapshot if the ledger does not hold one yet (after a leader change the new primary
records what the old one did not get to), and commits its snapshot once a committed signature
covers the evidence, with the receipt beside it. A backup notes the same points but captures
nothing: once the evidence is committed and covered it fetches the snapshot's bytes (``fetch``:
from the primary, else any node that serves it) and keeps them only if their SHA-256 is the
committed evidence's, then commits them with its own receipt. Snapshots are deterministic, so
these are the bytes it would have encoded; encoding them on every node cost each backup as
much CPU as the primary at every point (measured at batches of 100: ~13% of a backup's time,
all three nodes at once; fetching costs a transfer and one hash). A node whose points are its
own (an older version, or a keeper without ``fetch``) still encodes its own, as before; a
snapshot a backup cannot fetch is retried, and given up once a newer one is committed (the
backup then keeps its log longer: nothing is lost).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

from consortium_node.ledger import EntryKind, Ledger, TxId
from consortium_node.ledger.snapshot import T_SNAPSHOTS, evidence_write_set, snapshot_parts
from consortium_node.ledger.snapshot_points import SnapshotReceipt
from consortium_node.ledger.snapshot_rows import PartialCaptureError, RowEncodings
from consortium_node.server.duty import Duty, Submit

log = logging.getLogger("consortium_node")

Fetch = Callable[[int], Awaitable[bytes | None]]
FETCH_RETRY = 5.0  # seconds before a snapshot that could not be fetched is asked for again
WAITING = 2  # evidence kept waiting for a snapshot to commit: the newest ones


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
        fetch: Fetch | None = None,
        on_fetched: Callable[[int, int, float], None] | None = None,
    ) -> None:
        super().__init__()
        self._ledger = ledger
        self._is_primary = is_primary
        self._submit = submit
        self._on_written = on_written
        self._on_committed = on_committed
        self._fetch = fetch  # snapshot index → its bytes from another node (None: not served)
        self._on_fetched = on_fetched
        self._waiting: dict[int, SnapshotReceipt] = {}  # committed evidence, no snapshot yet
        self._ask_at: dict[int, float] = {}  # when to fetch a waiting snapshot again
        self._retry: asyncio.TimerHandle | None = None  # wakes this duty to ask again
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
        if not ledger.owns_snapshots and self._encodings.holds_rows():
            # A former primary's pieces (about the state's size in memory) serve only its own
            # encodings: dropped. Should it lead again, its next capture is whole.
            self._encodings = RowEncodings()
            ledger.snapshot_encoding_lost()
        await self._record_evidence()
        for ready in ledger.snapshot_receipts():
            self._waiting[ready.index] = ready
        await self._commit_waiting()

    async def _commit_waiting(self) -> None:
        """Commit each snapshot whose evidence is committed and covered, the newest first:
        this node's own file, else (with ``fetch``) the bytes another node serves."""
        if not self._waiting:  # most commits: no directory listing on the event loop
            return
        newest = self._ledger.snapshots.newest_committed()
        for position, index in enumerate(sorted(self._waiting, reverse=True)):
            if (newest is not None and index <= newest.index) or position >= WAITING:
                self._waiting.pop(index)  # a newer one is committed: this one is not needed
                self._ask_at.pop(index, None)
                continue
            ready = self._waiting[index]
            committed: bool | None = await asyncio.to_thread(
                self._ledger.snapshots.commit, index, ready.digest, ready.receipt
            )
            if not committed and self._ledger.snapshots.get(index) is None:
                committed = await self._fetched(ready)
            if committed is None:
                continue  # fetched later
            self._waiting.pop(index)
            self._ask_at.pop(index, None)
            if committed:
                log.info("snapshot at index %d committed (evidence receipt stored)", index)
                if self._on_committed is not None:
                    self._on_committed(index)
                newest = self._ledger.snapshots.newest_committed()
        if self._waiting and self._retry is None:  # no commit may come to wake it: a timer
            self._retry = asyncio.get_running_loop().call_later(FETCH_RETRY, self._ask_again)

    def _ask_again(self) -> None:
        self._retry = None
        self.wake()

    async def _fetched(self, ready: SnapshotReceipt) -> bool | None:
        """Fetch, check and commit snapshot ``ready.index``: True if committed, False if
        there is nothing to fetch it from (no ``fetch``), None if it is to be asked again."""
        if self._fetch is None:
            return False
        started = time.monotonic()
        if started < self._ask_at.get(ready.index, 0.0):
            return None
        self._ask_at[ready.index] = started + FETCH_RETRY
        try:
            data = await self._fetch(ready.index)
        except Exception as exc:  # any peer failure: asked again later
            log.warning("snapshot %d: not fetched (%s); asked again", ready.index, exc)
            return None
        if data is None:
            log.info("snapshot %d: no node serves it yet; asked again", ready.index)
            return None
        digest = await asyncio.to_thread(lambda: hashlib.sha256(data).digest())
        if digest != ready.digest:
            log.error(
                "snapshot %d: the bytes fetched (sha256 %s) are not the committed evidence "
                "(sha256 %s): not kept; asked again",
                ready.index,
                digest.hex(),
                ready.digest.hex(),
            )
            return None
        store = self._ledger.snapshots
        await asyncio.to_thread(store.write, ready.index, data)
        committed = await asyncio.to_thread(store.commit, ready.index, ready.digest, ready.receipt)
        seconds = time.monotonic() - started
        log.info(
            "snapshot %d fetched (%d bytes, sha256 %s, %.2f s)",
            ready.index,
            len(data),
            digest.hex()[:16],
            seconds,
        )
        if self._on_fetched is not None:
            self._on_fetched(ready.index, len(data), seconds)
        return committed

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
