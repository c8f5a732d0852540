"""The full run on the real local cluster: ``helm install`` with the operator in a pod, the
samples' Consortium Ready, a transaction whose receipt verifies offline with the service
certificate taken from the cluster, then ``helm uninstall`` leaving nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.support.kube import KUBECONFIG, ROOT, Cluster, free_port, sample_docs, wait_for
from tests.unit.observability.promql import substitute

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


@contextlib.contextmanager
def prometheus(
    tmp: Path, ca: Path, node_ips: list[str], ns: str
) -> Iterator[Callable[[str], list[Any]]]:
    """Debian's prometheus on loopback, scraping every 1 s; yields an instant-query function."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "consortium-operator",
                "honor_labels": True,
                "static_configs": [{"targets": ["127.0.0.1:18080"]}],
            },
            {
                "job_name": "consortium-nodes",
                "scheme": "https",
                "tls_config": {"ca_file": str(ca)},
                "static_configs": [
                    {"targets": [f"{ip}:8443" for ip in node_ips], "labels": {"namespace": ns}}
                ],
            },
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    binary = shutil.which("prometheus")
    assert binary, "prometheus is required (Debian package prometheus; scripts/setup-env.sh)"
    with open(tmp / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def query(expr: str) -> list[Any]:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as answer:
            result: list[Any] = json.loads(answer.read())["data"]["result"]
            return result

    try:
        wait_for("prometheus to answer", lambda: query("vector(1)"), 60)
        yield query
    finally:
        proc.terminate()
        proc.wait(30)


def _up(query: Callable[[str], list[Any]]) -> int:
    return sum(1 for r in query("up") if r["value"][1] == "1")


def _value(query: Callable[[str], list[Any]], expr: str) -> float:
    found = query(expr)
    assert found, f"no data for {expr}"
    return float(found[0]["value"][1])


def _missing(query: Callable[[str], list[Any]], ns: str) -> list[str]:
    """Dashboard queries (variables substituted) that return no data."""
    dashboard = json.loads((CHART / "files/dashboard.json").read_text())
    values = {
        "namespace": ns,
        "consortium": "demo",
        "datasource": "prometheus",
        "__rate_interval": "30s",
        "__interval": "5s",
        "__interval_ms": "5000",
        "__range": "5m",
        "__range_s": "300",
    }
    missing = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = substitute(target["expr"], values)
            if not query(expr):
                missing.append(f"{panel['title']}: {expr}")
    return missing


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

        # A real Prometheus scrapes the operator and every node (HTTPS, verified with the
        # service certificate); the operator's and the nodes' metrics, and every dashboard
        # query, have data.
        node_ips = [
            cluster.get(ns, "pod", f"demo-{i}")["status"]["podIP"]  # type: ignore[index]
            for i in range(3)
        ]
        with prometheus(tmp_path, service_cert, node_ips, ns) as query:
            wait_for("4 targets up", lambda: _up(query) == 4, 120)
            assert _value(query, f'consortium_operator_consortium_ready{{namespace="{ns}"}}') == 1
            assert _value(query, f'min(consortium_commit_index{{namespace="{ns}"}})') > 0
            gaps: list[str] = []

            def complete() -> bool:
                gaps[:] = _missing(query, ns)
                return not gaps

            try:
                wait_for("every dashboard query to have data", complete, 120)
            except AssertionError:
                raise AssertionError(
                    "dashboard queries without data:\n" + "\n".join(gaps)
                ) from None
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
