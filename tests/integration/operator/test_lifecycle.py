"""A Consortium's life on a real cluster: samples → Ready, steady state, scaling, a lost pod,
deletion. Every wait polls a condition with a deadline."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from typing import Any

from cryptography import x509
from pycose.keys.curves import P256
from pycose.keys.ec2 import EC2Key
from pycose.messages.sign1message import Sign1Message

from consortium_node.identity.trusted_list import TrustedNodeList
from tests.support.kube import ROOT, Cluster, Operator, sample_docs
from tests.support.wait import WaitTimeoutError, wait_for

READY_TIMEOUT = 180


def ready(cluster: Cluster, ns: str, name: str, nodes: int) -> dict[str, Any] | None:
    obj = cluster.get(ns, "consortium", name) or {}
    st = obj.get("status") or {}
    cond = next((c for c in st.get("conditions", []) if c["type"] == "Ready"), {})
    current = st.get("observedGeneration") == obj["metadata"]["generation"]
    if current and cond.get("status") == "True" and st.get("nodesReady") == f"{nodes}/{nodes}":
        return obj
    return None


def pod_story(cluster: Cluster, ns: str, name: str) -> str:
    """What a pod and its StatefulSet are doing, for a failure message."""
    pod = cluster.get(ns, "pod", name) or {}
    meta, status = pod.get("metadata", {}), pod.get("status", {})
    lines = [
        f"pod {name}: uid {meta.get('uid')}, phase {status.get('phase')}, deletion "
        f"{meta.get('deletionTimestamp')}, finalizers {meta.get('finalizers')}",
        f"containers: {json.dumps(status.get('containerStatuses'))[:1500]}",
    ]
    for involved in (name, "demo"):
        for event in cluster.events(ns, involved)[-10:]:
            lines.append(f"event {involved}: {event.get('reason')}: {event.get('message')}")
    return "\n".join(lines)


def pycose_verifies(envelope: bytes, certificate_pem: str) -> TrustedNodeList:
    """Verify the published list with pycose and only the published service certificate."""
    cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    numbers = cert.public_key().public_numbers()  # type: ignore[union-attr]
    message = Sign1Message.decode(envelope)
    message.key = EC2Key(crv=P256, x=numbers.x.to_bytes(32, "big"), y=numbers.y.to_bytes(32, "big"))
    assert message.verify_signature()
    return TrustedNodeList.from_payload(message.payload)


def test_samples_become_ready_with_a_verifiable_list(cluster: Cluster, namespace: str) -> None:
    ns = namespace
    cluster.kubectl("-n", ns, "apply", "-f", str(ROOT / "crds/samples"))
    obj = wait_for(
        "Consortium demo Ready 3/3", lambda: ready(cluster, ns, "demo", 3), READY_TIMEOUT
    )
    st = obj["status"]
    assert st["phase"] == "Ready"
    types = {c["type"]: c["status"] for c in st["conditions"]}
    assert types == {
        "Ready": "True",
        "Bootstrapped": "True",
        "NodesAttested": "True",
        "TrustedListDistributed": "True",
        "Degraded": "False",
        "UpToDate": "True",
    }
    assert st["members"] == {"total": 2, "active": 2, "resources": 2}
    assert [n["status"] for n in st["nodes"]] == ["Trusted"] * 3
    # The published list verifies with pycose and only the published service certificate.
    identity = cluster.get(ns, "configmap", "demo-service-identity")
    listed = cluster.get(ns, "configmap", "demo-trusted-nodes")
    assert identity is not None and listed is not None
    envelope = base64.b64decode(listed["binaryData"]["trusted-nodes.cose"])
    lst = pycose_verifies(envelope, identity["data"]["service-certificate.pem"])
    assert lst.version == st["trustedNodeList"]["version"]
    assert {n.name for n in lst.nodes if n.status.value == "Trusted"} == {
        "demo-0",
        "demo-1",
        "demo-2",
    }
    assert json.loads(listed["data"]["trusted-nodes.json"])["version"] == lst.version
    assert identity["data"]["service-certificate.pem"] == st["serviceCertificate"]
    # Members are Active because the ledger says so.
    for member in ("alice", "bob"):
        assert cluster.condition(ns, "member", member, "Active")["status"] == "True"
    reasons = {e["reason"] for e in cluster.events(ns, "demo")}
    assert {"NodeTrusted", "ConsortiumReady", "TrustedListPublished"} <= reasons
    # Removing a member after bootstrap is the members' decision: a Proposal, not an act.
    cluster.kubectl("-n", ns, "delete", "member", "bob", "--timeout=60s")
    proposal = wait_for(
        "the removal put to the members as a Proposal",
        lambda: next(
            (
                p
                for p in cluster.items(ns, "proposals", "consortium.tee.dev/intent=remove-member")
                if (p.get("status") or {}).get("state") == "Open"
            ),
            None,
        ),
        60,
    )
    assert proposal["status"]["actions"][0]["name"] == "remove_member"
    assert any(e["reason"] == "MemberRemovalProposed" for e in cluster.events(ns, "demo"))
    wait_for(
        "one Member resource left; the ledger still has both members",
        lambda: (
            (cluster.get(ns, "consortium", "demo") or {}).get("status", {}).get("members")
            == {"total": 2, "active": 2, "resources": 1}
        ),
        60,
    )


def test_steady_state_makes_no_writes(cluster: Cluster, operator: Operator, namespace: str) -> None:
    ns = namespace
    members, consortium = sample_docs()
    consortium["spec"]["nodes"] = 1
    cluster.apply(ns, *members, consortium)
    wait_for("Ready 1/1", lambda: ready(cluster, ns, "demo", 1), READY_TIMEOUT)
    passes = operator.sample("consortium_operator_reconcile_duration_seconds_count")
    # settle: one more full pass after Ready (the status write that made it Ready)
    wait_for(
        "two more passes",
        lambda: (
            operator.sample("consortium_operator_reconcile_duration_seconds_count") >= passes + 2
        ),
        60,
    )
    writes = operator.sample("consortium_operator_api_writes_total")
    passes = operator.sample("consortium_operator_reconcile_duration_seconds_count")
    since = time.time()
    wait_for(
        "five more reconcile passes",
        lambda: (
            operator.sample("consortium_operator_reconcile_duration_seconds_count") >= passes + 5
        ),
        90,
    )
    assert operator.sample("consortium_operator_api_writes_total") == writes
    assert cluster.audit_writes(ns, since) == []


def test_scale_up_then_down_and_a_lost_pod(cluster: Cluster, namespace: str) -> None:
    ns = namespace
    members, consortium = sample_docs()
    consortium["spec"]["nodes"] = 2
    cluster.apply(ns, *members, consortium)
    wait_for("Ready 2/2", lambda: ready(cluster, ns, "demo", 2), READY_TIMEOUT)

    cluster.kubectl(
        "-n", ns, "patch", "consortium", "demo", "--type=merge", "-p", '{"spec":{"nodes":3}}'
    )
    obj = wait_for("Ready 3/3 after scale-up", lambda: ready(cluster, ns, "demo", 3), READY_TIMEOUT)
    assert [n["name"] for n in obj["status"]["nodes"]] == ["demo-0", "demo-1", "demo-2"]
    retired_id = obj["status"]["nodes"][2]["nodeId"]

    cluster.kubectl(
        "-n", ns, "patch", "consortium", "demo", "--type=merge", "-p", '{"spec":{"nodes":2}}'
    )
    obj = wait_for(
        "Ready 2/2 after scale-down", lambda: ready(cluster, ns, "demo", 2), READY_TIMEOUT
    )
    wait_for("demo-2 gone", lambda: cluster.get(ns, "pod", "demo-2") is None, 60)
    wait_for("ledger-demo-2 gone", lambda: cluster.get(ns, "pvc", "ledger-demo-2") is None, 60)
    listed = cluster.get(ns, "configmap", "demo-trusted-nodes")
    assert listed is not None
    payload = json.loads(listed["data"]["trusted-nodes.json"])
    statuses = {n["node_id"]: n["status"] for n in payload["nodes"]}
    assert statuses[retired_id] == "Retired"  # retired from the ledger before the pod went

    before = {n["name"]: n["nodeId"] for n in obj["status"]["nodes"]}
    old_uid = (cluster.get(ns, "pod", "demo-1") or {})["metadata"]["uid"]
    cluster.kubectl("-n", ns, "delete", "pod", "demo-1", "--wait=false")
    try:
        # The kubelet stops the container (10 s grace), reports it and removes the pod, then
        # the StatefulSet controller creates it again: once over 60 s on a loaded 2-core CI.
        wait_for(
            "demo-1 replaced",
            lambda: (
                (cluster.get(ns, "pod", "demo-1") or {}).get("metadata", {}).get("uid")
                not in (None, old_uid)
            ),
            120,
        )
    except WaitTimeoutError as exc:
        raise AssertionError(f"{exc}\n{pod_story(cluster, ns, 'demo-1')}") from exc
    obj = wait_for("Ready 2/2 after losing demo-1", lambda: ready(cluster, ns, "demo", 2), 120)
    after = {n["name"]: n["nodeId"] for n in obj["status"]["nodes"]}
    assert after == before  # the same node came back on its volume and rejoined


def test_deleting_the_consortium_leaves_nothing(cluster: Cluster, namespace: str) -> None:
    ns = namespace
    members, consortium = sample_docs()
    consortium["spec"]["nodes"] = 1
    cluster.apply(ns, *members, consortium)
    wait_for("Ready 1/1", lambda: ready(cluster, ns, "demo", 1), READY_TIMEOUT)
    owned = "consortium.tee.dev/consortium=demo"
    assert cluster.items(ns, "pvc")
    cluster.kubectl("-n", ns, "delete", "consortium", "demo", "--timeout=90s")

    def nothing_left() -> bool:
        left = []
        for kind in (
            "statefulset",
            "pod",
            "service",
            "configmap",
            "secret",
            "pdb",
            "networkpolicy",
        ):
            left += [f"{kind}/{i['metadata']['name']}" for i in cluster.items(ns, kind, owned)]
        left += [f"pvc/{i['metadata']['name']}" for i in cluster.items(ns, "pvc")]
        return not left

    wait_for("everything the Consortium owned to be gone", nothing_left, 120)


def test_operator_metrics_pass_promtool_and_report_the_consortium(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    ns = namespace
    members, consortium = sample_docs()
    consortium["spec"]["nodes"] = 1
    cluster.apply(ns, *members, consortium)
    wait_for("Ready 1/1", lambda: ready(cluster, ns, "demo", 1), READY_TIMEOUT)
    labels = {"namespace": ns, "consortium": "demo"}
    wait_for(
        "the Ready gauge",
        lambda: operator.sample("consortium_operator_consortium_ready", **labels) == 1,
        30,
    )
    body = operator.metrics() or ""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian package prometheus; scripts/setup-env.sh)"
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert operator.sample("consortium_operator_nodes", status="Trusted", **labels) == 1
    assert operator.sample("consortium_operator_attestation_expiry_seconds", **labels) > 3600
    assert operator.sample("consortium_operator_trusted_list_version", **labels) >= 1
    verified = "consortium_operator_attestation_verifications_total"
    assert operator.sample(verified, result="ok", **labels) >= 1
    assert operator.sample("consortium_operator_reconcile_duration_seconds_count") >= 1
    last = "consortium_operator_last_successful_reconcile_timestamp_seconds"
    assert time.time() - 120 < operator.sample(last, **labels) <= time.time()

    # A deleted Consortium's series go with it (no stale per-consortium series).
    cluster.kubectl("-n", ns, "delete", "consortium", "demo", "--timeout=120s")
    per_consortium = (
        "consortium_operator_consortium_ready",
        "consortium_operator_nodes",
        "consortium_operator_trusted_list_version",
        verified,
        last,
    )

    def forgotten() -> bool:
        lines = (operator.metrics() or "").splitlines()
        families = tuple(m.removesuffix("_total") for m in per_consortium)
        return not [ln for ln in lines if ln.startswith(families) and f'namespace="{ns}"' in ln]

    wait_for("the deleted Consortium's series to be dropped", forgotten, 60)
