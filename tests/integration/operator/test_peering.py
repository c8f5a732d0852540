"""Two operator replicas with kopf peering: only one acts; the other takes over when it stops."""

from __future__ import annotations

from pathlib import Path

from tests.integration.operator.test_lifecycle import READY_TIMEOUT, ready
from tests.support.kube import ROOT, Cluster, Operator, sample_docs
from tests.support.wait import wait_for

PASSES = "consortium_operator_reconcile_duration_seconds_count"


def peers(cluster: Cluster) -> set[int]:
    """Priorities of the operators announced in the peering object."""
    obj = cluster.get("default", "clusterkopfpeering", "consortium-operator") or {}
    return {int(p["priority"]) for p in (obj.get("status") or {}).values()}


def test_only_the_highest_priority_replica_acts(
    cluster: Cluster, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl("apply", "-f", str(ROOT / "crds/kopf/1-peering-crds.yaml"))
    cluster.kubectl(
        "wait", "--for=condition=established", "--timeout=60s", "crd/clusterkopfpeerings.kopf.dev"
    )
    # a fresh peering object: no records of operators from earlier runs
    cluster.kubectl("delete", "--ignore-not-found", "-f", str(ROOT / "crds/kopf/2-peering.yaml"))
    cluster.kubectl("apply", "-f", str(ROOT / "crds/kopf/2-peering.yaml"))
    operator.stop()  # the session's standalone operator would act regardless of peering
    peering = ("--peering", "consortium-operator")
    first = Operator(tmp_path / "first.log", args=(*peering, "--priority", "200"))
    second = Operator(tmp_path / "second.log", args=(*peering, "--priority", "100"))
    first.start()
    try:
        wait_for("the first replica in the peering", lambda: peers(cluster) == {200}, 60)
        second.start()
        wait_for("both replicas in the peering", lambda: peers(cluster) == {100, 200}, 60)
        ns = namespace
        members, consortium = sample_docs()
        consortium["spec"]["nodes"] = 1
        cluster.apply(ns, *members, consortium)
        wait_for(
            "Ready 1/1 under the first replica",
            lambda: ready(cluster, ns, "demo", 1),
            READY_TIMEOUT,
        )
        assert first.sample(PASSES) > 0
        assert second.sample(PASSES) == 0  # paused: a higher-priority peer is alive

        first.stop()  # a rolling update: the first replica goes away cleanly
        before = second.sample(PASSES)
        wait_for("the second replica to take over", lambda: second.sample(PASSES) > before, 120)
        cluster.kubectl(
            "-n", ns, "patch", "consortium", "demo", "--type=merge", "-p", '{"spec":{"nodes":2}}'
        )
        wait_for(
            "Ready 2/2 under the second replica",
            lambda: ready(cluster, ns, "demo", 2),
            READY_TIMEOUT,
        )
    finally:
        first.stop()
        second.stop()
        operator.start()
