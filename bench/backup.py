"""Benchmark: backup lag under a steady writer (default 2,000 transactions a second).

    .venv/bin/python bench/backup.py [--rate 2000] [--seconds 60] [--nodes 3] [--max-lag 60s]

A consortium of real node processes on loopback ships to a real S3-protocol server (moto's
standalone server, started here) while a paced client writes ``--rate`` transactions a second
(batches of 100, 64-byte values, fresh keys) through the primary. Every half second the
primary's ``GET /node/backup`` is sampled. It prints the rate achieved, the backup lag (seconds
and entries: median, 95th percentile, maximum) against ``max_lag``, what was uploaded (objects,
bytes, manifests), the time for the bucket to cover the last write once the writer stops, and
the load average before and after (this machine is shared; compare rows of one run).
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "node_image"))

import aiohttp
from tests.support.cluster import Cluster
from tests.support.s3server import start_s3_server

BATCH = 100


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def paced_writer(cluster: Cluster, rate: int, seconds: float) -> tuple[int, int]:
    """Write ``rate`` transactions a second for ``seconds``; (acknowledged, last index)."""
    node, user = cluster.leader(), cluster.user
    assert user is not None
    context = ssl.create_default_context(cafile=str(node.service_cert))
    context.load_cert_chain(user.cert, user.key)
    interval = BATCH / rate
    acked, last, sequence = 0, 0, 0
    start = time.monotonic()

    in_flight = asyncio.Semaphore(16)  # like a real client: bounded, so overload shows as rate

    async def one(session: aiohttp.ClientSession, first: int) -> None:
        nonlocal acked, last
        body = {"transactions": [{"writes": {f"k{first + i}": "v" * 64}} for i in range(BATCH)]}
        async with in_flight:
            while True:
                async with session.post(f"{node.url}/app/transactions", json=body) as resp:
                    if resp.status == 200:
                        found = await resp.json()
                        break
                    if resp.status != 503:
                        raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
                await asyncio.sleep(0.05)  # busy: the same batch again
        acked += BATCH
        last = max(last, int(found["transactions"][-1]["txid"].split(".")[1]))

    connector = aiohttp.TCPConnector(ssl=context, limit=32)
    async with aiohttp.ClientSession(connector=connector) as session:
        pending: set[asyncio.Task[None]] = set()
        while time.monotonic() - start < seconds:
            while len(pending) >= 64:  # the client falls behind the target: wait for it
                await asyncio.sleep(0.01)
            task = asyncio.create_task(one(session, sequence))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sequence += BATCH
            next_at = start + (sequence / BATCH) * interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*pending)
    return acked, last


class Sampler:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                code, body = self.cluster.leader(timeout=2).get("/node/backup")
            except (OSError, AssertionError):
                continue
            if code == 200:
                self.samples.append(body)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--max-lag", default="60s")
    args = parser.parse_args()
    before = loadavg()
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as tmp:
        work = Path(tmp)
        server = start_s3_server(work / "s3")
        bucket = server.make_bucket()
        creds = work / "creds"
        creds.mkdir()
        (creds / "id").write_text(server.access_key_id)
        (creds / "secret").write_text(server.secret_access_key)
        overrides = {
            "backup": {
                "endpoint": server.endpoint,
                "bucket": bucket,
                "access_key_id_file": str(creds / "id"),
                "secret_access_key_file": str(creds / "secret"),
                "max_lag": args.max_lag,
            }
        }
        cluster = Cluster.start(work / "nodes", args.nodes, overrides=overrides)
        try:
            sampler = Sampler(cluster)
            t0 = time.monotonic()
            acked, last = asyncio.run(paced_writer(cluster, args.rate, args.seconds))
            wrote = time.monotonic() - t0
            stopped = time.monotonic()
            while time.monotonic() - stopped < 300:
                code, body = cluster.leader().get("/node/backup")
                if code == 200 and body["shipped_through"] >= last:
                    break
                time.sleep(0.2)
            drain = time.monotonic() - stopped
            sampler.stop()
            samples = sampler.samples
            lag_s = [float(s["lag_seconds"]) for s in samples]
            lag_n = [float(s["lag_entries"]) for s in samples]
            final = samples[-1] if samples else {}
            success = final.get("last_success") or {}
            store = server.store(bucket, "test/")
            manifests = len(store.keys("manifests/"))
            segments = len(store.keys("ledger/"))
        finally:
            cluster.stop()
            server.stop()
    print(f"load average before: {before}, after: {loadavg()}")
    print(
        f"nodes {args.nodes}, target {args.rate} tx/s for {args.seconds:.0f} s, max_lag "
        f"{args.max_lag}"
    )
    print(f"achieved {acked / wrote:,.0f} tx/s ({acked:,} acknowledged, last index {last:,})")
    print("| backup lag | median | p95 | max |")
    print("|---|---|---|---|")
    print(
        f"| seconds | {statistics.median(lag_s or [0]):.1f} | {pct(lag_s, 0.95):.1f} | "
        f"{max(lag_s or [0]):.1f} |"
    )
    print(
        f"| entries | {statistics.median(lag_n or [0]):,.0f} | {pct(lag_n, 0.95):,.0f} | "
        f"{max(lag_n or [0]):,.0f} |"
    )
    print(
        f"covered the last write {drain:.1f} s after the writer stopped; bucket: "
        f"{segments} segments, {manifests} manifests, newest manifest lists "
        f"{success.get('objects', 0)} objects, {success.get('bytes', 0) / 2**20:.1f} MiB"
    )


if __name__ == "__main__":
    main()
