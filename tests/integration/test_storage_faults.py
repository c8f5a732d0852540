"""Storage faults on real node processes: nothing acknowledged is ever lost.

A 3-node consortium on 127.0.0.1 with small chunks runs under a writer. One node at a time is
stopped, its ledger damaged as a failing disk would damage it (cut, flipped bit, zeroed
record, deleted chunk; newest and older chunks; followers and the leader), and restarted. It
must set the damage aside, get the lost entries (or sealed secrets) back from the leader,
count the repair and be ready again (a lost node key: set aside, joined as a new node); at
the end every acknowledged transaction is readable with a verifying receipt
on every node. The two reproductions of the storage-fault report are named tests below.
Figures (fault, position, time to repair, data lost) are printed (``-s`` shows them).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import storage_faults as sf
from tests.support.cluster import Cluster
from tests.support.harness import LocalNode
from tests.support.wait import WaitTimeoutError, wait_for
from tests.support.writer import Writer, receipt_from, verify_all

pytestmark = pytest.mark.slow

SMALL_CHUNKS = {"ledger": {"signature_interval_tx": 50, "signature_interval_ms": 20,
                           "chunk_max_bytes": 8192}}  # fmt: skip
Inject = Callable[[Path], sf.Injected]


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    made = Cluster.start(tmp_path / "c", 3, overrides=SMALL_CHUNKS)
    yield made
    made.stop()


def index_of(txid: str) -> int:
    return int(txid.split(".")[1])


def repairs(node: LocalNode) -> dict[str, float]:
    """``consortium_ledger_repairs_total`` by reason, from the node's /metrics."""
    status, body = node.get("/metrics")
    assert status == 200
    text = body.decode() if isinstance(body, bytes) else str(body)
    found = re.findall(r'^consortium_ledger_repairs_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    return {reason: float(value) for reason, value in found}


def restart_damaged(
    node: LocalNode, inject: Inject, writer: Writer
) -> tuple[sf.Injected, int, float]:
    """Stop ``node``, damage its ledger, start it: (what was done, how many writes were
    acknowledged when it stopped, seconds until it was ready again)."""
    node.stop()
    acked = writer.count()
    injected = inject(node.data_dir / "ledger")
    started = time.monotonic()
    node.start(timeout=90)  # ready: it holds every committed entry again
    return injected, acked, time.monotonic() - started


def described(node: LocalNode) -> str:
    """A node's role, term and indices for a failure message (or why it did not answer)."""
    try:
        state = node.state()
    except OSError as exc:
        return f"{node.name}: {exc}"
    keys = ("status", "role", "term", "commit_index", "last_index", "ledger_repair")
    return f"{node.name}: " + ", ".join(f"{k}={state.get(k)}" for k in keys)


def middle(ledger: Path) -> sf.Record:
    """A record in the middle of an older chunk."""
    older = sf.chunks(ledger)[len(sf.chunks(ledger)) // 2 - 1]
    found = sf.records(older)
    return found[len(found) // 2]


FAULTS: list[tuple[str, Inject, str]] = [  # name, injection, kind of damage it must be
    ("cut 100 bytes off the newest chunk", lambda d: sf.cut_tail(d, 100), "truncated"),
    ("cut inside the newest chunk", lambda d: sf.cut(sf.records(sf.chunks(d)[-1])[0]), "truncated"),
    ("cut inside an older chunk", lambda d: sf.cut(middle(d)), "truncated"),
    ("flip a bit in an older chunk", lambda d: sf.flip(middle(d)), "corrupted"),
    ("flip a bit in the newest record", lambda d: sf.flip(sf.records(sf.chunks(d)[-1])[-1]),
     "corrupted"),
    ("zero a record of an older chunk", lambda d: sf.zero(middle(d)), "corrupted"),
    ("delete an older chunk", lambda d: sf.delete_chunk(middle(d).path), "missing"),
    ("delete the newest chunk", lambda d: sf.delete_chunk(sf.chunks(d)[-1]), "missing"),
    ("delete the sealed ledger secret", lambda d: sf.delete_sealed(d, "ledger-secret"), "sealed"),
    ("delete the sealed service identity", lambda d: sf.delete_sealed(d, "service-identity"),
     "sealed"),
    # Last: a lost node key is a lost identity; the node joins as a new one (a fourth voter).
    ("delete the sealed node key", lambda d: sf.delete_sealed(d, "node-key"), "identity"),
]  # fmt: skip


def test_faults_at_many_positions_lose_nothing_acknowledged(cluster: Cluster) -> None:
    figures: list[str] = []
    started = time.monotonic()
    with Writer(cluster) as writer:
        wait_for("a few chunks of history", lambda: writer.count() >= 600, 60, interval=0.05)
        for number, (name, inject, kind) in enumerate(FAULTS):
            leader = cluster.leader()
            # Mostly followers; every third fault strikes the leader (an election follows).
            target = (
                leader if number % 3 == 2 else next(n for n in cluster.alive() if n is not leader)
            )
            if kind == "identity":  # the genesis node: it must join, not start a second network
                target = cluster.nodes[0]
            identity = target.state()["node_id"]
            injected, acked, seconds = restart_damaged(target, inject, writer)
            state = target.state()
            repair = state["ledger_repair"]
            if kind == "identity":  # set aside, joined afresh: a new node, nothing to repair
                assert state["node_id"] != identity and state["status"] == "Trusted", state
                assert list(target.data_dir.glob("retired-*-identity-lost")), "data kept aside"
            elif kind == "sealed":  # the same identity, secrets obtained again
                assert state["node_id"] == identity and repair is None, state
                assert repairs(target)[kind] == 1, (name, repairs(target))
            else:
                assert repair is not None and repair["state"] == "repaired", repair
                assert repair["kind"] == kind, (name, repair)
                assert repairs(target)[kind] == 1, (name, repairs(target))
            damaged = injected.index >= 0
            lost = [
                t for t in writer.acknowledged[:acked] if damaged and index_of(t) >= injected.index
            ]
            for txid in lost[:: max(1, len(lost) // 10)] + lost[-2:]:  # the damaged range
                receipt_from(target, cluster, txid)
            figures.append(
                f"{name:<34} {'leader' if target is leader else 'follower':<8} "
                f"{injected.path.name}@{injected.offset:<6} "
                f"index {injected.index if injected.index >= 0 else '-':<6} "
                f"repaired in {seconds:5.1f}s ({len(lost)} acknowledged entries were damaged)"
            )
            resumed = writer.count()
            try:
                wait_for("writes go on", lambda r=resumed: writer.count() > r + 30, 30)
            except WaitTimeoutError:
                raise AssertionError(
                    f"writes stopped after {name!r} ({figures[-1]}); the writer's last errors: "
                    f"{writer.errors[-3:]}; nodes: {[described(n) for n in cluster.alive()]}"
                ) from None
    cluster.wait_converged(timeout=60)
    verify_all(cluster, writer.acknowledged)  # every node, a sample of every acknowledged write
    print(f"\n{len(FAULTS)} faults, {writer.count()} acknowledged transactions, 0 lost, "
          f"{time.monotonic() - started:.0f}s:\n" + "\n".join(figures))  # fmt: skip


def test_a_follower_whose_newest_chunk_lost_its_tail_rejoins_without_an_election(
    cluster: Cluster,
) -> None:
    for n in range(20):
        assert cluster.write({f"before-{n}": n}, count=5)[0] == 200
    cluster.wait_converged()
    leader = cluster.leader()
    term = leader.state()["term"]
    follower = next(n for n in cluster.alive() if n is not leader)
    follower.stop()
    injected = sf.cut_tail(follower.data_dir / "ledger", 100)  # held committed entries
    assert cluster.write({"while-down": 1}, node=leader)[0] == 200
    started = time.monotonic()
    follower.start(timeout=30)  # ready again under the same leader
    seconds = time.monotonic() - started
    assert cluster.leader() is leader and leader.state()["term"] == term
    assert follower.state()["ledger_repair"]["state"] == "repaired"
    assert repairs(follower)["truncated"] == 1
    for key in ("before-0", "before-19", "while-down"):
        status, body = follower.get(f"/app/kv/{key}", cluster.user)
        assert status == 200, body
    print(
        f"\ncut {injected.path.name}@{injected.offset}: ready again in {seconds:.1f}s, term {term}"
    )


def test_two_faults_stop_writes_rather_than_lose_acknowledged_ones(cluster: Cluster) -> None:
    cluster.wait_converged()
    a = cluster.leader()
    b, c = (n for n in cluster.nodes if n is not a)
    c.stop()
    txids = []
    for n in range(5):
        status, body = cluster.write({f"acked-{n}": n}, node=a)
        assert status == 200, body
        txids.append(body["transactions"][0]["txid"])
    wait_for(
        "b commits them", lambda: b.state()["commit_index"] >= int(txids[-1].split(".")[1]), 10
    )
    b.stop()
    sf.cut(sf.entry(b.data_dir / "ledger", int(txids[0].split(".")[1])))
    a.stop()

    b.start(wait=False)
    c.start(wait=False)
    wait_for("b and c serve", lambda: _serves(b) and _serves(c), 30)
    repair = b.state()["ledger_repair"]
    assert repair is not None and repair["state"] == "recovering", repair
    status, body = b.get("/readyz")
    assert status == 503 and "recovering committed entries" in body["error"]["reason"], body
    deadline = time.monotonic() + 10  # 20 election timeouts: no leader may appear
    while time.monotonic() < deadline:
        roles = {b.state()["role"], c.state()["role"]}
        assert "primary" not in roles, "a log without the acknowledged entries was elected"
        time.sleep(0.1)
    status, body = cluster.write({"refused": 1}, node=c)
    assert status == 503, body  # writes stop, saying why (no primary)

    a.start(wait=False)
    cluster.wait_converged(timeout=60)
    for node in (a, b, c):
        for n in range(5):
            status, body = node.get(f"/app/kv/acked-{n}", cluster.user)
            assert status == 200 and body["value"] == n, (node.name, body)
    assert b.state()["ledger_repair"]["state"] == "repaired"


def _serves(node: LocalNode) -> bool:
    try:
        return node.get("/node/state")[0] == 200
    except OSError:
        return False


def test_an_entry_damaged_while_running_stops_the_node_and_its_restart_repairs_it(
    cluster: Cluster,
) -> None:
    """The disk changes under a running follower: the read that meets it answers 503
    ``LedgerDamaged`` naming the entry, the node stops with status 75 (Kubernetes restarts
    it), and the restart repairs the entry from the consortium."""
    txids = []
    for n in range(20):
        status, body = cluster.write({f"before-{n}": n}, count=5)
        assert status == 200, body
        txids += [t["txid"] for t in body["transactions"]]
    cluster.wait_converged()
    leader = cluster.leader()
    follower = next(n for n in cluster.alive() if n is not leader)
    txid = txids[10]
    sf.flip(sf.entry(follower.data_dir / "ledger", index_of(txid)))

    status, body = follower.get(f"/app/transaction?txid={txid}", cluster.user)
    assert status == 503, body
    assert body["error"]["code"] == "LedgerDamaged" and body["error"]["index"] == index_of(txid)
    wait_for("the damaged node to stop", lambda: not follower.alive, 60)
    assert follower.proc is not None and follower.proc.returncode == 75
    assert "is damaged on disk" in follower.log()

    follower.start(timeout=60)  # as the kubelet restarts the container
    repair = follower.state()["ledger_repair"]
    assert repair is not None and repair["state"] == "repaired" and repair["kind"] == "corrupted"
    status, body = follower.get(f"/app/transaction?txid={txid}", cluster.user)
    assert status == 200, body
    assert cluster.write({"after": 1})[0] == 200
