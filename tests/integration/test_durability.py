"""Durability: SIGKILL under load loses no acknowledged transaction; corruption is reported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import consortium_node
from consortium_node.identity.certs import load_certificate
from consortium_node.ledger.receipt import verify_receipt
from tests.integration.conftest import Consortium
from tests.support.wait import wait_for


def _writer(c: Any, acknowledged: list[str], stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        try:
            status, body = c.node.post_json(
                "/app/transactions",
                {"transactions": [{"writes": {f"key-{i}-{j}": i for j in range(3)}}] * 5},
                c.user,
            )
        except OSError:
            return  # the node died under us: whatever was not acknowledged may be lost
        if status == 200:
            acknowledged.extend(t["txid"] for t in body["transactions"])
        i += 1


def test_sigkill_under_load_keeps_every_acknowledged_transaction(
    fresh_consortium: Callable[..., Consortium],
) -> None:
    c = fresh_consortium()
    _, before = c.node.get("/node/state")
    acknowledged: list[str] = []
    stop = threading.Event()
    writers = [threading.Thread(target=_writer, args=(c, acknowledged, stop)) for _ in range(4)]
    for w in writers:
        w.start()
    wait_for("300 acknowledged transactions", lambda: len(acknowledged) >= 300, 30, interval=0.05)
    c.node.kill()  # SIGKILL while the writers are mid-request
    stop.set()
    for w in writers:
        w.join(10)
    c.node.start()
    _, after = c.node.get("/node/state")
    assert after["node_id"] == before["node_id"]
    assert after["service_certificate_sha256"] == before["service_certificate_sha256"]
    assert after["trusted_list_version"] == before["trusted_list_version"]
    assert after["term"] > before["term"]  # re-elected itself in a new term
    assert after["commit_index"] >= max(int(t.split(".")[1]) for t in acknowledged)
    cert = load_certificate(c.node.service_cert.read_bytes())
    for txid in acknowledged[:: max(1, len(acknowledged) // 50)] + acknowledged[-5:]:
        status, tx = c.node.get(f"/app/transaction?txid={txid}", c.user)
        assert status == 200, (txid, tx)

        def signed(txid: str = txid) -> Any:
            code, body = c.node.get(f"/app/receipt?txid={txid}", c.user)
            return body if code == 200 else None

        verify_receipt(wait_for(f"receipt {txid}", signed, 10, interval=0.05), cert)
    c.node.stop()


def test_a_corrupted_chunk_no_peer_can_repair_is_refused_with_file_and_offset(
    fresh_consortium: Callable[..., Consortium],
) -> None:
    c = fresh_consortium()
    c.node.post_json(
        "/app/transactions", {"transactions": [{"writes": {"a": "b" * 100}}] * 50}, c.user
    )
    assert c.node.stop() == 0
    chunks = sorted((c.node.data_dir / "ledger").glob("*.chunk"))
    data = bytearray(chunks[-1].read_bytes())
    offset = len(data) // 2
    data[offset] ^= 0xFF
    chunks[-1].write_bytes(bytes(data))
    c.node.start(wait=False)
    assert c.node.proc is not None
    code = c.node.proc.wait(30)
    log = c.node.log()
    assert code != 0
    assert f"{chunks[-1].name} byte " in log, log[-2000:]  # the file and the record's offset
    assert "no other node holds them" in log, log[-2000:]
    assert list(chunks[-1].parent.glob(f"{chunks[-1].name}.damaged-*")), "the bytes are kept"


def test_modified_code_cannot_unseal_the_node_secrets(
    tmp_path: Path, fresh_consortium: Callable[..., Consortium]
) -> None:
    c = fresh_consortium()
    assert c.node.stop() == 0
    modified = tmp_path / "modified"
    shutil.copytree(
        Path(consortium_node.__file__).parent,
        modified / "consortium_node",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    with (modified / "consortium_node" / "__init__.py").open("a") as handle:
        handle.write("\n# a one-line change to the node's code\n")
    env = {**os.environ, "PYTHONPATH": str(modified)}
    measured = subprocess.run(
        [sys.executable, "-m", "consortium_node.server.main", "measure"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    config = c.workdir / "node-0.json"
    result = subprocess.run(
        [sys.executable, "-m", "consortium_node.server.main", "run", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert measured not in ("", None)
    assert result.returncode == 1
    assert "cannot unseal" in result.stderr, result.stderr
