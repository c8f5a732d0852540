"""Benchmark: the ledger's per-transaction work, phase by phase, in one process (no network).

    .venv/bin/python bench/hot_path.py [--batches 200] [--batch 100] [--profile PHASE]

What ``bench/versus_etcd.py`` measures end to end, split into the steps a batch of
``POST /app/transactions`` takes through a primary and one follower, each timed alone on one
core: the request's JSON, its validation, the primary's append (encryption, digests, leaves,
encoding), the primary's fsync, the replication message's encoding, the follower's decoding
and checking of the leader's entries (and its fsync), the commit on both, and the answer's
JSON. Prints microseconds per transaction per phase (median over batches) and the sum: the
figure a change to the hot path is first judged by, before the end-to-end run.
``--profile PHASE`` prints the top 15 functions of one phase by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "node_image"))

from consortium_node.common.timeutil import utcnow
from consortium_node.identity.certs import (
    ServiceIdentity,
    certificate_pem,
    issue_node_certificate,
)
from consortium_node.identity.keys import generate_key
from consortium_node.ledger import EntryKind, Ledger, LedgerConfig, NodeKeySigner
from consortium_node.replication.messages import AppendRequest, decode, encode
from consortium_node.server.config import Limits
from consortium_node.server.validation import parse_json_body, parse_transactions

PHASES = (
    "request json",
    "validate",
    "append",
    "fsync (primary)",
    "message encode",
    "follower check",
    "fsync (follower)",
    "commit (both)",
    "answer json",
)


def _signer() -> NodeKeySigner:
    service = ServiceIdentity.create("bench")
    key = generate_key("p256")
    cert = issue_node_certificate(
        service, key.public_key(), subject_alt_names=["node-0"], not_after=utcnow() + timedelta(1)
    )
    return NodeKeySigner(key, certificate_pem(cert))


def _request(batch: int, first: int) -> bytes:
    """A client's body: ``batch`` transactions of one 64-byte value each, unique keys."""
    return json.dumps(
        {"transactions": [{"writes": {f"key-{first + i:012d}": "v" * 64}} for i in range(batch)]}
    ).encode()


def run(batches: int, batch: int, profile: str | None) -> dict[str, list[float]]:
    signer, secret, limits = _signer(), bytes(range(32)), Limits()
    config = LedgerConfig(signature_interval_tx=100, signature_interval_ms=100)
    times: dict[str, list[float]] = {phase: [] for phase in PHASES}
    profiler = cProfile.Profile() if profile else None
    with tempfile.TemporaryDirectory() as tmp:
        leader = Ledger.open(Path(tmp) / "leader", ledger_secret=secret, config=config)
        follower = Ledger.open(Path(tmp) / "follower", ledger_secret=secret, config=config)
        state: dict[str, Any] = {}

        def step(phase: str, work: Callable[[], Any]) -> Any:
            if profiler is not None and phase == profile:
                profiler.enable()
            started = time.perf_counter()
            result = work()
            times[phase].append((time.perf_counter() - started) / batch * 1e6)
            if profiler is not None and phase == profile:
                profiler.disable()
            return result

        for number in range(batches):
            raw = _request(batch, number * batch)

            def request_json(raw: bytes = raw) -> Any:
                return parse_json_body(raw)

            body = step("request json", request_json)

            def validate(body: Any = body) -> Any:
                return parse_transactions(body, limits)

            parsed = step("validate", validate)

            def append(parsed: Any = parsed) -> list[Any]:
                txids = leader.append(parsed.write_sets, EntryKind.PRIVATE)
                if leader.signature_due():
                    leader.append_signature(signer)
                return txids

            state["txids"] = step("append", append)
            step("fsync (primary)", leader.sync)
            start = follower.last_index + 1

            def message(start: int = start) -> bytes:
                entries = tuple(leader.raw_entries(start, leader.last_index))
                request = AppendRequest(1, "leader", "https://x", start - 1, 1, entries, 0)
                return encode(request)

            wire = step("message encode", message)

            def check(wire: bytes = wire) -> int:
                return follower.append_entries(decode(wire, AppendRequest).entries)

            step("follower check", check)
            step("fsync (follower)", follower.sync)
            step(
                "commit (both)",
                lambda: (
                    leader.advance_commit(leader.durable_index),
                    follower.advance_commit(follower.durable_index),
                ),
            )
            step(
                "answer json",
                lambda: json.dumps(
                    {
                        "transactions": [{"txid": str(t)} for t in state["txids"]],
                        "commit": str(leader.commit_txid),
                    }
                ).encode(),
            )
        leader.close()
        follower.close()
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--profile", choices=PHASES, default=None)
    args = parser.parse_args()
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    times = run(args.batches, args.batch, args.profile)
    print(f"load average {load}; {args.batches} batches of {args.batch} transactions")
    print(f"{'phase':<20} {'µs/tx median':>13} {'p90':>8}")
    total = 0.0
    for phase in PHASES:
        values = sorted(times[phase])
        median = statistics.median(values)
        total += median
        print(f"{phase:<20} {median:13.1f} {values[int(len(values) * 0.9)]:8.1f}")
    print(f"{'total':<20} {total:13.1f}")


if __name__ == "__main__":
    main()
