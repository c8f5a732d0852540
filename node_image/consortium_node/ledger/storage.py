"""Durable ledger chunks: append-only record files that survive crashes without losing acks.

Why these rules: the node acknowledges a transaction only after ``sync()`` returned, so
anything on disk that is not a complete, checksummed record can only be the tail of a write
that was never acknowledged. Everything else that is wrong is damage or forgery, and the node
refuses to start rather than silently dropping acknowledged history.

Files: ``<dir>/ledger_<first_index:020d>.chunk``; each is a sequence of records::

    b"CLE1" | u32be len(payload) | u32be zlib.crc32(payload) | payload

and the payloads' indices are consecutive across all chunks (the index is read from the
payload's CBOR header, see ``entries.peek_position``). A batch is written with one
``os.write`` per chunk it touches; a chunk is closed (and fdatasync'ed, so a non-last chunk
is always complete) at an entry boundary once it has reached ``chunk_max_bytes``; creating a
chunk fsyncs the directory. On replay:

* bad magic, CRC mismatch, a payload whose header does not decode, an index that is not the
  next one, or an incomplete record in a chunk that is not the last → LedgerCorruptionError;
* an incomplete record at the end of the last chunk (and no complete record after it) is a
  torn, unacknowledged write: its bytes are copied to ``<chunk>.torn-<offset>``, the chunk is
  truncated there, and a WARNING names the file and offset (``recovered_torn_tail``).

``truncate(last_kept)`` removes a suffix (Raft replaces a conflicting uncommitted suffix) so
that a crash at any point of it still leaves a consecutive, replayable prefix.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import struct
import zlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from consortium_node.common.files import fsync_directory
from consortium_node.ledger.entries import peek_position
from consortium_node.ledger.errors import EntryFormatError, LedgerCorruptionError, LedgerError

log = logging.getLogger("consortium_node.ledger")

MAGIC = b"CLE1"
HEADER = struct.Struct(">4sII")
CHUNK_NAME = re.compile(r"ledger_(\d{20})\.chunk")


def chunk_name(first_index: int) -> str:
    """File name of the chunk whose first record has index ``first_index``."""
    return f"ledger_{first_index:020d}.chunk"


def encode_record(payload: bytes) -> bytes:
    """One on-disk record: magic, length, CRC-32 of the payload, payload."""
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _complete_record_after(data: bytes, start: int) -> int | None:
    """Offset of a complete, CRC-valid record beginning after ``start``, if there is one.

    A torn write is a prefix of the last write, so nothing valid can follow it; a record that
    does follow means the length field before it was damaged, which is corruption.
    """
    pos = data.find(MAGIC, start + 1)
    while pos != -1:
        if pos + HEADER.size <= len(data):
            _, length, crc = HEADER.unpack_from(data, pos)
            end = pos + HEADER.size + length
            if end <= len(data) and zlib.crc32(data[pos + HEADER.size : end]) == crc:
                return pos
        pos = data.find(MAGIC, pos + 1)
    return None


@dataclass
class _Chunk:
    first_index: int
    path: Path


class ChunkStore:
    """The chunk files of one ledger directory: replay once, then append batches and sync."""

    def __init__(self, directory: Path | str, chunk_max_bytes: int) -> None:
        if chunk_max_bytes < 1:
            raise ValueError(f"chunk_max_bytes must be positive, got {chunk_max_bytes}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.chunk_max_bytes = chunk_max_bytes
        self.recovered_torn_tail: tuple[Path, int, int] | None = None
        self._chunks: list[_Chunk] = []
        self._chunk_firsts: list[int] = []
        self._base_index: int | None = None  # index of the first record of the store
        self._offsets = array("Q")  # byte offset of each record inside its chunk
        self._next_index: int | None = None
        self._fd: int | None = None  # append fd of the last chunk
        self._size = 0  # bytes in the last chunk
        self._read_fds: dict[Path, int] = {}
        self._replayed = False
        self._failed: str | None = None
        self._closed = False
        self._dirty = False

    # -- replay -------------------------------------------------------------------------

    def _list_chunks(self) -> list[_Chunk]:
        found = []
        for path in self.directory.iterdir():
            match = CHUNK_NAME.fullmatch(path.name)
            if match and path.is_file():
                found.append(_Chunk(int(match.group(1)), path))
        return sorted(found, key=lambda c: c.first_index)

    def replay(self) -> Iterator[tuple[bytes, Path, int]]:
        """Yield ``(payload, chunk path, record offset)`` for every record, oldest first.

        Must be consumed to the end before ``append``; it repairs a torn tail at the end.
        """
        if self._replayed:
            raise LedgerError("the chunk store was already replayed")
        chunks = self._list_chunks()
        expected: int | None = None
        for number, chunk in enumerate(chunks):
            if expected is not None and chunk.first_index != expected:
                raise LedgerCorruptionError(
                    chunk.path, 0, f"chunk starts at index {chunk.first_index}, expected {expected}"
                )
            expected = chunk.first_index
            if self._base_index is None:
                self._base_index = chunk.first_index
            self._add_chunk(chunk)
            data = chunk.path.read_bytes()
            is_last = number == len(chunks) - 1
            offset = 0
            while offset < len(data):
                payload = self._record_at(data, offset, chunk.path, is_last)
                if payload is None:  # torn tail, repaired
                    data = data[:offset]
                    break
                try:
                    _, index = peek_position(payload)
                except EntryFormatError as exc:
                    raise LedgerCorruptionError(chunk.path, offset, str(exc)) from exc
                if index != expected:
                    raise LedgerCorruptionError(
                        chunk.path, offset, f"entry index {index} is not the next index {expected}"
                    )
                self._offsets.append(offset)
                yield payload, chunk.path, offset
                expected += 1
                offset += HEADER.size + len(payload)
            self._size = len(data)
        self._next_index = expected
        if chunks:
            self._fd = os.open(chunks[-1].path, os.O_RDWR | os.O_APPEND)
        self._replayed = True

    def _record_at(self, data: bytes, offset: int, path: Path, is_last: bool) -> bytes | None:
        remaining = len(data) - offset
        if remaining >= HEADER.size:
            magic, length, crc = HEADER.unpack_from(data, offset)
            if magic != MAGIC:
                raise LedgerCorruptionError(path, offset, f"bad record magic {magic!r}")
            if remaining >= HEADER.size + length:
                payload = data[offset + HEADER.size : offset + HEADER.size + length]
                if zlib.crc32(payload) != crc:
                    raise LedgerCorruptionError(path, offset, "record CRC-32 mismatch")
                return payload
            problem = f"record of {length} bytes is truncated ({remaining - HEADER.size} present)"
        else:
            if data[offset : offset + min(remaining, 4)] != MAGIC[: min(remaining, 4)]:
                raise LedgerCorruptionError(path, offset, "bad record magic in a short header")
            problem = f"record header is truncated ({remaining} of {HEADER.size} bytes)"
        if not is_last:
            raise LedgerCorruptionError(path, offset, f"{problem} in a chunk that is not the last")
        following = _complete_record_after(data, offset)
        if following is not None:
            raise LedgerCorruptionError(
                path, offset, f"{problem}, but a complete record follows at byte {following}"
            )
        self._recover_torn_tail(path, data, offset)
        return None

    def _recover_torn_tail(self, path: Path, data: bytes, offset: int) -> None:
        torn = path.with_name(f"{path.name}.torn-{offset}")
        suffix = 1
        while torn.exists():
            torn = path.with_name(f"{path.name}.torn-{offset}.{suffix}")
            suffix += 1
        fd = os.open(torn, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, data[offset:])
            os.fsync(fd)
        finally:
            os.close(fd)
        with path.open("r+b") as handle:
            handle.truncate(offset)
            handle.flush()
            os.fsync(handle.fileno())
        fsync_directory(self.directory)
        nbytes = len(data) - offset
        self.recovered_torn_tail = (path, offset, nbytes)
        log.warning(
            "ledger: torn record at the end of %s at byte %d (%d bytes, never acknowledged) "
            "moved to %s and truncated",
            path,
            offset,
            nbytes,
            torn.name,
        )

    def _add_chunk(self, chunk: _Chunk) -> None:
        self._chunks.append(chunk)
        self._chunk_firsts.append(chunk.first_index)

    # -- append -------------------------------------------------------------------------

    @property
    def next_index(self) -> int | None:
        """Index the next appended record must have (None: empty store, any index)."""
        return self._next_index

    def _check_writable(self) -> None:
        if not self._replayed:
            raise LedgerError("replay the chunk store before appending")
        if self._closed:
            raise LedgerError(f"the chunk store of {self.directory} is closed")
        if self._failed is not None:
            raise LedgerError(
                f"the chunk store failed earlier and must be reopened: {self._failed}"
            )

    def _new_chunk(self, first_index: int) -> None:
        if self._fd is not None:
            os.fdatasync(self._fd)  # a chunk that is not the last is always complete on disk
            self._read_fds.setdefault(self._chunks[-1].path, self._fd)
        path = self.directory / chunk_name(first_index)
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        self._size = 0
        self._add_chunk(_Chunk(first_index, path))
        fsync_directory(self.directory)

    def _flush(self, buffer: bytearray) -> None:
        if buffer:
            assert self._fd is not None  # a record was buffered, so a chunk is open
            _write_all(self._fd, buffer)
            self._size += len(buffer)

    def append(self, payloads: Sequence[bytes], first_index: int) -> None:
        """Write a batch of records (one ``os.write`` per chunk touched); ``sync()`` persists."""
        self._check_writable()
        if self._next_index is not None and first_index != self._next_index:
            raise LedgerError(
                f"append at index {first_index}, but the next index is {self._next_index}"
            )
        if self._base_index is None:
            self._base_index = first_index
        try:
            buffer = bytearray()
            offsets: list[int] = []
            for number, payload in enumerate(payloads):
                start = self._size + len(buffer)
                if self._fd is None or start >= self.chunk_max_bytes:
                    self._flush(buffer)
                    buffer = bytearray()
                    self._new_chunk(first_index + number)
                    start = 0
                offsets.append(start)
                buffer += encode_record(payload)
            self._flush(buffer)
        except OSError as exc:
            self._failed = f"write failed ({exc})"
            raise LedgerError(f"ledger write to {self.directory} failed: {exc}") from exc
        self._offsets.extend(offsets)
        self._next_index = first_index + len(payloads)
        self._dirty = True

    def sync(self) -> None:
        """fdatasync the last chunk (earlier chunks were synced when they were closed)."""
        self._check_writable()
        if self._dirty and self._fd is not None:
            try:
                os.fdatasync(self._fd)
            except OSError as exc:  # after a failed fsync the page cache state is unknown
                self._failed = f"fdatasync failed ({exc})"
                raise LedgerError(f"ledger fdatasync in {self.directory} failed: {exc}") from exc
        self._dirty = False

    # -- truncation ---------------------------------------------------------------------

    @property
    def last_index(self) -> int | None:
        """Index of the last written record (None: nothing stored)."""
        return None if self._next_index is None else self._next_index - 1

    def truncate(self, last_kept: int) -> None:
        """Remove every record after ``last_kept`` durably: later chunks newest first (a
        directory fsync after each unlink), then the chunk holding ``last_kept + 1`` is cut
        at that record and fsynced (unlinked if it was its first record)."""
        self._check_writable()
        last = self.last_index
        if last is None or last_kept >= last:
            return
        assert self._base_index is not None  # records are stored
        if last_kept < self._base_index - 1:
            raise LedgerError(
                f"cannot truncate to index {last_kept}: the store starts at {self._base_index}"
            )
        first_dropped = last_kept + 1
        number = bisect.bisect_right(self._chunk_firsts, first_dropped) - 1
        offset = self._offsets[first_dropped - self._base_index]
        try:
            self._release_fds()
            for chunk in reversed(self._chunks[number + 1 :]):
                chunk.path.unlink()
                fsync_directory(self.directory)
            cut = self._chunks[number]
            if offset == 0:
                cut.path.unlink()
                fsync_directory(self.directory)
                number -= 1
            else:
                with cut.path.open("r+b") as handle:
                    handle.truncate(offset)
                    handle.flush()
                    os.fsync(handle.fileno())
            del self._chunks[number + 1 :]
            del self._chunk_firsts[number + 1 :]
            del self._offsets[first_dropped - self._base_index :]
            self._next_index = first_dropped
            self._dirty = False
            if self._chunks:
                self._fd = os.open(self._chunks[-1].path, os.O_RDWR | os.O_APPEND)
                self._size = os.fstat(self._fd).st_size
            else:
                self._size = 0
        except OSError as exc:
            self._failed = f"truncation failed ({exc})"
            raise LedgerError(f"ledger truncation in {self.directory} failed: {exc}") from exc
        log.info("ledger: truncated %s after index %d", self.directory, last_kept)

    def _release_fds(self) -> None:
        """Close every fd before a truncation; reads reopen lazily, the caller reopens ``_fd``."""
        for fd in self._read_fds.values():
            os.close(fd)
        self._read_fds.clear()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- random access ------------------------------------------------------------------

    def read(self, index: int) -> bytes:
        """The payload of the record with ``index`` (already written), checked against its CRC."""
        if self._base_index is None or not 0 <= index - self._base_index < len(self._offsets):
            raise LedgerError(f"index {index} is not stored in {self.directory}")
        chunk = self._chunks[bisect.bisect_right(self._chunk_firsts, index) - 1]
        offset = self._offsets[index - self._base_index]
        fd = self._read_fd(chunk.path)
        header = os.pread(fd, HEADER.size, offset)
        if len(header) != HEADER.size:
            raise LedgerCorruptionError(chunk.path, offset, "record vanished (file shrank)")
        magic, length, crc = HEADER.unpack(header)
        payload = os.pread(fd, length, offset + HEADER.size) if magic == MAGIC else b""
        if magic != MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
            raise LedgerCorruptionError(chunk.path, offset, "record changed on disk since replay")
        return payload

    def _read_fd(self, path: Path) -> int:
        if self._chunks and path == self._chunks[-1].path and self._fd is not None:
            return self._fd
        fd = self._read_fds.get(path)
        if fd is None:
            fd = self._read_fds[path] = os.open(path, os.O_RDONLY)
        return fd

    @property
    def chunk_paths(self) -> list[Path]:
        """The chunk files, oldest first."""
        return [chunk.path for chunk in self._chunks]

    def close(self) -> None:
        """Close every file descriptor (pending, unsynced writes are not synced)."""
        fds = set(self._read_fds.values())
        if self._fd is not None:
            fds.add(self._fd)
        for fd in fds:
            os.close(fd)
        self._read_fds.clear()
        self._fd = None
        self._closed = True
