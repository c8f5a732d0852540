"""A Consortium on ``platform: sev-snp`` on the real local cluster, with the INSECURE SEV-SNP
emulator in the node pods (``device: insecure-emulator``): the operator provisions the
emulator's root, three pods attest with real-format SEV-SNP reports that the nodes and the
operator judge with the real SEV-SNP verifier, rounds re-attest, an auditor verifies a pod's
quote with ``consortiumctl``, and a node whose evidence turns bad (a test fault) is reported
(``Degraded: ReattestationFailing`` naming the node, the reason and when its attestation
expires), retired and replaced by a fresh node (issue 16; this is also the cluster test of
failed re-attestation, which the operator handles alike on every platform)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from consortium_node.attestation.sev_snp import emulator
from tests.integration.operator.test_failures import inject_fault, reattestation_failing
from tests.integration.operator.test_lifecycle import READY_TIMEOUT, ready
from tests.support.harness import ctl
from tests.support.kube import Cluster, sample_docs
from tests.support.wait import wait_for


@pytest.mark.timeout(900)
def test_an_emulated_sev_snp_consortium_attests_re_attests_and_refuses_a_forged_node(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    ns = namespace
    members, consortium = sample_docs()
    package = consortium["spec"]["attestation"]["measurements"][0]
    measurement = emulator.launch_measurement(package).hex()
    consortium["spec"]["attestation"] = {
        "platform": "sev-snp",
        "measurements": [measurement],
        "validity": "75s",
        "renewBefore": "55s",
        "sevSnp": {
            "device": "insecure-emulator",
            "minimumTcb": {"Genoa": {"snp": 23, "microcode": 84}},
            "products": ["Genoa"],
        },
    }
    cluster.apply(ns, *members, consortium)
    obj = wait_for("Ready 3/3 on sev-snp", lambda: ready(cluster, ns, "demo", 3), READY_TIMEOUT)
    nodes = obj["status"]["nodes"]
    assert {n["measurement"] for n in nodes} == {measurement}
    assert obj["status"]["platform"] == {"name": "sev-snp", "insecure": True}
    first_version = obj["status"]["trustedNodeList"]["version"]

    # The operator created the emulator's root (INSECURE, in a Secret) and the pods use it.
    secret = cluster.get(ns, "secret", "demo-platform-root")
    assert secret is not None
    assert sorted(secret["data"]) == [emulator.CHAIN_FILE, emulator.KEY_FILE]
    chain = tmp_path / "emulator-chain.pem"
    chain.write_bytes(base64.b64decode(secret["data"][emulator.CHAIN_FILE]))
    reasons = [e["reason"] for e in cluster.events(ns, "demo")]
    assert "PlatformRootCreated" in reasons

    # An auditor checks a pod's quote: fresh nonce, the SEV-SNP verifier, the emulator's root.
    identity = cluster.get(ns, "configmap", "demo-service-identity")
    assert identity is not None
    service_cert = tmp_path / "service.pem"
    service_cert.write_text(identity["data"]["service-certificate.pem"])
    pod = cluster.get(ns, "pod", "demo-1")
    assert pod is not None
    node = f"https://{pod['status']['podIP']}:8443"
    done = ctl("quote", "verify", "--platform", "sev-snp", "--node", node,
               "--service-cert", str(service_cert), "--insecure-emulator-root", str(chain),
               "--measurement", measurement, "--snp-min-tcb", "Genoa:snp=23")  # fmt: skip
    assert done.returncode == 0, done.stderr
    claims = json.loads(done.stdout)
    assert (claims["platform"], claims["format"]) == ("sev-snp", "sev-snp/v1")
    assert claims["node_id"] == next(n["nodeId"] for n in nodes if n["name"] == "demo-1")

    # Re-attestation rounds (every 20 s) issue new lists; Ready stays.
    def two_rounds() -> bool:
        current = ready(cluster, ns, "demo", 3)
        assert current is not None, "Ready flapped during re-attestation"
        return bool(current["status"]["trustedNodeList"]["version"] >= first_version + 2)

    wait_for("two re-attestation rounds", two_rounds, 90, interval=1)

    # demo-2's emulated processor now reports another launch measurement (a forged node).
    old_id = next(n["nodeId"] for n in nodes if n["name"] == "demo-2")
    inject_fault(cluster, ns, "demo-2", "wrong-measurement")
    message = reattestation_failing(cluster, ns)
    assert "demo-2" in message and "MeasurementNotAllowed" in message and "expires at" in message

    def replaced() -> bool:
        current = ready(cluster, ns, "demo", 3)
        if current is None:
            return False
        by_name = {n["name"]: n for n in current["status"]["nodes"]}
        return bool(by_name["demo-2"]["nodeId"] != old_id)

    wait_for("demo-2 retired and replaced by a fresh node", replaced, 240)
    listed = cluster.get(ns, "configmap", "demo-trusted-nodes")
    assert listed is not None
    payload = json.loads(listed["data"]["trusted-nodes.json"])
    assert {n["node_id"]: n["status"] for n in payload["nodes"]}[old_id] == "Retired"
    assert {n["measurement"] for n in payload["nodes"]} == {measurement}
    reasons = [e["reason"] for e in cluster.events(ns, "demo")]
    assert "NodeRetired" in reasons and "NodeReplaced" in reasons
