"""Local demo: a 3-node consortium on loopback, one transaction, its receipt verified offline.

Runs the real command-line tools (``consortium-node``, ``consortiumctl``) as a user would, so
every step printed here can be repeated by hand. Use ``--keep-running`` to leave the node up.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from subprocess import Popen
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"


def run(*args: str) -> str:
    shown = [Path(args[0]).name, *(a.replace(str(ROOT) + "/", "") for a in args[1:])]
    print("$", shlex.join(shown))
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, service_cert: Path, deadline: float) -> None:
    context = ssl.create_default_context(cafile=str(service_cert))
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", context=context, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"node at {url} did not become ready")


def node_config(work: Path, port: int, measurement: str) -> dict[str, object]:
    """The genesis node's configuration (see README, "Running a node by hand")."""
    return {
        "consortium": "demo",
        "name": "node-0",
        "mode": "genesis",
        "data_dir": str(work / "node-0"),
        "listen": {"host": "127.0.0.1", "port": port},
        "platform": {
            "root_certificate": str(work / "platform/platform-root.pem"),
            "root_key": str(work / "platform/platform-root.key"),
            "chip_id": "chip-0",
        },
        "members": [
            {"certificate": str(work / "identities/member0_cert.pem"), "role": "governor"},
            {"certificate": str(work / "identities/user0_cert.pem"), "role": "user"},
        ],
        "attestation": {"measurements": [measurement], "validity": "24h", "renew_before": "8h"},
        "ledger": {"signature_interval_tx": 100, "signature_interval_ms": 50},
    }


def fetch_json(url: str, service_cert: Path) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(service_cert))
    with urllib.request.urlopen(url, context=context, timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def commit_and_verify(ctl: str, url: str, service_cert: Path, work: Path, receipt_url: str) -> None:
    """Steps 3 and 4: a transaction as user0, then its receipt verified offline."""
    print("== 3. commit a transaction as user0 (through a backup) and fetch its receipt")
    identity = [
        "--service-cert",
        str(service_cert),
        "--cert",
        str(work / "identities/user0_cert.pem"),
        "--key",
        str(work / "identities/user0_privk.pem"),
    ]
    submitted = run(
        ctl, "tx", "submit", "--node", url, *identity, "--set", "greeting=hello consortium"
    )
    txid = json.loads(submitted)["transactions"][0]["txid"]
    print(f"   committed transaction {txid} (sent to {url})")
    receipt_file = work / "receipt.json"
    run(
        ctl, "tx", "get", "--node", receipt_url, *identity, txid, "--receipt-out", str(receipt_file)
    )
    receipt = json.loads(receipt_file.read_text())
    print(
        f"   receipt from {receipt_url}: txid {receipt['txid']}, leaf {receipt['leaf'][:16]}…, "
        f"{len(receipt['proof'])} proof steps to root {receipt['root'][:16]}…, "
        f"signed in {receipt['signature_txid']} by node {receipt['node_id'][:16]}…"
    )

    print("== 4. verify the receipt offline, with only the service certificate")
    verified = json.loads(
        run(ctl, "verify-receipt", "--service-cert", str(service_cert), str(receipt_file))
    )
    print(
        f"   receipt for {verified['txid']} VERIFIED: root {verified['root'][:16]}… "
        f"signed by node {verified['node_id'][:16]}…"
    )


def start_node(node_bin: str, work: Path, name: str, config: dict[str, object]) -> Popen[bytes]:
    (work / f"{name}.json").write_text(json.dumps(config, indent=2))
    log = (work / f"{name}.log").open("w")
    return subprocess.Popen(
        [node_bin, "run", "--config", str(work / f"{name}.json")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def joiner_config(work: Path, name: str, port: int, genesis_url: str) -> dict[str, object]:
    """A joining node: it learns the network from the genesis node's signed list."""
    return {
        "consortium": "demo",
        "name": name,
        "mode": "join",
        "data_dir": str(work / name),
        "listen": {"host": "127.0.0.1", "port": port},
        "platform": {
            "root_certificate": str(work / "platform/platform-root.pem"),
            "root_key": str(work / "platform/platform-root.key"),
            "chip_id": f"chip-{name}",
        },
        "join": {
            "service_certificate": str(work / "node-0/service_cert.pem"),
            "trusted_list": f"{genesis_url}/node/trusted-list",
        },
        "ledger": {"signature_interval_tx": 100, "signature_interval_ms": 50},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default=str(ROOT / "demo-data"))
    parser.add_argument("--keep-running", action="store_true")
    args = parser.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    node_bin, ctl = str(BIN / "consortium-node"), str(BIN / "consortiumctl")

    print("== 1. an emulated platform's endorsements (INSECURE); identities: a member, a user")
    run(node_bin, "platform-init", "--out", str(work / "platform"))
    run(ctl, "keygen", "--name", "member0", "--out-dir", str(work / "identities"))
    run(ctl, "keygen", "--name", "user0", "--out-dir", str(work / "identities"))
    measurement = run(node_bin, "measure").strip()
    print(f"   this build's measurement: {measurement}")

    ports = [free_port() for _ in range(3)]
    urls = [f"https://127.0.0.1:{port}" for port in ports]
    service_cert = work / "node-0" / "service_cert.pem"
    procs: list[Popen[bytes]] = []
    try:
        print("== 2. start the genesis node, then two nodes that join by attestation")
        procs.append(start_node(node_bin, work, "node-0", node_config(work, ports[0], measurement)))
        deadline = time.monotonic() + 60
        while not service_cert.exists():
            if procs[0].poll() is not None or time.monotonic() > deadline:
                sys.exit(f"node-0 failed to start; see {work / 'node-0.log'}")
            time.sleep(0.1)
        wait_ready(urls[0], service_cert, deadline)
        digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(service_cert.read_text())).hexdigest()
        print(f"   service certificate sha256: {digest}")
        for number in (1, 2):
            name = f"node-{number}"
            config = joiner_config(work, name, ports[number], urls[0])
            procs.append(start_node(node_bin, work, name, config))
        for number, url in enumerate(urls):
            wait_ready(url, service_cert, deadline)
            print(f"   node-{number} ready at {url}")
        network = fetch_json(urls[2] + "/node/network", service_cert)
        for node in network["nodes"]:
            print(
                f"   {node['name']}: {node['status']}, attested until "
                f"{node['attestation_expires_at']}"
            )
        print(
            f"   trusted-node list version {network['trusted_list_version']}, primary "
            f"{network['primary']['address']}"
        )

        # Written through a backup (forwarded to the primary), receipt from the other backup.
        commit_and_verify(ctl, urls[1], service_cert, work, receipt_url=urls[2])
        print(f"\nAll files are in {work}. Node logs: {work}/node-*.log")
        if args.keep_running:
            pids = " ".join(str(p.pid) for p in procs)
            print(f"Nodes still running; stop them with: kill {pids}")
            return
    finally:
        if not args.keep_running:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=15)


if __name__ == "__main__":
    main()
