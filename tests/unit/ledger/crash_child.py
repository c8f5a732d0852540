"""Child process for test_crash: append + sync forever, printing each acknowledged txid.

Usage: crash_child.py <ledger dir> <secret hex> <node key pem file> <node cert pem file>
Each stdout line is ``<txid> <key>``, printed only after ``sync()`` returned: on one node,
durable is what an acknowledgement means (the child never commits; consensus would).
"""

from __future__ import annotations

import sys
from pathlib import Path

from consortium_node.identity.keys import load_private_key
from consortium_node.ledger import EntryKind, Ledger, LedgerConfig, NodeKeySigner


def main() -> None:
    directory, secret_hex, key_file, cert_file = sys.argv[1:5]
    signer = NodeKeySigner(
        load_private_key(Path(key_file).read_bytes()), Path(cert_file).read_text()
    )
    config = LedgerConfig(signature_interval_tx=20, chunk_max_bytes=16 * 1024)
    ledger = Ledger.open(directory, ledger_secret=bytes.fromhex(secret_hex), config=config)
    batch = 0
    while True:
        keys = [f"b{batch}-{i}" for i in range(5)]
        txids = ledger.append([{"app": {key: batch}} for key in keys], EntryKind.PRIVATE)
        if ledger.signature_due():
            ledger.append_signature(signer)
        ledger.sync()
        sys.stdout.write("".join(f"{txid} {key}\n" for txid, key in zip(txids, keys, strict=True)))
        sys.stdout.flush()
        batch += 1


if __name__ == "__main__":
    main()
