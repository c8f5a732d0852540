"""Benchmark: restart and join time and memory against history length, with and without
snapshots.

    .venv/bin/python bench/snapshots.py [--sizes 10000,100000,1000000] [--interval 10000]

For each history length N and each setting (``snapshot_interval`` 0 = off, and
``--interval``), a consortium of real node processes on loopback (two nodes: a genesis node
and one joiner that stays) is written N transactions through the primary (batches of 100,
8 clients; 1,000 distinct keys overwritten, 64-byte values, so the state stays the same size
and only the history grows). Then, measured one at a time:

* **restart**: the backup is stopped (SIGTERM) and started again with its volume: seconds
  until it listens, until ``/readyz`` answers 200 (caught up with the primary), the slowest
  ``/healthz`` answer while it starts (polled every 100 ms), and its RSS once ready;
* **join**: a new node joins with an empty volume: seconds from start to ``/readyz`` 200 and
  its RSS then.

It prints one table and the load average before and after (this machine is shared; compare
rows of one run).
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp
from tests.support.cluster import Cluster
from tests.support.harness import LocalNode

KEYS = 1_000
BATCH = 100


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def rss_mib(node: LocalNode) -> float:
    assert node.proc is not None
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def _write(cluster: Cluster, total: int, concurrency: int = 8) -> None:
    node, user = cluster.leader(), cluster.user
    assert user is not None
    context = ssl.create_default_context(cafile=str(node.service_cert))
    context.load_cert_chain(user.cert, user.key)
    sent = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while sent < total:
            first = sent
            sent += BATCH
            body = {
                "transactions": [
                    {"writes": {f"k{(first + i) % KEYS}": "v" * 64}} for i in range(BATCH)
                ]
            }
            for _ in range(100):  # an election (a loaded machine) answers 503: wait for it
                async with session.post(f"{node.url}/app/transactions", json=body) as resp:
                    if resp.status == 200:
                        break
                    if resp.status != 503:
                        raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
                await asyncio.sleep(0.2)
            else:
                raise RuntimeError("no primary for 20 s")

    connector = aiohttp.TCPConnector(ssl=context, limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


class HealthWatch:
    """Polls ``/healthz`` every 100 ms; records the first answer and the slowest one."""

    def __init__(self, node: LocalNode) -> None:
        self.node, self.started = node, time.monotonic()
        self.first: float | None = None
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(
                    f"{self.node.url}/healthz", context=context, timeout=30
                ):
                    pass
                if self.first is None:
                    self.first = t0 - self.started
                self.slowest = max(self.slowest, time.monotonic() - t0)
            except OSError:
                if self.first is not None:  # refused/timed out after listening: count it
                    self.slowest = max(self.slowest, time.monotonic() - t0)
            self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def wait_ready(node: LocalNode, timeout: float) -> float:
    started = time.monotonic()
    node.wait_ready(timeout)
    return time.monotonic() - started


def measure(work: Path, size: int, interval: int, timeout: float) -> dict[str, Any]:
    overrides = {
        "ledger": {"snapshot_interval": interval, "signature_interval_tx": 100},
        "raft": {"election_timeout": "2s", "heartbeat_interval": "100ms", "commit_timeout": "30s"},
    }
    cluster = Cluster.start(work, 2, overrides=overrides)
    try:
        written = time.monotonic()
        asyncio.run(_write(cluster, size))
        cluster.wait_converged(timeout)
        row: dict[str, Any] = {"write_s": time.monotonic() - written}
        backup = next(n for n in cluster.nodes if n is not cluster.leader())
        backup.stop()
        backup.start(wait=False)
        watch = HealthWatch(backup)
        row["restart_ready_s"] = wait_ready(backup, timeout)
        cluster.wait_converged(timeout)
        watch.stop()
        row["restart_listen_s"] = watch.first
        row["restart_slowest_healthz_s"] = watch.slowest
        row["restart_rss_mib"] = rss_mib(backup)
        joiner = cluster.add(2, overrides, wait=False)
        row["join_ready_s"] = wait_ready(joiner, timeout)
        cluster.wait_converged(timeout)
        row["join_rss_mib"] = rss_mib(joiner)
        return row
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--interval", type=int, default=10_000, help="snapshot interval")
    parser.add_argument("--timeout", type=float, default=900.0, help="per wait, seconds")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load average before: {loadavg()}")
    header = (
        f"{'transactions':>12} {'snapshots':>9} {'write s':>8} {'restart listen s':>16} "
        f"{'restart ready s':>15} {'slowest healthz s':>17} {'restart RSS MiB':>15} "
        f"{'join ready s':>12} {'join RSS MiB':>12}"
    )
    print(header)
    with tempfile.TemporaryDirectory(prefix="bench-snapshots-") as tmp:
        for size in sizes:
            for interval in (0, args.interval):
                work = Path(tmp) / f"{size}-{interval}"
                r = measure(work, size, interval, args.timeout)
                listen = r["restart_listen_s"]
                print(
                    f"{size:>12,} {interval or 'off':>9} {r['write_s']:>8.1f} "
                    f"{listen if listen is not None else float('nan'):>16.2f} "
                    f"{r['restart_ready_s']:>15.2f} {r['restart_slowest_healthz_s']:>17.2f} "
                    f"{r['restart_rss_mib']:>15.0f} {r['join_ready_s']:>12.2f} "
                    f"{r['join_rss_mib']:>12.0f}",
                    flush=True,
                )
    print(f"load average after: {loadavg()}")


if __name__ == "__main__":
    main()
