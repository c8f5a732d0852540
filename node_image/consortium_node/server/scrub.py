"""The background check of the ledger entries a restart did not read.

Why: a restart that resumes after a verified snapshot (``Ledger.open`` with a tree store)
reads none of the entries before it, so a storage fault there would wait unseen until someone
reads that entry. The node checks them while it serves, a slice at a time with a pause between
(it stays responsive; about a minute per million entries), and damage stops the node like a
damaged read (exit 75): the restart then reads every entry and repairs them from its peers.
"""

from __future__ import annotations

import asyncio
import logging
import time

from consortium_node.ledger import Ledger, LedgerError, StoredEntryDamagedError

log = logging.getLogger("consortium_node")

SCRUB_SLICE = 2_000  # entries checked per turn of the event loop
SCRUB_PAUSE = 0.05  # seconds between slices


async def scrub(ledger: Ledger, count: int = SCRUB_SLICE, pause: float = SCRUB_PAUSE) -> None:
    """Check, in slices between which the node serves, the entries a restart resumed past
    (``Ledger.scrub``); damage stops the node (``main._StopForRestart``) like a damaged read."""
    total = ledger.unscrubbed
    if not total:
        return
    started = time.monotonic()
    log.info("ledger: checking the %d entries before the snapshot in the background", total)
    try:
        while ledger.scrub(count):
            await asyncio.sleep(pause)
    except StoredEntryDamagedError:
        return  # reported: the node stops and its restart repairs it
    except LedgerError as exc:
        log.error("ledger: the background check of old entries stopped: %s", exc)
        return
    log.info(
        "ledger: the %d entries before the snapshot are intact (checked in %.1f s)",
        total,
        time.monotonic() - started,
    )
