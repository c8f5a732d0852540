"""Benchmark: committed tx/s and latency of one and three nodes, beside this machine's limits.

    .venv/bin/python bench/run.py [--seconds 5] [--concurrency 16]

Prints, measured in the same run:
* machine limits: SHA-256 MB/s, ECDSA P-256 and Ed25519 sign/verify per second, AES-256-GCM MB/s,
  and fdatasync per second on the ledger's disk (the ceiling on group commits);
* the ledger alone (in-process append + fsync), batches of 1, 10, 100 transactions;
* a real node process over HTTPS with TLS client auth: committed tx/s and p50/p99 latency from
  request to durable acknowledgement, for batches of 1, 10 and 100 transactions per request;
* the same against the primary of a 3-node consortium (commit = majority fsync), then paced
  (open-loop) load at half the best throughput for the latency at that load;
* a cProfile summary of the primary under load: where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import pstats
import ssl
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from tests.support.cluster import Cluster
from tests.support.harness import LocalNode, make_identity, make_platform

from consortium_node.common.timeutil import utcnow
from consortium_node.identity import keys
from consortium_node.identity.certs import (
    ServiceIdentity,
    certificate_pem,
    issue_node_certificate,
)
from consortium_node.ledger import EntryKind, Ledger, LedgerConfig


def rate(fn: object, seconds: float = 0.5) -> float:
    """Calls per second of ``fn`` over roughly ``seconds``."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            fn()  # type: ignore[operator]
        count += 20
    return count / elapsed


def machine_limits(directory: Path) -> dict[str, float]:
    block = os.urandom(1 << 20)
    p256 = ec.generate_private_key(ec.SECP256R1())
    edk = ed25519.Ed25519PrivateKey.generate()
    msg = os.urandom(32)
    sig = p256.sign(msg, ec.ECDSA(hashes.SHA256()))
    esig = edk.sign(msg)
    aes = AESGCM(os.urandom(32))
    small = os.urandom(256)
    fd = os.open(directory / "fsync.probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def sync_once() -> None:
        os.write(fd, b"x" * 512)
        os.fdatasync(fd)

    try:
        limits = {
            "sha256_MBps": rate(lambda: hashlib.sha256(block).digest()),
            "sha256_small_per_s": rate(lambda: hashlib.sha256(small).digest()),
            "p256_sign_per_s": rate(lambda: p256.sign(msg, ec.ECDSA(hashes.SHA256()))),
            "p256_verify_per_s": rate(
                lambda: p256.public_key().verify(sig, msg, ec.ECDSA(hashes.SHA256()))
            ),
            "ed25519_sign_per_s": rate(lambda: edk.sign(msg)),
            "ed25519_verify_per_s": rate(lambda: edk.public_key().verify(esig, msg)),
            "aes_gcm_256B_per_s": rate(lambda: aes.encrypt(os.urandom(12), small, None)),
            "fdatasync_per_s": rate(sync_once, 1.0),
        }
    finally:
        os.close(fd)
    return limits


class _Signer:
    def __init__(self) -> None:
        service = ServiceIdentity.create("bench")
        self._key = keys.generate_key("p256")
        self.node_id = keys.node_id_of(self._key)
        cert = issue_node_certificate(
            service,
            self._key.public_key(),
            subject_alt_names=["127.0.0.1"],
            not_after=utcnow() + timedelta(days=1),
        )
        self.certificate_pem = certificate_pem(cert)

    def sign(self, data: bytes) -> bytes:
        return keys.sign(self._key, data)


def ledger_only(directory: Path, batch: int, seconds: float) -> dict[str, float]:
    ledger = Ledger.open(
        directory / f"ledger-{batch}",
        ledger_secret=os.urandom(32),
        config=LedgerConfig(signature_interval_tx=1000, signature_interval_ms=100),
    )
    signer = _Signer()
    write_sets = [{"app": {f"key-{i}": "v" * 64}} for i in range(batch)]
    count, latencies, start = 0, [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        ledger.append(write_sets, EntryKind.PRIVATE)
        if ledger.signature_due():
            ledger.append_signature(signer)
        ledger.sync_and_commit()
        latencies.append(time.perf_counter() - t0)
        count += batch
    elapsed = time.perf_counter() - start
    ledger.close()
    return {"tx_per_s": count / elapsed, **percentiles(latencies)}


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


async def post_batch(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], latencies: list[float]
) -> int:
    """POST one batch; record its latency to durable commit; return how many committed."""
    t0 = time.perf_counter()
    async with session.post(url + "/app/transactions", json=body) as resp:
        data = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {data}")
    latencies.append(time.perf_counter() - t0)
    return len(data["transactions"])


async def drive(
    node: LocalNode, identity: object, batch: int, seconds: float, concurrency: int
) -> dict[str, float]:
    context = ssl.create_default_context(cafile=str(node.service_cert))
    context.load_cert_chain(identity.cert, identity.key)  # type: ignore[attr-defined]
    body = {"transactions": [{"writes": {f"k{i}": "v" * 64}} for i in range(batch)]}
    latencies: list[float] = []
    committed = 0
    deadline = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal committed
        while time.perf_counter() < deadline:
            done = await post_batch(session, node.url, body, latencies)
            committed += done  # not `+= await`: that reads `committed` before suspending

    connector = aiohttp.TCPConnector(ssl=context, limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {
        "tx_per_s": committed / elapsed,
        "requests_per_s": len(latencies) / elapsed,
        **percentiles(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent HTTP clients")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="consortium-bench-") as tmp:
        work = Path(tmp)
        print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
        limits = machine_limits(work)
        print("\n== machine limits (same run)")
        for name, value in limits.items():
            print(f"  {name:24s} {value:14,.0f}")

        print("\n== ledger alone: append + fdatasync, in-process")
        print(f"  {'batch':>5}  {'tx/s':>10}  {'p50 ms':>8}  {'p99 ms':>8}")
        for batch in (1, 10, 100):
            r = ledger_only(work, batch, args.seconds / 2)
            print(f"  {batch:5d}  {r['tx_per_s']:10,.0f}  {r['p50_ms']:8.2f}  {r['p99_ms']:8.2f}")

        # Per private transaction the node must at least: hash the plaintext write set, the
        # stored body and the leaf components, hash the Merkle leaf and its share of inner
        # nodes (~2 SHA-256), encrypt once (AES-GCM), and sign 1/1000 of a root.
        per_tx = (
            5 / limits["sha256_small_per_s"]
            + 1 / limits["aes_gcm_256B_per_s"]
            + 1 / (1000 * limits["p256_sign_per_s"])
        )
        bound = 1 / per_tx
        print(
            f"\n  crypto bound (5 SHA-256 + 1 AES-GCM + 1/1000 signature per tx): {bound:,.0f} tx/s"
        )

        key, cert = make_platform(work / "platform")
        user = make_identity(work / "ids", "bench-user", "governor")
        node = LocalNode(work, "node-0", [user], key, cert, overrides=BENCH_OVERRIDES)
        node.start()
        try:
            print(
                f"\n== one node over HTTPS + TLS client auth, {args.concurrency} clients, "
                f"{args.seconds:.0f}s each"
            )
            closed_loop_table(node, user, args, bound)
        finally:
            node.stop()

        cluster = Cluster.start(work / "three", 3, overrides=BENCH_OVERRIDES)
        try:
            leader = cluster.leader()
            assert cluster.user is not None
            print(
                f"\n== three nodes (Raft, mTLS between nodes), writes to the primary, "
                f"{args.concurrency} clients"
            )
            best = closed_loop_table(leader, cluster.user, args, bound)
            for batch in (10, 100):
                target = best[batch] / 2
                r = asyncio.run(paced(leader, cluster.user, batch, target, args.seconds))
                print(
                    f"  at half load ({target:,.0f} tx/s offered, batches of {batch}): "
                    f"{r['tx_per_s']:,.0f} tx/s committed, p50 {r['p50_ms']:.1f} ms, "
                    f"p99 {r['p99_ms']:.1f} ms, {r['errors']:.0f} errors"
                )
        finally:
            cluster.stop()
        profile_primary(work, args)


BENCH_OVERRIDES = {
    "ledger": {"signature_interval_tx": 1000, "signature_interval_ms": 100},
    # production timings, not the tests' fast ones
    "raft": {"election_timeout": "1s", "heartbeat_interval": "100ms", "commit_timeout": "10s"},
}


def closed_loop_table(
    node: LocalNode, user: Any, args: argparse.Namespace, bound: float
) -> dict[int, float]:
    """Committed tx/s and latency for batches of 1, 10, 100 (returned per batch size)."""
    print(
        f"  {'batch':>5}  {'tx/s':>10}  {'req/s':>8}  {'p50 ms':>8}  {'p99 ms':>8}  {'of bound':>8}"
    )
    best: dict[int, float] = {}
    for batch in (1, 10, 100):
        r = asyncio.run(drive(node, user, batch, args.seconds, args.concurrency))
        best[batch] = r["tx_per_s"]
        print(
            f"  {batch:5d}  {r['tx_per_s']:10,.0f}  {r['requests_per_s']:8,.0f}  "
            f"{r['p50_ms']:8.2f}  {r['p99_ms']:8.2f}  {r['tx_per_s'] / bound:8.1%}"
        )
    return best


async def paced(
    node: LocalNode, identity: Any, batch: int, target_tx_per_s: float, seconds: float
) -> dict[str, float]:
    """Open-loop load: one request every batch/target seconds, whatever the latency."""
    context = ssl.create_default_context(cafile=str(node.service_cert))
    context.load_cert_chain(identity.cert, identity.key)
    body = {"transactions": [{"writes": {f"k{i}": "v" * 64}} for i in range(batch)]}
    interval = batch / target_tx_per_s
    latencies: list[float] = []
    committed = 0

    errors = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal committed, errors
        try:
            done = await post_batch(session, node.url, body, latencies)
        except (RuntimeError, aiohttp.ClientError):
            errors += 1
            return
        committed += done

    connector = aiohttp.TCPConnector(ssl=context, limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        tasks = []
        n = 0
        while (now := time.perf_counter()) - start < seconds:
            due = start + n * interval
            if now < due:
                await asyncio.sleep(due - now)
            tasks.append(asyncio.create_task(one(session)))
            n += 1
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {"tx_per_s": committed / elapsed, "errors": errors, **percentiles(latencies)}


def profile_primary(work: Path, args: argparse.Namespace) -> None:
    """Where the primary's time goes: cProfile of the leader under batch-100 load."""
    out = work / "primary.prof"
    os.environ["CONSORTIUM_NODE_PROFILE"] = str(out)
    try:
        cluster = Cluster.start(work / "profiled", 1, overrides=BENCH_OVERRIDES)
    finally:
        del os.environ["CONSORTIUM_NODE_PROFILE"]
    try:
        for number in (1, 2):
            cluster.add(number, BENCH_OVERRIDES)
        cluster.wait_converged()
        assert cluster.user is not None
        asyncio.run(drive(cluster.nodes[0], cluster.user, 100, args.seconds, args.concurrency))
    finally:
        cluster.stop()
    stats = pstats.Stats(str(out))
    total = stats.total_tt  # type: ignore[attr-defined]
    print(
        f"\n== where the primary's time goes (cProfile, batches of 100, 3 nodes; "
        f"{total:.1f}s profiled)"
    )
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    for (filename, line, name), (_, _, tottime, cumtime, _) in rows[:15]:
        where = f"{Path(filename).name}:{line}({name})"
        print(f"  {tottime / total:6.1%} self  {cumtime:7.2f}s cum  {where}")


if __name__ == "__main__":
    main()
