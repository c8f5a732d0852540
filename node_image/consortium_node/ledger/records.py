"""The two record types of a chunk file: entries and commit markers.

Why markers exist: after a crash, an incomplete record at the end of the newest chunk is the
tail of a write whose fdatasync never returned, so it was never acknowledged and may be
dropped (a *torn write*). A record that was durable and is now cut, changed or gone is a
*storage fault*: it may hold an acknowledged, committed transaction, and dropping it could
let the consortium lose that transaction (Alagappan et al., "Protocol-Aware Recovery for
Consensus-Based Storage", FAST 2018). The node cannot tell the two apart from the damaged
bytes alone, so it writes down, cheaply, what it knows: a marker record in the same write
(and the same fdatasync) as the entries of each sync, and on a clean close (also in the
commit file, ``storage``). Damage at or below a marker's durable index is a fault, never a
torn write.

Byte formats (all integers big-endian)::

    entry record:   b"CLE1" || u32 len(payload) || u32 crc32(payload) || payload
    marker record:  b"CLM1" || u32 32           || u32 crc32(body)    || body
    marker body:    u64 commit_index  || u64 term of the entry at commit_index
                 || u64 durable_index || u64 term of the entry at durable_index

A marker states "every entry up to ``commit_index`` was committed, and every entry up to
``durable_index`` was durable here (so this node may have acknowledged it)", with the terms of
those two entries. It usually follows the entries it covers; after a storage fault was set
aside it may claim indices beyond the end of the log: the node knows it is missing entries up
to there until it has them again (``ledger.Ledger.missing_committed``, ``unvouched``). A
truncation of uncommitted entries removes the markers that claimed them durable.
Readers that only want entries skip markers; markers are not indexed.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from consortium_node.ledger.entries import EntryKind, decode_entry
from consortium_node.ledger.errors import EntryFormatError

log = logging.getLogger("consortium_node.ledger")

MAGIC = b"CLE1"  # an entry record
MARK = b"CLM1"  # a commit marker record
HEADER = struct.Struct(">4sII")
MARKER_BODY = struct.Struct(">QQQQ")


@dataclass(frozen=True, order=True)
class Position:
    """One entry's ``(index, term)``; ordered by index (``raft_order`` compares as Raft)."""

    index: int
    term: int

    def raft_order(self) -> tuple[int, int]:
        """``(term, index)``: how Raft compares the ends of two logs."""
        return self.term, self.index


NOWHERE = Position(0, 0)


@dataclass(frozen=True)
class Marker:
    """What a commit marker states: known committed and known durable positions."""

    commit: Position = NOWHERE
    durable: Position = NOWHERE

    def merge(self, other: Marker) -> Marker:
        """The later of each position (by index)."""
        return Marker(max(self.commit, other.commit), max(self.durable, other.durable))


NO_MARKER = Marker()


def encode_record(payload: bytes) -> bytes:
    """One on-disk entry record: magic, length, CRC-32 of the payload, payload."""
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def encode_marker(marker: Marker) -> bytes:
    """A commit marker record (see the module docstring)."""
    c, d = marker.commit, marker.durable
    body = MARKER_BODY.pack(c.index, c.term, d.index, d.term)
    return HEADER.pack(MARK, len(body), zlib.crc32(body)) + body


def decode_marker(body: bytes) -> Marker:
    """What a marker body states; ValueError if it is not 32 bytes or durable < commit."""
    if len(body) != MARKER_BODY.size:
        raise ValueError(f"a commit marker is {MARKER_BODY.size} bytes, got {len(body)}")
    commit_index, commit_term, durable_index, durable_term = MARKER_BODY.unpack(body)
    if durable_index < commit_index:
        raise ValueError(f"a commit marker's durable index {durable_index} < {commit_index}")
    return Marker(Position(commit_index, commit_term), Position(durable_index, durable_term))


def complete_record_at(data: bytes, pos: int) -> tuple[bytes, bytes] | None:
    """``(magic, payload)`` of a complete, CRC-valid record starting at ``pos``, else None."""
    if pos + HEADER.size > len(data):
        return None
    magic, length, crc = HEADER.unpack_from(data, pos)
    end = pos + HEADER.size + length
    if magic not in (MAGIC, MARK) or end > len(data):
        return None
    payload = data[pos + HEADER.size : end]
    return (magic, payload) if zlib.crc32(payload) == crc else None


def complete_record_after(data: bytes, start: int) -> int | None:
    """Offset of a complete, CRC-valid record of either type beginning after ``start``.

    A torn write is a prefix of the last write, so nothing valid can follow it; a record that
    does follow means the length field before it was damaged, which is corruption.
    """
    found = [p for p in (data.find(MAGIC, start + 1), data.find(MARK, start + 1)) if p != -1]
    pos = min(found, default=-1)
    while pos != -1:
        if complete_record_at(data, pos) is not None:
            return pos
        found = [p for p in (data.find(MAGIC, pos + 1), data.find(MARK, pos + 1)) if p != -1]
        pos = min(found, default=-1)
    return None


def highest_marker(data: bytes) -> Marker | None:
    """The later of each position stated by the intact markers in ``data`` (damaged bytes
    included: a scan for marker records, which are short and CRC-checked), or None."""
    best: Marker | None = None
    pos = data.find(MARK)
    while pos != -1:
        record = complete_record_at(data, pos)
        if record is not None and record[0] == MARK:
            try:
                found = decode_marker(record[1])
            except ValueError:
                found = None
            if found is not None:
                best = found if best is None else best.merge(found)
        pos = data.find(MARK, pos + 1)
    return best


def intact_signatures(data: bytes, through: int) -> dict[int, bytes]:
    """``index → SHA-256(payload)`` of the intact SIGNATURE entries in damaged bytes, up to
    index ``through``: each signs the Merkle root of every entry before it, so an entry
    replicated again at that index must be byte for byte the same (``Ledger.append_entries``)."""
    found: dict[int, bytes] = {}
    pos = data.find(MAGIC)
    while pos != -1:
        record = complete_record_at(data, pos)
        if record is not None and record[0] == MAGIC:
            try:
                entry = decode_entry(record[1])
            except EntryFormatError:
                entry = None
            if entry is not None and entry.kind is EntryKind.SIGNATURE and entry.index <= through:
                found[entry.index] = hashlib.sha256(record[1]).digest()
        pos = data.find(MAGIC, pos + 1)
    return found


def read_commit_file(path: Path) -> Marker:
    """The marker in a commit file (``storage.ChunkStore.commit_file``); none if the file is
    absent, and none (with a WARNING) if it is damaged: it is only a hint, the markers in the
    chunks still count."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return NO_MARKER
    found = highest_marker(data)
    if found is None:
        log.warning("ledger: %s is damaged; ignoring it", path)
        return NO_MARKER
    return found
