"""The README's main command, ``scripts/demo.sh``, on the real local cluster: the operator
installed with helm and running in a pod, the samples Ready, a transaction whose receipt
verifies offline, Debian's Prometheus scraping the operator and every node with every
dashboard query and every alert rule loaded; then ``scripts/demo.sh down`` leaves nothing of
the release, the sample namespace or Prometheus behind (and keeps a cluster it did not start).
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.support import CHART, SYSTEM, ctl, release_left, remove_stale_peering, run
from tests.support.kube import ROOT, Cluster, free_port
from tests.support.wait import WaitTimeoutError, wait_for
from tests.unit.observability.promql import substitute

DEMO = ROOT / "scripts/demo.sh"
VALUES = ROOT / "deploy/local-cluster-values.yaml"


def query(url: str, expr: str) -> list[Any]:
    full = f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(full, timeout=5) as answer:
        result: list[Any] = json.loads(answer.read())["data"]["result"]
        return result


# The demo configures no spec.backup: a panel that documents this as one of its no-data cases
# may be empty; every other query must answer.
NOT_CONFIGURED = "backups are not configured"


def dashboard_gaps(url: str, ns: str) -> list[str]:
    """Dashboard queries (variables substituted as Grafana would) that return no data, except
    those of panels whose description names the demo's missing configuration as a no-data case."""
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
        if NOT_CONFIGURED in panel.get("description", ""):
            continue
        for target in panel.get("targets", []):
            expr = substitute(target["expr"], values)
            if not query(url, expr):
                missing.append(f"{panel['title']}: {expr}")
    return missing


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A killed child of an exited parent is reaped by init; a zombie would still answer.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_demo_up_and_down(cluster: Cluster, helm: Path, tmp_path: Path) -> None:
    remove_stale_peering(cluster)
    ns = f"demo-{uuid.uuid4().hex[:6]}"
    data = tmp_path / "demo"
    args = ["--platform", "local", "--namespace", ns, "--data-dir", str(data)]
    port = free_port()
    up = run("bash", DEMO, *args, "--prometheus-port", str(port), timeout=900)
    try:
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        state: dict[str, Any] = json.loads((data / "state.json").read_text())
        # It says where to look, and what it says is true.
        assert "== Where to look" in up.stdout
        assert state["prometheus_url"] in up.stdout
        assert state["started_cluster"] is False  # the session's cluster was already up

        # The operator runs in the release's pod; its log is not flooded by probe requests.
        pods = cluster.items(SYSTEM, "pods")
        assert [p["status"]["phase"] for p in pods] == ["Running"]
        log = cluster.kubectl("logs", "-n", SYSTEM, pods[0]["metadata"]["name"])
        assert f"{ns}/demo TrustedListPublished" in log  # Events are logged too
        assert "aiohttp.access" not in log, "liveness probes logged at INFO"
        # The receipt the demo printed verifies with the service certificate read from the
        # cluster by this test, not the demo's copy.
        identity = cluster.get(ns, "configmap", "demo-service-identity")
        assert identity is not None
        service_cert = tmp_path / "service.pem"
        service_cert.write_text(identity["data"]["service-certificate.pem"])
        verified = ctl("verify-receipt", "--service-cert", service_cert, data / "receipt.json")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert json.loads(verified.stdout)["verified"] is True

        # Prometheus: the operator and the 3 nodes are up, every dashboard query has data,
        # the chart's alert rules are loaded and none fires on a healthy consortium.
        url = state["prometheus_url"]
        up_targets = {r["metric"].get("pod") or r["metric"]["job"] for r in query(url, "up == 1")}
        assert up_targets == {"consortium-operator", "demo-0", "demo-1", "demo-2"}
        gaps: list[str] = []

        def complete() -> bool:
            gaps[:] = dashboard_gaps(url, ns)
            return not gaps

        try:
            wait_for("every dashboard query to have data", complete, 120)
        except WaitTimeoutError:
            raise AssertionError(f"dashboard queries without data: {gaps}") from None
        with urllib.request.urlopen(f"{url}/api/v1/rules", timeout=5) as answer:
            groups = json.loads(answer.read())["data"]["groups"]
        loaded = {r["name"]: r["state"] for g in groups for r in g["rules"]}
        alerts = yaml.safe_load((CHART / "files/alerts.yaml").read_text())
        assert set(loaded) == {r["alert"] for g in alerts for r in g["rules"]}
        assert set(loaded.values()) == {"inactive"}, loaded

        # A replaced pod gets a new IP; the target list follows it.
        old_ip = cluster.get(ns, "pod", "demo-2")["status"]["podIP"]  # type: ignore[index]
        cluster.kubectl("-n", ns, "delete", "pod", "demo-2", "--wait=false")

        def rescraped() -> bool:
            pod = cluster.get(ns, "pod", "demo-2") or {}
            ip = (pod.get("status") or {}).get("podIP")
            found = query(url, f'up{{pod="demo-2",instance="{ip}:8443"}} == 1')
            return bool(ip) and ip != old_ip and bool(found)

        wait_for("the replaced pod to be scraped at its new address", rescraped, 180)
    finally:
        down = run("bash", DEMO, "down", "--data-dir", str(data), timeout=600)
    assert down.returncode == 0, down.stdout[-4000:] + down.stderr[-4000:]
    assert not alive(state["prometheus_pid"]) and not alive(state["sync_pid"])
    assert not (data / "state.json").exists()
    assert cluster.get("", "namespace", ns) is None
    # The demo installs the operator watching the sample namespace only.
    assert release_left(cluster, helm, "-f", VALUES, "--set", f"watchNamespaces={{{ns}}}") == []
    # A cluster the demo did not start stays up.
    assert cluster.kubectl("get", "--raw", "/readyz") == "ok"
