"""Benchmark: what a user sees on day one, this tree against an earlier revision, in one run.

    .venv/bin/python bench/day_one.py [--baseline REV] [--watch-minutes 4]

For each operator (the ``--baseline`` revision, run from a git worktree of it, then this
tree), on the real local Kubernetes, with the node image of this tree:
* **time to Ready** of the 3-node sample, with the milestones on the way (pod 0 running,
  genesis published, the first list published, Ready, and every pod's own readiness probe
  passing, which may come after the Consortium is Ready) — where the first pass waits;
* **Ready flaps per hour** over ``--watch-minutes`` of re-attestation rounds (validity 2m,
  renewBefore 1m: a round a minute): how often Ready left True, how often the phase said
  Bootstrapping, and the Warning Events written meanwhile.

Both operators run with the production resync (30 s). Prints a table and the load average.
Takes the local Kubernetes' lock (``tests.support.kube.exclusive``) and brings it up if needed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.kube import ROOT, Cluster, Operator, bring_up, exclusive, sample_docs, tear_down
from tests.support.wait import wait_for

MILESTONES = ("pod 0 running", "genesis published", "list published", "Ready", "3 pods ready")


def snapshot(cluster: Cluster, ns: str) -> dict[str, Any]:
    out = cluster.kubectl("-n", ns, "get", "consortia,pods,configmaps", "-o", "json")
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return {"items": items}


def reached(snap: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    pods_ready = 0
    for item in snap["items"]:
        kind, name = item["kind"], item["metadata"]["name"]
        st = item.get("status") or {}
        if kind == "Pod":
            if name == "demo-0" and st.get("phase") == "Running":
                found.add("pod 0 running")
            if any(
                c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", [])
            ):
                pods_ready += 1
        elif kind == "ConfigMap" and name == "demo-trusted-nodes":
            found.add("list published")
        elif kind == "Consortium":
            if st.get("serviceCertificate"):
                found.add("genesis published")
            ready = any(
                c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", [])
            )
            if ready and st.get("nodesReady") == "3/3":
                found.add("Ready")
    if pods_ready >= 3:
        found.add("3 pods ready")
    return found


def time_to_ready(cluster: Cluster, ns: str) -> dict[str, float]:
    members, consortium = sample_docs()
    consortium["spec"]["attestation"].update(validity="2m", renewBefore="1m")
    started = time.monotonic()
    cluster.apply(ns, *members, consortium)
    seen: dict[str, float] = {}
    deadline = started + 300
    while set(MILESTONES) - set(seen) and time.monotonic() < deadline:
        for milestone in reached(snapshot(cluster, ns)) - set(seen):
            seen[milestone] = time.monotonic() - started
        time.sleep(0.2)
    return seen


def watch_flaps(cluster: Cluster, ns: str, seconds: float) -> dict[str, float]:
    """Samples of Ready and phase every second; transitions away from Ready; Warnings."""
    since = time.time()
    end = time.monotonic() + seconds
    left_ready = bootstrapping = samples = 0
    was_ready = True
    versions: set[int] = set()
    while time.monotonic() < end:
        st = (cluster.get(ns, "consortium", "demo") or {}).get("status") or {}
        cond = next((c for c in st.get("conditions", []) if c["type"] == "Ready"), {})
        is_ready = cond.get("status") == "True"
        left_ready += was_ready and not is_ready
        was_ready = is_ready
        bootstrapping += st.get("phase") == "Bootstrapping"
        versions.add(int((st.get("trustedNodeList") or {}).get("version", 0)))
        samples += 1
        time.sleep(1.0)  # the sampling period
    warnings = [
        e
        for e in cluster.events(ns, "demo")
        if e.get("type") == "Warning" and _epoch(e.get("lastTimestamp") or "") >= since
    ]
    hours = seconds / 3600
    return {
        "rounds": max(versions) - min(versions),
        "flaps/h": left_ready / hours,
        "bootstrapping samples": bootstrapping,
        "warnings/h": sum(int(e.get("count", 1)) for e in warnings) / hours,
        "samples": samples,
    }


def _epoch(stamp: str) -> float:
    from datetime import datetime  # noqa: PLC0415

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else 0.0


def baseline_tree(rev: str) -> Path:
    path = Path(f"/tmp/consortium-baseline-{rev.replace('/', '_').replace('~', '-')}")
    if not path.exists():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True
        )
    return path


def run(cluster: Cluster, label: str, env: dict[str, str], minutes: float) -> dict[str, Any]:
    ns = f"bench-day-one-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    operator = Operator(Path(f"/tmp/consortium-bench-day-one-{label}.log"), env=env)
    operator.resync_seconds = "30"
    operator.start()
    try:
        milestones = time_to_ready(cluster, ns)
        wait_for("Ready", lambda: "Ready" in reached(snapshot(cluster, ns)), 60)
        flaps = watch_flaps(cluster, ns, minutes * 60)
    finally:
        operator.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    return {"milestones": milestones, "flaps": flaps}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare with")
    parser.add_argument("--watch-minutes", type=float, default=4.0)
    args = parser.parse_args()
    base = baseline_tree(args.baseline)
    base_env = {"PYTHONPATH": f"{base / 'operator'}:{base / 'node_image'}"}
    with exclusive():
        cluster = bring_up()
        try:
            results = {
                args.baseline: run(cluster, "baseline", base_env, args.watch_minutes),
                "this tree": run(cluster, "this", {}, args.watch_minutes),
            }
        finally:
            tear_down(cluster)
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\nload average {' '.join(load)}; re-attestation: validity 2m, renewBefore 1m")
    print(f"{'':28}" + "".join(f"{k:>16}" for k in results))
    for milestone in MILESTONES:
        cells = "".join(
            f"{r['milestones'].get(milestone, float('nan')):>15.1f}s" for r in results.values()
        )
        print(f"{'to ' + milestone:28}{cells}")
    for key in ("rounds", "flaps/h", "bootstrapping samples", "warnings/h", "samples"):
        print(f"{key:28}" + "".join(f"{r['flaps'][key]:>16.1f}" for r in results.values()))


if __name__ == "__main__":
    main()
