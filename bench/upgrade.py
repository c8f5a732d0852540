"""Benchmark: a members-approved code upgrade on the real local Kubernetes.

    .venv/bin/python bench/upgrade.py [--pace 0.05]

A 3-node Consortium with three governors, a client writing one transaction every ``--pace``
seconds (round-robin over the pods, retrying elsewhere on failure), then a new node image
(``scripts/build-images.sh --node-variant``: a distinct code measurement) named in the spec.
Prints, from the same run:

* seconds from the spec change to the operator's Proposal being Open in the ledger, and from
  the accepting ballot (appended with ``kubectl patch``) to ``Accepted``;
* seconds from ``Accepted`` to each node replaced (retired, new pod, Trusted) and to the whole
  roll done (every node on the new image, Ready, ``UpToDate``);
* for the client: transactions acknowledged before/during/after the roll, failed attempts
  during it, the longest time without an acknowledgement, and transactions lost (every
  acknowledged key is read back afterwards: must be 0).

Brings the cluster up (``scripts/kube.sh``) if it is not running, and down again if it did.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.gov_kube import (
    Writer,
    answering,
    append_ballot,
    ballot,
    condition,
    consortium_doc,
    member_doc,
    new_code,
    pod_images,
    proposal_with,
    state_is,
)
from tests.support.harness import make_identity
from tests.support.kube import Operator, bring_up, build_node_variant, tear_down
from tests.support.wait import wait_for


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pace", type=float, default=0.05, help="seconds between writes")
    args = parser.parse_args()
    cluster = bring_up()
    new_image, new_measurement = build_node_variant("upgrade-test")
    operator = Operator(Path("/tmp/consortium-bench-upgrade.log"))
    operator.args = ("--standalone",)
    operator.start()
    ns = "bench-upgrade"
    ids = Path(tempfile.mkdtemp(prefix="bench-upgrade-"))
    people = [make_identity(ids, n, "governor") for n in ("alice", "bob", "carol")]
    try:
        cluster.kubectl("create", "namespace", ns)
        consortium = consortium_doc(3)
        old_measurement = consortium["spec"]["attestation"]["measurements"][0]
        cluster.apply(ns, *(member_doc(p) for p in people), consortium)

        def ready() -> dict[str, Any] | None:
            obj = cluster.get(ns, "consortium", "demo") or {}
            st = obj.get("status") or {}
            ok = any(
                c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", [])
            )
            return obj if ok and st.get("nodesReady") == "3/3" else None

        obj = wait_for("Ready 3/3", ready, 300)
        service_pem = obj["status"]["serviceCertificate"]
        writer = Writer(cluster, ns, people[0], service_pem)
        writer.PACE = args.pace
        writer.start()
        wait_for("writes flowing", lambda: len(writer.acked) >= 20 or None, 60)

        t0 = time.monotonic()
        new_code(cluster, ns, new_image, [old_measurement, new_measurement])
        prop = wait_for("proposal Open", lambda: proposal_with(cluster, ns, "measurements"), 120)
        t_open = time.monotonic()
        name, pid = prop["metadata"]["name"], prop["status"]["proposalId"]
        append_ballot(cluster, ns, name, ballot(people[0], pid, "approve"))
        wait_for(
            "1/2",
            lambda: (
                (cluster.get(ns, "proposal", name) or {}).get("status", {}).get("votes") == "1/2"
                or None
            ),
            60,
        )
        t_vote = time.monotonic()
        acked_before = len(writer.acked)
        append_ballot(cluster, ns, name, ballot(people[1], pid, "approve"))
        wait_for("Accepted", lambda: state_is(cluster, ns, name, "Accepted"), 120)
        t_accepted = time.monotonic()
        replaced: list[float] = []

        def rolled() -> bool | None:
            images = pod_images(cluster, ns)
            on_new = sum(1 for i in images.values() if i == new_image)
            o = cluster.get(ns, "consortium", "demo") or {}
            trusted_new = sum(
                1
                for n in o.get("status", {}).get("nodes", [])
                if n.get("measurement") == new_measurement and n.get("status") == "Trusted"
            )
            while len(replaced) < min(on_new, trusted_new):
                replaced.append(time.monotonic() - t_accepted)
            done = ready() is not None and trusted_new == 3 and on_new == 3
            return (done and condition(o, "UpToDate")["status"] == "True") or None

        wait_for("roll done", rolled, 900, interval=1.0)
        t_done = time.monotonic()
        acked_during = len(writer.acked) - acked_before
        failures_during = writer.failures
        time.sleep(10)  # a steady stretch after the roll, to compare the write rate
        writer.stop.set()
        writer.join(30)
        acked_after = len(writer.acked) - acked_before - acked_during
        gaps = [b - a for a, b in zip(writer.acked_at, writer.acked_at[1:], strict=False)]
        client = wait_for(
            "every node answering", lambda: answering(cluster, ns, people[0], service_pem), 60
        )
        lost = 0
        for key, txid in writer.acked.items():
            resp = client.request("GET", f"/app/kv/{key}")
            if resp.status != 200 or resp.json().get("txid") != txid:
                lost += 1
        print(f"spec change → operator proposal Open in the ledger: {t_open - t0:.1f} s")
        print(f"first ballot relayed and recorded (1/2): {t_vote - t_open:.1f} s after Open")
        print(f"accepting ballot appended → Accepted: {t_accepted - t_vote:.1f} s")
        print(
            "Accepted → node replaced (new code, Trusted): "
            + ", ".join(f"{x:.1f} s" for x in replaced)
        )
        roll = t_done - t_accepted
        print(f"Accepted → roll done (3/3 on the new image, Ready, UpToDate): {roll:.1f} s")
        print(
            f"client, one write every {args.pace * 1000:.0f} ms: {acked_during} acknowledged "
            f"during the roll ({acked_during / roll:.1f}/s), {failures_during} failed attempts, "
            f"{acked_after} in the 10 s after ({acked_after / 10:.1f}/s); longest gap between "
            f"acknowledgements {max(gaps):.2f} s"
        )
        total = len(writer.acked)
        print(f"acknowledged transactions read back: {total - lost}/{total}; lost: {lost}")
    finally:
        cluster.kubectl("delete", "consortia", "--all", "-n", ns, "--wait=false", check=False)
        cluster.kubectl("delete", "namespace", ns, "--timeout=300s", check=False)
        operator.stop()
        tear_down(cluster)


if __name__ == "__main__":
    main()
