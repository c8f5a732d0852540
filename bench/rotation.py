"""Benchmark: ledger secret rotation — what a rotation costs, and reads across versions.

    .venv/bin/python bench/rotation.py [--rotations 20] [--entries 2000] [--versions 8]

In process (one ledger, no network):

* building a rotation record (fresh secret, wrapped to 3 / 10 / 50 nodes) and appending it
  (the appending node unwraps its own copy and seals nothing here);
* reading committed private entries back from disk (``Ledger.read``) when all use version 1
  and when they are spread over ``--versions`` versions, and replaying such a ledger at open.

On real node processes: one genesis node with three governors; each round proposes
``rotate_ledger_secret`` and approves it twice; prints the accepting ballot's latency (the
rotation is built, wrapped and written in that request), and the same for add_measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.harness import LocalNode, make_identity, make_platform

from consortium_node.attestation.insecure_virtual import VirtualEnclave, VirtualPlatform
from consortium_node.common.timeutil import rfc3339
from consortium_node.governance.documents import sign_document
from consortium_node.identity import keys
from consortium_node.ledger import EntryKind, Ledger, LedgerConfig, TxId
from consortium_node.server.ledger_secrets import SecretVault, rotation_writes
from consortium_node.server.sealed import SealedStore

CONFIG = LedgerConfig(signature_interval_tx=10**6, signature_interval_ms=10**9)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1e3:.2f} ms, p99 {pct(values, 0.99) * 1e3:.2f} ms"


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def vault(work: Path) -> tuple[SecretVault, dict[str, str]]:
    key = keys.generate_key("p256")
    enclave = VirtualEnclave(VirtualPlatform.generate(), "chip", "ab" * 32, "cd" * 32)
    me = {keys.node_id_of(key): keys.public_key_pem(key)}
    return SecretVault(SealedStore(work / "sealed", enclave), key, "bench"), me  # type: ignore[arg-type]


def in_process(work: Path, rotations: int, entries: int, versions: int) -> None:
    secret_vault, me = vault(work)
    others = [keys.generate_key("p256") for _ in range(49)]
    peers = {keys.node_id_of(k): keys.public_key_pem(k) for k in others}
    with Ledger.open(
        work / "a", ledger_secret=secret_vault.create(b"\x01" * 32), config=CONFIG
    ) as ledger:
        for size in (3, 10, 50):
            recipients = {**me, **dict(list(peers.items())[: size - 1])}
            build = [
                timed(lambda r=recipients: rotation_writes(ledger.secrets, r, "bench", 1))
                for _ in range(rotations)
            ]
            print(f"build a rotation record for {size:2d} nodes: {ms(build)}")
        appends = []
        for _ in range(rotations):
            writes = rotation_writes(ledger.secrets, me, "bench", ledger.last_index + 1)
            appends.append(timed(lambda w=writes: ledger.append([w], EntryKind.PUBLIC)))
            ledger.sync_and_commit()
        print(f"append a rotation entry (incl. unwrapping and sealing own copy): {ms(appends)}")

    for label, count in (("1 version", 1), (f"{versions} versions", versions)):
        directory = work / f"reads-{count}"
        keyring = vault(work / f"v{count}")
        with Ledger.open(
            directory, ledger_secret=keyring[0].create(b"\x02" * 32), config=CONFIG
        ) as ledger:
            txids: list[TxId] = []
            per_version = entries // count
            for version in range(count):
                if version:
                    writes = rotation_writes(
                        ledger.secrets, keyring[1], "bench", ledger.last_index + 1
                    )
                    ledger.append([writes], EntryKind.PUBLIC)
                for start in range(0, per_version, 100):
                    batch = [
                        {"app": {f"k{start + i}": "x" * 100}}
                        for i in range(min(100, per_version - start))
                    ]
                    txids += ledger.append(batch, EntryKind.PRIVATE)
            ledger.sync_and_commit()
            started = time.perf_counter()
            for txid in txids:
                ledger.read(txid)
            read = time.perf_counter() - started
        replay = timed(
            lambda d=directory, k=keyring: Ledger.open(
                d, ledger_secret=k[0].load(), config=CONFIG
            ).close()
        )
        print(
            f"{label}: read {len(txids)} private entries from disk "
            f"{read / len(txids) * 1e6:.1f} µs each; replay at open {replay * 1e3:.0f} ms"
        )


def on_nodes(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        governors = [make_identity(work / "ids", f"gov{i}", "governor") for i in range(3)]
        key, cert = make_platform(work / "platform")
        node = LocalNode(work, "node-0", governors, key, cert, consortium="bench")
        node.start()
        signing = {g.name: keys.load_private_key(g.key.read_bytes()) for g in governors}

        def post(path: str, who: Any, payload: dict[str, Any]) -> dict[str, Any]:
            envelope = sign_document(
                signing[who.name], who.cert.read_text(), {"consortium": "bench", **payload}
            )
            status, body, _ = node.request(
                "POST", path, envelope, None, {"Content-Type": "application/cose"}
            )
            answer: dict[str, Any] = json.loads(body)
            assert status == 200, answer
            return answer

        try:
            for name, actions in (
                ("rotate_ledger_secret", lambda i: [{"name": "rotate_ledger_secret", "args": {}}]),
                (
                    "add_measurement",
                    lambda i: [{"name": "add_measurement", "args": {"measurement": f"{i:064x}"}}],
                ),
            ):
                accepting = []
                for i in range(rounds):
                    created = rfc3339(datetime.now(UTC))
                    proposal = {
                        "type": "proposal",
                        "created_at": created,
                        "actions": actions(i + 1),
                    }
                    pid = post("/gov/proposals", governors[0], proposal)["proposal_id"]
                    ballot = {"type": "ballot", "proposal_id": pid, "vote": "approve"}
                    post(f"/gov/proposals/{pid}/ballots", governors[0], ballot)
                    started = time.perf_counter()
                    decided = post(f"/gov/proposals/{pid}/ballots", governors[1], ballot)
                    accepting.append(time.perf_counter() - started)
                    assert decided["state"] == "Accepted", decided
                print(f"accepting ballot, {name} ({rounds} rounds, one node): {ms(accepting)}")
        finally:
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rotations", type=int, default=20)
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--versions", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        in_process(Path(tmp), args.rotations, args.entries, args.versions)
    on_nodes(args.rotations)


if __name__ == "__main__":
    main()
