"""The chart on the real local cluster with the test values (``hostnetwork-test.yaml``: test
faults on, DEBUG logs): ``helm install`` with the operator in a pod watching only the samples'
namespace (``watchNamespaces``: its rights are a Role there), the samples' Consortium — on
``platform: sev-snp`` with the INSECURE SEV-SNP emulator, so the e2e tier runs the SEV-SNP
verifier end to end (``test_demo.py`` runs insecure-virtual) — Ready without one refused API
call, a transaction whose receipt verifies offline with the service
certificate taken from the cluster, then ``helm uninstall`` leaving nothing behind. Prometheus
and the dashboard are checked on the README's main command (``test_demo.py``); the rights of
each mode in ``test_rbac.py``."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from consortium_node.attestation.sev_snp.emulator import launch_measurement
from tests.e2e.support import (
    CHART,
    RELEASE,
    SYSTEM,
    ctl,
    release_left,
    remove_stale_peering,
    run,
)
from tests.support.kube import ROOT, Cluster, sample_docs
from tests.support.wait import wait_for

VALUES = ROOT / "tests/unit/chart/values/hostnetwork-test.yaml"


def ready(cluster: Cluster, ns: str, nodes: int) -> bool:
    obj = cluster.get(ns, "consortium", "demo") or {}
    st = obj.get("status") or {}
    return (
        any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", []))
        and st.get("nodesReady") == f"{nodes}/{nodes}"
    )


def test_helm_install_samples_receipt_and_uninstall(
    cluster: Cluster, helm: Path, tmp_path: Path
) -> None:
    remove_stale_peering(cluster)
    # The samples' namespace is not the release's: the operator is told to watch it, which
    # needs it to exist first (the chart puts the operator's Role and KopfPeering there).
    ns = f"e2e-{uuid.uuid4().hex[:6]}"
    watch = ("--set", f"watchNamespaces={{{ns}}}")
    cluster.kubectl("create", "namespace", ns)
    try:
        installed = run(
            helm,
            "install",
            RELEASE,
            CHART,
            "-n",
            SYSTEM,
            "--create-namespace",
            "-f",
            VALUES,
            *watch,
            "--wait",
            "--timeout",
            "180s",
        )
        assert installed.returncode == 0, installed.stderr
        # Members whose keys we hold (the samples ship certificates only).
        ids = tmp_path / "ids"
        for name in ("alice", "bob"):
            assert ctl("keygen", "--name", name, "--out-dir", ids).returncode == 0
        members, consortium = sample_docs()
        package = consortium["spec"]["attestation"]["measurements"][0]
        consortium["spec"]["attestation"] |= {
            "platform": "sev-snp",
            "measurements": [launch_measurement(package).hex()],
            "sevSnp": {"device": "insecure-emulator", "minimumTcb": {"Genoa": {"snp": 23}}},
        }
        for member in members:
            name = member["metadata"]["name"]
            member["spec"]["certificate"] = (ids / f"{name}_cert.pem").read_text()
        cluster.apply(ns, *members, consortium)
        wait_for("Ready 3/3 with the operator in a pod", lambda: ready(cluster, ns, 3), 300)
        status = (cluster.get(ns, "consortium", "demo") or {})["status"]
        assert {n["measurement"] for n in status["nodes"]} == {launch_measurement(package).hex()}

        identity = cluster.get(ns, "configmap", "demo-service-identity")
        assert identity is not None
        service_cert = tmp_path / "service.pem"
        service_cert.write_text(identity["data"]["service-certificate.pem"])
        pod0 = cluster.get(ns, "pod", "demo-0")
        assert pod0 is not None
        node = f"https://{pod0['status']['podIP']}:8443"
        receipt = tmp_path / "receipt.json"
        submitted = ctl(
            "tx",
            "submit",
            "--node",
            node,
            "--service-cert",
            service_cert,
            "--cert",
            ids / "alice_cert.pem",
            "--key",
            ids / "alice_privk.pem",
            "--set",
            "greeting=hello from helm",
            "--receipt-out",
            receipt,
        )
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        verified = ctl("verify-receipt", "--service-cert", service_cert, receipt)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert json.loads(receipt.read_text())["txid"]

        # The operator runs in the release's pod, not on the host, and did all of that with
        # the rights of its Role in the watched namespace: neither kopf nor the operator asked
        # for anything it was refused (a cluster-wide list or watch would be).
        pods = cluster.items(SYSTEM, "pods")
        assert [p["status"]["phase"] for p in pods] == ["Running"]
        log = cluster.kubectl("logs", "-n", SYSTEM, pods[0]["metadata"]["name"])
        args = pods[0]["spec"]["containers"][0]["args"]
        assert args[args.index("--namespace") :][:2] == ["--namespace", ns]
        assert args.count("--namespace") == 1
        refused = [
            line
            for line in log.splitlines()
            # An HTTP 403 as urllib3, the operator or kopf log it (not a log time's ",403").
            if re.search(
                r'forbidden|HTTP/1\.1" 403\b|HTTP 403\b|not enough permissions', line, re.IGNORECASE
            )
        ]
        assert not refused, "\n".join(refused[:10])

        # Deleting the namespace as it is: its first sweep takes the operator's Role with it,
        # before the finalizers of the Consortium and Members run; the operator still releases
        # them (its cluster-wide get/patch of these two kinds) and the namespace goes.
        cluster.kubectl("delete", "namespace", ns, "--wait=false")
        wait_for(
            f"namespace {ns} gone",
            lambda: not cluster.kubectl("get", "namespace", ns, "--ignore-not-found", "-o", "name"),
            120,
        )
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    uninstalled = run(helm, "uninstall", RELEASE, "-n", SYSTEM, "--wait", "--timeout", "120s")
    assert uninstalled.returncode == 0, uninstalled.stderr

    gone: list[str] = []

    def nothing_left() -> bool:
        gone[:] = release_left(cluster, helm, "-f", VALUES, *watch)
        return not gone

    wait_for(f"everything the release created to be gone (left: {gone})", nothing_left, 120)
