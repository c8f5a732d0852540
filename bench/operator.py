"""Benchmark: the operator on the real local Kubernetes.

    .venv/bin/python bench/operator.py [--consortia 50] [--steady-seconds 120]

Prints, measured in the same run:
* seconds from ``kubectl apply`` of the 3-node sample Consortium to ``Ready`` (3/3 nodes
  attested, verified by the operator and the signed list published);
* with N Consortia (1 node each, so N pods fit on this 2-core machine; a pass over each Ready
  one every ``--resync`` seconds, the operator's default 30): seconds until all are
  Ready, then the API writes per minute in steady state, counted twice — by the operator's
  own ``consortium_operator_api_writes_total`` and by the API server's audit log (writes by
  anything but kubectl and the cluster's own components, in the benchmark's namespaces) —
  and the operator's resident memory (VmRSS) and reconcile passes per minute.

Brings the cluster up (``scripts/kube.sh``) if it is not running, and down again if it did.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.kube import ROOT, Cluster, Operator, bring_up, sample_docs, tear_down
from tests.support.wait import wait_for

PASSES = "consortium_operator_reconcile_duration_seconds_count"
WRITES = "consortium_operator_api_writes_total"


def is_ready(cluster: Cluster, ns: str, name: str, nodes: int) -> bool:
    obj = cluster.get(ns, "consortium", name) or {}
    st = obj.get("status") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", []))
    return ready and st.get("nodesReady") == f"{nodes}/{nodes}"


def all_ready(cluster: Cluster, ns: str, count: int) -> bool:
    items = cluster.items(ns, "consortia")
    done = sum(
        1
        for c in items
        if any(
            x["type"] == "Ready" and x["status"] == "True"
            for x in (c.get("status") or {}).get("conditions", [])
        )
    )
    return done == count


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--consortia", type=int, default=50)
    parser.add_argument("--steady-seconds", type=float, default=120.0)
    parser.add_argument("--resync", type=float, default=30.0, help="seconds between passes")
    args = parser.parse_args()
    cluster = bring_up()
    log = Path("/tmp/consortium-bench-operator.log")
    operator = Operator(log)
    operator.args = ("--standalone",)
    operator.resync_seconds = str(args.resync)
    operator.start()
    namespaces: list[str] = []
    try:
        # 1. One 3-node Consortium from the samples: apply → Ready.
        ns = "bench-ready"
        namespaces.append(ns)
        cluster.kubectl("create", "namespace", ns)
        started = time.monotonic()
        cluster.kubectl("-n", ns, "apply", "-f", str(ROOT / "crds/samples"))
        wait_for("3-node Ready", lambda: is_ready(cluster, ns, "demo", 3), 300)
        print(f"apply → Ready, 3-node sample Consortium: {time.monotonic() - started:.1f} s")
        cluster.kubectl("delete", "namespace", ns, "--wait=false")

        # 2. N one-node Consortia: all Ready, then steady state.
        ns = "bench-many"
        namespaces.append(ns)
        cluster.kubectl("create", "namespace", ns)
        members, consortium = sample_docs()
        docs = []
        for i in range(args.consortia):
            name = f"c{i:03d}"
            member = {**members[0], "metadata": {"name": f"{name}-alice"}}
            member["spec"] = {**members[0]["spec"], "consortium": name}
            doc = {**consortium, "metadata": {"name": name}}
            doc["spec"] = {**consortium["spec"], "nodes": 1}
            docs += [member, doc]
        started = time.monotonic()
        cluster.apply(ns, *docs)
        wait_for(
            f"{args.consortia} Consortia Ready",
            lambda: all_ready(cluster, ns, args.consortia),
            60 + 20 * args.consortia,
            interval=3,
        )
        print(f"{args.consortia} one-node Consortia Ready after {time.monotonic() - started:.1f} s")
        # Let every Consortium finish the pass that wrote it Ready, then measure.
        time.sleep(40)
        assert operator.process is not None
        writes, passes = operator.sample(WRITES), operator.sample(PASSES)
        since = time.time()
        time.sleep(args.steady_seconds)
        minutes = args.steady_seconds / 60
        own = (operator.sample(WRITES) - writes) / minutes
        audited = len(cluster.audit_writes(ns, since)) / minutes
        rate = (operator.sample(PASSES) - passes) / minutes
        print(
            f"steady state over {args.steady_seconds:.0f} s: {own:.1f} writes/min "
            f"(operator metrics), {audited:.1f} writes/min (API server audit log), "
            f"{rate:.0f} reconcile passes/min"
        )
        print(
            f"operator RSS with {args.consortia} Consortia: {rss_mib(operator.process.pid):.0f} MiB"
        )
    finally:
        for ns in namespaces:
            cluster.kubectl("delete", "consortia", "--all", "-n", ns, "--wait=false", check=False)
        for ns in namespaces:
            cluster.kubectl("delete", "namespace", ns, "--timeout=300s", check=False)
        operator.stop()
        tear_down(cluster)


if __name__ == "__main__":
    main()
