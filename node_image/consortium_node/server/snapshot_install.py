"""A node whose log ends before every other voter's history installs a snapshot.

Why: Raft's followers catch up from the leader's log, and a leader that started from a
snapshot holds no entry before it. A follower whose log ends before that snapshot (its volume
restored from an old copy, or entries lost to a storage fault) fetches the missing committed
entries from any voter that holds them (``replication.fetch``); when no voter does, it would
wait for ever. Instead, once asking has failed for ``INSTALL_AFTER`` election timeouts, it
fetches the newest committed snapshot from the leader (or another voter), checks it against
its receipt with the service certificate (``snapshot_fetch``), stages it in
``<data>/ledger.install/`` and stops (exit 75, as after a damaged read): its restart
(``install_staged``, before the ledger opens) moves the old ledger to
``<data>/retired-<stamp>-behind-snapshot/ledger`` (kept, never deleted: its entries are
committed history) and starts from the snapshot, as a joining node does. Raft's state (term,
vote) and the node's identity are kept; the leader then sends the entries after the snapshot.

A log that lost acknowledged entries to a storage fault (``Ledger.missing_committed``,
``unvouched``) is replaced only by a snapshot that covers them: the commit markers that
say what it lacks go with the old ledger, and a node that forgot what it lacks could help
elect a log without them.

The swap is safe to interrupt: nothing is discarded before a verified snapshot is staged and
committed with its receipt, and a restart between the two renames finishes the second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from consortium_node.common.timeutil import utcnow
from consortium_node.identity.certs import certificate_pem
from consortium_node.ledger.snapshot_store import SnapshotStore
from consortium_node.server.snapshot_fetch import fetch_newest

if TYPE_CHECKING:
    from cryptography import x509

    from consortium_node.ledger import Ledger, LedgerSecrets
    from consortium_node.replication.raft import RaftNode
    from consortium_node.server.node import Node

log = logging.getLogger("consortium_node")

# Election timeouts during which no voter could give the missing committed entries before
# the node installs a snapshot (a voter holding them may only be restarting).
INSTALL_AFTER = 5
STAGING = "ledger.install"


def stage(
    data_dir: Path,
    addresses: Sequence[str],
    certificate: x509.Certificate,
    secrets: LedgerSecrets,
    after: int,
) -> int | None:
    """Fetch, verify and commit into ``<data_dir>/ledger.install/snapshots`` the newest
    snapshot one of ``addresses`` serves: its index (None: none served or verified); it
    stays staged only if it lies after ``after`` (this log's end). Blocking (a thread)."""
    staging = data_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # an attempt that did not finish
    store = SnapshotStore(staging / "snapshots")
    context = ssl.create_default_context(cadata=certificate_pem(certificate))
    index = fetch_newest(addresses, context, certificate, secrets, store)
    if index is None or index <= after:
        shutil.rmtree(staging, ignore_errors=True)
    return index


def install_staged(data_dir: Path) -> Path | None:
    """At start-up, before the ledger opens: if a verified snapshot is staged, move the
    ledger aside and put the staging directory in its place; where the old ledger went."""
    staging, ledger = data_dir / STAGING, data_dir / "ledger"
    if not staging.is_dir():
        return None
    if SnapshotStore(staging / "snapshots").newest_committed() is None:
        shutil.rmtree(staging)  # stopped before the snapshot was committed: nothing staged
        return None
    aside = None
    if ledger.exists():
        aside = data_dir / f"retired-{utcnow():%Y%m%dT%H%M%SZ}-behind-snapshot"
        aside.mkdir(parents=True, exist_ok=True)
        ledger.rename(aside / "ledger")
    staging.rename(ledger)
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return aside


def must_cover(ledger: Ledger) -> int:
    """The last entry this log held durably and lost to a storage fault (0: none): a snapshot
    that replaces it must reach that far (module docstring)."""
    lost = [p.index for p in (ledger.missing_committed, ledger.unvouched) if p is not None]
    return max(lost, default=0)


def _sources(raft: RaftNode) -> list[str]:
    """The leader first (its newest snapshot is at or after its log's start), then the
    other voters."""
    voters = [a for n, a in raft.voters().items() if n != raft.node_id]
    first = [raft.leader_address] if raft.leader_address else []
    return list(dict.fromkeys(a for a in [*first, *voters] if a and a != raft.address))


async def install_when_stranded(node: Node, raft: RaftNode, stop: Callable[[str], None]) -> None:
    """Watch for committed entries no voter can give; then stage a snapshot after this
    log's end and call ``stop`` (the restart installs it). Runs until then."""
    timeout = raft.timing.election_timeout
    reported: list[int | None] = []  # the answer last logged
    while True:
        await asyncio.sleep(timeout)
        stranded = raft.unfetchable()
        if stranded is None or stranded[1] < INSTALL_AFTER * timeout:
            continue
        through, end = stranded[0], node.ledger.last_index
        after = max(end, must_cover(node.ledger) - 1)
        found = await asyncio.to_thread(
            stage, node.data_dir, _sources(raft), node.service.certificate, node.ledger.secrets,
            after,
        )  # fmt: skip
        if found is not None and found > after:
            stop(
                f"this log ends at {end} and no voter holds the committed entries "
                f"{end + 1}..{through}: the snapshot at {found} is verified and staged; "
                "stopped: its restart starts from it (the old ledger is kept)"
            )
            return
        if reported != [found]:
            log.warning(
                "this log ends at %d and no voter holds the committed entries %d..%d; no "
                "snapshot after %d to install (%s)",
                end,
                end + 1,
                through,
                after,
                "none served or verified" if found is None else f"the newest is at {found}",
            )
            reported = [found]
