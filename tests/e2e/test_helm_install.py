"""The full run on the real local cluster: ``helm install`` with the operator in a pod, the
samples' Consortium Ready, a transaction whose receipt verifies offline with the service
certificate taken from the cluster, then ``helm uninstall`` leaving nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.support.kube import KUBECONFIG, ROOT, Cluster, sample_docs, wait_for

RELEASE = "co"
SYSTEM = "consortium-system"
CHART = ROOT / "charts/consortium-operator"
VALUES = ROOT / "tests/unit/chart/values/hostnetwork-test.yaml"


def run(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "KUBECONFIG": str(KUBECONFIG)},
        timeout=300,
        **kwargs,
    )


def ctl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run(ROOT / ".venv/bin/consortiumctl", *args)


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
    # A peering object left by another test would collide with the chart's own.
    cluster.kubectl("delete", "clusterkopfpeering", "consortium-operator", "--ignore-not-found")
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
        "--wait",
        "--timeout",
        "180s",
    )
    assert installed.returncode == 0, installed.stderr
    ns = f"e2e-{uuid.uuid4().hex[:6]}"
    try:
        cluster.kubectl("create", "namespace", ns)
        # Members whose keys we hold (the samples ship certificates only).
        ids = tmp_path / "ids"
        for name in ("alice", "bob"):
            assert ctl("keygen", "--name", name, "--out-dir", ids).returncode == 0
        members, consortium = sample_docs()
        for member in members:
            name = member["metadata"]["name"]
            member["spec"]["certificate"] = (ids / f"{name}_cert.pem").read_text()
        cluster.apply(ns, *members, consortium)
        wait_for("Ready 3/3 with the operator in a pod", lambda: ready(cluster, ns, 3), 300)

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

        # The operator runs in the release's pod, not on the host.
        pods = cluster.items(SYSTEM, "pods")
        assert [p["status"]["phase"] for p in pods] == ["Running"]
        cluster.kubectl("-n", ns, "delete", "consortium", "demo", "--timeout=120s")
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    uninstalled = run(helm, "uninstall", RELEASE, "-n", SYSTEM, "--wait", "--timeout", "120s")
    assert uninstalled.returncode == 0, uninstalled.stderr

    def nothing_left() -> bool:
        rendered = run(helm, "template", RELEASE, CHART, "-n", SYSTEM, "-f", VALUES)
        for doc in yaml.safe_load_all(rendered.stdout):
            if not doc:
                continue
            kind, name = doc["kind"], doc["metadata"]["name"]
            where = ["-n", doc["metadata"].get("namespace", SYSTEM)]
            if cluster.kubectl(*where, "get", kind, name, "--ignore-not-found", "-o", "name"):
                return False
        return not cluster.items(SYSTEM, "pods")

    wait_for("everything the release created to be gone", nothing_left, 120)
