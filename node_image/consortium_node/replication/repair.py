"""A node's own side of repair from any peer: when to ask, whom, and what it tells others.

Why apart from ``raft.py``: Raft replicates from the leader; this is the path around it for
committed entries the leader cannot send (lost to a storage fault, or before the snapshot the
leader started from; ``fetch`` has the reasoning and the pure halves). ``Repair`` keeps its
own state (which peers said they lack entries, why the last ask failed, since when no voter
could give them) and reaches into the log only through ``RaftNode.append_fetched``, which
appends under Raft's lock.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING

from consortium_node.replication import fetch
from consortium_node.replication.messages import FetchRequest, FetchResponse

if TYPE_CHECKING:
    from consortium_node.replication.raft import RaftNode

log = logging.getLogger("consortium_node.raft")


class Repair:
    """Fetching committed entries this node lacks from any voter, and answering such asks."""

    def __init__(self, raft: RaftNode) -> None:
        self.raft = raft
        # Peers that asked for committed entries they lost (node_id → (known commit, log end,
        # when)): why no leader may be elected, for ``why_no_leader``.
        self.lacking_peers: dict[str, tuple[int, int, float]] = {}
        self._failure: str | None = None  # why the last ask found nothing (logged once)
        self._unfetchable_since: float | None = None  # since when no voter could give them

    def answer(self, request: FetchRequest) -> FetchResponse:
        """Committed entries for a node that lacks them (``fetch.answer``); an asker that
        knows more committed than this node is remembered for ``why_no_leader``."""
        raft = self.raft
        if request.known_commit > raft.ledger.commit_index:
            self.lacking_peers[request.node_id] = (
                request.known_commit,
                request.start - 1,
                time.monotonic(),
            )
        return fetch.answer(
            raft.ledger,
            request,
            node_id=raft.node_id,
            term=raft.term,
            max_entries=raft.timing.max_batch_entries,
            max_bytes=raft.timing.max_batch_bytes,
        )

    async def run(self) -> None:
        """While the log lacks entries it knows committed and has not grown for an election
        timeout (the leader cannot send them, or there is none), fetch them from any voter."""
        raft = self.raft
        seen = -1
        while not raft.stopped:
            await asyncio.sleep(raft.timing.election_timeout)
            last, seen = seen, raft.ledger.last_index
            lacking = self.lacking()
            if lacking is None:
                self._unfetchable_since = None
            if raft.role == "leader" or lacking is None or last != seen:
                continue
            while not raft.stopped and await self.fetch_missing():
                seen = raft.ledger.last_index

    def lacking(self) -> tuple[int, str] | None:
        """The last committed index this node knows of beyond its log, and why it lacks the
        entries: lost to a storage fault, or not sent by the leader (``run`` asks only once
        the log has not grown for an election timeout: typically the leader started from a
        snapshot after this log's end, so it cannot send them, but a node with the history
        can)."""
        raft = self.raft
        missing = raft.ledger.missing_committed
        if missing is not None:
            return missing.index, "lost to a storage fault"
        if raft.role == "follower" and raft.leader_commit > raft.ledger.last_index:
            return raft.leader_commit, "the leader did not send them"
        return None

    def unfetchable(self) -> tuple[int, float] | None:
        """Committed entries this node lacks that no voter could give when last asked: the
        last index known committed and for how many seconds every ask has failed (None: none
        lacking, or the last ask succeeded). The node then installs a snapshot instead
        (``server.snapshot_install``)."""
        lacking = self.lacking()
        if lacking is None or self._unfetchable_since is None or self.raft.role == "leader":
            return None
        return lacking[0], time.monotonic() - self._unfetchable_since

    async def fetch_missing(self) -> bool:
        """One batch of the missing committed entries from the first voter that holds them,
        checked and appended (True), or why none could be had, logged once (False)."""
        raft = self.raft
        lacking = self.lacking()
        if lacking is None:
            return False
        through, why = lacking
        start = raft.ledger.last_index + 1
        peers = [(n, a) for n, a in raft.voters().items() if n != raft.node_id]
        random.shuffle(peers)
        request = FetchRequest(raft.term, raft.node_id, start, through)
        found = await fetch.ask(raft.transport, peers, request, raft.timing.rpc_timeout)
        if isinstance(found, list):
            if self._unfetchable_since is None:
                self._unfetchable_since = time.monotonic()
            failure = "; ".join(found) or "no other voter"
            if failure != self._failure:
                log.warning(
                    "no voter can give the committed entries %d..%d this node lacks (%s): %s",
                    start,
                    through,
                    why,
                    failure,
                )
                self._failure = failure
            return False
        appended = await raft.append_fetched(found, start)
        if not appended:
            return appended == 0  # 0: the log grew meanwhile (ask again from its end)
        self._failure = self._unfetchable_since = None
        log.warning(
            "fetched the committed entries %d..%d (%s) from %s",
            start,
            raft.ledger.last_index,
            why,
            found.node_id[:8],
        )
        return True

    def why_no_leader(self) -> str | None:
        """Why no leader is elected, when a node (this one, or a peer that asked for entries
        recently) lacks committed entries; None otherwise."""
        raft = self.raft
        recent = time.monotonic() - 3 * raft.timing.election_timeout
        lacking = [
            f"node {node[:8]} lost committed entries {end + 1}..{known} to a storage fault"
            for node, (known, end, at) in sorted(self.lacking_peers.items())
            if at >= recent and known > raft.ledger.last_index
        ]
        own = raft.unfit_to_lead()
        if own is not None:
            lacking.insert(0, f"this node cannot lead: {own}")
        if not lacking:
            return None
        return (
            "; ".join(lacking)
            + f"; this node's log ends at {raft.ledger.last_index}: no leader can be "
            "elected without them, so writes wait for a node that holds them"
        )
