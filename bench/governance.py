"""Benchmark: governance on a real node process — a proposal and its ballots to a decision.

    .venv/bin/python bench/governance.py [--proposals 40]

One genesis node with three governors (majority: 2 approvals). Each round signs and submits a
proposal (add_measurement), then two approving ballots; the second one accepts it, which
applies it and issues the next trusted-node list in the same ledger entry. Prints seconds per
request kind (p50/p99), decided proposals per second, and the cost of signing and verifying one
document in process (what a member's machine and the primary each do once per document).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.harness import LocalNode, make_identity, make_platform

from consortium_node.common.timeutil import rfc3339
from consortium_node.governance.documents import Signer, sign_document, verify_document
from consortium_node.identity import keys
from consortium_node.identity.certs import certificate_der, load_certificate


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--proposals", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        governors = [make_identity(work / "ids", f"gov{i}", "governor") for i in range(3)]
        key, cert = make_platform(work / "platform")
        node = LocalNode(work, "node-0", governors, key, cert, consortium="bench")
        node.start()
        try:
            run(node, governors, args.proposals)
        finally:
            node.stop()


def run(node: LocalNode, governors: list[Any], rounds: int) -> None:
    signing = {g.name: keys.load_private_key(g.key.read_bytes()) for g in governors}

    def sign(who: Any, payload: dict[str, Any]) -> bytes:
        return sign_document(
            signing[who.name], who.cert.read_text(), {"consortium": "bench", **payload}
        )

    def post(path: str, envelope: bytes) -> dict[str, Any]:
        status, body, _ = node.request(
            "POST", path, envelope, None, {"Content-Type": "application/cose"}
        )
        assert status == 200, body
        answer: dict[str, Any] = json.loads(body)
        return answer

    timings: dict[str, list[float]] = {"proposal": [], "ballot (open)": [], "ballot (accepts)": []}
    started = time.perf_counter()
    for i in range(rounds):
        measurement = f"{i + 1:064x}"
        proposal = sign(governors[0], {
            "type": "proposal", "created_at": rfc3339(datetime.now(UTC)),
            "actions": [{"name": "add_measurement", "args": {"measurement": measurement}}],
        })  # fmt: skip
        t = time.perf_counter()
        pid = post("/gov/proposals", proposal)["proposal_id"]
        timings["proposal"].append(time.perf_counter() - t)
        for who, label in ((governors[0], "ballot (open)"), (governors[1], "ballot (accepts)")):
            ballot = sign(who, {"type": "ballot", "proposal_id": pid, "vote": "approve"})
            t = time.perf_counter()
            state = post(f"/gov/proposals/{pid}/ballots", ballot)["state"]
            timings[label].append(time.perf_counter() - t)
        assert state == "Accepted", state
    elapsed = time.perf_counter() - started
    rate = rounds / elapsed
    print(f"{rounds} proposals decided (3 requests each) in {elapsed:.1f} s: {rate:.1f}/s")
    for label, values in timings.items():
        p50, p99 = 1000 * statistics.median(values), 1000 * pct(values, 0.99)
        print(f"  {label:<18} p50 {p50:6.1f} ms   p99 {p99:6.1f} ms")
    # In process: what signing and verifying one document costs.
    who = governors[0]
    pem = who.cert.read_text()
    member_id = keys.member_id_of(certificate_der(load_certificate(pem)))
    members = {member_id: Signer(member_id, pem, "governor", "Active")}
    payload = {"type": "ballot", "consortium": "bench", "proposal_id": "ab" * 32, "vote": "approve"}
    n = 300
    t = time.perf_counter()
    envelopes = [sign_document(signing[who.name], pem, payload) for _ in range(n)]
    sign_ms = 1000 * (time.perf_counter() - t) / n
    t = time.perf_counter()
    for envelope in envelopes:
        verify_document(envelope, "ballot", "bench", members)
    verify_ms = 1000 * (time.perf_counter() - t) / n
    print(f"  sign one document {sign_ms:6.2f} ms; verify one (with its cert) {verify_ms:6.2f} ms")


if __name__ == "__main__":
    main()
