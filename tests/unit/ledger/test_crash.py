"""A real crash: SIGKILL a process that appends and syncs; nothing acknowledged is lost.

The child acknowledges after ``sync()`` (durable, not committed); after reopening, committing
up to ``durable_index`` (what a single-node consensus would do) makes every acknowledged
transaction readable with a verifiable receipt.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from consortium_node.identity.certs import ServiceIdentity
from consortium_node.identity.keys import private_key_pem
from consortium_node.ledger import Ledger, LedgerConfig, NodeKeySigner, TxId, verify_receipt

from .conftest import NODE_IMAGE

CHILD = Path(__file__).with_name("crash_child.py")


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_transaction(
    tmp_path: Path, secret: bytes, signer: NodeKeySigner, service: ServiceIdentity
) -> None:
    key_file, cert_file = tmp_path / "node.key", tmp_path / "node.pem"
    key_file.write_bytes(private_key_pem(signer.key))
    cert_file.write_text(signer.certificate_pem)
    directory = tmp_path / "ledger"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(NODE_IMAGE), os.environ.get("PYTHONPATH", "")]),
    }
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(directory), secret.hex(), str(key_file), str(cert_file)],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    acknowledged: list[bytes] = []
    deadline = time.monotonic() + 3.0
    while len(acknowledged) < 1500 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        acknowledged.append(line)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=5)
    acknowledged += child.stdout.read().splitlines(keepends=True)  # printed before the kill
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    acked = [line.decode().split() for line in acknowledged if line.endswith(b"\n")]
    assert len(acked) >= 50, "the child acknowledged too little to test anything"

    config = LedgerConfig(signature_interval_tx=20, chunk_max_bytes=16 * 1024)
    with Ledger.open(directory, ledger_secret=secret, config=config) as ledger:
        assert ledger.commit_index == 0 and ledger.durable_index >= len(acked)
        assert ledger.get("app", acked[0][1]) is None  # nothing committed until consensus says
        assert ledger.advance_commit(ledger.durable_index) == ledger.durable_index
        for text, key in acked:
            txid = TxId.parse(text)
            value, written_by = ledger.get("app", key) or (None, None)
            assert written_by == txid, f"acknowledged {txid} ({key}) is missing after the crash"
            assert ledger.read(txid).writes == {"app": {key: value}}
        ledger.append_signature(signer)
        ledger.sync_and_commit()
        for text, _ in acked:
            verified = verify_receipt(ledger.receipt(TxId.parse(text)), service.certificate)
            assert str(verified.txid) == text
