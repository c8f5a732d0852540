"""Helpers of the end-to-end tier: run the real tools, and check what a release left behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.kube import KUBECONFIG, ROOT, Cluster

RELEASE = "co"
SYSTEM = "consortium-system"
CHART = ROOT / "charts/consortium-operator"


def run(*args: str | Path, timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "KUBECONFIG": str(KUBECONFIG)},
        timeout=timeout,
        **kwargs,
    )


def ctl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run(ROOT / ".venv/bin/consortiumctl", *args)


def release_left(cluster: Cluster, helm: Path, *helm_args: str | Path) -> list[str]:
    """Objects of the release (as ``helm template`` renders it) still in the cluster, and any
    pod left in its namespace."""
    rendered = run(helm, "template", RELEASE, CHART, "-n", SYSTEM, *helm_args)
    assert rendered.returncode == 0, rendered.stderr
    left = []
    for doc in yaml.safe_load_all(rendered.stdout):
        if not doc:
            continue
        kind, name = doc["kind"], doc["metadata"]["name"]
        where = ["-n", doc["metadata"].get("namespace", SYSTEM)]
        if cluster.kubectl(*where, "get", kind, name, "--ignore-not-found", "-o", "name"):
            left.append(f"{kind}/{name}")
    left += [f"pod/{p['metadata']['name']}" for p in cluster.items(SYSTEM, "pods")]
    return left


def remove_stale_peering(cluster: Cluster) -> None:
    """A peering object left by another test would collide with the chart's own. Its CRD
    exists only once the chart (or a peering test) installed it, so ask only then."""
    if cluster.get("", "crd", "clusterkopfpeerings.kopf.dev") is not None:
        cluster.kubectl("delete", "clusterkopfpeering", "consortium-operator", "--ignore-not-found")
