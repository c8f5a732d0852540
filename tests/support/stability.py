"""Leader stability under load: what a follower restart or a join costs a writing client.

A restart or a join must not depose a healthy leader (a restarted follower that campaigns
raises the term again and again, and writes pause each time). The integration test
(`tests/integration/test_leader_stability.py`) and the benchmark (`bench/leader_stability.py`)
measure that the same way, with the code here, so the test's bounds and the bench's figures mean
the same thing:

* a ``LoadClient`` thread writes in a closed loop through one node that is never killed and
  records the monotonic time of every acknowledgement;
* ``observe`` runs a disruption (kill and restart a follower, add a joiner), waits until the
  cluster has converged again and then for an observation window (two full randomised election
  timeouts: a node that is going to campaign does so within one), and reports the terms the
  cluster went through, whether the leader stayed, and the longest time without an
  acknowledgement from the disruption to the end of the window.

On loopback a restarted node is reachable again the moment it listens, so the leader reaches it
before its election timer fires, and even a node without pre-vote would not campaign. On
Kubernetes a pod comes back at a new IP that its peers learn only later (on the local cluster
through the operator's peer hosts ConfigMap and kubelet's volume refresh; aiohttp also caches a
resolved name for 10 s): meanwhile the node hears nobody but reaches everyone, and that is when
a node without pre-vote campaigns. ``start_cluster`` reproduces that: every node is announced
as ``<name>.stability.test:<port>``, resolved through one ``peer_hosts_file`` (``PeerHosts``),
and ``restart_follower(..., late=...)`` brings the node back on another loopback IP that is
published only ``late`` seconds after it serves (``add_joiner(..., late=...)`` likewise for a
new node).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consortium_node.common.timeutil import parse_duration
from tests.support.cluster import Cluster
from tests.support.harness import LocalNode, make_identity, make_platform
from tests.support.wait import wait_for

DOMAIN = "stability.test"
IPS = ("127.0.0.1", "127.0.0.2")  # where a node may listen: its "pod IPs" (all of 127/8 is lo)
NOWHERE = "127.0.0.3"  # a stale entry: nothing listens there, connections are refused


def election_timeout(node: LocalNode) -> float:
    """The node's configured (minimum) election timeout in seconds."""
    return parse_duration(node.config()["raft"]["election_timeout"]).total_seconds()


@dataclass
class LoadClient:
    """A client thread writing one small transaction batch after another through ``target``."""

    cluster: Cluster
    target: LocalNode
    batch: int = 3
    acks: list[float] = field(default_factory=list)  # monotonic time of each acknowledgement
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LoadClient:
        self._thread = threading.Thread(target=self._run, name="load-client", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            body = {"transactions": [{"writes": {f"load-{i}-{j}": i}} for j in range(self.batch)]}
            try:
                status, answer = self.target.post_json("/app/transactions", body, self.cluster.user)
            except OSError as exc:
                status, answer = 0, exc
            if status == 200:
                self.acks.append(time.monotonic())
            else:
                self.errors.append(f"{status} {answer}")
                time.sleep(0.01)  # a refusal comes back at once: do not spin on it

    def wait_acks(self, count: int, timeout: float = 30) -> None:
        """Wait until ``count`` more writes than now have been acknowledged."""
        goal = len(self.acks) + count
        wait_for(
            f"{count} acknowledged writes", lambda: len(self.acks) >= goal, timeout, interval=0.05
        )

    def max_gap(self, since: float, until: float) -> float:
        """The longest time in [since, until] without an acknowledgement (seconds)."""
        inside = [t for t in self.acks if since <= t <= until]
        points = [since, *inside, until]
        return max(b - a for a, b in itertools.pairwise(points))


@dataclass(frozen=True)
class Disruption:
    """What one disruption cost: terms, leadership, and the client's longest wait."""

    what: str
    terms: int  # elections the cluster went through (highest term after - leader's term before)
    same_leader: bool
    max_gap: float  # seconds without an acknowledged write, from the disruption to the end
    seconds: float  # from the disruption until the cluster had converged again
    writes: int  # acknowledged during the whole observation

    def line(self) -> str:
        return (
            f"{self.what}: terms +{self.terms}, leader {'kept' if self.same_leader else 'CHANGED'},"
            f" longest write pause {self.max_gap * 1000:.0f} ms, converged after"
            f" {self.seconds:.1f} s, {self.writes} writes acknowledged"
        )


def _states(cluster: Cluster) -> list[dict[str, Any]]:
    states = []
    for node in cluster.alive():
        try:
            states.append(node.state())
        except (OSError, AssertionError):
            continue  # starting or just killed: not part of the picture
    return states


def observe(
    cluster: Cluster, client: LoadClient, what: str, action: Callable[[], None]
) -> Disruption:
    """Run ``action`` under ``client``'s load and measure what it cost (see the module doc)."""
    leader = cluster.leader()
    term = leader.state()["term"]
    window = 2 * 2 * election_timeout(leader)  # two full randomised timeouts, [t, 2t) each
    writes = len(client.acks)
    started = time.monotonic()
    action()
    cluster.wait_converged(60)
    converged = time.monotonic()
    wait_for(
        "a write acknowledged after the observation window",
        lambda: client.acks and client.acks[-1] >= converged + window,
        window + 30,
        interval=0.05,
    )
    ended = client.acks[-1]
    states = _states(cluster)
    leaders = {s["node_id"] for s in states if s["role"] == "primary"}
    return Disruption(
        what=what,
        terms=max(s["term"] for s in states) - term,
        same_leader=leaders == {leader.state()["node_id"]},
        max_gap=client.max_gap(started, ended),
        seconds=converged - started,
        writes=len(client.acks) - writes,
    )


class PeerHosts:
    """The peer hosts file every node reads (``peer_hosts_file``): name → IP, as the operator
    publishes it on a cluster without DNS (``server/hosts.py``)."""

    def __init__(self, path: Path) -> None:
        self.path, self.names = path, dict[str, str]()

    def publish(self, name: str, ip: str) -> None:
        self.names[name] = ip
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"names": self.names}))
        os.replace(temporary, self.path)  # nodes never read half a file


@dataclass
class NamedNode(LocalNode):
    """A node announced under a DNS name that its peers resolve through ``hosts``."""

    hosts: PeerHosts | None = None
    host: str = IPS[0]

    @property
    def dns_name(self) -> str:
        return f"{self.name}.{DOMAIN}"

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def config(self) -> dict[str, Any]:
        config = super().config()
        assert self.hosts is not None
        config["listen"]["host"] = self.host
        config["address"] = f"{self.dns_name}:{self.port}"
        config["subject_alt_names"] = list(IPS)
        config["peer_hosts_file"] = str(self.hosts.path)
        return config


def add_node(cluster: Cluster, hosts: PeerHosts, published: bool = True) -> NamedNode:
    """Start the next node (genesis if it is the first, else an attested joiner).

    Unless ``published``, its name resolves to nowhere: the others cannot reach it until the
    caller publishes it; it is then started without waiting until it is ready.
    """
    first = cluster.nodes[0] if cluster.nodes else None
    genesis_members = [m for m in (cluster.member, cluster.user) if m is not None]
    if first is None:
        key, cert = make_platform(cluster.workdir / "platform")
    else:
        key, cert = first.platform_key, first.platform_cert
    node = NamedNode(
        cluster.workdir,
        f"node-{len(cluster.nodes)}",
        [] if first else genesis_members,
        key,
        cert,
        join_from=cluster.leader() if first else None,
        hosts=hosts,
    )
    hosts.publish(node.dns_name, node.host if published else NOWHERE)
    cluster.nodes.append(node)  # first, so that cluster.stop() stops it whatever happens
    node.start(wait=published)
    return node


def start_cluster(workdir: Path, size: int) -> tuple[Cluster, PeerHosts]:
    """A consortium of ``size`` named nodes, converged."""
    cluster = Cluster(
        workdir,
        member=make_identity(workdir / "ids", "member0", "governor"),
        user=make_identity(workdir / "ids", "user0", "user"),
    )
    hosts = PeerHosts(workdir / "peer-hosts.json")
    try:
        for _ in range(size):
            add_node(cluster, hosts)
        cluster.wait_converged()
    except BaseException:
        cluster.stop()
        raise
    return cluster, hosts


def _published_late(node: NamedNode, hosts: PeerHosts, late: float) -> None:
    """Let ``node`` serve ``late`` seconds unreachable by its peers, then publish where it is."""
    wait_for(f"{node.name} serving", lambda: node.get("/healthz")[0] == 200, 30, interval=0.05)
    started = time.monotonic()
    wait_for(
        "the stale name to expire",
        lambda: time.monotonic() >= started + late,
        late + 1,
        interval=0.05,
    )
    hosts.publish(node.dns_name, node.host)
    node.wait_ready(60)  # the peers' resolvers may keep the stale IP a while longer


def restart_follower(
    cluster: Cluster, client: LoadClient, hosts: PeerHosts, late: float | None = None
) -> Callable[[], None]:
    """SIGKILL a follower (not the client's node) and start it again with its term, vote and
    log; with ``late``, at its other IP, published ``late`` seconds after it serves."""

    def action() -> None:
        leader = cluster.leader()
        follower = next(n for n in cluster.alive() if n not in (leader, client.target))
        assert isinstance(follower, NamedNode)
        follower.kill()
        if late is None:
            follower.start()
            return
        follower.host = IPS[1] if follower.host == IPS[0] else IPS[0]
        follower.start(wait=False)
        _published_late(follower, hosts, late)

    return action


def add_joiner(cluster: Cluster, hosts: PeerHosts, late: float | None = None) -> Callable[[], None]:
    """A new node joins through the attested join and catches up from an empty log; with
    ``late``, its name is published only ``late`` seconds after it serves."""

    def action() -> None:
        node = add_node(cluster, hosts, published=late is None)
        if late is not None:
            _published_late(node, hosts, late)

    return action
