"""Group commit: many concurrent write batches share one append + one fsync.

Handlers ``await submit(...)``; a single task drains the queue, appends every waiting batch to
the ledger, appends a signature transaction when one is due (by count or by time), makes it all
durable with one fsync in a worker thread, and only then resolves the waiters. A client is
never acknowledged before its transaction is on disk. When idle, the task still wakes every
signature interval so that the last transactions get a signature (and thus receipts).

Only this task appends to or syncs the ledger, so the ledger needs no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from consortium_node.ledger import EntryKind, Ledger, LedgerSigner, TxId
from consortium_node.server.metrics import NodeMetrics

log = logging.getLogger("consortium_node.committer")


class CommitUnavailableError(RuntimeError):
    """The committer stopped (shutdown or a failed disk); nothing was acknowledged."""


@dataclass
class _Pending:
    write_sets: Sequence[dict[str, dict[str, Any]]]
    kind: EntryKind
    future: asyncio.Future[list[TxId]]
    started: float = field(default_factory=time.perf_counter)


class Committer:
    """Serialises every ledger append and fsync of one node."""

    def __init__(
        self, ledger: Ledger, signer: LedgerSigner, metrics: NodeMetrics, signature_interval_ms: int
    ) -> None:
        self.ledger, self.signer, self.metrics = ledger, signer, metrics
        self._interval = signature_interval_ms / 1000
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="committer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(CommitUnavailableError("node is shutting down"))
        self._queue.clear()

    async def submit(
        self, write_sets: Sequence[dict[str, dict[str, Any]]], kind: EntryKind = EntryKind.PRIVATE
    ) -> list[TxId]:
        """Append ``write_sets`` (one transaction each); return their txids once durable."""
        if not self.running:
            raise CommitUnavailableError(f"committer is not running ({self._failure!r})")
        future: asyncio.Future[list[TxId]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(write_sets, kind, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
                self._wake.clear()
                await self._commit_round()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a failed fsync must stop all acknowledgements
            self._failure = exc
            log.exception("committer failed; no further writes are acknowledged")
            for pending in self._queue:
                if not pending.future.done():
                    pending.future.set_exception(CommitUnavailableError(str(exc)))
            self._queue.clear()

    async def _commit_round(self) -> None:
        batch, self._queue = self._queue, []
        done: list[tuple[_Pending, list[TxId]]] = []
        for pending in batch:
            done.append((pending, self.ledger.append(pending.write_sets, pending.kind)))
        signed = False
        if self.ledger.signature_due():
            signed = self.ledger.append_signature(self.signer) is not None
        if not done and not signed:
            return
        await asyncio.to_thread(self.ledger.sync)
        now = time.perf_counter()
        for pending, txids in done:
            label = "public" if pending.kind == EntryKind.PUBLIC else "private"
            self.metrics.committed.labels(label).inc(len(txids))
            self.metrics.commit_latency.observe(now - pending.started)
            if not pending.future.done():
                pending.future.set_result(txids)
        if signed:
            self.metrics.signatures.inc()
            self.metrics.committed.labels("signature").inc()
        self.metrics.commit_index.set(self.ledger.commit_index)
