"""Least privilege, asked of the real API server: what the operator's ServiceAccount may do in
each of the chart's modes (``kubectl auth can-i --as=system:serviceaccount:…``).

One release goes through the modes with ``helm install``/``upgrade``: the default (the release
namespace only), ``watchNamespaces`` (another namespace only), ``clusterWide: true`` (every
namespace, ``kube-system`` included), then ``helm uninstall`` (nothing). The rights that make
an operator node root — create StatefulSets, Secrets and Services, delete Pods and PVCs — must
follow the mode exactly. The operator pod is kept from being scheduled (a nodeSelector no node
has): this test asks the API server only; ``test_helm_install.py`` runs the operator under the
namespaced rights."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import yaml

from tests.e2e.support import CHART, run
from tests.support.kube import Cluster

# (verb, resource) pairs that would let whoever controls the operator take over a node.
NODE_ROOT = (
    ("create", "statefulsets.apps"),
    ("create", "secrets"),
    ("patch", "secrets"),
    ("create", "services"),
    ("delete", "pods"),
    ("delete", "persistentvolumeclaims"),
)
Rights = dict[str, set[tuple[str, str]]]


def can(cluster: Cluster, account: str, verb: str, resource: str, namespace: str) -> bool:
    answer = cluster.kubectl(
        "auth", "can-i", verb, resource, "-n", namespace, f"--as={account}", check=False
    )
    assert answer.split()[0] in ("yes", "no"), answer
    return answer.split()[0] == "yes"


def rights(cluster: Cluster, account: str, namespaces: list[str]) -> Rights:
    return {
        ns: {(verb, res) for verb, res in NODE_ROOT if can(cluster, account, verb, res, ns)}
        for ns in namespaces
    }


def settle(cluster: Cluster, account: str, expected: Rights, timeout: float = 30) -> None:
    """Poll until the API server answers as expected (the RBAC authorizer follows role changes
    within moments); fail showing the difference."""
    deadline = time.monotonic() + timeout
    got = rights(cluster, account, list(expected))
    while got != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        got = rights(cluster, account, list(expected))
    assert got == expected


def test_operator_rights_follow_the_chart_mode(
    cluster: Cluster, helm: Path, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    release = f"rbac-{tag}"
    system, other = release, f"{release}-other"  # release namespace, and one more
    account = f"system:serviceaccount:{system}:{release}-consortium-operator"
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "peering": {"name": release},  # no clash with another release's peering
                "nodeSelector": {"consortium.tee.dev/rbac-test": "no-node-has-this"},
                "replicaCount": 1,
            }
        )
    )
    everywhere = [system, other, "kube-system", "default"]
    none: Rights = {ns: set() for ns in everywhere}
    full = set(NODE_ROOT)
    cluster.kubectl("create", "namespace", other)
    try:
        chart = (release, CHART, "-n", system, "-f", values)
        done = run(helm, "install", *chart, "--create-namespace")
        assert done.returncode == 0, done.stderr
        # Default: its own namespace only.
        settle(cluster, account, {**none, system: full})
        # Never a list of Secrets, and nothing cluster-scoped beyond kopf's reads.
        assert not can(cluster, account, "list", "secrets", system)
        assert can(cluster, account, "watch", "namespaces", "default")
        assert not can(cluster, account, "create", "clusterrolebindings", "default")

        # watchNamespaces: only the listed namespace, no longer its own.
        done = run(helm, "upgrade", *chart, "--set", f"watchNamespaces={{{other}}}")
        assert done.returncode == 0, done.stderr
        settle(cluster, account, {**none, other: full})

        # clusterWide: an explicit choice, and then it is node root in every namespace.
        done = run(helm, "upgrade", *chart, "--set", "clusterWide=true")
        assert done.returncode == 0, done.stderr
        settle(cluster, account, {ns: full for ns in everywhere})
        assert not can(cluster, account, "list", "secrets", "kube-system")

        done = run(helm, "uninstall", release, "-n", system, "--wait", "--timeout", "120s")
        assert done.returncode == 0, done.stderr
        settle(cluster, account, none)
    finally:
        run(helm, "uninstall", release, "-n", system, "--ignore-not-found")
        for ns in (other, system):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
