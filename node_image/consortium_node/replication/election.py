"""Who may lead: pre-vote, leader stickiness and check-quorum (Raft thesis §9.6, as etcd-raft).

Why this exists: in textbook Raft a node whose election timer fires raises its term and
campaigns, and every node that sees the higher term steps down — the leader too, through the
answer to its next AppendEntries. A follower that restarts, was cut off for a while, or joined
and was not reached in time therefore deposed a healthy leader, once per timeout as its term
kept climbing, although with a stale log it could not even win (seen: terms 3 → 12 in one pod
restart, writes paused each time). Three rules stop that:

* **Pre-vote**: when its timer fires a node first asks the voters whether they *would* vote for
  it at ``term + 1``, without raising or persisting any term; it campaigns only if a majority
  would. A voter would iff no leader is live for it (stickiness, below), the proposed term is
  above its own and the candidate's log is at least as up to date as its own. Answering a
  pre-vote changes nothing on the voter: no term, no vote, no timer.
* **Leader stickiness**: a node that heard from a leader within the (minimum) election timeout
  refuses pre-votes and votes of other nodes without adopting their term, and a leader refuses
  them all. The leader itself is exempt: it asks only once it lost its leadership (it restarted).
  This Raft has no leadership transfer, so there is no other exemption.
* **Check-quorum**: stickiness would let a leader cut off from its majority hold on to the
  followers it still reaches; a leader that has not heard from a majority within an election
  timeout steps down instead.

Nodes that must not disrupt: a restarted follower keeps its persisted term and log and only
pre-votes, which a live cluster refuses; a node with a stale log cannot win a pre-vote; a
retired or removed node is outside the configuration, so it starts no round, and peers refuse
its RPCs at the mTLS layer anyway (``server/peers.py``). A peer that predates pre-vote answers
the pre-vote route with 404; ``canvass`` counts it as granting, so a mixed-version cluster
(a rolling code upgrade) elects as it did before.

Pure rules plus ``canvass``, the one round of asking every voter at once, shared by pre-votes
and votes. ``RaftNode`` (``raft.py``) holds the state and applies them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field

from consortium_node.replication.messages import VoteRequest, VoteResponse

log = logging.getLogger("consortium_node.raft")

# Sends one (pre-)vote request to an address. ``None``: the peer predates pre-vote.
Ask = Callable[[str, str], Awaitable[VoteResponse | None]]  # (address, node_id)


def log_up_to_date(request: VoteRequest, last_index: int, last_term: int) -> bool:
    """The candidate's log is at least as up to date as ours (Raft §5.4.1)."""
    return (request.last_term, request.last_index) >= (last_term, last_index)


def leader_is_live(
    *,
    is_leader: bool,
    leader_id: str | None,
    candidate_id: str,
    silence: float,
    election_timeout: float,
) -> bool:
    """True while a (pre-)vote of ``candidate_id`` must be refused: a leader is live for us.

    ``silence`` is the time since the leader last reached us; ``election_timeout`` the minimum
    (randomised timeouts lie in [t, 2t)), so no follower's timer can have fired yet.
    """
    if is_leader:
        return True  # check-quorum deposes a leader that lost its majority
    return leader_id is not None and leader_id != candidate_id and silence < election_timeout


def grants_pre_vote(
    request: VoteRequest, *, term: int, last_index: int, last_term: int, leader_live: bool
) -> bool:
    """Would we vote for ``request`` at its (proposed) term? See the module doc."""
    return (
        not leader_live and request.term > term and log_up_to_date(request, last_index, last_term)
    )


def voters_heard(
    voters: Collection[str],
    node_id: str,
    last_contact: Mapping[str, float],
    now: float,
    window: float,
) -> int:
    """How many voters (a leader counts itself) answered within the last ``window`` seconds."""
    return sum(
        1
        for nid in voters
        if nid == node_id or (nid in last_contact and now - last_contact[nid] < window)
    )


def majority(count: int, voters: int) -> bool:
    return count * 2 > voters


@dataclass
class Tally:
    """The outcome of one round: who granted, and the highest term any answer carried."""

    voters: int
    granted: set[str] = field(default_factory=set)
    highest_term: int = 0

    @property
    def won(self) -> bool:
        return majority(len(self.granted), self.voters)


async def canvass(
    ask: Ask, voters: Mapping[str, str], node_id: str, term: int, timeout: float
) -> Tally:
    """Ask every other voter at once; ``node_id`` grants itself.

    Returns as soon as a majority granted, or an answer carried a term above ``term`` (the
    caller must adopt it and stop), or every voter answered, failed or timed out. A ``None``
    answer (a peer that predates pre-vote) counts as granting. Requests still running when it
    returns are cancelled: none outlives its round (or ``RaftNode.stop()``).
    """
    tally = Tally(len(voters), {node_id} if node_id in voters else set())

    async def one(address: str, to: str) -> VoteResponse | Exception | None:
        try:
            answer = await asyncio.wait_for(ask(address, to), timeout)
            if answer is not None and answer.node_id != to:  # a vote counts once, as its own
                raise ValueError(f"{address}: answered by {answer.node_id[:8]}, not {to[:8]}")
            return answer
        except (OSError, TimeoutError, ValueError) as exc:
            log.debug("(pre-)vote request to %s failed: %s", address, exc)
            return exc

    pending = {
        asyncio.create_task(one(address, nid)): nid
        for nid, address in voters.items()
        if nid != node_id
    }
    try:
        while pending and not tally.won and tally.highest_term <= term:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                nid, answer = pending.pop(task), task.result()
                if answer is None:
                    tally.granted.add(nid)
                elif isinstance(answer, VoteResponse):
                    tally.highest_term = max(tally.highest_term, answer.term)
                    if answer.granted and answer.term <= term:
                        tally.granted.add(nid)
    finally:
        for task in pending:
            task.cancel()
    return tally
