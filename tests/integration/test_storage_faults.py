"""Storage faults on real node processes: nothing acknowledged is ever lost.

A 3-node consortium on 127.0.0.1 with small chunks runs under a writer. One node at a time is
stopped, its ledger damaged as a failing disk would damage it (cut, flipped bit, zeroed
record, deleted chunk; newest and older chunks; followers and the leader), and restarted. It
must set the damage aside, get the lost entries (or sealed secrets) back from the consortium,
count the repair and be a voter and ready again (a lost node key: set aside, joined as a new
node); at the end every acknowledged transaction is readable, with the writes acknowledged
and a verifying receipt, on every node. The two reproductions of the storage-fault report
are named tests below, and a repair from a follower when the leader started from a snapshot
after the damaged entries. Figures (fault, position, time to repair, data lost) are printed
(``-s`` shows them).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from consortium_node.identity.certs import load_certificate
from consortium_node.ledger.receipt import verify_receipt
from tests.support import storage_faults as sf
from tests.support.cluster import Cluster
from tests.support.harness import LocalNode
from tests.support.wait import WaitTimeoutError, wait_for
from tests.support.writer import Writer, receipt_from, verify_every

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


def listed_status(cluster: Cluster, node_id: str) -> str | None:
    """The status of ``node_id`` in the leader's trusted-node list (Trusted: a Raft voter)."""
    status, listed = cluster.leader().get("/node/trusted-list?format=json")
    assert status == 200, listed
    return next((n["status"] for n in listed["nodes"] if n["node_id"] == node_id), None)


def voter(cluster: Cluster, node: LocalNode) -> bool:
    return listed_status(cluster, node.state()["node_id"]) == "Trusted"


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
                # Its old identity can never answer again: the primary retires it.
                wait_for(
                    "the old identity retired",
                    lambda old=identity: listed_status(cluster, old) == "Retired",
                    60,
                )
            elif kind == "sealed":  # the same identity, secrets obtained again
                assert state["node_id"] == identity and repair is None, state
                assert repairs(target)[kind] == 1, (name, repairs(target))
            else:
                assert repair is not None and repair["state"] == "repaired", repair
                assert repair["kind"] == kind, (name, repair)
                assert repairs(target)[kind] == 1, (name, repairs(target))
            wait_for(f"{target.name} a voter again", lambda n=target: voter(cluster, n), 30)
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
    checking = time.monotonic()
    reads = verify_every(cluster, writer.written)  # every acknowledged write, on every node
    print(f"\n{len(FAULTS)} faults, {writer.count()} acknowledged transactions, 0 lost "
          f"({reads} reads and receipts checked in {time.monotonic() - checking:.0f}s), "
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


SNAPSHOTS = {"ledger": {**SMALL_CHUNKS["ledger"], "snapshot_interval": 200}}


def _lead(cluster: Cluster, node: LocalNode) -> None:
    """Make ``node`` the leader: restart each other leader until ``node`` wins an election."""
    for _ in range(12):
        leader = cluster.leader(timeout=30)
        if leader is node:
            return
        leader.stop()
        wait_for("another leader", lambda old=leader: cluster.leader(timeout=30) is not old, 30)
        leader.start(timeout=60)
    raise AssertionError(f"{node.name} never won an election in 12 tries")


def _a_joiner_leads_from_a_snapshot(
    cluster: Cluster, prefix: str
) -> tuple[list[str], LocalNode, int]:
    """Write past a snapshot, add a node that starts from it and make it the leader: the
    transactions written, the joiner, and the snapshot's index (it holds nothing before)."""
    txids = []
    for n in range(12):
        status, body = cluster.write({f"{prefix}-{n}": n}, count=30)
        assert status == 200, body
        txids += [t["txid"] for t in body["transactions"]]
    snapshots = cluster.nodes[0].data_dir / "ledger" / "snapshots"
    wait_for("a committed snapshot", lambda: list(snapshots.glob("*.receipt")), 30)
    joiner = cluster.add(2, SNAPSHOTS)  # starts from the newest snapshot
    _lead(cluster, joiner)
    status, body = joiner.get(f"/app/receipt?txid={txids[0]}", cluster.user)
    assert status == 404 and body["error"]["code"] == "HistoryNotHeld", body
    return txids, joiner, body["error"]["held_from"] - 1


def test_entries_before_the_leaders_snapshot_are_repaired_from_a_node_that_holds_them(
    tmp_path: Path,
) -> None:
    """The leader started from a snapshot, so it cannot send entries before it: a node whose
    copy of them is damaged gets them from another node that holds them (``fetch``)."""
    cluster = Cluster.start(tmp_path / "c", 2, overrides=SNAPSHOTS)
    try:
        txids, joiner, base = _a_joiner_leads_from_a_snapshot(cluster, "early")
        term = joiner.state()["term"]

        damaged = next(n for n in cluster.nodes if n is not joiner)
        damaged.stop()
        lost = next(t for t in txids if index_of(t) >= base // 2)
        injected = sf.flip(sf.entry(damaged.data_dir / "ledger", index_of(lost)))
        assert injected.index < base
        assert cluster.write({"while-down": 1}, node=joiner)[0] == 200
        started = time.monotonic()
        damaged.start(wait=False)
        # It resumes after its own snapshot without reading the entries before it: the
        # background check finds the damage and stops the node (as a damaged read does).
        wait_for("the background check to stop the node", lambda: not damaged.alive, 90)
        assert damaged.proc is not None and damaged.proc.returncode == 75
        assert "do not rebuild" in damaged.log() or "is damaged on disk" in damaged.log()
        damaged.start(timeout=90)  # as the kubelet restarts it: reads every entry, repairs
        seconds = time.monotonic() - started

        repair = damaged.state()["ledger_repair"]
        assert repair is not None and repair["state"] == "repaired", repair
        assert repairs(damaged)["corrupted"] == 1
        assert "fetched the committed entries" in damaged.log()
        assert cluster.leader() is joiner and joiner.state()["term"] == term, "no election"
        cert = load_certificate(damaged.service_cert.read_bytes())
        for txid in (lost, txids[-1]):
            verify_receipt(receipt_from(damaged, cluster, txid), cert)
        status, body = damaged.get("/app/kv/early-11", cluster.user)
        assert status == 200 and body["value"] == 11, body
        print(
            f"\nflipped {injected.path.name}@{injected.offset} (index {injected.index}) below "
            f"the leader's snapshot at {base}: found and repaired from a peer in {seconds:.1f}s"
        )
    finally:
        cluster.stop()


@dataclass
class _Behind:
    """A node whose old volume copy ends before the snapshot a joiner-turned-leader started
    from (``old_end`` < ``base``), with the transactions written past that snapshot."""

    node: LocalNode
    old_copy: Path
    old_end: int
    txids: list[str]
    joiner: LocalNode
    base: int
    term: int

    def restore_old_volume(self, tmp_path: Path) -> None:
        """Stop the node and put its old volume back; it learns of the nodes that joined
        since from the published trusted-node list, as the operator mounts it."""
        self.node.stop()
        shutil.rmtree(self.node.data_dir)
        shutil.copytree(self.old_copy, self.node.data_dir)
        published = tmp_path / "mounted" / "trusted-nodes.cose"
        published.parent.mkdir()
        published.write_bytes(self.joiner.request("GET", "/node/trusted-list")[1])
        self.node.overrides = {**self.node.overrides, "trusted_list_path": str(published)}


def _a_node_copied_before_the_leaders_snapshot(cluster: Cluster, tmp_path: Path) -> _Behind:
    for n in range(2):
        assert cluster.write({f"old-{n}": n}, count=30)[0] == 200
    behind = cluster.nodes[1]
    behind.stop()
    old_copy = tmp_path / "old-volume"
    shutil.copytree(behind.data_dir, old_copy)
    old_end = sf.records(sf.chunks(old_copy / "ledger")[-1])[-1].index
    behind.start(timeout=60)
    txids, joiner, base = _a_joiner_leads_from_a_snapshot(cluster, "later")
    assert old_end < base
    return _Behind(behind, old_copy, old_end, txids, joiner, base, joiner.state()["term"])


def test_a_node_behind_the_leaders_snapshot_catches_up_from_a_node_that_holds_the_history(
    tmp_path: Path,
) -> None:
    """A node whose log ends before the snapshot the leader started from (its volume restored
    from an old copy; it learns of the nodes that joined since from the published trusted-node
    list, as the operator mounts it) is not stuck: the leader cannot send it those entries, so
    it fetches them from the other node that holds the history, and is ready again."""
    cluster = Cluster.start(tmp_path / "c", 2, overrides=SNAPSHOTS)
    try:
        b = _a_node_copied_before_the_leaders_snapshot(cluster, tmp_path)
        behind, joiner, txids = b.node, b.joiner, b.txids
        b.restore_old_volume(tmp_path)
        assert cluster.write({"while-behind": 1}, node=joiner)[0] == 200
        started = time.monotonic()
        behind.start(timeout=90)  # ready: caught up with the leader's commit index
        seconds = time.monotonic() - started

        assert "fetched the committed entries" in behind.log()
        assert "the leader did not send them" in behind.log()
        assert cluster.leader() is joiner and joiner.state()["term"] == b.term, "no election"
        cert = load_certificate(behind.service_cert.read_bytes())
        for txid in (txids[0], txids[-1]):
            verify_receipt(receipt_from(behind, cluster, txid), cert)
        status, body = behind.get("/app/kv/while-behind", cluster.user)
        assert status == 200 and body["value"] == 1, body
        print(
            f"\na node whose log ends at {b.old_end}, before the leader's snapshot at {b.base}, "
            f"caught up from a peer in {seconds:.1f}s"
        )
    finally:
        cluster.stop()


def test_a_node_behind_every_voters_history_installs_the_leaders_snapshot(
    tmp_path: Path,
) -> None:
    """As above, but no voter holds the entries the node lacks (the other old node started
    again from a snapshot too): after asking for a while it fetches the leader's newest
    snapshot, verifies it with the service certificate, stages it and stops (75); its
    restart keeps the old ledger aside and starts from the snapshot, with no election."""
    cluster = Cluster.start(tmp_path / "c", 2, overrides=SNAPSHOTS)
    try:
        b = _a_node_copied_before_the_leaders_snapshot(cluster, tmp_path)
        behind, joiner, txids = b.node, b.joiner, b.txids
        other = cluster.nodes[0]
        other.stop()
        shutil.rmtree(other.data_dir / "ledger")  # its sealed state kept: from a snapshot
        other.start(timeout=90)
        status, body = other.get(f"/app/receipt?txid={txids[0]}", cluster.user)
        assert status == 404 and body["error"]["code"] == "HistoryNotHeld", body

        b.restore_old_volume(tmp_path)
        status, body = cluster.write({"while-behind": 1}, node=joiner)
        assert status == 200, body
        while_behind = body["transactions"][0]["txid"]
        started = time.monotonic()
        behind.start(wait=False)
        wait_for("the node to stage a snapshot and stop", lambda: not behind.alive, 90)
        assert behind.proc is not None and behind.proc.returncode == 75, behind.log()[-2000:]
        assert "is verified and staged" in behind.log()
        behind.start(timeout=90)  # as the kubelet restarts the container
        seconds = time.monotonic() - started

        assert "installing the staged snapshot" in behind.log()
        (aside,) = behind.data_dir.glob("retired-*-behind-snapshot")
        kept = sf.records(sf.chunks(aside / "ledger")[-1])[-1].index
        assert kept == b.old_end, "the old ledger is kept as it was"
        assert cluster.leader() is joiner and joiner.state()["term"] == b.term, "no election"
        status, body = behind.get("/app/kv/while-behind", cluster.user)
        assert status == 200 and body["value"] == 1, body
        status, body = cluster.write({"after": 1}, node=joiner)
        assert status == 200, body
        cert = load_certificate(behind.service_cert.read_bytes())
        for txid in (while_behind, body["transactions"][0]["txid"]):
            verify_receipt(receipt_from(behind, cluster, txid), cert)
        status, body = behind.get(f"/app/receipt?txid={txids[0]}", cluster.user)
        assert status == 404 and body["error"]["code"] == "HistoryNotHeld", body
        held_from = behind.state()["held_from"]
        assert held_from == body["error"]["held_from"] and held_from > b.base, held_from
        metrics = behind.get("/metrics")[1]
        text = metrics.decode() if isinstance(metrics, bytes) else str(metrics)
        assert f"consortium_ledger_history_start_index {float(held_from)}" in text
        cluster.wait_converged()
        print(
            f"\na node whose log ends at {b.old_end}, before every voter's history (snapshot "
            f"at {b.base}), installed a snapshot and was ready in {seconds:.1f}s"
        )
    finally:
        cluster.stop()
