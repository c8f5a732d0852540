"""Fault tests of a replicated consortium: real node processes on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consortium_node.identity.certs import load_certificate
from consortium_node.ledger.receipt import verify_receipt
from tests.support.cluster import Cluster
from tests.support.harness import LocalNode, make_platform
from tests.support.wait import wait_for
from tests.support.writer import Writer, receipt_from, verify_all

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(size: int, **kwargs: Any) -> Cluster:
        cluster = Cluster.start(tmp_path / f"c{len(made)}", size, **kwargs)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


@pytest.mark.parametrize("size", [3, 5])
def test_bootstrap_same_ledger_and_receipts_from_any_node(cluster_factory: Any, size: int) -> None:
    cluster: Cluster = cluster_factory(size)
    status, body = cluster.write({"hello": "world"}, count=5)
    assert status == 200, body
    txid = body["transactions"][-1]["txid"]
    cluster.wait_converged()
    receipts = [receipt_from(n, cluster, txid) for n in cluster.nodes]
    assert len({r["root"] for r in receipts}) == 1, "every node holds the same signed root"
    cert = load_certificate(cluster.nodes[0].service_cert.read_bytes())
    for rec in receipts:
        assert str(verify_receipt(rec, cert).txid) == txid
    states = [n.state() for n in cluster.nodes]
    assert len({s["commit_index"] for s in states}) == 1
    assert sum(s["role"] == "primary" for s in states) == 1
    _, lst = cluster.nodes[-1].get("/node/trusted-list?format=json")
    assert sorted(n["status"] for n in lst["nodes"]) == ["Trusted"] * size


def test_bodies_near_the_limit_from_many_clients_keep_replicating(cluster_factory: Any) -> None:
    """Six clients each send a body near the default 1 MiB limit at once: the leader's next
    AppendEntries holds several MiB, more than a client may send; followers must take it
    (once they answered 413, and replication stopped for good with every write timing out)."""
    cluster: Cluster = cluster_factory(3)
    leader = cluster.leader()
    assert cluster.user is not None
    results: list[tuple[int, Any]] = []

    def send(client: int) -> None:
        transactions = [{"writes": {f"big-{client}-{n}": f"{client}" * 50_000}} for n in range(19)]
        body = {"transactions": transactions}
        assert len(json.dumps(body)) < 1024 * 1024
        results.append(leader.post_json("/app/transactions", body, cluster.user))

    threads = [threading.Thread(target=send, args=(client,)) for client in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _ in results] == [200] * 6, [body for _, body in results]
    cluster.wait_converged()
    for node in cluster.nodes:
        status, body = node.get("/app/kv/big-5-18", cluster.user)
        assert status == 200 and body["value"] == "5" * 50_000, (node.name, status)


def test_leader_sigkill_loses_nothing_and_recovers(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(3)
    with Writer(cluster) as writer:
        wait_for("writes before the kill", lambda: writer.count() >= 150, 30, interval=0.05)
        old = cluster.leader()
        old.kill()
        killed_at = time.monotonic()
        before = writer.count()
        new = wait_for(
            "new leader",
            lambda: next((n for n in cluster.alive() if n.state()["role"] == "primary"), None),
            10,
            interval=0.05,
        )
        wait_for(
            "commits under the new leader", lambda: writer.count() > before + 30, 10, interval=0.05
        )
        recovery = time.monotonic() - killed_at
        assert new is not old
        assert recovery < 5, f"new leader committed after {recovery:.1f}s"
        old.start()
        wait_for(
            "writes after the restart", lambda: writer.count() > before + 200, 30, interval=0.05
        )
    cluster.wait_converged()
    verify_all(cluster, writer.acknowledged)


def test_minority_kills_keep_going_majority_kill_stops_writes(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(3)
    with Writer(cluster) as writer:
        for round_ in range(3):
            victim = [n for n in cluster.alive() if n.state()["role"] != "primary"][round_ % 2]
            victim.kill()
            count = writer.count()
            wait_for(
                "writes with a minority down",
                lambda c=count: writer.count() > c + 50,
                15,
                interval=0.05,
            )
            victim.start()
            cluster.wait_converged()
    acknowledged = list(writer.acknowledged)
    leader = cluster.leader()
    followers = [n for n in cluster.alive() if n is not leader]
    for node in followers:
        node.kill()
    status, body = cluster.write({"during": "outage"}, node=leader)
    assert status == 503, body
    assert body["error"]["code"] in ("CommitTimeout", "NotLeader")
    assert "reason" in body["error"]
    wait_for(
        "the isolated leader to step down",
        lambda: leader.state()["role"] != "primary",
        10,
        interval=0.05,
    )
    status, body = cluster.write({"during": "outage"}, node=leader)
    assert status == 503 and body["error"]["code"] == "NotLeader", body
    for node in followers:
        node.start(wait=False)
    for node in followers:
        node.wait_ready(30)
    status, body = wait_for(
        "writes to resume",
        lambda: (r := cluster.write({"after": "outage"}))[0] == 200 and r,
        20,
        interval=0.05,
    )
    cluster.wait_converged()
    verify_all(cluster, acknowledged + [t["txid"] for t in body["transactions"]])


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("wrong-measurement", "MeasurementNotAllowed"),
        ("replayed-nonce", "NonceMismatch"),
        ("stale-timestamp", "Stale"),
        ("unendorsed-chip", "UnknownPlatform"),
    ],
)
def test_bad_joiners_are_refused_with_the_reason(
    cluster_factory: Any, fault: str, reason: str
) -> None:
    cluster: Cluster = cluster_factory(1)
    if fault == "unendorsed-chip":
        key, cert = make_platform(cluster.workdir / "rogue-platform")
        overrides: dict[str, Any] = {
            "platform": {"root_certificate": str(cert), "root_key": str(key)}
        }
    else:
        overrides = {"insecure_test_faults": [fault]}
    joiner = cluster.add(1, overrides, wait=False)
    assert joiner.proc is not None
    code = joiner.proc.wait(30)
    assert code == 3, joiner.log()[-2000:]
    assert f"join refused: {reason}" in joiner.log()
    assert not (joiner.data_dir / "sealed" / "ledger-secret.sealed").exists()
    assert not (joiner.data_dir / "sealed" / "service-identity.sealed").exists()
    metrics = cluster.nodes[0].request("GET", "/metrics")[1].decode()
    assert f'consortium_join_requests_total{{reason="{reason}",result="refused"}} 1.0' in metrics
    _, lst = cluster.nodes[0].get("/node/trusted-list?format=json")
    assert [n["name"] for n in lst["nodes"]] == ["node-0"]


def _samples(node: LocalNode, prefix: str) -> dict[str, float]:
    """The node's /metrics samples whose line starts with ``prefix``, by name and labels."""
    text = node.request("GET", "/metrics")[1].decode()
    lines = (line.rsplit(" ", 1) for line in text.splitlines() if line.startswith(prefix))
    return {sample: float(value) for sample, value in lines}


def test_tampered_list_is_refused_an_older_one_set_aside(
    cluster_factory: Any, tmp_path: Path
) -> None:
    """The mounted list (the operator's ConfigMap) lagging behind the node's is stale: counted
    apart, logged without ERROR; a tampered one is refused at ERROR and counted by reason.
    The node keeps its list either way."""
    watched = tmp_path / "mounted" / "trusted-nodes.cose"
    cluster: Cluster = cluster_factory(1)
    v1 = cluster.nodes[0].request("GET", "/node/trusted-list")[1]
    node = cluster.add(1, {"trusted_list_path": str(watched)})
    cluster.wait_converged()
    current = node.request("GET", "/node/trusted-list")[1]
    version = node.state()["trusted_list_version"]
    assert version > 1
    rejected = "consortium_trusted_list_rejections_total"
    stale = "consortium_trusted_list_stale_total"
    before = _samples(node, rejected)
    assert before and set(before.values()) == {0.0}
    watched.parent.mkdir(parents=True, exist_ok=True)

    watched.write_bytes(v1)  # validly signed, older than what the node holds
    wait_for(
        "the older list counted stale",
        lambda: _samples(node, stale) == {stale: 1.0},
        10,
        interval=0.05,
    )
    assert f"is version 1, older than the held version {version}" in node.log()
    assert _samples(node, rejected) == before
    assert " ERROR " not in node.log()
    assert node.request("GET", "/node/trusted-list")[1] == current

    tampered = bytearray(current)
    tampered[len(tampered) // 2] ^= 0x01
    watched.write_bytes(bytes(tampered))
    bad = f'{rejected}{{reason="BadSignature"}}'
    wait_for(
        "the tampered list refused", lambda: _samples(node, rejected)[bad] == 1.0, 10, interval=0.05
    )
    assert _samples(node, rejected) == {**before, bad: 1.0}
    assert _samples(node, stale) == {stale: 1.0}
    errors = [line for line in node.log().splitlines() if " ERROR " in line]
    assert len(errors) == 1, errors
    assert f"refused the trusted-node list in {watched}: BadSignature" in errors[0]
    assert node.request("GET", "/node/trusted-list")[1] == current
    assert node.state()["trusted_list_version"] == version
    assert cluster.write({"still": "working"})[0] == 200


def test_rotation_cycles_then_failed_reattestation_retires(cluster_factory: Any) -> None:
    attestation = {"validity": "4s", "renew_before": "2s"}
    cluster: Cluster = cluster_factory(3, overrides={"attestation": attestation})
    first = {
        n["node_id"]: n["attested_at"]
        for n in cluster.nodes[0].get("/node/trusted-list?format=json")[1]["nodes"]
    }
    seen: dict[str, set[str]] = {nid: {at} for nid, at in first.items()}
    with Writer(cluster) as writer:

        def three_cycles() -> bool:
            _, lst = cluster.leader().get("/node/trusted-list?format=json")
            for entry in lst["nodes"]:
                assert entry["status"] == "Trusted", entry
                seen[entry["node_id"]].add(entry["attested_at"])
            return all(len(v) >= 4 for v in seen.values())

        wait_for("three re-attestation cycles of every node", three_cycles, 40, interval=0.3)
        count = writer.count()
        assert count > 100
        leader = cluster.leader()
        victim = next(n for n in cluster.alive() if n is not leader)
        victim_id = victim.state()["node_id"]
        victim.stop()
        victim.overrides["insecure_test_faults"] = ["wrong-measurement"]
        victim.start(wait=False)

        def retired() -> bool:
            _, lst = cluster.leader().get("/node/trusted-list?format=json")
            return any(e["node_id"] == victim_id and e["status"] == "Retired" for e in lst["nodes"])

        wait_for("the failing node to be retired", retired, 30, interval=0.3)
        count = writer.count()
        wait_for(
            "commits after the retirement", lambda: writer.count() > count + 100, 20, interval=0.05
        )
    network = cluster.leader().get("/node/network")[1]
    assert network["primary"]["node_id"] != victim_id
    shutil.rmtree(victim.data_dir, ignore_errors=True)
    victim.kill()
    alive = [n for n in cluster.alive()]
    verify_all(Cluster(cluster.workdir, alive, cluster.user, cluster.member), writer.acknowledged)


def test_a_node_that_joined_re_attests_the_others_when_it_leads(cluster_factory: Any) -> None:
    """The re-attestation loop starts before a joining node has replicated the attestation
    policy; it must outlive that (it once died there, so a joined primary re-attested nobody
    and every attestation ran out)."""
    attestation = {"validity": "6s", "renew_before": "3s"}
    cluster: Cluster = cluster_factory(3, overrides={"attestation": attestation})
    genesis = cluster.nodes[0]
    genesis.stop()  # whoever led before, a node that joined leads now
    assert cluster.leader(timeout=30) is not genesis
    seen: dict[str, set[str]] = {n.state()["node_id"]: set() for n in cluster.alive()}

    def cycles() -> bool:
        _, lst = cluster.leader().get("/node/trusted-list?format=json")
        for entry in lst["nodes"]:
            if entry["node_id"] in seen:
                assert entry["status"] == "Trusted", entry
                seen[entry["node_id"]].add(entry["attested_at"])
        return all(len(times) >= 3 for times in seen.values())

    wait_for("re-attestation cycles led by a node that joined", cycles, 40, interval=0.3)
    assert cluster.write({"after": 1})[0] == 200


def test_without_auto_trust_governance_trusts_and_retires_a_node(cluster_factory: Any) -> None:
    """trust_node / retire_node as proposals: accepted by the (single) governor's ballot, the
    node's trust changes in the same ledger entry as the outcome."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from consortium_node.common.timeutil import rfc3339  # noqa: PLC0415
    from consortium_node.governance.documents import sign_document  # noqa: PLC0415
    from consortium_node.identity import keys  # noqa: PLC0415

    cluster: Cluster = cluster_factory(1, overrides={"constitution": {"auto_trust_nodes": False}})
    primary, member = cluster.nodes[0], cluster.member
    assert member is not None
    key = keys.load_private_key(member.key.read_bytes())

    def post(path: str, payload: dict[str, Any]) -> dict[str, Any]:
        envelope = sign_document(key, member.cert.read_text(), {"consortium": "test", **payload})
        status, raw, _ = primary.request(
            "POST", path, envelope, None, {"Content-Type": "application/cose"}
        )
        assert status == 200, raw
        answer: dict[str, Any] = json.loads(raw)
        return answer

    def decide(action: str, node_id: str) -> dict[str, Any]:
        proposal = {
            "type": "proposal",
            "created_at": rfc3339(datetime.now(UTC)),
            "actions": [{"name": action, "args": {"node_id": node_id}}],
        }
        pid = post("/gov/proposals", proposal)["proposal_id"]
        ballot = {"type": "ballot", "proposal_id": pid, "vote": "approve"}
        return post(f"/gov/proposals/{pid}/ballots", ballot)

    def status_of(name: str) -> str | None:
        _, lst = primary.get("/node/trusted-list?format=json")
        return next((n["status"] for n in lst["nodes"] if n["name"] == name), None)

    joiner = cluster.add(1, wait=False)
    wait_for(
        "the joiner to be listed Pending",
        lambda: status_of("node-1") == "Pending",
        20,
        interval=0.05,
    )
    _, lst = primary.get("/node/trusted-list?format=json")
    node_id = next(n["node_id"] for n in lst["nodes"] if n["name"] == "node-1")
    # Pending: it waits, holding no secret, and no single call can trust it (only a proposal).
    assert joiner.alive and not (joiner.data_dir / "sealed" / "ledger-secret.sealed").exists()
    body = json.dumps({"node_id": node_id}).encode()
    headers = {"Content-Type": "application/json"}
    status, _, _ = primary.request("POST", "/gov/nodes/trust", body, member, headers)
    assert status in (404, 405)
    outcome = decide("trust_node", node_id)
    assert outcome["state"] == "Accepted", outcome
    joiner.wait_ready(30)
    assert joiner.state()["status"] == "Trusted"
    cluster.wait_converged()
    # The same node cannot be trusted twice: the proposal fails and changes nothing.
    again = decide("trust_node", node_id)
    assert again["state"] == "Rejected" and "is Trusted, not Pending" in again["reason"]
    retired = decide("retire_node", node_id)
    assert retired["state"] == "Accepted", retired
    wait_for("the node to be Retired", lambda: status_of("node-1") == "Retired", 20, interval=0.05)
