"""Storage faults injected into a stopped node's ledger directory, as a failing disk would.

Each fault names where it struck (chunk file, byte offset, entry index) so a test can report
its positions. Chunks are read with the record format of ``consortium_node.ledger.records``
(entry records ``CLE1`` and commit markers ``CLM1``); only entry records have indices.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

ENTRY, MARKER = b"CLE1", b"CLM1"


@dataclass(frozen=True)
class Record:
    path: Path
    offset: int
    size: int  # header included
    index: int


def chunks(ledger_dir: Path) -> list[Path]:
    """The chunk files, oldest first."""
    return sorted(ledger_dir.glob("ledger_*.chunk"))


def records(path: Path) -> list[Record]:
    """The complete entry records of one chunk (commit markers skipped)."""
    data, out, pos, index = path.read_bytes(), [], 0, int(path.name[7:27])
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos + 4)
        if pos + 12 + length > len(data):
            break
        if data[pos : pos + 4] == ENTRY:
            out.append(Record(path, pos, 12 + length, index))
            index += 1
        pos += 12 + length
    return out


def entry(ledger_dir: Path, index: int) -> Record:
    """The record of entry ``index``."""
    for path in reversed(chunks(ledger_dir)):
        if int(path.name[7:27]) <= index:
            for found in records(path):
                if found.index == index:
                    return found
    raise AssertionError(f"entry {index} is not in {ledger_dir}")


@dataclass(frozen=True)
class Injected:
    """What a fault did, for the report."""

    fault: str
    path: Path
    offset: int
    index: int  # the first entry it damaged (-1: none)


def cut(record: Record, keep: int | None = None) -> Injected:
    """Truncate the chunk inside ``record`` (by default in its middle): it and all after go."""
    at = record.offset + (record.size // 2 if keep is None else keep)
    with record.path.open("r+b") as handle:
        handle.truncate(at)
    return Injected("truncate", record.path, at, record.index)


def cut_tail(ledger_dir: Path, nbytes: int) -> Injected:
    """Cut the last ``nbytes`` of the newest chunk."""
    path = chunks(ledger_dir)[-1]
    at = path.stat().st_size - nbytes
    damaged = [r for r in records(path) if r.offset + r.size > at]
    with path.open("r+b") as handle:
        handle.truncate(at)
    return Injected("truncate-tail", path, at, damaged[0].index if damaged else -1)


def flip(record: Record) -> Injected:
    """Flip one bit in the payload of ``record`` (its checksum no longer matches)."""
    data = bytearray(record.path.read_bytes())
    at = record.offset + record.size - 3
    data[at] ^= 0x40
    record.path.write_bytes(bytes(data))
    return Injected("flip", record.path, at, record.index)


def forge(record: Record) -> Injected:
    """Flip one bit in the payload of ``record`` and write its checksum again: the record reads
    back whole, but it is not the entry that was written (only its Merkle leaf tells)."""
    data = bytearray(record.path.read_bytes())
    at = record.offset + record.size - 3
    data[at] ^= 0x40
    payload = bytes(data[record.offset + 12 : record.offset + record.size])
    struct.pack_into(">I", data, record.offset + 8, zlib.crc32(payload))
    record.path.write_bytes(bytes(data))
    return Injected("forge", record.path, at, record.index)


def zero(record: Record) -> Injected:
    """Overwrite ``record`` with zero bytes (a lost write of a whole block)."""
    data = bytearray(record.path.read_bytes())
    data[record.offset : record.offset + record.size] = bytes(record.size)
    record.path.write_bytes(bytes(data))
    return Injected("zero", record.path, record.offset, record.index)


def delete_chunk(path: Path) -> Injected:
    """Remove a whole chunk file."""
    first = records(path)
    path.unlink()
    return Injected("delete-chunk", path, 0, first[0].index if first else -1)


def delete_sealed(ledger_dir: Path, label: str) -> Injected:
    """Remove one sealed secret of the node (``<data_dir>/sealed/<label>.sealed``)."""
    path = ledger_dir.parent / "sealed" / f"{label}.sealed"
    path.unlink()
    return Injected(f"delete-{label}", path, 0, -1)  # no entry damaged
