"""Pre-vote, leader stickiness and check-quorum (``replication/election.py``).

A node that cannot win — cut off from the leader, restarted, joining, lagging, removed — must
not raise terms or depose a healthy leader; a leader cut off from its majority must step down;
and a cluster whose leader really died must still elect one. Tests that assert that nothing
happened use slower timings (``STABLE``) so that a stall of this shared machine's event loop
cannot pass for a dead leader; every wait is a condition polled with a deadline.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from consortium_node.identity.certs import ServiceIdentity
from consortium_node.ledger import EntryKind, Ledger
from consortium_node.ledger.damage import DamageKind
from consortium_node.replication import raft as raft_module
from consortium_node.replication.election import canvass
from consortium_node.replication.messages import AppendRequest, VoteRequest, VoteResponse
from consortium_node.replication.raft import Configuration, RaftTiming
from consortium_node.replication.state import PersistentState

from .raft_harness import TIMING, Cluster, Member, eventually, value, writes

pytestmark = pytest.mark.usefixtures("unretrieved_errors")

STABLE = RaftTiming(
    election_timeout=0.5, heartbeat_interval=0.05, rpc_timeout=0.5, commit_timeout=5
)
LEADER, RIVAL = "11" * 32, "22" * 32


def candidacies(cluster: Cluster, member: Member, since: int) -> list[int]:
    """Terms in which ``member`` became a candidate after ``cluster.roles[since]``."""
    return [
        t for name, t, role in cluster.roles[since:] if name == member.name and role == "candidate"
    ]


def sent(cluster: Cluster, kind: str, source: Member) -> int:
    """Requests of ``kind`` that ``source`` tried to send to anyone."""
    return sum(cluster.network.count(kind, source, m) for m in cluster.members if m is not source)


# ---------------------------------------------------------------------- the voter's rules


@pytest.mark.parametrize(
    ("silence", "candidate", "last_index", "last_term", "term", "granted"),
    [
        (None, RIVAL, 3, 2, 3, True),  # no leader known, up-to-date log, next term
        (None, RIVAL, 9, 3, 3, True),  # a newer log is fine too
        (None, RIVAL, 2, 2, 3, False),  # stale log: same last term, shorter
        (None, RIVAL, 9, 1, 3, False),  # stale log: longer, older last term
        (None, RIVAL, 3, 2, 2, False),  # proposed term not above ours
        (0.9, RIVAL, 9, 3, 3, False),  # stickiness: the leader spoke within the timeout
        (0.9, LEADER, 3, 2, 3, True),  # ... unless the leader itself asks (it restarted)
        (1.1, RIVAL, 3, 2, 3, True),  # the leader has been silent for a timeout
    ],
    ids=[
        "no-leader",
        "newer-log",
        "shorter-log",
        "older-last-term",
        "term-not-above",
        "leader-live",
        "leader-itself",
        "leader-silent",
    ],
)
async def test_pre_vote_is_answered_without_changing_anything(
    cluster: Cluster,
    monkeypatch: pytest.MonkeyPatch,
    silence: float | None,
    candidate: str,
    last_index: int,
    last_term: int,
    term: int,
    granted: bool,
) -> None:
    now = [100.0]
    monkeypatch.setattr(
        raft_module,
        "time",
        SimpleNamespace(monotonic=lambda: now[0], perf_counter=time.perf_counter),
    )
    member = cluster.create("voter")  # not started: the handlers only
    node = member.node
    node.state.save(2, None)
    member.ledger.term = 2
    member.ledger.append(writes("x", "y", "z"), EntryKind.PRIVATE)
    member.ledger.sync()  # log: 2.1 2.2 2.3
    if silence is not None:
        assert (await node.handle_append(AppendRequest(2, LEADER, "l:1", 3, 2, (), 0))).success
        now[0] += TIMING.election_timeout * silence
    before = (member.state_path.read_bytes(), node.leader_id, node._election_deadline)

    response = await node.handle_pre_vote(VoteRequest(term, candidate, last_index, last_term))

    assert (response.granted, response.term, response.node_id) == (granted, 2, member.node_id)
    assert (node.term, node.state.voted_for, node.role) == (2, None, "follower")
    assert (member.state_path.read_bytes(), node.leader_id, node._election_deadline) == before


@pytest.mark.parametrize("kind", ["prevote", "vote"])
@pytest.mark.parametrize("voter", ["leader", "follower"])
async def test_live_leader_makes_voters_ignore_a_better_candidate(
    cluster: Cluster, kind: str, voter: str
) -> None:
    """Stickiness: a longer log and a higher term are refused, and the term is not adopted."""
    members = await cluster.start_all(3)
    leader = await cluster.wait_leader()
    follower, rival = (m for m in members if m is not leader)
    term = leader.node.term
    target = leader if voter == "leader" else follower
    request = VoteRequest(term + 5, rival.node_id, leader.ledger.last_index + 100, term + 4)
    handle = target.node.handle_pre_vote if kind == "prevote" else target.node.handle_vote

    response = await handle(request)

    assert (response.granted, response.term) == (False, term)
    assert target.node.term == term
    assert cluster.stable_leader(members) is leader


# ---------------------------------------------------------------------- no disruption


async def _cut_off(cluster: Cluster, how: str, leader: Member, lonely: Member) -> None:
    network = cluster.network
    if how == "partitioned":
        network.partitioned.add(lonely.address)
        return
    network.dropped.add((leader.address, lonely.address))  # it reaches others, not vice versa
    if how == "restarted":  # e.g. a pod back at an address the leader has not learnt yet
        await cluster.stop(lonely)
        cluster.reopen(lonely)
        await cluster.start(lonely)
    elif how == "joined":
        cluster.voters[lonely.node_id] = lonely.address
        await cluster.start(lonely)


@pytest.mark.parametrize("how", ["partitioned", "unreachable", "restarted", "joined"])
async def test_node_that_cannot_hear_the_leader_does_not_disrupt_it(
    tmp_path: Path, service: ServiceIdentity, how: str
) -> None:
    """It pre-votes round after round, is refused, never campaigns nor raises its term; once
    reachable again it follows the same leader in the same term."""
    cluster = Cluster(tmp_path, service, STABLE)
    try:
        members = await cluster.start_all(3)
        leader = await cluster.wait_leader()
        await leader.node.submit(writes("before"))
        await cluster.wait_synced(members)
        term, mark = leader.node.term, len(cluster.roles)
        lonely = cluster.create("n3", voter=False) if how == "joined" else members[-1]
        if lonely is leader:
            lonely = members[0]
        everyone = [*members, lonely] if how == "joined" else members
        pre_votes, votes = sent(cluster, "prevote", lonely), sent(cluster, "vote", lonely)

        await _cut_off(cluster, how, leader, lonely)
        rounds = len(everyone) - 1  # one request per other voter and round
        await eventually(
            lambda: sent(cluster, "prevote", lonely) >= pre_votes + 3 * rounds,
            10 * STABLE.election_timeout,
            "three pre-vote rounds",
        )
        during = await leader.node.submit(writes("during"))
        assert during[0].term == term
        assert (lonely.node.term, PersistentState(lonely.state_path).current_term) == (term, term)
        assert sent(cluster, "vote", lonely) == votes

        cluster.network.partitioned.clear()
        cluster.network.dropped.clear()
        await leader.node.submit(writes("healed"))
        await cluster.wait_synced(everyone, timeout=10)
        assert cluster.stable_leader(everyone) is leader
        assert {m.node.term for m in everyone} == {term}
        assert value(lonely, "during") == "value-during"
        assert cluster.roles[mark:] == []  # nobody changed role: no election at all
        cluster.check_safety()
    finally:
        await cluster.close()


async def test_removed_node_that_missed_its_removal_cannot_disrupt(
    tmp_path: Path, service: ServiceIdentity
) -> None:
    """Cut off before the configuration without it reached it, it still thinks it votes."""
    cluster = Cluster(tmp_path, service, STABLE)
    try:
        members = await cluster.start_all(4)
        leader = await cluster.wait_leader()
        await cluster.wait_synced(members)  # its log is as good as anyone's
        removed = next(m for m in members if m is not leader)
        remaining = [m for m in members if m is not removed]
        frozen = Configuration(dict(cluster.voters), 0)
        removed.node.configuration = lambda: frozen
        cluster.network.dropped.add((leader.address, removed.address))
        del cluster.voters[removed.node_id]
        term, pre_votes = leader.node.term, sent(cluster, "prevote", removed)

        await eventually(
            lambda: sent(cluster, "prevote", removed) >= pre_votes + 2 * 3,
            10 * STABLE.election_timeout,
            "two pre-vote rounds of the removed node",
        )
        txids = await leader.node.submit(writes("without-it"))
        await cluster.wait_synced(remaining)
        assert txids[0].term == removed.node.term == term
        assert cluster.stable_leader(remaining) is leader
        assert sent(cluster, "vote", removed) == 0
    finally:
        await cluster.close()


async def test_stale_log_cannot_win_the_pre_vote(cluster: Cluster) -> None:
    """When the leader dies, the lagging follower cannot even campaign; the other one wins
    in the next term, with no term wasted."""
    members = await cluster.start_all(3)
    leader = await cluster.wait_leader()
    stale, fresh = (m for m in members if m is not leader)
    cluster.network.dropped.add((leader.address, stale.address))
    await leader.node.submit(writes("a", "b", "c"))  # committed on the leader and `fresh`
    assert stale.ledger.last_index < fresh.ledger.last_index
    term, mark = leader.node.term, len(cluster.roles)

    await cluster.stop(leader)
    new = await cluster.wait_leader([stale, fresh], timeout=20 * TIMING.election_timeout)

    assert new is fresh
    assert new.node.term == term + 1
    assert candidacies(cluster, stale, mark) == []
    await cluster.wait_synced([stale, fresh])
    assert value(stale, "c") == "value-c"


# ---------------------------------------------------------------------- check-quorum, liveness


async def test_check_quorum_isolated_leader_steps_down_and_majority_elects(
    cluster: Cluster,
) -> None:
    members = await cluster.start_all(3)
    old = await cluster.wait_leader()
    others = [m for m in members if m is not old]
    term = old.node.term

    cluster.network.partitioned.add(old.address)
    await eventually(
        lambda: old.node.role == "follower",
        10 * TIMING.election_timeout,
        "the isolated leader steps down",
    )
    new = await cluster.wait_leader(others, timeout=20 * TIMING.election_timeout)
    assert new.node.term > term
    assert old.node.term == term  # isolated, it cannot win a pre-vote: no term raised

    new_term = new.node.term
    cluster.network.partitioned.clear()
    assert await cluster.wait_leader(members) is new
    assert {m.node.term for m in members} == {new_term}  # healing costs no election


@pytest.mark.parametrize("size", [3, 5])
async def test_dead_leader_is_replaced(cluster: Cluster, size: int) -> None:
    members = await cluster.start_all(size)
    old = await cluster.wait_leader()
    term = old.node.term
    await cluster.stop(old)
    rest = [m for m in members if m is not old]

    new = await cluster.wait_leader(rest, timeout=20 * TIMING.election_timeout)

    assert new.node.term > term
    txids = await new.node.submit(writes("after"))
    assert new.node.commit_index >= txids[-1].index


async def test_peer_that_predates_pre_vote_counts_as_granting(cluster: Cluster) -> None:
    """Mixed versions: without that rule, the one node able to win could never campaign."""
    members = await cluster.start_all(3)
    leader = await cluster.wait_leader()
    legacy, fresh = (m for m in members if m is not leader)
    cluster.network.legacy.add(legacy.address)  # answers the pre-vote route with 404
    cluster.network.dropped.add((leader.address, legacy.address))  # and lags behind
    await leader.node.submit(writes("a"))
    term = leader.node.term

    await cluster.stop(leader)
    new = await cluster.wait_leader([legacy, fresh], timeout=20 * TIMING.election_timeout)

    assert new is fresh
    assert new.node.term == term + 1


def whole(ledger: Ledger) -> bool:
    """The ledger again holds every entry it knew durable and committed."""
    return ledger.unvouched is None and ledger.missing_committed is None


async def test_a_follower_that_lost_its_tail_is_repaired_by_the_same_leader(
    tmp_path: Path, service: ServiceIdentity
) -> None:
    """A follower whose newest chunk lost entries it had acknowledged (a torn write on a
    SIGKILL, a storage fault) restarts shorter than the leader's record of it. With leader
    stickiness no election comes to reset the leader's view, so the leader itself must resend
    from where the follower's log now ends: the follower is not left stuck waiting for a leader
    change."""
    cluster = Cluster(tmp_path, service, STABLE)
    try:
        members = await cluster.start_all(3)
        leader = await cluster.wait_leader()
        for i in range(8):
            await leader.node.submit(writes(f"k{i}"))
        await cluster.wait_synced(members)
        term = leader.node.term
        follower = next(m for m in members if m is not leader)
        await cluster.stop(follower)
        [chunk] = sorted(follower.ledger_dir.glob("ledger_*.chunk"))[-1:]
        data = chunk.read_bytes()
        chunk.write_bytes(data[: len(data) - 100])  # the tail of acknowledged entries is gone
        cluster.reopen(follower)
        assert follower.ledger.last_index < leader.ledger.last_index
        damage = follower.ledger.damage  # below its clean close's markers: a fault, not torn
        assert damage is not None and damage.kind is DamageKind.TRUNCATED
        assert follower.ledger.unvouched is not None
        await cluster.start(follower)
        await leader.node.submit(writes("after"))
        await cluster.wait_synced(members, timeout=10)
        assert value(follower, "after") == "value-after"
        assert value(follower, "k7") == "value-k7"
        assert cluster.stable_leader(members) is leader and leader.node.term == term
        assert whole(follower.ledger)
        cluster.check_safety()
    finally:
        await cluster.close()


# ---------------------------------------------------------------------- one address, two identities

GHOST = "33" * 32  # a voter whose node lost its identity; its address now answers as another


async def test_leader_whose_old_identity_is_still_a_voter_keeps_leading(cluster: Cluster) -> None:
    """A node that lost its identity joins again under a new one at the same address, and its
    old identity stays a voter until governance removes it. As leader, its heartbeats to that
    voter reach itself: it must refuse them (HTTP 421 in the node server) instead of taking
    them as another leader's in its own term and stepping down."""
    members = await cluster.start_all(3)
    leader = await cluster.wait_leader()
    term = leader.node.term
    cluster.voters[GHOST] = leader.address  # 4 voters: a majority is 3 (the leader and both)

    for n in range(5):
        txids = await leader.node.submit(writes(f"after-{n}"))
        assert leader.node.commit_index >= txids[-1].index
    await eventually(lambda: cluster.network.count("append", leader, leader) >= 3, 5, "resent")
    assert leader.node.role == "leader" and leader.node.term == term
    assert await cluster.wait_leader(members) is leader


async def test_a_vote_answered_by_another_node_is_not_counted() -> None:
    """The candidate's own check, for peers whose server predates the recipient check: an
    answer counts for the voter it was meant for only if that voter gave it."""
    down = "44" * 32
    voters = {LEADER: "a:1", RIVAL: "b:1", GHOST: "b:1", down: "d:1"}  # GHOST's: RIVAL answers
    asked: list[tuple[str, str]] = []

    async def ask(address: str, to: str) -> VoteResponse:
        asked.append((address, to))
        if address == "d:1":
            raise OSError("connection refused")
        return VoteResponse(term=4, granted=True, node_id=RIVAL)

    tally = await canvass(ask, voters, LEADER, term=4, timeout=1)

    assert sorted(asked) == [("b:1", RIVAL), ("b:1", GHOST), ("d:1", down)]
    assert tally.granted == {LEADER, RIVAL}  # counted twice, RIVAL's vote would make 3 of 4
    assert not tally.won
