"""Benchmark: disaster recovery time, from the recovery node's start to an open service.

    .venv/bin/python bench/recovery.py [--transactions 10000 100000] [--batch 100]

For each size: a node process (three governors with recovery keys, k = 2) writes that many
private transactions (batches of ``--batch``, 64-byte values, fresh keys, 16 requests in
flight) and ships its ledger to a real S3-protocol server (moto, started here); then the node
and its whole data directory are deleted. A recovery node (mode ``recover``) starts from the
bucket; two members submit their shares with ``consortiumctl recovery submit-share`` (which
verifies the node's quote first); the node restarts with the secrets; the governors vote
``transition_service_to_open``. It prints, per size, the time of each phase — verify and copy
the backup (start to WaitingForRecoveryShares), the shares, the restart that replays the
private ledger (to WaitingForOpen), the vote (to Open) — and the total, with the load average
before and after (this machine is shared: compare rows of one run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import ssl
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "node_image"))

import aiohttp
from tests.integration.test_backup_shipping import credentials
from tests.integration.test_disaster_recovery import recovery_node, submit_share
from tests.integration.test_recovery_record import propose, recovery_members
from tests.integration.test_rotation import Governed, reads
from tests.support.harness import Identity, LocalNode, make_identity, make_platform
from tests.support.s3server import S3Server, start_s3_server
from tests.support.wait import wait_for

IN_FLIGHT = 16


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def write(node: LocalNode, user: Identity, total: int, batch: int) -> int:
    """Write ``total`` transactions; the last acknowledged index."""
    context = ssl.create_default_context(cafile=str(node.service_cert))
    context.load_cert_chain(user.cert, user.key)
    gate, last = asyncio.Semaphore(IN_FLIGHT), 0

    async def one(session: aiohttp.ClientSession, first: int) -> None:
        nonlocal last
        body = {"transactions": [{"writes": {f"k{first + i}": "v" * 64}} for i in range(batch)]}
        async with gate:
            while True:
                async with session.post(f"{node.url}/app/transactions", json=body) as resp:
                    if resp.status == 200:
                        found = await resp.json()
                        break
                    if resp.status != 503:
                        raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
                await asyncio.sleep(0.05)
        last = max(last, int(found["transactions"][-1]["txid"].split(".")[1]))

    connector = aiohttp.TCPConnector(ssl=context, limit=IN_FLIGHT * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(session, first) for first in range(0, total, batch)))
    return last


def one_size(work: Path, server: S3Server, total: int, batch: int) -> dict[str, float]:
    ids = work / "ids"
    governors = [make_identity(ids, f"gov{i}", "governor") for i in range(3)]
    user = make_identity(ids, "user0", "user")
    members, private = recovery_members(ids, governors, user)
    bucket = server.make_bucket()
    settings = {"endpoint": server.endpoint, "bucket": bucket, **credentials(work, server)}
    key, cert = make_platform(work / "platform")
    old = LocalNode(work / "old", "node-0", [*governors, user], key, cert,
                    overrides={"members": members, "backup": {**settings, "max_lag": "5s"},
                               "ledger": {"signature_interval_tx": 100}})  # fmt: skip
    old.start()
    try:
        started = time.monotonic()
        last = asyncio.run(write(old, user, total, batch))
        wrote = time.monotonic() - started
        wait_for("the backup", lambda: old.get("/node/backup")[1]["shipped_through"] >= last, 600)
        previous = work / "previous.pem"
        previous.write_bytes(old.service_cert.read_bytes())
    finally:
        old.stop()
    shutil.rmtree(old.data_dir)  # the disaster
    lost = {"workdir": work, "governors": governors, "private": private, "previous": previous,
            "bucket": settings, "platform": (key, cert)}  # fmt: skip
    node = recovery_node(lost)
    t0 = time.monotonic()
    node.start(timeout=1800)
    t_waiting = time.monotonic()
    for who in governors[:2]:
        done = submit_share(node, lost, who)
        assert done.returncode == 0, done.stderr
    t_shares = time.monotonic()
    wait_for("the restart for the secrets", lambda: not node.alive, 60)
    node.start(timeout=1800)
    t_replayed = time.monotonic()
    cluster = Governed(work / "new", [node], user=user, member=governors[0])
    cluster.governors = governors
    decided = propose(cluster, [{"name": "transition_service_to_open", "args": {}}])
    assert decided["state"] == "Accepted", decided
    wait_for("Open", lambda: node.get("/recovery")[1]["phase"] == "Open", 60)
    t_open = time.monotonic()
    sample = [f"k{i}" for i in range(0, total, max(1, total // 20))]
    assert all(reads(node, user, k) == "v" * 64 for k in sample), "a recovered value is wrong"
    node.stop()
    return {
        "write_s": wrote,
        "entries": float(last),
        "verify_copy_s": t_waiting - t0,
        "shares_s": t_shares - t_waiting,
        "replay_s": t_replayed - t_shares,
        "open_s": t_open - t_replayed,
        "total_s": t_open - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--keep", type=Path, help="work here and keep it (node logs), not in /tmp")
    args = parser.parse_args()
    before = loadavg()
    rows: list[tuple[int, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as scratch:
        tmp = args.keep or Path(scratch)
        server = start_s3_server(Path(tmp) / "s3")
        try:
            for total in args.transactions:
                rows.append((total, one_size(Path(tmp) / f"n{total}", server, total, args.batch)))
        finally:
            server.stop()
    print(f"load average before: {before}, after: {loadavg()}")
    print("| transactions | ledger entries | verify + copy s | shares s | replay s | vote s | "
          "start → Open s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for total, r in rows:
        print(f"| {total:,} | {int(r['entries']):,} | {r['verify_copy_s']:.1f} | "
              f"{r['shares_s']:.1f} | {r['replay_s']:.1f} | {r['open_s']:.1f} | "
              f"{r['total_s']:.1f} |")  # fmt: skip
    print(json.dumps({str(t): r for t, r in rows}, indent=2))


if __name__ == "__main__":
    main()
