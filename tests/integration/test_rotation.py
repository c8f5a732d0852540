"""Ledger secret rotation on real node processes: three nodes and three governors rotate the
secret by proposal; private data written before and after reads on every node, on a node
restarted after the rotation and on a node that joins after it; the outcome's receipt
verifies offline with only the service certificate."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from consortium_node.common.timeutil import rfc3339
from consortium_node.governance.documents import sign_document
from consortium_node.identity import keys
from consortium_node.identity.certs import load_certificate
from consortium_node.ledger.receipt import verify_receipt
from tests.support.cluster import Cluster
from tests.support.harness import Identity, LocalNode, ctl, make_identity, make_platform
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow
T_SECRETS = "public:consortium.ledger_secrets"


class Governed(Cluster):
    """A Cluster whose genesis names three governors."""

    governors: list[Identity]

    @classmethod
    def three(cls, workdir: Path) -> Governed:
        ids = workdir / "ids"
        governors = [make_identity(ids, f"gov{i}", "governor") for i in range(3)]
        user = make_identity(ids, "user0", "user")
        key, cert = make_platform(workdir / "platform")
        genesis = LocalNode(workdir, "node-0", [*governors, user], key, cert)
        cluster = cls(workdir, [genesis], user=user, member=governors[0])
        cluster.governors = governors
        try:
            genesis.start()
            cluster.add(1)
            cluster.add(2)
            cluster.wait_converged()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def sign(self, who: Identity, payload: dict[str, Any]) -> bytes:
        key = keys.load_private_key(who.key.read_bytes())
        return sign_document(key, who.cert.read_text(), {"consortium": "test", **payload})

    def post_cose(self, path: str, envelope: bytes) -> dict[str, Any]:
        status, body, _ = self.leader().request(
            "POST", path, envelope, None, {"Content-Type": "application/cose"}
        )
        answer: dict[str, Any] = json.loads(body)
        assert status == 200, answer
        return answer

    def rotate(self) -> dict[str, Any]:
        g0, g1, _ = self.governors
        proposal = {
            "type": "proposal",
            "created_at": rfc3339(datetime.now(UTC)),
            "actions": [{"name": "rotate_ledger_secret", "args": {}}],
        }
        pid = self.post_cose("/gov/proposals", self.sign(g0, proposal))["proposal_id"]
        for who in (g0, g1):
            ballot = {"type": "ballot", "proposal_id": pid, "vote": "approve"}
            decided = self.post_cose(f"/gov/proposals/{pid}/ballots", self.sign(who, ballot))
        return decided


def secret_version(node: LocalNode) -> int | None:
    status, text = node.get("/metrics")
    assert status == 200
    found = re.search(rb"^consortium_ledger_secret_version (\S+)$", text, re.M)
    return int(float(found.group(1))) if found else None


def reads(node: LocalNode, user: Identity, key: str) -> Any:
    status, body = node.get(f"/app/kv/{key}", user)
    return body["value"] if status == 200 else None


def serves_all(node: LocalNode, user: Identity, expected: dict[str, str]) -> bool:
    return all(reads(node, user, k) == v for k, v in expected.items())


def receipt(node: LocalNode, user: Identity, txid: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        status, body = node.get(f"/app/receipt?txid={txid}", user)
        assert status in (200, 202), body
        return body if status == 200 else None

    found: dict[str, Any] = wait_for(f"receipt of {txid}", ready, 15, interval=0.05)
    return found


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Governed]:
    c = Governed.three(tmp_path)
    try:
        yield c
    finally:
        c.stop()


def test_rotation_end_to_end(cluster: Governed) -> None:
    user = cluster.user
    assert user is not None
    status, body = cluster.write({"before": "secret-one"})
    assert status == 200, body
    assert all(secret_version(n) == 1 for n in cluster.alive())

    decided = cluster.rotate()
    assert decided["state"] == "Accepted", decided
    outcome = decided["txid"]
    status, body = cluster.write({"after": "secret-two"})
    assert status == 200, body
    expected = {"before": "secret-one", "after": "secret-two"}
    for node in cluster.alive():
        wait_for(
            f"{node.name} reads both",
            lambda n=node: serves_all(n, user, expected),
            15,
            interval=0.05,
        )
        wait_for(
            f"{node.name} on version 2", lambda n=node: secret_version(n) == 2, 10, interval=0.05
        )

    # consortiumctl shows the decided proposal, with the txid whose receipt proves it.
    leader = cluster.leader()
    shown = ctl(
        "proposals", "show", decided["proposal_id"],
        "--node", leader.url, "--service-cert", str(leader.service_cert),
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    shown_json = json.loads(shown.stdout)
    assert shown_json["state"] == "Accepted" and shown_json["txid"] == outcome
    assert shown_json["actions"] == [{"name": "rotate_ledger_secret", "args": {}}]
    # The outcome's entry carries the new secret wrapped to every Trusted node, nothing else.
    status, tx = leader.get(f"/app/transaction?txid={outcome}", user)
    assert status == 200, tx
    record = tx["writes"][T_SECRETS]["2"]
    node_ids = {n.state()["node_id"] for n in cluster.alive()}
    assert set(record["wrapped"]) == node_ids
    assert record["version"] == 2 and record["applies_from"] == int(outcome.split(".")[1]) + 1
    assert all(
        len(base64.b64decode(b)) == 3 + 65 + 12 + 32 + 16 for b in record["wrapped"].values()
    )
    # Its receipt, and that of a private entry under version 2, verify offline.
    service = load_certificate(leader.service_cert.read_bytes())
    verify_receipt(receipt(leader, user, outcome), service)
    after_txid = leader.get("/app/kv/after", user)[1]["txid"]
    verify_receipt(receipt(leader, user, after_txid), service)

    # A backup restarted after the rotation replays both versions and serves both keys.
    backup = next(n for n in cluster.alive() if n is not leader)
    backup.stop()
    backup.start()
    wait_for(
        "the restarted node reads both",
        lambda: serves_all(backup, user, expected),
        20,
        interval=0.05,
    )
    assert secret_version(backup) == 2

    # A node joining after the rotation receives every version: it reads history too.
    joiner = cluster.add(3)
    cluster.wait_converged()
    wait_for("the joiner reads both", lambda: serves_all(joiner, user, expected), 20, interval=0.05)
    assert secret_version(joiner) == 2
    status, body = cluster.write({"later": "secret-three"})
    assert status == 200, body
    expected["later"] = "secret-three"
    for node in cluster.alive():
        wait_for(
            f"{node.name} reads all",
            lambda n=node: serves_all(n, user, expected),
            15,
            interval=0.05,
        )
    # Nodes say they took the new version up; no log holds any copy of it.
    for node in cluster.nodes[:3]:
        assert "holding ledger secret version 2" in node.log(), node.name
    for node in cluster.nodes:
        assert not any(blob in node.log() for blob in record["wrapped"].values())
