"""Protocol-aware recovery: a node whose ledger lost acknowledged, committed entries to a
storage fault gets them back from the leader, and never helps elect a log without them.

The double fault of the storage-fault report, on the in-process cluster: with one node down
and another's committed entries cut, the two nodes left do not elect a leader that lacks the
entries; once the node that holds them is back, every node has them again. (A follower whose
newest chunk lost its tail, repaired by the same leader: ``test_raft_election``.)
"""

from __future__ import annotations

import asyncio
import time

from tests.support import storage_faults as sf

from .raft_harness import TIMING, Cluster, Member, eventually, value, writes


def cut_tail(member: Member, nbytes: int) -> None:
    sf.cut_tail(member.ledger_dir, nbytes)


def cut_inside(member: Member, index: int) -> None:
    """Cut the member's chunk in the middle of the record of entry ``index``."""
    sf.cut(sf.entry(member.ledger_dir, index))


async def restart(cluster: Cluster, member: Member) -> None:
    cluster.reopen(member)
    await cluster.start(member)


async def test_a_log_without_committed_entries_is_never_elected(cluster: Cluster) -> None:
    members = await cluster.start_all(3)
    a = await cluster.wait_leader()  # it keeps the entries; it is the one stopped last
    b, c = (m for m in members if m is not a)
    await cluster.wait_synced(members)
    await cluster.stop(c)
    txids = [(await a.node.submit(writes(f"acked-{n}")))[-1] for n in range(5)]
    await eventually(lambda: b.ledger.commit_index >= txids[-1].index, 2.0, "b commits")
    await cluster.stop(b)
    cut_inside(b, txids[0].index)  # the first of the five, and everything after it
    await cluster.stop(a)

    await restart(cluster, b)
    await restart(cluster, c)
    assert b.ledger.missing_committed is not None and b.ledger.unvouched is not None
    assert c.ledger.last_index < txids[0].index
    deadline = time.monotonic() + 15 * TIMING.election_timeout  # many election timeouts
    while time.monotonic() < deadline:  # an observation window: no leader may appear
        assert b.node.role != "leader" and c.node.role != "leader", "a log lacking them led"
        await asyncio.sleep(TIMING.heartbeat_interval)
    # A write refused there says why no leader is elected: b lost them, and c lacks them
    # (b asked c for them: nobody reachable holds them).
    lost = f"node {b.node_id[:8]} lost committed entries {txids[0].index}.."
    assert lost in str(c.node.not_leader())
    own = str(b.node.not_leader())
    assert "this node cannot lead" in own and "lost (up to" in own
    assert cluster.network.count("fetch", b, c) > 0
    stranded = b.node.unfetchable()  # what makes a node install a snapshot, if one covers it
    assert stranded is not None and stranded[0] >= txids[-1].index, stranded
    assert stranded[1] >= 5 * TIMING.election_timeout, stranded

    await restart(cluster, a)
    await cluster.wait_leader([a, b, c], timeout=20 * TIMING.election_timeout)
    await cluster.wait_synced([a, b, c], timeout=20 * TIMING.election_timeout)
    for member in (a, b, c):
        for n in range(5):
            assert value(member, f"acked-{n}") == f"value-acked-{n}"
    assert b.ledger.missing_committed is None
    assert b.node.unfetchable() is None
