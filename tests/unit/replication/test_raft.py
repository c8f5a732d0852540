"""Raft over real ledgers: elections, replication, failures, votes, restarts, membership.

Every cluster test runs N ``RaftNode``s in this event loop (``raft_harness``) with small
timings; waiting is polling with a deadline. At teardown each cluster checks election safety
(at most one leader per term) and that the committed prefixes of all nodes are identical.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from consortium_node.identity.certs import ServiceIdentity
from consortium_node.ledger import EntryKind, WriteSetError, verify_receipt
from consortium_node.replication import raft as raft_module
from consortium_node.replication.messages import AppendRequest, VoteRequest
from consortium_node.replication.raft import (
    LEADER_TABLE,
    CommitTimeoutError,
    NotLeaderError,
    RaftTiming,
)

from .raft_harness import (
    TABLE,
    TIMING,
    Cluster,
    eventually,
    receipt_or_none,
    value,
    writes,
)

pytestmark = pytest.mark.usefixtures("unretrieved_errors")


# ---------------------------------------------------------------------- one node


async def test_single_node_elects_itself_at_once(cluster: Cluster) -> None:
    member = cluster.create("n0")
    started = time.monotonic()
    await cluster.start(member)
    node = member.node
    await eventually(lambda: node.role == "leader", 1.0, "the lone node leads")
    assert time.monotonic() - started < TIMING.election_timeout  # no randomised wait
    assert (node.term, node.state.voted_for) == (1, member.node_id)
    assert (node.leader_id, node.leader_address) == (member.node_id, member.address)
    # The leader's no-op entry (and a signature) commit at once, without client traffic.
    await eventually(lambda: node.commit_index >= 2, 1.0, "the leader entry commits")
    noop = member.ledger.public_get(LEADER_TABLE, "leader")
    assert noop is not None
    assert noop[0] == {"node_id": member.node_id, "term": 1}
    assert cluster.roles == [("n0", 1, "candidate"), ("n0", 1, "leader")]


async def test_single_node_submit_commits_and_gives_receipts(
    cluster: Cluster, service: ServiceIdentity
) -> None:
    [member] = await cluster.start_all(1)
    node = await cluster.wait_leader([member])
    assert node is member
    txids = await member.node.submit(writes("a", "b", "c"))
    assert [t.term for t in txids] == [1, 1, 1]
    assert [t.index for t in txids] == list(range(txids[0].index, txids[0].index + 3))
    assert member.node.commit_index >= txids[-1].index  # returned only once committed
    assert value(member, "b") == "value-b"
    assert member.ledger.get(TABLE, "c") == ("value-c", txids[2])

    public = await member.node.submit([{"public:notes": {"n": 1}}], EntryKind.PUBLIC)
    assert member.ledger.public_get("public:notes", "n") == (1, public[0])

    receipt = await eventually(
        lambda: receipt_or_none(member.ledger, txids[1]), 2.0, "a receipt for b"
    )
    assert receipt["txid"] == str(txids[1])
    assert receipt["node_id"] == member.node_id
    verified = verify_receipt(receipt, service.certificate)
    assert str(verified.txid) == str(txids[1])


async def test_concurrent_submits_are_grouped_and_all_commit(cluster: Cluster) -> None:
    [member] = await cluster.start_all(1)
    await cluster.wait_leader([member])
    results = await asyncio.gather(
        *(member.node.submit(writes(f"g{i}-0", f"g{i}-1")) for i in range(20))
    )
    indices = sorted(t.index for txids in results for t in txids)
    assert len(indices) == len(set(indices)) == 40
    assert all(value(member, f"g{i}-1") == f"value-g{i}-1" for i in range(20))
    assert member.node.commit_index >= indices[-1]


# ---------------------------------------------------------------------- three nodes


async def test_three_nodes_one_leader_replicates_to_all(cluster: Cluster) -> None:
    members = await cluster.start_all(3)
    leader = await cluster.wait_leader()
    assert [m.node.role for m in members].count("leader") == 1
    followers = [m for m in members if m is not leader]
    assert all(m.node.role == "follower" for m in followers)

    txids = []
    for batch in range(4):
        txids += await leader.node.submit(writes(*(f"k{batch}-{i}" for i in range(7))))
    await cluster.wait_synced(members)
    reference = leader.ledger
    terms = [reference.term_at(i) for i in range(1, reference.last_index + 1)]
    for member in followers:
        assert member.ledger.last_index == reference.last_index
        assert [member.ledger.term_at(i) for i in range(1, reference.last_index + 1)] == terms
        assert value(member, "k3-6") == "value-k3-6"
        assert member.ledger.get(TABLE, "k0-0") == ("value-k0-0", txids[0])

    roots = set()
    for member in members:
        ledger = member.ledger
        receipt = await eventually(
            lambda: receipt_or_none(ledger, txids[9]),  # noqa: B023 (awaited in this iteration)
            2.0,
            f"receipt on {member.name}",
        )
        roots.add((receipt["root"], receipt["signature_txid"]))
    assert len(roots) == 1  # every node proves the transaction against the same signed root

    follower = followers[0]
    with pytest.raises(NotLeaderError) as caught:
        await follower.node.submit(writes("nope"))
    assert caught.value.leader_id == leader.node_id
    assert caught.value.leader_address == leader.address
    assert leader.address in str(caught.value)
    assert follower.ledger.last_index == reference.last_index  # nothing appended


async def test_reordered_messages_still_converge(tmp_path: Path, service: ServiceIdentity) -> None:
    """Random per-message delays reorder pipelined AppendEntries; small batches force many."""
    timing = RaftTiming(
        election_timeout=0.15,
        heartbeat_interval=0.03,
        rpc_timeout=0.2,
        commit_timeout=2,
        max_batch_entries=3,
    )
    cluster = Cluster(tmp_path, service, timing)
    try:
        members = await cluster.start_all(3)
        cluster.network.jitter = 0.02
        leader = await cluster.wait_leader()
        results = await asyncio.gather(
            *(leader.node.submit(writes(*(f"r{i}-{j}" for j in range(5)))) for i in range(8))
        )
        assert sum(len(txids) for txids in results) == 40
        await cluster.wait_synced(members)
        assert all(value(m, "r7-4") == "value-r7-4" for m in members)
        cluster.check_safety()
    finally:
        await cluster.close()


# ---------------------------------------------------------------------- failures


async def test_leader_failure_new_leader_and_old_leader_catches_up(cluster: Cluster) -> None:
    members = await cluster.start_all(3)
    old = await cluster.wait_leader()
    await old.node.submit(writes("before"))
    await cluster.wait_synced(members)
    old_term = old.node.term
    others = [m for m in members if m is not old]

    cluster.network.partitioned.add(old.address)
    new = await cluster.wait_leader(others, timeout=10 * TIMING.election_timeout)
    assert new.node.term > old_term
    # Check-quorum: the isolated leader steps down by itself (no message can reach it).
    await eventually(
        lambda: (old.name, old_term, "follower") in cluster.roles,
        10 * TIMING.election_timeout,
        "the isolated leader steps down",
    )
    with pytest.raises(NotLeaderError):
        await old.node.submit(writes("refused"))

    txids = await new.node.submit(writes("after-1", "after-2"))
    assert new.node.commit_index >= txids[-1].index
    assert value(old, "after-1") is None

    cluster.network.partitioned.clear()
    final = await cluster.wait_leader(members)
    await final.node.submit(writes("healed"))
    await cluster.wait_synced(members)
    last = final.ledger.last_index
    terms = [final.ledger.term_at(i) for i in range(1, last + 1)]
    assert [old.ledger.term_at(i) for i in range(1, last + 1)] == terms
    assert value(old, "after-2") == "value-after-2"
    assert value(old, "healed") == "value-healed"


async def test_conflicting_uncommitted_entries_are_truncated(cluster: Cluster) -> None:
    members = await cluster.start_all(3)
    old = await cluster.wait_leader()
    await old.node.submit(writes("base"))
    await cluster.wait_synced(members)
    committed = old.ledger.commit_index
    old_term = old.node.term
    others = [m for m in members if m is not old]

    cluster.network.partitioned.add(old.address)
    doomed = asyncio.create_task(old.node.submit(writes("doomed-1", "doomed-2", "doomed-3")))
    await eventually(lambda: old.ledger.last_index >= committed + 3, 1.0, "old leader appends")
    new = await cluster.wait_leader(others, timeout=10 * TIMING.election_timeout)
    with pytest.raises((NotLeaderError, CommitTimeoutError)):
        await doomed  # appended, never committed: step-down (or timeout) fails the write
    assert old.ledger.commit_index == committed
    conflicting = range(committed + 1, old.ledger.last_index + 1)
    assert all(old.ledger.term_at(i) == old_term for i in conflicting)

    for batch in range(10):  # the new leader commits different entries at those indices
        if new.ledger.commit_index >= conflicting[-1]:
            break
        await new.node.submit(writes(f"new-{batch}"))
    assert new.ledger.commit_index >= conflicting[-1]
    assert all(new.ledger.term_at(i) > old_term for i in conflicting)

    cluster.network.partitioned.clear()
    final = await cluster.wait_leader(members)
    await final.node.submit(writes("healed"))
    await cluster.wait_synced(members)
    # The old leader's suffix was replaced by the new leader's entries.
    for i in conflicting:
        assert old.ledger.term_at(i) == new.ledger.term_at(i) != old_term
    assert old.ledger.raw_entries(1, old.ledger.commit_index) == final.ledger.raw_entries(
        1, final.ledger.commit_index
    )
    for member in members:
        assert value(member, "doomed-1") is None
        assert value(member, "new-0") == "value-new-0"


async def test_no_quorum_never_commits(cluster: Cluster) -> None:
    members = await cluster.start_all(3)
    leader = await cluster.wait_leader()
    await leader.node.submit(writes("a"))
    await cluster.wait_synced(members)
    before = leader.node.commit_index
    for member in members:
        if member is not leader:
            await cluster.stop(member)

    with pytest.raises((CommitTimeoutError, NotLeaderError)) as caught:
        await leader.node.submit(writes("lost-1", "lost-2"))
    if isinstance(caught.value, CommitTimeoutError):
        assert caught.value.txids
        assert all(t.index > before for t in caught.value.txids)
    assert leader.ledger.last_index > before  # it appended the writes...
    assert leader.node.commit_index == before  # ...and committed nothing
    await eventually(lambda: leader.node.role != "leader", 2.0, "check-quorum step-down")
    with pytest.raises(NotLeaderError):
        await leader.node.submit(writes("fails-fast"))
    assert leader.node.commit_index == before
    assert value(leader, "lost-1") is None


async def test_follower_cut_off_from_leader_cannot_disrupt_it(cluster: Cluster) -> None:
    """The lonely follower pre-votes; the others heard from the leader and refuse it, so it
    never campaigns, its term never rises, and the healed link does not depose the leader."""
    members = await cluster.start_all(3)
    leader = await cluster.wait_leader()
    lonely, other = (m for m in members if m is not leader)
    term = leader.node.term
    votes = cluster.network.count("vote", lonely, other)
    pre_votes = cluster.network.count("prevote", lonely, other)
    cluster.network.dropped.add((leader.address, lonely.address))

    await eventually(
        lambda: cluster.network.count("prevote", lonely, other) >= pre_votes + 2,
        3.0,
        "two pre-vote rounds",
    )
    assert cluster.network.count("vote", lonely, other) == votes  # never a real election
    assert (lonely.node.term, lonely.node.role) == (term, "follower")
    assert (leader.node.role, leader.node.term) == ("leader", term)
    assert (other.node.term, other.node.leader_id) == (term, leader.node_id)
    txids = await leader.node.submit(writes("still-leading"))
    assert txids[0].term == term
    assert leader.node.commit_index >= txids[0].index  # committed with the other follower

    cluster.network.dropped.clear()
    assert await cluster.wait_leader(members) is leader
    await leader.node.submit(writes("healed"))
    await cluster.wait_synced(members)
    assert value(lonely, "still-leading") == "value-still-leading"
    assert {m.node.term for m in members} == {term}


# ---------------------------------------------------------------------- votes


async def test_one_vote_per_term(cluster: Cluster) -> None:
    member = cluster.create("voter")  # not started: no timers, only the handlers
    node = member.node
    a, b = "aa" * 32, "bb" * 32

    first = await node.handle_vote(VoteRequest(1, a, 0, 0))
    assert (first.term, first.granted, first.node_id) == (1, True, member.node_id)
    second = await node.handle_vote(VoteRequest(1, b, 0, 0))
    assert (second.term, second.granted) == (1, False)  # same term, another candidate
    again = await node.handle_vote(VoteRequest(1, a, 0, 0))
    assert again.granted  # a retransmitted request gets the same answer
    assert (node.state.current_term, node.state.voted_for) == (1, a)
    reloaded = type(node.state)(member.state_path)
    assert (reloaded.current_term, reloaded.voted_for) == (1, a)  # durable before answering

    later = await node.handle_vote(VoteRequest(2, b, 0, 0))
    assert (later.term, later.granted) == (2, True)  # a new term frees the vote
    stale = await node.handle_vote(VoteRequest(1, a, 0, 0))
    assert (stale.term, stale.granted) == (2, False)
    assert node.state.voted_for == b


@pytest.mark.parametrize(
    ("last_index", "last_term", "granted"),
    [
        (9, 1, False),  # longer log, but an older last term
        (2, 2, False),  # same last term, shorter log
        (0, 0, False),  # empty log
        (3, 2, True),  # identical
        (7, 2, True),  # same last term, longer
        (1, 3, True),  # newer last term, shorter
    ],
)
async def test_vote_only_for_an_up_to_date_log(
    cluster: Cluster, last_index: int, last_term: int, granted: bool
) -> None:
    member = cluster.create("voter")
    node = member.node
    node.state.save(2, None)
    member.ledger.term = 2
    member.ledger.append(writes("x", "y", "z"), EntryKind.PRIVATE)  # log: 2.1 2.2 2.3
    member.ledger.sync()

    response = await node.handle_vote(VoteRequest(3, "cc" * 32, last_index, last_term))
    assert response.granted is granted
    assert response.term == node.term == 3  # the higher term is adopted either way
    assert node.state.voted_for == ("cc" * 32 if granted else None)


async def test_leader_stickiness(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    fake_time = SimpleNamespace(monotonic=lambda: now[0], perf_counter=time.perf_counter)
    monkeypatch.setattr(raft_module, "time", fake_time)
    member = cluster.create("voter")
    node = member.node
    leader, rival = "11" * 32, "22" * 32

    assert (await node.handle_append(AppendRequest(1, leader, "leader:1", 0, 0, (), 0))).success
    assert (node.leader_id, node.leader_address) == (leader, "leader:1")
    now[0] += TIMING.election_timeout * 0.9
    # The leader itself may still ask (e.g. after a restart): stickiness is against others.
    assert (await node.handle_vote(VoteRequest(2, leader, 0, 0))).granted
    assert (await node.handle_append(AppendRequest(2, leader, "leader:1", 0, 0, (), 0))).success

    now[0] += TIMING.election_timeout * 0.9
    refused = await node.handle_vote(VoteRequest(5, rival, 10, 5))
    assert (refused.granted, refused.term) == (False, 2)
    assert (node.term, node.state.voted_for) == (2, leader)  # the term is not even raised
    assert node.leader_id == leader

    now[0] += TIMING.election_timeout * 0.2  # the leader has been silent for a timeout
    granted = await node.handle_vote(VoteRequest(5, rival, 10, 5))
    assert (granted.granted, granted.term) == (True, 5)
    assert (node.term, node.state.voted_for) == (5, rival)
    assert node.leader_id is None


async def test_live_cluster_refuses_a_disruptive_candidate(cluster: Cluster) -> None:
    members = await cluster.start_all(3)
    leader = await cluster.wait_leader()
    follower, rival = (m for m in members if m is not leader)
    term = leader.node.term
    last = leader.ledger.last_index
    request = VoteRequest(term + 5, rival.node_id, last + 100, term + 4)

    for member in (
        follower,
        leader,
    ):  # the follower just heard from the leader; a leader never votes
        response = await member.node.handle_vote(request)
        assert not response.granted
        assert member.node.term == term
    assert cluster.stable_leader(members) is leader


# ---------------------------------------------------------------------- persistence


async def test_restarted_follower_keeps_term_and_vote_and_catches_up(cluster: Cluster) -> None:
    members = await cluster.start_all(3)
    leader = await cluster.wait_leader()
    await leader.node.submit(writes("a", "b"))
    await cluster.wait_synced(members)
    # The leader got a vote from at least one follower in its term.
    voter = next(m for m in members if m is not leader and m.node.state.voted_for == leader.node_id)
    term, last_index = voter.node.term, voter.ledger.last_index
    await cluster.stop(voter)

    missed = await leader.node.submit(writes("missed-1", "missed-2"))  # 2 of 3 commit
    assert leader.node.commit_index >= missed[-1].index

    cluster.reopen(voter)
    assert (voter.node.term, voter.node.state.voted_for) == (term, leader.node_id)
    assert voter.ledger.last_index == last_index  # replayed from disk...
    assert voter.ledger.commit_index == 0  # ...and committed only when the leader says so
    other = next(m for m in members if m is not leader and m is not voter)
    refused = await voter.node.handle_vote(VoteRequest(term, other.node_id, 10**6, term))
    assert not refused.granted  # the vote cast before the restart still binds

    await cluster.start(voter)
    await cluster.wait_synced(members)
    assert voter.ledger.get(TABLE, "missed-2") == ("value-missed-2", missed[1])
    assert value(voter, "a") == "value-a"


# ---------------------------------------------------------------------- membership


async def test_membership_changes_follow_the_configuration(cluster: Cluster) -> None:
    members = await cluster.start_all(3)
    leader = await cluster.wait_leader()
    await leader.node.submit(writes("a"))
    newcomer = cluster.create("n3", voter=False)
    follower = next(m for m in members if m is not leader)

    sent = cluster.network.count("append", leader, follower)
    await eventually(lambda: cluster.network.count("append", leader, follower) >= sent + 5)
    assert cluster.network.count("append", leader, newcomer) == 0  # not a voter: not contacted

    # A real joiner learns it is a voter from the leader's entries, which also reset its
    # election timer; with the shared dict, start it as it becomes a voter (timer fresh).
    cluster.voters[newcomer.node_id] = newcomer.address
    await cluster.start(newcomer)
    everyone = [*members, newcomer]
    await cluster.wait_synced(everyone)
    assert newcomer.node.leader_id == leader.node_id
    txids = await leader.node.submit(writes("with-four"))
    await cluster.wait_synced(everyone)
    assert newcomer.ledger.get(TABLE, "with-four") == ("value-with-four", txids[0])

    removed = follower
    remaining = [m for m in everyone if m is not removed]
    del cluster.voters[removed.node_id]
    sent_removed = cluster.network.count("append", leader, removed)
    votes_removed = sum(cluster.network.count("vote", removed, m) for m in remaining)
    sent_newcomer = cluster.network.count("append", leader, newcomer)
    txids = await leader.node.submit(writes("with-three"))
    await eventually(
        lambda: cluster.network.count("append", leader, newcomer) >= sent_newcomer + 10,
        2.0,
        "ten more rounds of replication to the remaining followers",
    )
    assert cluster.network.count("append", leader, removed) == sent_removed
    await cluster.wait_synced(remaining)
    assert all(value(m, "with-three") == "value-with-three" for m in remaining)
    assert removed.ledger.last_index < leader.ledger.last_index
    assert value(removed, "with-three") is None
    # A removed node stays quiet: no election although it no longer hears from the leader.
    assert sum(cluster.network.count("vote", removed, m) for m in remaining) == votes_removed
    assert removed.node.role == "follower"
    assert leader.node.role == "leader"


# ---------------------------------------------------------------------- robustness


async def test_invalid_write_set_fails_only_its_own_submission(cluster: Cluster) -> None:
    [member] = await cluster.start_all(1)
    await cluster.wait_leader([member])
    bad = asyncio.create_task(member.node.submit([{"public:x": {"k": 1}}]))  # public in PRIVATE
    good: asyncio.Task[Any] | None = None
    try:
        await asyncio.wait({bad}, timeout=0.5)
        assert bad.done(), "the invalid submission neither failed nor committed within 0.5 s"
        assert isinstance(bad.exception(), WriteSetError)
        good = asyncio.create_task(member.node.submit(writes("after")))
        await asyncio.wait({good}, timeout=0.5)
        assert good.done(), "a valid submission after an invalid one did not commit in 0.5 s"
        assert value(member, "after") == "value-after"
    finally:
        for task in (bad, good):
            if task is not None and not task.done():
                task.cancel()


async def test_unreachable_peer_is_retried_at_a_bounded_rate(cluster: Cluster) -> None:
    members = await cluster.start_all(3)
    leader = await cluster.wait_leader()
    down, up = (m for m in members if m is not leader)
    cluster.network.partitioned.add(down.address)
    await leader.node.submit(writes("a", "b"))  # `down` is now behind the leader
    to_down = cluster.network.count("append", leader, down)
    to_up = cluster.network.count("append", leader, up)
    await eventually(
        lambda: cluster.network.count("append", leader, up) >= to_up + 10, 2.0, "10 rounds"
    )
    attempts = cluster.network.count("append", leader, down) - to_down
    assert attempts <= 30, f"{attempts} AppendEntries to an unreachable peer in 10 rounds"


async def test_stop_leaves_no_task_behind(cluster: Cluster) -> None:
    members = await cluster.start_all(3)
    leader = await cluster.wait_leader()
    await leader.node.submit(writes("a"))
    await cluster.wait_synced(members)
    for member in members:
        await cluster.stop(member)
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not left, f"{len(left)} tasks still pending after stop(): {left}"


async def test_a_long_commit_is_applied_in_slices_between_which_the_loop_runs(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catching up on many entries must not hold the event loop (heartbeats, /healthz):
    ``_commit_to`` applies steps of ``COMMIT_STEP`` entries for at most ``COMMIT_TURN``
    seconds per turn and schedules the rest, in one chain of turns however often it is told
    to commit (each AppendEntries does) meanwhile."""
    monkeypatch.setattr(raft_module, "COMMIT_STEP", 10)
    monkeypatch.setattr(raft_module, "COMMIT_TURN", 0.0)  # one step per turn
    [member] = await cluster.start_all(1)
    await cluster.wait_leader([member])
    await member.node.submit(writes(*(f"s{i}" for i in range(5))))
    node, ledger = member.node, member.ledger
    ledger.append([w for i in range(45) for w in writes(f"bulk{i}")], EntryKind.PRIVATE)
    ledger.sync()
    start, target = ledger.commit_index, ledger.durable_index
    seen: list[int] = []
    node._commit_to(target)
    assert ledger.commit_index == start + 10  # one step now
    node._commit_to(target)  # (as a heartbeat would) a turn is scheduled: no second chain
    assert ledger.commit_index == start + 10
    while ledger.commit_index < target:
        seen.append(ledger.commit_index)
        node._commit_to(target)
        await asyncio.sleep(0)  # the loop runs between steps
        assert ledger.commit_index - seen[-1] <= 10  # one step per turn, not one per call
    assert len(seen) >= (target - start) // 10 - 1
    assert value(member, "bulk44") == "value-bulk44"
