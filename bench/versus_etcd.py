"""Benchmark: the ledger's hot path beside etcd, on the same box, same client, same run.

    .venv/bin/python bench/versus_etcd.py [--seconds 30] [--concurrency 16] [--batches 1,10,100]
                                          [--profile] [--snapshot-interval N]
                                          [--snapshot-writes-percent P]

Starts a 3-member etcd cluster (Debian's ``etcd-server``, installed with apt-get if missing)
and a 3-node consortium, both on loopback with TLS on the client and the peer links (client
certificates required, as the ledger requires them). One aiohttp client drives each in turn,
``--concurrency`` requests in flight for ``--seconds``, unique keys, 64-byte values:

* etcd: ``POST /v3/kv/put`` (batch 1) or ``/v3/kv/txn`` with N puts (one revision), to the
  leader (a follower would forward it);
* ledger: ``POST /app/transactions`` with N transactions of one write each (every write its
  own transaction id and receipt), to the primary.

Prints, per batch size: writes/s, ledger/etcd, server CPU seconds per 1,000 writes (user +
system time of the three server processes, from /proc), p50/p99 latency, and the load average
before and after (this machine is shared: compare ratios within one run).
``--snapshot-interval`` and ``--snapshot-writes-percent`` override the nodes' (defaults
10,000 transactions, as CCF's, and 50 %): the consortium's state grows through the run (unique
keys) and the primary encodes, hashes and encrypts all of it at each snapshot (the backups
fetch it), so these show what snapshots cost (``--snapshot-writes-percent 0``: one every
interval however large the state, the rule before the writes rule).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import itertools
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp
from bench.run import percentiles
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from tests.support.cluster import Cluster
from tests.support.harness import free_port
from tests.support.wait import wait_for

VALUE = "v" * 64
# What a node runs by default (the harness's test timings are faster, for tests).
NODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "ledger": {"signature_interval_tx": 100, "signature_interval_ms": 100},
    "raft": {"election_timeout": "1s", "heartbeat_interval": "100ms", "commit_timeout": "10s"},
}
TICKS = os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far (fields 14 and 15 of /proc/PID/stat)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


# ------------------------------------------------------------------------------ etcd
def etcd_binary() -> str:
    found = shutil.which("etcd")
    if found is None:
        print("installing etcd (Debian package etcd-server)…", file=sys.stderr)
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "etcd-server"], check=True,
                       env=env)  # fmt: skip
        found = shutil.which("etcd")
    assert found is not None, "etcd not found after installing etcd-server"
    return found


def _pki(directory: Path) -> dict[str, Path]:
    """A CA, one server certificate (127.0.0.1) used by every member, one client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "bench-ca")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = {"ca": directory / "ca.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH),
                        ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):  # fmt: skip
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1")),
            ]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([
                ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH,
            ] if name == "server" else [usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        paths[f"{name}_cert"] = directory / f"{name}.pem"
        paths[f"{name}_key"] = directory / f"{name}.key"
        paths[f"{name}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{name}_key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))  # fmt: skip
    return paths


@dataclass
class Etcd:
    procs: list[subprocess.Popen[bytes]]
    client_urls: list[str]
    pki: dict[str, Path]

    @classmethod
    def start(cls, work: Path, binary: str) -> Etcd:
        pki = _pki(work / "pki")
        ports = [(free_port(), free_port()) for _ in range(3)]
        cluster = ",".join(f"e{i}=https://127.0.0.1:{peer}" for i, (_, peer) in enumerate(ports))
        procs = []
        for i, (client, peer) in enumerate(ports):
            log = (work / f"etcd-{i}.log").open("ab")
            procs.append(subprocess.Popen([
                binary, "--name", f"e{i}", "--data-dir", str(work / f"etcd-{i}"),
                "--listen-client-urls", f"https://127.0.0.1:{client}",
                "--advertise-client-urls", f"https://127.0.0.1:{client}",
                "--listen-peer-urls", f"https://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"https://127.0.0.1:{peer}",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", "bench",
                "--cert-file", str(pki["server_cert"]), "--key-file", str(pki["server_key"]),
                "--client-cert-auth", "--trusted-ca-file", str(pki["ca"]),
                "--peer-cert-file", str(pki["server_cert"]),
                "--peer-key-file", str(pki["server_key"]),
                "--peer-client-cert-auth", "--peer-trusted-ca-file", str(pki["ca"]),
                "--quota-backend-bytes", str(8 * 1024**3), "--log-level", "warn",
            ], stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
            log.close()
        etcd = cls(procs, [f"https://127.0.0.1:{c}" for c, _ in ports], pki)
        wait_for("etcd leader", etcd.leader_url, 30, interval=0.2)
        return etcd

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki["ca"]))
        context.load_cert_chain(self.pki["client_cert"], self.pki["client_key"])
        return context

    def leader_url(self) -> str | None:
        """The client URL of the member that is leader (``/v3/maintenance/status``)."""
        import json  # noqa: PLC0415
        import urllib.request  # noqa: PLC0415

        for url in self.client_urls:
            request = urllib.request.Request(url + "/v3/maintenance/status", data=b"{}")
            try:
                with urllib.request.urlopen(request, context=self.context(), timeout=2) as r:
                    status = json.loads(r.read())
            except OSError:
                continue
            if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                return url
        return None

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def etcd_body(batch: int, keys: itertools.count[int], worker: int) -> tuple[str, dict[str, Any]]:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    puts = [{"key": b64(f"w{worker}-{next(keys)}"), "value": b64(VALUE)} for _ in range(batch)]
    if batch == 1:
        return "/v3/kv/put", puts[0]
    return "/v3/kv/txn", {"success": [{"requestPut": p} for p in puts]}


def ledger_body(batch: int, keys: itertools.count[int], worker: int) -> tuple[str, dict[str, Any]]:
    txs = [{"writes": {f"w{worker}-{next(keys)}": VALUE}} for _ in range(batch)]
    return "/app/transactions", {"transactions": txs}


# ------------------------------------------------------------------------------ driving
@dataclass
class Result:
    writes_per_s: float
    cpu_per_1k: float
    p50_ms: float
    p99_ms: float


async def drive(
    url: str,
    context: ssl.SSLContext,
    make: Callable[[int, itertools.count[int], int], tuple[str, dict[str, Any]]],
    batch: int,
    seconds: float,
    concurrency: int,
    pids: list[int],
) -> Result:
    latencies: list[float] = []
    written = 0
    deadline = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession, number: int) -> None:
        nonlocal written
        keys = itertools.count()
        while time.perf_counter() < deadline:
            path, body = make(batch, keys, number)
            t0 = time.perf_counter()
            async with session.post(url + path, json=body) as resp:
                answer = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{url}{path}: HTTP {resp.status}: {answer[:200]!r}")
            latencies.append(time.perf_counter() - t0)
            written += batch

    connector = aiohttp.TCPConnector(ssl=context, limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        cpu0, start = cpu_seconds(pids), time.perf_counter()
        await asyncio.gather(*(worker(session, n) for n in range(concurrency)))
        elapsed, cpu = time.perf_counter() - start, cpu_seconds(pids) - cpu0
    p = percentiles(latencies)
    return Result(written / elapsed, cpu / written * 1000, p["p50_ms"], p["p99_ms"])


def py_spy() -> str:
    """The py-spy sampler (installed into this interpreter's environment if missing)."""
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        print("installing py-spy with pip ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True)
        found = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    assert found is not None, "py-spy did not install"
    return found


def _frame_name(frame: str) -> str:
    function, _, where = frame.partition(" (")
    return f"{Path(where.split(':')[0]).name}:{function}" if where else function


def is_wait(frames: list[str]) -> bool:
    """A thread-pool worker blocked in its queue, which py-spy still reports as active now
    and then: its innermost Python frame is ``_worker`` (a task runs deeper, under
    ``_WorkItem.run``). Measured: one idle worker collected 3.5% of a busy process's samples,
    and a node has several."""
    python = [f for f in frames if ".py:" in f]
    return bool(python) and _frame_name(python[-1]) == "thread.py:_worker"


def own_time(raw: str) -> tuple[int, int, dict[str, int], dict[str, dict[str, int]]]:
    """Working samples, waiting samples (``is_wait``), and of the working ones: per innermost
    frame its count, and per innermost frame its nearest Python caller's, of py-spy's raw
    (collapsed) stacks: ``frame;frame;... count`` per line, a frame ``function (file:line)``."""
    total, waits, own, callers = 0, 0, dict[str, int](), dict[str, dict[str, int]]()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if is_wait(frames):
            waits += int(count)
            continue
        leaf = _frame_name(frames[-1])
        caller = next((_frame_name(f) for f in reversed(frames[:-1]) if ".py:" in f), "?")
        own[leaf] = own.get(leaf, 0) + int(count)
        by = callers.setdefault(leaf, {})
        by[caller] = by.get(caller, 0) + int(count)
        total += int(count)
    return total, waits, own, callers


def node_settings(
    snapshot_interval: int | None, writes_percent: int | None = None
) -> dict[str, dict[str, Any]]:
    """The nodes' configuration overrides: ``NODE_DEFAULTS``, and the snapshot settings given."""
    ledger = dict(NODE_DEFAULTS["ledger"])
    if snapshot_interval is not None:
        ledger["snapshot_interval"] = snapshot_interval
    if writes_percent is not None:
        ledger["snapshot_writes_percent"] = writes_percent
    return {**NODE_DEFAULTS, "ledger": ledger}


def profile_nodes(
    work: Path, seconds: float, concurrency: int, overrides: dict[str, dict[str, Any]]
) -> None:
    """Every node's top 10 by own time under batch-100 load: py-spy samples each process,
    every thread and native frames included; waits py-spy reports as active are left out
    (``is_wait``)."""
    sampler = py_spy()
    cluster = Cluster.start(work / "profiled", 3, overrides=overrides)
    try:
        primary, user = cluster.leader(), cluster.user
        assert user is not None
        context = ssl.create_default_context(cafile=str(primary.service_cert))
        context.load_cert_chain(user.cert, user.key)
        pids = [n.proc.pid for n in cluster.nodes if n.proc is not None]
        roles = {
            n.proc.pid: "primary" if n is primary else "backup"
            for n in cluster.nodes
            if n.proc is not None
        }
        options = ["--native", "--threads", "--format", "raw", "--rate", "100"]
        samplers = []
        for pid in pids:
            output = ["--output", str(work / f"{pid}.txt"), "--pid", str(pid)]
            command = [sampler, "record", *options, "--duration", str(int(seconds)), *output]
            samplers.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        result = run(drive(primary.url, context, ledger_body, 100, seconds, concurrency, pids))
        for process in samplers:
            process.wait(timeout=60)
    finally:
        cluster.stop()
    print(f"\nbatches of 100 on a fresh cluster: {result}")
    for pid, role in sorted(roles.items(), key=lambda kv: kv[1] != "primary"):
        total, waits, own, callers = own_time((work / f"{pid}.txt").read_text())
        print(
            f"\n{role} (pid {pid}): top 10 by own time of {total} working samples (py-spy; "
            f"{waits} more were waits, left out)"
        )
        for name, count in sorted(own.items(), key=lambda kv: kv[1], reverse=True)[:10]:
            top = max(callers[name].items(), key=lambda kv: kv[1])
            print(f"  {count / max(total, 1):6.1%}  {name}  (from {top[0]}: {top[1] / count:.0%})")


def run(coroutine: Awaitable[Result]) -> Result:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batches", default="1,10,100")
    parser.add_argument("--profile", action="store_true", help="then profile every node")
    parser.add_argument("--profile-only", action="store_true", help="only the profile")
    parser.add_argument("--snapshot-interval", type=int, default=None, help="the nodes' (10000)")
    parser.add_argument("--snapshot-writes-percent", type=int, default=None, help="the nodes' (50)")
    args = parser.parse_args()
    overrides = node_settings(args.snapshot_interval, args.snapshot_writes_percent)
    batches = [int(b) for b in args.batches.split(",")]
    if args.profile_only:
        with tempfile.TemporaryDirectory(prefix="versus-etcd-profile-") as tmp:
            profile_nodes(Path(tmp), args.seconds, args.concurrency, overrides)
        return
    binary = etcd_binary()
    before = loadavg()
    results: dict[int, tuple[Result, Result]] = {}
    with tempfile.TemporaryDirectory(prefix="versus-etcd-") as tmp:
        work = Path(tmp)
        etcd = Etcd.start(work / "etcd", binary)
        cluster = Cluster.start(work / "ledger", 3, overrides=overrides)
        try:
            assert cluster.user is not None
            ledger_context = ssl.create_default_context(cafile=str(cluster.nodes[0].service_cert))
            ledger_context.load_cert_chain(cluster.user.cert, cluster.user.key)
            etcd_pids = [p.pid for p in etcd.procs]
            ledger_pids = [n.proc.pid for n in cluster.nodes if n.proc is not None]
            for batch in batches:
                etcd_url, primary = etcd.leader_url(), cluster.leader()
                assert etcd_url is not None
                on_etcd = run(drive(etcd_url, etcd.context(), etcd_body, batch, args.seconds,
                                    args.concurrency, etcd_pids))  # fmt: skip
                on_ledger = run(drive(primary.url, ledger_context, ledger_body, batch,
                                      args.seconds, args.concurrency, ledger_pids))  # fmt: skip
                results[batch] = (on_etcd, on_ledger)
                print(f"batch {batch}: etcd {on_etcd}, ledger {on_ledger}", file=sys.stderr)
        finally:
            cluster.stop()
            etcd.stop()
    after = loadavg()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    release = version.stdout.splitlines()[0].split()[-1]
    interval = "default (10,000)" if args.snapshot_interval is None else args.snapshot_interval
    percent = (
        "default (50)" if args.snapshot_writes_percent is None else args.snapshot_writes_percent
    )
    print(f"\netcd {release} (3 members) vs the ledger (3 nodes), "
          f"{args.concurrency} requests in flight, {args.seconds:g} s each, unique keys, "
          f"64-byte values, TLS with client certificates on both, the nodes' snapshot "
          f"interval {interval}, writes percent {percent}")  # fmt: skip
    print(f"load average before {before}, after {after}\n")
    print("| batch | etcd writes/s | ledger writes/s | ledger/etcd | server CPU s per 1k writes "
          "etcd → ledger | p50 ms etcd → ledger | p99 ms etcd → ledger |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for batch, (e, lg) in results.items():
        ratio = lg.writes_per_s / e.writes_per_s
        cpu = f"{e.cpu_per_1k:.2f} → {lg.cpu_per_1k:.2f}"
        print(f"| {batch} | {e.writes_per_s:,.0f} | {lg.writes_per_s:,.0f} | {ratio:.2f} | {cpu} | "
              f"{e.p50_ms:.0f} → {lg.p50_ms:.0f} | {e.p99_ms:.0f} → {lg.p99_ms:.0f} |")  # fmt: skip
    if args.profile:
        with tempfile.TemporaryDirectory(prefix="versus-etcd-profile-") as tmp:
            profile_nodes(Path(tmp), args.seconds, args.concurrency, overrides)


if __name__ == "__main__":
    main()
