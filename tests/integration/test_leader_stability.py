"""Leader stability under load: real node processes on loopback.

A restarted follower or a joiner that campaigned while the leader could not reach it yet would
raise the term again and again and depose the leader once reachable, pausing writes each time.
With pre-vote and leader stickiness (``replication/election.py``) it cannot: these tests
restart a follower and add a joiner under a steady client load, both reachable at once and —
as after a pod restart on Kubernetes — at an address the leader learns seconds late
(``tests/support/stability.py``), and assert that the leader and its term stay and that no
write waited longer than two election timeouts. A leader that really dies is still replaced.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster
from tests.support.stability import (
    LoadClient,
    PeerHosts,
    add_joiner,
    election_timeout,
    observe,
    restart_follower,
    start_cluster,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow

Start = Callable[[], tuple[Cluster, PeerHosts]]


@pytest.fixture
def named_cluster(tmp_path: Path) -> Iterator[Start]:
    made: list[Cluster] = []

    def start() -> tuple[Cluster, PeerHosts]:
        cluster, hosts = start_cluster(tmp_path / f"c{len(made)}", 3)
        made.append(cluster)
        return cluster, hosts

    yield start
    for cluster in made:
        cluster.stop()


def _late(cluster: Cluster) -> float:
    """How long a moved node stays unpublished: several randomised election timeouts."""
    return 4 * election_timeout(cluster.nodes[0])


@pytest.mark.parametrize("moved", [False, True], ids=["same address", "new address learnt late"])
def test_follower_restart_under_load_keeps_leader_term_and_writes(
    named_cluster: Start, moved: bool
) -> None:
    cluster, hosts = named_cluster()
    leader = cluster.leader()
    timeout = election_timeout(leader)
    with LoadClient(cluster, leader) as client:
        client.wait_acks(30)
        late = _late(cluster) if moved else None
        result = observe(cluster, client, "restart", restart_follower(cluster, client, hosts, late))
    assert result.terms == 0, result.line()
    assert result.same_leader, result.line()
    assert cluster.leader() is leader
    assert result.max_gap < 2 * timeout, result.line()
    assert not [e for e in client.errors if "NotLeader" in e], client.errors[:5]


@pytest.mark.parametrize("late", [False, True], ids=["reachable", "published late"])
def test_joiner_under_load_keeps_leader_term_and_writes(named_cluster: Start, late: bool) -> None:
    cluster, hosts = named_cluster()
    leader = cluster.leader()
    timeout = election_timeout(leader)
    with LoadClient(cluster, leader) as client:
        client.wait_acks(30)
        result = observe(
            cluster, client, "join", add_joiner(cluster, hosts, _late(cluster) if late else None)
        )
    assert result.terms == 0, result.line()
    assert result.same_leader, result.line()
    assert len(list(cluster.alive())) == 4
    assert result.max_gap < 2 * timeout, result.line()


def test_killed_leader_is_still_replaced_under_load(named_cluster: Start) -> None:
    cluster, _ = named_cluster()
    old = cluster.leader()
    term = old.state()["term"]
    survivor = next(n for n in cluster.alive() if n is not old)
    with LoadClient(cluster, survivor) as client:  # a follower: it forwards to the leader
        client.wait_acks(30)
        old.kill()
        killed = time.monotonic()
        new = cluster.leader(timeout=20 * election_timeout(survivor))
        wait_for(
            "a write after the kill",
            lambda: client.acks and client.acks[-1] > killed,
            30,
            interval=0.05,
        )
        recovered = client.acks[-1] - killed
    assert new is not old
    assert new.state()["term"] > term
    assert recovered < 10 * election_timeout(survivor), f"writes resumed after {recovered:.1f}s"
