"""Benchmark: leader churn on follower restarts and joins.

    .venv/bin/python bench/leader_stability.py [--restarts 3] [--no-join]

A 3-node consortium of real node processes on loopback (the integration tests' settings:
election timeout 500 ms, heartbeat 50 ms) under a closed-loop client writing through the
leader. Rounds: SIGKILL a follower and restart it with its data (``--restarts`` times); the
same, but the node comes back at another IP its peers learn ``--late`` seconds after it serves
(as a pod does; see ``tests/support/stability.py``); a new node joins, reachable at once and
published late. Prints, per round: the terms the cluster went through, whether the leader
stayed, the longest time without an acknowledged write, and the load average.

To measure another version of the node (e.g. one without pre-vote), run the script with
that checkout first on the path: ``git worktree add /tmp/baseline HEAD`` and
``PYTHONPATH=/tmp/baseline/node_image:/tmp/baseline .venv/bin/python bench/leader_stability.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

# This checkout's tests.support; consortium_node itself comes from PYTHONPATH when it is set.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from tests.support.stability import (
    Disruption,
    LoadClient,
    add_joiner,
    observe,
    restart_follower,
    start_cluster,
)

import consortium_node


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--restarts", type=int, default=3, help="rounds of each kind of restart")
    parser.add_argument(
        "--late", type=float, default=2.0, help="seconds a moved node stays unpublished"
    )
    parser.add_argument("--no-join", action="store_true", help="skip the joiner rounds")
    args = parser.parse_args()
    print(f"node code: {Path(consortium_node.__file__).parent}")
    print(f"load average before: {loadavg()}")
    results: list[Disruption] = []
    with tempfile.TemporaryDirectory(prefix="bench-leader-") as workdir:
        cluster, hosts = start_cluster(Path(workdir), 3)
        try:
            with LoadClient(cluster, cluster.leader()) as client:
                client.wait_acks(50)
                rounds = [
                    (f"restart {i + 1}", restart_follower(cluster, client, hosts))
                    for i in range(args.restarts)
                ] + [
                    (
                        f"moved restart {i + 1}",
                        restart_follower(cluster, client, hosts, args.late),
                    )
                    for i in range(args.restarts)
                ]
                if not args.no_join:
                    rounds += [
                        ("join 1", add_joiner(cluster, hosts)),
                        ("late join 1", add_joiner(cluster, hosts, args.late)),
                    ]
                for what, action in rounds:
                    try:
                        results.append(observe(cluster, client, what, action))
                    except TimeoutError as exc:  # the cluster is not back: no further rounds
                        print(f"{what}: {exc} (load {loadavg()})", flush=True)
                        break
                    print(results[-1].line(), f"(load {loadavg()})", flush=True)
        finally:
            cluster.stop()
    for kind in dict.fromkeys(r.what.rsplit(" ", 1)[0] for r in results):
        some = [r for r in results if r.what.rsplit(" ", 1)[0] == kind]
        print(
            f"{kind}: {sum(r.terms for r in some) / len(some):.1f} terms each,"
            f" leader changed {sum(not r.same_leader for r in some)} of {len(some)},"
            f" longest write pause {max(r.max_gap for r in some) * 1000:.0f} ms"
        )
    print(f"load average after: {loadavg()}")


if __name__ == "__main__":
    main()
