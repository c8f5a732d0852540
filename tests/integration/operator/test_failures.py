"""What goes wrong, on a real cluster: invalid specs, an operator crash mid-bootstrap,
retained volumes, a storage fault. Every wait polls a condition with a deadline. A failed
re-attestation (reported, the node retired and replaced) is in ``test_sev_snp.py``, with the
helpers here that turn on a pod's test fault and wait for it to be reported."""

from __future__ import annotations

import copy
import json

from tests.integration.operator.test_lifecycle import READY_TIMEOUT, ready
from tests.support.kube import Cluster, Operator, sample_docs
from tests.support.wait import wait_for


def _ready_reason(cluster: Cluster, ns: str, name: str = "demo") -> tuple[str, str, str]:
    cond = cluster.condition(ns, "consortium", name, "Ready")
    return cond.get("status", ""), cond.get("reason", ""), cond.get("message", "")


def inject_fault(cluster: Cluster, ns: str, pod: str, fault: str) -> None:
    """Turn on an insecure test fault in ``pod``'s (emulated) TEE, read at its next quote."""
    cluster.kubectl(
        "-n", ns, "exec", pod, "--", "python3", "-c",
        f"open('/var/lib/consortium/insecure-test-faults','w').write({fault!r})",
    )  # fmt: skip


def reattestation_failing(cluster: Cluster, ns: str, name: str = "demo") -> str:
    """Wait for ``Degraded: ReattestationFailing``; its message."""

    def degraded() -> str | None:
        cond = cluster.condition(ns, "consortium", name, "Degraded")
        if cond.get("status") == "True" and cond.get("reason") == "ReattestationFailing":
            return str(cond["message"])
        return None

    return wait_for("Degraded: ReattestationFailing", degraded, 90)


def test_invalid_specs_are_reported_and_fixing_them_recovers(
    cluster: Cluster, namespace: str
) -> None:
    ns = namespace
    members, consortium = sample_docs()
    consortium["spec"]["nodes"] = 1
    good = copy.deepcopy(consortium)

    # nodes 0, or past the maximum (9; Parallel pod management would start them all at
    # once): refused by the API server, naming the field and its bound; nothing is stored.
    for nodes, bound in ((0, "1"), (1000, "9")):
        bad_nodes = copy.deepcopy(consortium)
        bad_nodes["spec"]["nodes"] = nodes
        out = cluster.kubectl(
            "-n", ns, "apply", "-f", "-", stdin=json.dumps(bad_nodes), check=False
        )
        assert "spec.nodes" in out and bound in out, out
        assert cluster.get(ns, "consortium", "demo") is None

    # renewBefore >= validity: only the operator can tell. Ready=False naming the field, an
    # Event, and no partial resources.
    bad = copy.deepcopy(consortium)
    bad["spec"]["attestation"].update(validity="1h", renewBefore="2h")
    cluster.apply(ns, *members, bad)
    wait_for("InvalidSpec", lambda: _ready_reason(cluster, ns)[1] == "InvalidSpec", 60)
    assert "spec.attestation.renewBefore" in _ready_reason(cluster, ns)[2]
    assert cluster.get(ns, "consortium", "demo")["status"]["phase"] == "Failed"  # type: ignore[index]
    assert any(e["reason"] == "InvalidSpec" for e in cluster.events(ns, "demo"))
    owned = "consortium.tee.dev/consortium=demo"
    for kind in ("statefulset", "configmap", "secret", "service"):
        assert cluster.items(ns, kind, owned) == [], kind

    # A measurement that is valid hex but not this image's: genesis refuses to start, the
    # operator names spec.attestation.measurements; fixing it recovers without a restart.
    wrong = copy.deepcopy(consortium)
    wrong["spec"]["attestation"]["measurements"] = ["00" * 32]
    cluster.apply(ns, wrong)
    wait_for(
        "AttestationRefused",
        lambda: _ready_reason(cluster, ns)[1] == "AttestationRefused",
        120,
    )
    refused = _ready_reason(cluster, ns)[2]
    assert refused.startswith("spec.attestation.measurements: demo-0 runs code measuring "), refused
    measured = refused.split("measuring ", 1)[1][:64]
    assert refused.count(measured) == 1, refused  # the node's measurement once…
    assert f"[{'00' * 32}]" in refused, refused  # …and the list the spec allows
    cluster.apply(ns, good)
    wait_for("Ready 1/1 after fixing the measurement", lambda: ready(cluster, ns, "demo", 1), 180)

    # An image that does not exist: ImageUnavailable naming spec.image; fixing it recovers.
    missing = copy.deepcopy(good)
    missing["spec"]["image"] = "localhost/consortium-node:does-not-exist"
    missing["spec"]["nodes"] = 2
    cluster.apply(ns, missing)
    wait_for("ImageUnavailable", lambda: _ready_reason(cluster, ns)[1] == "ImageUnavailable", 120)
    assert "spec.image" in _ready_reason(cluster, ns)[2]
    fixed = copy.deepcopy(good)
    fixed["spec"]["nodes"] = 2
    cluster.apply(ns, fixed)
    wait_for("Ready 2/2 after fixing the image", lambda: ready(cluster, ns, "demo", 2), 180)


def test_member_of_an_unknown_consortium(cluster: Cluster, namespace: str) -> None:
    ns = namespace
    members, _ = sample_docs()
    stray = copy.deepcopy(members[0])
    stray["metadata"]["name"] = "stray"
    stray["spec"]["consortium"] = "nowhere"
    cluster.apply(ns, stray)

    def accepted() -> dict[str, str] | None:
        cond = cluster.condition(ns, "member", "stray", "Accepted")
        return cond if cond.get("status") == "False" else None

    cond = wait_for("Member Accepted=False", accepted, 60)
    assert cond["reason"] == "ConsortiumNotFound"
    assert "spec.consortium" in cond["message"]
    member = cluster.get(ns, "member", "stray")
    assert member is not None and len(member["status"]["memberId"]) == 64


def test_operator_killed_mid_bootstrap_converges_without_duplicates(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    ns = namespace
    members, consortium = sample_docs()
    cluster.apply(ns, *members, consortium)
    wait_for("pod demo-0 to exist", lambda: cluster.get(ns, "pod", "demo-0"), 60)
    operator.kill()
    try:
        wait_for(
            "demo-0 running genesis",
            lambda: (cluster.get(ns, "pod", "demo-0") or {}).get("status", {}).get("podIP"),
            60,
        )
    finally:
        operator.start()
    obj = wait_for("Ready 3/3 after the restart", lambda: ready(cluster, ns, "demo", 3), 240)
    owned = "consortium.tee.dev/consortium=demo"
    secrets = [s["metadata"]["name"] for s in cluster.items(ns, "secret", owned)]
    assert sorted(secrets) == ["demo-operator-identity", "demo-platform-root"]
    assert len(cluster.items(ns, "statefulset", owned)) == 1
    identity = cluster.get(ns, "configmap", "demo-service-identity")
    assert identity is not None
    assert identity["data"]["sha256"] == obj["status"]["serviceCertificateSha256"]
    listed = cluster.get(ns, "configmap", "demo-trusted-nodes")
    assert listed is not None
    nodes = json.loads(listed["data"]["trusted-nodes.json"])["nodes"]
    trusted = sorted(n["name"] for n in nodes if n["status"] == "Trusted")
    assert trusted == ["demo-0", "demo-1", "demo-2"]  # one node per pod, one genesis


def test_retain_on_delete_keeps_the_ledger_volumes(cluster: Cluster, namespace: str) -> None:
    ns = namespace
    members, consortium = sample_docs()
    consortium["spec"]["nodes"] = 1
    consortium["spec"]["storage"] = {"size": "1Gi", "retainOnDelete": True}
    cluster.apply(ns, *members, consortium)
    wait_for("Ready 1/1", lambda: ready(cluster, ns, "demo", 1), READY_TIMEOUT)
    cluster.kubectl("-n", ns, "delete", "consortium", "demo", "--timeout=90s")
    wait_for("the StatefulSet gone", lambda: not cluster.items(ns, "statefulset"), 90)
    assert [c["metadata"]["name"] for c in cluster.items(ns, "pvc")] == ["ledger-demo-0"]
    secret = cluster.get(ns, "secret", "demo-platform-root")
    assert secret is not None and not secret["metadata"].get("ownerReferences")


def test_no_governor_member_holds_genesis_until_one_exists(
    cluster: Cluster, namespace: str
) -> None:
    ns = namespace
    members, consortium = sample_docs()
    consortium["spec"]["nodes"] = 1
    cluster.apply(ns, consortium)
    wait_for("NoGovernor", lambda: _ready_reason(cluster, ns)[1] == "NoGovernor", 60)
    assert "role governor" in _ready_reason(cluster, ns)[2]
    assert cluster.items(ns, "statefulset") == []
    cluster.apply(ns, *members)
    wait_for("Ready 1/1 once members exist", lambda: ready(cluster, ns, "demo", 1), READY_TIMEOUT)


FLIP_A_COMMITTED_BYTE = """
import glob
chunk = sorted(glob.glob('/var/lib/consortium/ledger/ledger_*.chunk'))[0]
data = bytearray(open(chunk, 'rb').read())
data[len(data) // 2] ^= 0x01
open(chunk, 'wb').write(bytes(data))
print(chunk, len(data))
"""


def test_a_storage_fault_is_repaired_and_reported(cluster: Cluster, namespace: str) -> None:
    """A bit flips in a committed entry on demo-1's volume; its restart repairs it from the
    consortium, and the operator reports the repair (Event LedgerRepaired) from the node's
    own account (``GET /node/state``)."""
    ns = namespace
    members, consortium = sample_docs()
    consortium["spec"]["nodes"] = 3
    cluster.apply(ns, *members, consortium)
    wait_for("Ready 3/3", lambda: ready(cluster, ns, "demo", 3), READY_TIMEOUT)
    damaged = cluster.kubectl("-n", ns, "exec", "demo-1", "--", "python3", "-c",
                              FLIP_A_COMMITTED_BYTE)  # fmt: skip
    cluster.kubectl("-n", ns, "delete", "pod", "demo-1", "--wait=false")

    def repaired() -> dict[str, object] | None:
        found = [e for e in cluster.events(ns, "demo") if e["reason"] == "LedgerRepaired"]
        return found[-1] if found else None

    event = wait_for("Event LedgerRepaired", repaired, 240)
    assert str(event["message"]).startswith("demo-1: holds every committed entry again"), event
    assert "corrupted at ledger_" in str(event["message"]), (damaged, event)
    wait_for("Ready 3/3 again", lambda: ready(cluster, ns, "demo", 3), READY_TIMEOUT)
    assert cluster.condition(ns, "consortium", "demo", "Degraded").get("status") == "False"
