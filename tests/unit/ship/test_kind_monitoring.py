"""deploy/kind/: the quickstart's PodMonitor and kube-prometheus-stack values agree with what
the operator builds (pod labels, port name, published ConfigMap, Service name, NetworkPolicy)
and with the chart and kind-config.yaml. Checked from the operator's own builders, so a rename
there fails here; the Prometheus Operator itself needs a cluster with Docker (see README)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from consortium_operator.api.spec import parse_consortium
from consortium_operator.kube import builders

ROOT = Path(__file__).resolve().parents[3]
KIND = ROOT / "deploy/kind"
NAMESPACE = "consortium-demo"


def sample_spec() -> Any:
    doc = yaml.safe_load((ROOT / "crds/samples/consortium.yaml").read_text())
    return parse_consortium(doc["metadata"]["name"], doc["spec"])


def test_pod_monitor_selects_the_node_pods_and_verifies_them_like_a_client() -> None:
    monitor = yaml.safe_load((KIND / "podmonitor.yaml").read_text())
    spec = sample_spec()
    sts = builders.statefulset(spec, NAMESPACE, "uid", 3, "cluster.local")
    pod = sts["spec"]["template"]
    assert monitor["kind"] == "PodMonitor"
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    ports = [p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])]
    assert endpoint["port"] in ports
    assert (endpoint["scheme"], endpoint["path"]) == ("https", "/metrics")
    tls = endpoint["tlsConfig"]
    service = builders.headless_service(spec, NAMESPACE, "uid")["metadata"]["name"]
    assert tls["serverName"] == f"{service}.{NAMESPACE}.svc"
    published = builders.service_identity_config_map(spec, NAMESPACE, "uid", "PEM", "00")
    assert tls["ca"]["configMap"]["name"] == published["metadata"]["name"]
    assert tls["ca"]["configMap"]["key"] in published["data"]
    assert "insecureSkipVerify" not in tls


def test_monitoring_values_match_the_chart_kind_ports_and_network_policy() -> None:
    values = yaml.safe_load((KIND / "monitoring-values.yaml").read_text())
    chart = yaml.safe_load((ROOT / "charts/consortium-operator/values.yaml").read_text())
    kind = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    mapped = {m["containerPort"] for m in kind["nodes"][0]["extraPortMappings"]}
    assert values["prometheus"]["service"]["nodePort"] in mapped
    assert values["grafana"]["service"]["nodePort"] in mapped
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    assert (sidecar["label"], sidecar["labelValue"]) == (
        chart["dashboard"]["labelKey"],
        chart["dashboard"]["labelValue"],
    )
    # Prometheus pods carry the label the NetworkPolicy admits scrapers by.
    scraper_labels = values["prometheus"]["prometheusSpec"]["podMetadata"]["labels"]
    policy = builders.network_policy(sample_spec(), NAMESPACE, "uid")
    admitted = [
        peer["podSelector"]["matchLabels"]
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
        if "namespaceSelector" in peer and "matchLabels" in peer.get("podSelector", {})
    ]
    assert any(labels.items() <= scraper_labels.items() for labels in admitted), admitted
