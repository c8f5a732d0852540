"""Helpers shared by the ledger tests: workloads and surgical edits of chunk files."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from consortium_node.ledger import EntryKind, Ledger, LedgerSigner, TxId


def record_offsets(data: bytes) -> list[int]:
    """Start offset of every complete entry record in a chunk's bytes (commit markers, which
    are not entries, are skipped)."""
    offsets, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos + 4)
        if data[pos : pos + 4] != b"CLM1":
            offsets.append(pos)
        pos += 12 + length
    return offsets


def rewrite_record(path: Path, offset: int, edit: Callable[[bytes], bytes]) -> None:
    """Replace the payload of the record at ``offset`` by ``edit(payload)``, fixing the CRC."""
    data = path.read_bytes()
    (length,) = struct.unpack_from(">I", data, offset + 4)
    payload = data[offset + 12 : offset + 12 + length]
    new = edit(payload)
    record = b"CLE1" + struct.pack(">II", len(new), zlib.crc32(new)) + new
    path.write_bytes(data[:offset] + record + data[offset + 12 + length :])


def find_record(ledger_dir: Path, index: int) -> tuple[Path, int]:
    """Chunk file and offset of the record with ``index`` (indices are consecutive)."""
    chunks = sorted(ledger_dir.glob("ledger_*.chunk"))
    for path in reversed(chunks):
        first = int(path.name[7:27])
        if first <= index:
            return path, record_offsets(path.read_bytes())[index - first]
    raise AssertionError(f"index {index} not found")


def fill(
    ledger: Ledger, signer: LedgerSigner, batches: int, batch_size: int = 10, prefix: str = "k"
) -> list[TxId]:
    """Append private batches, signing whenever due, committing after each; returns the txids."""
    txids: list[TxId] = []
    for batch in range(batches):
        write_sets = [
            {"app": {f"{prefix}{batch}-{i}": {"n": i, "batch": batch}}} for i in range(batch_size)
        ]
        txids += ledger.append(write_sets, EntryKind.PRIVATE)
        if ledger.signature_due():
            ledger.append_signature(signer)
        ledger.sync_and_commit()
    return txids
