"""The disaster recovery ceremony on a real cluster (apiserver, kubelet, real node pods, the
operator process) with a real S3-protocol server: a 3-node Consortium with three governors
(recovery members, k = 2) writes private transactions and backs up to a bucket; its whole
namespace is then deleted (pods, volumes, the platform root, the operator's identity); a new
namespace recovers it with ``spec.recovery``. One member's share (``consortiumctl recovery
submit-share --kube``) leaves it waiting; a forged share is refused on its Member; the second
share opens the secrets; the governors vote ``transition_service_to_open`` through a Proposal;
the operator scales to 3. Then every acknowledged transaction reads back, every receipt from
before verifies (through the endorsement of the previous identity), new writes commit."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consortium_node.attestation import measure_installed
from consortium_node.ctl.client import CtlError, NodeClient
from consortium_node.identity import keys
from consortium_node.identity.certs import certificate_der, load_certificate
from consortium_node.recovery.ceremony import seal_submission
from consortium_node.recovery.shares import Share
from tests.integration.operator.test_backup_store import SECRET, Writer
from tests.integration.operator.test_lifecycle import READY_TIMEOUT, ready
from tests.support.gov_kube import append_ballot, ballot, ctl, member_doc, run_ctl, sign
from tests.support.harness import Identity, make_identity
from tests.support.kube import Cluster, sample_docs
from tests.support.s3server import S3Server, start_s3_server
from tests.support.wait import wait_for


@pytest.fixture(scope="module")
def s3_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path_factory.mktemp("s3-recovery"), bind="0.0.0.0")
    yield server
    server.stop()


def _member_id(who: Identity) -> str:
    return keys.member_id_of(certificate_der(load_certificate(who.cert.read_bytes())))


def _recovery_member(ids: Path, name: str) -> tuple[Identity, dict[str, Any], Path]:
    who = make_identity(ids, name, "governor")
    made = json.loads(ctl("keygen", "--recovery", "--name", name, "--out-dir", str(ids)))
    doc = member_doc(who)
    doc["spec"]["recoveryKey"] = Path(made["recovery_public_key"]).read_text()
    return who, doc, Path(made["recovery_private_key"])


def _consortium(nodes: int) -> dict[str, Any]:
    _, consortium = sample_docs()
    consortium["spec"]["nodes"] = nodes
    consortium["spec"]["governance"] = {"recoveryThreshold": 2}
    return consortium


def _status(cluster: Cluster, ns: str) -> dict[str, Any]:
    return dict(((cluster.get(ns, "consortium", "demo") or {}).get("status")) or {})


def _phase(cluster: Cluster, ns: str) -> str | None:
    found = (_status(cluster, ns).get("recovery") or {}).get("phase")
    return str(found) if found else None


def _member_share(cluster: Cluster, ns: str, name: str) -> str | None:
    found = ((cluster.get(ns, "member", name) or {}).get("status") or {}).get("recoveryShare")
    return str(found) if found else None


def _rolled(cluster: Cluster, ns: str) -> bool:
    """Every node pod runs the StatefulSet's current template (the backup settings)."""
    sts = cluster.get(ns, "statefulset", "demo") or {}
    revision = (sts.get("status") or {}).get("updateRevision")
    pods = cluster.items(ns, "pod", "app.kubernetes.io/component=ledger-node")
    return (
        bool(revision)
        and len(pods) == 3
        and all(
            p["metadata"].get("labels", {}).get("controller-revision-hash") == revision
            for p in pods
        )
    )


def _client(cluster: Cluster, ns: str, who: Identity) -> tuple[NodeClient, str]:
    st = _status(cluster, ns)
    ip = next(n["podIP"] for n in st["nodes"] if n.get("podIP"))
    pem = st["serviceCertificate"]
    return NodeClient(f"https://{ip}:8443", pem, who.cert, who.key, 10), pem


def _receipt(cluster: Cluster, ns: str, who: Identity, txid: object) -> Any:
    """The receipt of ``txid`` from the first node of the current status that gives one (the
    status is read again each time: a pod that restarted since has another IP)."""
    st = _status(cluster, ns)
    for node in st.get("nodes", []):
        if not node.get("podIP"):
            continue
        client = NodeClient(
            f"https://{node['podIP']}:8443", st["serviceCertificate"], who.cert, who.key, 5
        )
        try:
            reply = client.request("GET", f"/app/receipt?txid={txid}")
        except (CtlError, OSError):
            continue
        if reply.status == 200:
            return reply.json()
    return None


def _read(client: NodeClient, key: str) -> Any:
    try:
        reply = client.request("GET", f"/app/kv/{key}")
    except (CtlError, OSError):
        return None
    return reply.json().get("value") if reply.status == 200 else None


@pytest.mark.timeout(1200)
def test_a_deleted_namespace_is_recovered_from_its_bucket_with_two_members_shares(
    cluster: Cluster, namespace: str, tmp_path: Path, s3_host: S3Server
) -> None:
    ns = namespace
    ids = tmp_path / "ids"
    members = [_recovery_member(ids, name) for name in ("alice", "bob", "carol")]
    alice = members[0][0]
    bucket = s3_host.make_bucket()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET},
        "stringData": s3_host.credentials_env,
    }
    consortium = _consortium(3)
    cluster.apply(ns, secret, *(doc for _, doc, _ in members), consortium)
    obj = wait_for("Ready 3/3", lambda: ready(cluster, ns, "demo", 3), READY_TIMEOUT)
    previous_pem = obj["status"]["serviceCertificate"]
    gateway = obj["status"]["nodes"][0]["podIP"].rsplit(".", 1)[0] + ".1"
    s3 = {"endpoint": f"http://{gateway}:{s3_host.port}", "bucket": bucket,
          "credentialsSecret": SECRET}  # fmt: skip
    consortium["spec"]["backup"] = {"s3": s3, "maxLag": "10s"}
    cluster.apply(ns, consortium)

    def backing_up() -> bool:  # the nodes restart one at a time to read spec.backup
        cond = cluster.condition(ns, "consortium", "demo", "BackupHealthy")
        rolled = ready(cluster, ns, "demo", 3)
        return (
            cond.get("status") == "True"
            and rolled is not None
            and not rolled["status"].get("waitingProposals")
            and _rolled(cluster, ns)
        )

    wait_for("BackupHealthy, every node restarted", backing_up, 600)
    receipts: list[dict[str, Any]] = []
    with Writer(cluster, ns, alice) as writer:
        wait_for("writes flowing", lambda: len(writer.acked) >= 100, 120)
    acked = list(writer.acked)
    for txid in acked[:: max(1, len(acked) // 5)]:
        found = wait_for(f"receipt {txid}", lambda t=txid: _receipt(cluster, ns, alice, t), 30)
        receipts.append(found)
    last = max(t.index for t in acked)

    def covered() -> bool:
        shown = _status(cluster, ns).get("backup") or {}
        return bool(shown.get("lastTxid")) and int(str(shown["lastTxid"]).split(".")[1]) >= last

    wait_for("the bucket to cover every acknowledgement", covered, 180)
    expected = {f"k{i}-{j}": i for i in range(len(acked) // 10) for j in range(5)}

    # The disaster: the whole namespace is gone, the platform root and every volume with it.
    cluster.kubectl("delete", "namespace", ns, "--timeout=300s")
    new_ns = f"{ns[:50]}-r"
    cluster.kubectl("create", "namespace", new_ns)
    cluster.kubectl("label", "namespace", new_ns, "consortium-test=true")
    try:
        _recover(cluster, new_ns, tmp_path, members, previous_pem, s3, secret, receipts, expected)
    finally:
        cluster.kubectl("delete", "consortia", "--all", "-n", new_ns, "--timeout=60s", check=False)
        cluster.kubectl("delete", "namespace", new_ns, "--wait=false", check=False)


def _recover(
    cluster: Cluster,
    ns: str,
    tmp_path: Path,
    members: list[tuple[Identity, dict[str, Any], Path]],
    previous_pem: str,
    s3: dict[str, Any],
    secret: dict[str, Any],
    receipts: list[dict[str, Any]],
    expected: dict[str, int],
) -> None:
    (alice, _, alice_rk), (bob, _, bob_rk), (carol, _, _) = members
    consortium = _consortium(3)
    consortium["spec"]["recovery"] = {
        "previousServiceCertificate": previous_pem,
        "source": {"s3": s3},
    }
    started = time.monotonic()
    cluster.apply(ns, secret, *(doc for _, doc, _ in members), consortium)
    wait_for(
        "WaitingForRecoveryShares",
        lambda: (
            _phase(cluster, ns) == "WaitingForRecoveryShares"
            and (_status(cluster, ns).get("recovery") or {}).get("attestation")
        ),
        READY_TIMEOUT,
    )
    st = _status(cluster, ns)
    assert st["serviceCertificate"] != previous_pem
    ready_cond = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready_cond["status"] == "False" and ready_cond["reason"] == "WaitingForRecoveryShares"
    assert st["recovery"]["sharesNeeded"] == 2 and st["recovery"]["sharesSubmitted"] == []
    wait_for("alice asked for her share",
             lambda: _member_share(cluster, ns, "alice") == "Requested", 60)  # fmt: skip
    reasons = {e["reason"] for e in cluster.events(ns, "demo")}
    assert "RecoveryStarted" in reasons, reasons
    assert len(cluster.items(ns, "pod", "app.kubernetes.io/component=ledger-node")) == 1

    root = tmp_path / "platform-root.pem"
    platform = cluster.get(ns, "secret", "demo-platform-root") or {}
    root.write_bytes(base64.b64decode(platform["data"]["root.pem"]))

    def submit(who: Identity, recovery_key: Path) -> Any:
        return run_ctl(
            "recovery", "submit-share", "--consortium", "demo", "--cert", str(who.cert),
            "--key", str(who.key), "--recovery-key", str(recovery_key), "--kube", "demo",
            "--namespace", ns, "--platform-root", str(root), "--measurement", measure_installed(),
        )  # fmt: skip

    # One share: relayed, counted, still waiting.
    first = submit(alice, alice_rk)
    assert first.returncode == 0, first.stderr
    wait_for("alice's share held", lambda: _member_share(cluster, ns, "alice") == "Submitted", 60)
    assert _phase(cluster, ns) == "WaitingForRecoveryShares"
    assert _status(cluster, ns)["recovery"]["sharesSubmitted"] == [_member_id(alice)]

    # A forged share under carol's name (well formed, wrapped to the attested node, signed by
    # carol): refused by the node, reported on carol's Member; nothing changes.
    attestation = _status(cluster, ns)["recovery"]["attestation"]
    node_key = keys.load_public_key(attestation["publicKey"].encode())
    forged = seal_submission(
        node_key,  # type: ignore[arg-type]
        Share(index=2, value=os.urandom(32)),
        consortium="demo",
        epoch=int(_status(cluster, ns)["recovery"]["record"]["epoch"]),
        member_id=_member_id(carol),
        node_id=attestation["nodeId"],
    )
    epoch = _status(cluster, ns)["recovery"]["record"]["epoch"]
    payload = {"type": "recovery_share", "epoch": epoch, "node_id": attestation["nodeId"],
               "share": forged}  # fmt: skip
    patch = {"spec": {"recoveryShare": sign(carol, payload)}}
    cluster.kubectl(
        "-n", ns, "patch", "member", "carol", "--type", "merge", "-p", json.dumps(patch)
    )
    refused = wait_for(
        "the forged share refused",
        lambda: next(
            (e for e in cluster.events(ns, "carol") if e["reason"] == "RecoveryShareRefused"), None
        ),
        60,
    )
    assert "ShareDoesNotMatch" in refused["message"], refused["message"]
    assert _member_share(cluster, ns, "carol") == "Requested"

    # The second share opens every secret; the node restarts with them.
    second = submit(bob, bob_rk)
    assert second.returncode == 0, second.stderr
    wait_for("WaitingForOpen", lambda: _phase(cluster, ns) == "WaitingForOpen", READY_TIMEOUT)
    assert _member_share(cluster, ns, "alice") is None  # no share is awaited any more

    # The governors open it with a Proposal; the operator scales to 3.
    ctl("propose", "--consortium", "demo", "--cert", str(alice.cert), "--key", str(alice.key),
        "--transition-service-to-open", "--kube", "open-recovered", "--namespace", ns)  # fmt: skip
    pid = wait_for(
        "the proposal relayed",
        lambda: ((cluster.get(ns, "proposal", "open-recovered") or {}).get("status") or {}).get(
            "proposalId"
        ),
        60,
    )
    for who in (alice, bob):
        append_ballot(cluster, ns, "open-recovered", ballot(who, pid, "approve"))
    obj = wait_for("Ready 3/3 after recovery", lambda: ready(cluster, ns, "demo", 3), 300)
    recovery_seconds = time.monotonic() - started
    assert obj["status"]["recovery"]["phase"] == "Open"
    reasons = {e["reason"] for e in cluster.events(ns, "demo")}
    assert {"LedgerSecretsRecovered", "ServiceOpened"} <= reasons, reasons

    # Every acknowledged write reads back, on every node.
    for node in obj["status"]["nodes"]:
        reader = NodeClient(f"https://{node['podIP']}:8443", obj["status"]["serviceCertificate"],
                            alice.cert, alice.key, 10)  # fmt: skip
        wait_for(
            f"{node['name']} to serve the recovered history",
            lambda r=reader: all(_read(r, k) == v for k, v in list(expected.items())[:50]),
            120,
        )
    client, pem = _client(cluster, ns, alice)
    missing = [k for k, v in expected.items() if _read(client, k) != v]
    assert not missing, missing[:10]

    # Receipts from before the disaster verify through the new identity's endorsement.
    (tmp_path / "previous.pem").write_text(previous_pem)
    history = tmp_path / "history.json"
    history.write_text(json.dumps(client.json("GET", "/recovery")))
    current = tmp_path / "service.pem"
    current.write_text(pem)
    for old in receipts:
        path = tmp_path / f"receipt-{old['txid']}.json"
        path.write_text(json.dumps(old))
        shown = json.loads(
            ctl("verify-receipt", "--service-cert", str(current), "--service-history",
                str(history), str(path))
        )  # fmt: skip
        assert shown["verified"] and shown["previous_identity"], shown
    reply = client.request(
        "POST", "/app/transactions", body={"transactions": [{"writes": {"after": "recovery"}}]}
    )
    assert reply.status == 200, reply.body
    txid = reply.json()["transactions"][0]["txid"]
    fresh = wait_for(
        "the new write's receipt",
        lambda: (
            (r := client.request("GET", f"/app/receipt?txid={txid}")).status == 200 and r.json()
        ),
        30,
    )
    path = tmp_path / "receipt-new.json"
    path.write_text(json.dumps(fresh))
    shown = json.loads(ctl("verify-receipt", "--service-cert", str(current), str(path)))
    assert shown["verified"] and shown["txid"] == txid, shown
    refused = run_ctl("verify-receipt", "--service-cert", str(tmp_path / "previous.pem"), str(path))
    assert refused.returncode == 1, refused.stdout  # the new identity's, not the old one's
    print(f"recovered {len(expected)} keys: {recovery_seconds:.1f} s from apply to Ready 3/3")
