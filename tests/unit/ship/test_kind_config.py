"""kind-config.yaml: the quickstart's cluster, checked structurally (kind needs Docker)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]


def test_kind_config_is_one_control_plane_with_loopback_port_mappings() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    [node] = config["nodes"]
    assert node["role"] == "control-plane"
    assert not node["image"].endswith(":latest")
    ports = {m["hostPort"]: m for m in node["extraPortMappings"]}
    assert set(ports) == {30080, 30090, 30443}
    for mapping in ports.values():
        assert mapping["containerPort"] == mapping["hostPort"]
        assert mapping["listenAddress"] == "127.0.0.1"  # never exposed beyond the host
