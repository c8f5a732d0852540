"""Shared helpers of the chart tests: where things are, running helm, rendering (cached)."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "consortium-operator"
VALUES_DIR = Path(__file__).resolve().parent / "values"
INSTALL_HELM = REPO / "scripts" / "install-helm.sh"

# Kubernetes versions the manifests are validated against: the oldest the chart supports
# (Chart.yaml kubeVersion) and the newest kubernetes-validate (pinned to 1.28.3, the last release
# that still ships 1.20 schemas) knows.
KUBE_VERSIONS = ("1.20", "1.28")
RELEASE = "consortium-operator"
NAMESPACE = "consortium-system"

# Kinds that are not built into Kubernetes (kubernetes-validate has no schema for them).
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ClusterKopfPeering", "KopfPeering"}


def install_helm() -> str:
    out = subprocess.run(
        ["bash", str(INSTALL_HELM)], check=True, capture_output=True, text=True, timeout=300
    )
    path = out.stdout.strip().splitlines()[-1]
    assert Path(path).is_file(), out
    return path


def helm(helm_bin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm_bin, *args], capture_output=True, text=True, timeout=120, check=False
    )


@cache
def render(
    helm_bin: str,
    values: str | None,
    kube_version: str = "1.28",
    extra: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """``helm template`` of the chart (one values file from VALUES_DIR, or defaults)."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    args += ["--kube-version", f"{kube_version}.0"]
    if values is not None:
        args += ["-f", str(values_path(values))]
    out = helm(helm_bin, *args, *extra)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


# Values files users are pointed at (README, scripts/demo.sh), rendered like the test ones.
SHIPPED_VALUES = ("deploy/local-cluster-values.yaml",)


def values_files() -> list[str]:
    return sorted(p.name for p in VALUES_DIR.glob("*.yaml")) + list(SHIPPED_VALUES)


def values_path(name: str) -> Path:
    return REPO / name if name in SHIPPED_VALUES else VALUES_DIR / name
