"""A duty that follows commits: one task that runs ``once`` after each ``wake``.

Why a base of its own: the snapshot keeper and the recovery record keeper (and any later duty
of the primary) share the same loop: wait for a commit, do the work, and never let a failure
(a full disk, a lost leadership, no quorum) stop consensus; it is logged and retried at the
next commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from consortium_node.ledger import EntryKind, TxId, WriteSet

log = logging.getLogger("consortium_node")

Submit = Callable[[list[WriteSet], EntryKind], Awaitable[list[TxId]]]


class Duty:
    """Subclasses implement ``once``; ``what`` names the duty in the log."""

    what = "duty"

    def __init__(self) -> None:
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception:  # never stop consensus; retried at the next commit
                log.exception("%s failed; retrying after the next commit", self.what)

    async def once(self) -> None:
        raise NotImplementedError
