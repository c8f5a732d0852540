"""Durable ledger chunks: append-only record files that survive crashes without losing acks.

Why these rules: the node acknowledges a transaction only after ``sync()`` returned, so
anything on disk that is not a complete, checksummed record can only be the tail of a write
that was never acknowledged. Everything else that is wrong is damage or forgery, and the node
refuses to start rather than silently dropping acknowledged history.

Files: ``<dir>/ledger_<first_index:020d>.chunk``; each is a sequence of entry records and
commit markers (byte formats in ``records``), and the entries' indices are consecutive across
all chunks (the index is read from the payload's CBOR header, see ``entries.peek_position``).
A batch is written with one ``os.write`` per chunk it touches, led by a commit marker when the
commit index moved since the last one; a chunk is closed (and fdatasync'ed, so a non-last
chunk is always complete) at an entry boundary once it has reached ``chunk_max_bytes``;
creating a chunk fsyncs the directory. On replay (``known``: the markers so far):

* an incomplete record at the end of the last chunk (and no complete record after it) whose
  index is above ``known.durable`` is a torn, unacknowledged write: its bytes are copied to
  ``<chunk>.torn-<offset>``, the chunk is truncated there, and a WARNING names the file and
  offset (``recovered_torn_tail``);
* anything else wrong is damage (``damage.DamageKind``): bad magic, CRC mismatch, a payload
  whose header does not decode, an index that is not the next one, a missing chunk, an
  incomplete record in a chunk that is not the last or at or below ``known.durable``, a log
  that ends before ``known.durable`` (its newest records are gone). Without
  ``repair`` it raises LedgerCorruptionError naming file and offset; with ``repair`` the
  damaged record and everything after it is set aside (``set_aside``: kept beside the chunks,
  never deleted), replay ends before it, and a marker keeps ``known`` durable so the
  node knows which committed entries it must get back from its peers.

``truncate(last_kept)`` removes a suffix (Raft replaces a conflicting uncommitted suffix) so
that a crash at any point of it still leaves a consecutive, replayable prefix.

``replay(start=i)`` reads only the chunks that hold entries from ``i`` on (a restart that
resumes from a verified snapshot and a tree store); the earlier chunks are not read until an
entry of theirs is. Where each record lies is kept for the last chunk and, for at most
``CACHED_CHUNKS`` others, found again by walking a chunk's record headers when one of its
entries is read: memory does not grow with the number of chunks' entries.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from consortium_node.common.files import fsync_directory, write_atomic
from consortium_node.ledger.damage import Damage, DamageKind, cut_aside, rename_aside
from consortium_node.ledger.entries import peek_position
from consortium_node.ledger.errors import EntryFormatError, LedgerCorruptionError, LedgerError
from consortium_node.ledger.records import (
    HEADER,
    MAGIC,
    MARK,
    NO_MARKER,
    Marker,
    Position,
    complete_record_after,
    decode_marker,
    encode_marker,
    encode_record,
    highest_marker,
    intact_signatures,
    read_commit_file,
)

log = logging.getLogger("consortium_node.ledger")

CHUNK_NAME = re.compile(r"ledger_(\d{20})\.chunk")
CACHED_CHUNKS = 4  # chunks besides the last whose record offsets stay in memory
__all__ = ["HEADER", "MAGIC", "ChunkStore", "chunk_name", "encode_record"]


def chunk_name(first_index: int) -> str:
    """File name of the chunk whose first record has index ``first_index``."""
    return f"ledger_{first_index:020d}.chunk"


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


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
        self.known = read_commit_file(self.commit_file)  # every marker read or written
        self.damage: Damage | None = None  # set by a repairing replay that set damage aside
        # index → SHA-256 of an intact signature entry set aside with damage, at or below the
        # known commit: the entry replicated again at that index must be the same bytes.
        self.expected_signatures: dict[int, bytes] = {}
        self._chunks: list[_Chunk] = []
        self._chunk_firsts: list[int] = []
        self._base_index: int | None = None  # index of the first record of the store
        # byte offset of each entry record inside its chunk, for the last chunk and a few
        # recently read ones (``_offsets_of``), keyed by the chunk's first index
        self._offsets: OrderedDict[int, array[int]] = OrderedDict()
        self._next_index: int | None = None
        self._fd: int | None = None  # append fd of the last chunk
        self._size = 0  # bytes in the last chunk
        self._read_fds: dict[Path, int] = {}
        self._replayed = False
        self._failed: str | None = None
        self._closed = False
        self._dirty = False

    # -- the commit file -----------------------------------------------------------------

    @property
    def commit_file(self) -> Path:
        """``commit.marker``: one marker record, rewritten atomically on a clean close, after
        a repair and at most once a second, so a fault that cuts the end of the newest
        chunk (and the markers in it) does not make committed entries look torn."""
        return self.directory / "commit.marker"

    @property
    def known_commit(self) -> Position:
        return self.known.commit

    @property
    def known_durable(self) -> Position:
        return self.known.durable

    def write_commit_file(self, marker: Marker, *, lower: bool = False) -> None:
        """Persist what is known with ``marker`` merged in (``lower``: ``marker`` itself, a
        truncation voiding durable claims beyond what it keeps) in ``commit.marker`` (temp
        file, fsync, rename). Merged, not ``marker`` alone: a node reopened commits from 0,
        and its first commit file must not lower the commit a marker recorded before it (a
        truncation may since have cut that marker from the chunks)."""
        known = marker if lower else self.known.merge(marker)
        try:
            write_atomic(self.commit_file, encode_marker(known))
        except OSError as exc:
            raise LedgerError(f"cannot write {self.commit_file}: {exc}") from exc
        self.known = known

    # -- replay -------------------------------------------------------------------------

    def _list_chunks(self) -> list[_Chunk]:
        found = []
        for path in self.directory.iterdir():
            match = CHUNK_NAME.fullmatch(path.name)
            if match and path.is_file():
                found.append(_Chunk(int(match.group(1)), path))
        return sorted(found, key=lambda c: c.first_index)

    def first_chunk(self) -> tuple[int, str] | None:
        """``(first index, path)`` of the oldest chunk on disk, before replay (None: none)."""
        chunks = self._list_chunks()
        return (chunks[0].first_index, str(chunks[0].path)) if chunks else None

    def replay(
        self, *, repair: bool = False, start: int = 0
    ) -> Generator[tuple[bytes, Path, int], None, None]:
        """Yield ``(payload, chunk path, record offset)`` for every entry from index ``start``
        on, oldest first; chunks wholly before ``start`` are not read (see the docstring).

        Must be consumed to the end before ``append``; it repairs a torn tail at the end.
        Damage raises LedgerCorruptionError, or with ``repair`` is set aside and ends replay.
        A caller that finds an entry bad (tree, signature) calls ``set_aside`` itself.
        """
        if self._replayed:
            raise LedgerError("the chunk store was already replayed")
        chunks = self._list_chunks()
        expected: int | None = None
        try:
            for number, chunk in enumerate(chunks):
                if number + 1 < len(chunks) and chunks[number + 1].first_index <= start:
                    if self._base_index is None:
                        self._base_index = chunk.first_index
                    self._add_chunk(chunk)  # read when one of its entries is
                    continue
                if expected is not None and chunk.first_index != expected:
                    raise LedgerCorruptionError(
                        chunk.path,
                        0,
                        f"chunk starts at index {chunk.first_index}, expected {expected}",
                        DamageKind.MISSING,
                    )
                expected = chunk.first_index
                if self._base_index is None:
                    self._base_index = chunk.first_index
                self._add_chunk(chunk)
                yield from self._replay_chunk(chunk, number == len(chunks) - 1, start)
                expected = self._next_index
            if expected is not None and self.known_durable.index >= expected:
                last = chunks[-1].path
                raise LedgerCorruptionError(
                    last,
                    last.stat().st_size,
                    f"the log ends at index {expected - 1}, but index "
                    f"{self.known_durable.index} was durable (its newest records are gone)",
                    DamageKind.MISSING,
                )
        except LedgerCorruptionError as exc:
            first_lost = self._next_index if self._next_index is not None else expected
            if not repair or first_lost is None:
                raise
            self.set_aside(exc.path, exc.offset, first_lost, DamageKind(exc.kind), exc.reason)
            return
        self._finish_replay(expected)

    def _replay_chunk(
        self, chunk: _Chunk, is_last: bool, start: int
    ) -> Iterator[tuple[bytes, Path, int]]:
        data = chunk.path.read_bytes()
        expected = chunk.first_index
        self._next_index = expected
        offsets = self._cache_offsets(chunk.first_index, array("Q"))
        offset = 0
        while offset < len(data):
            record = self._record_at(data, offset, chunk.path, is_last, expected)
            if record is None:  # torn tail, repaired
                data = data[:offset]
                break
            magic, payload = record
            if magic == MARK:
                self.known = self.known.merge(decode_marker(payload))
            else:
                try:
                    _, index = peek_position(payload)
                except EntryFormatError as exc:
                    raise LedgerCorruptionError(chunk.path, offset, str(exc)) from exc
                if index != expected:
                    raise LedgerCorruptionError(
                        chunk.path, offset, f"entry index {index} is not the next index {expected}"
                    )
                offsets.append(offset)
                if index >= start:
                    yield payload, chunk.path, offset
                expected += 1
                self._next_index = expected
            offset += HEADER.size + len(payload)
        self._size = len(data)

    def _finish_replay(self, next_index: int | None) -> None:
        self._next_index = next_index
        if self._chunks:
            self._fd = os.open(self._chunks[-1].path, os.O_RDWR | os.O_APPEND)
            self._size = os.fstat(self._fd).st_size
        self._replayed = True

    def _record_at(
        self, data: bytes, offset: int, path: Path, is_last: bool, index: int
    ) -> tuple[bytes, bytes] | None:
        """The record at ``offset`` (magic, payload); None for a torn tail (repaired)."""
        remaining = len(data) - offset
        if remaining >= HEADER.size:
            magic, length, crc = HEADER.unpack_from(data, offset)
            if magic not in (MAGIC, MARK):
                raise LedgerCorruptionError(path, offset, f"bad record magic {magic!r}")
            if remaining >= HEADER.size + length:
                payload = data[offset + HEADER.size : offset + HEADER.size + length]
                if zlib.crc32(payload) != crc:
                    raise LedgerCorruptionError(path, offset, "record CRC-32 mismatch")
                if magic == MARK:
                    try:
                        decode_marker(payload)
                    except ValueError as exc:
                        raise LedgerCorruptionError(path, offset, str(exc)) from exc
                return magic, payload
            problem = f"record of {length} bytes is truncated ({remaining - HEADER.size} present)"
        else:
            head = data[offset : offset + min(remaining, 4)]
            if head not in (MAGIC[: len(head)], MARK[: len(head)]):
                raise LedgerCorruptionError(path, offset, "bad record magic in a short header")
            problem = f"record header is truncated ({remaining} of {HEADER.size} bytes)"
        truncated = DamageKind.TRUNCATED
        if not is_last:
            raise LedgerCorruptionError(
                path, offset, f"{problem} in a chunk that is not the last", truncated
            )
        following = complete_record_after(data, offset)
        if following is not None:
            raise LedgerCorruptionError(
                path, offset, f"{problem}, but a complete record follows at byte {following}"
            )
        if index <= self.known_durable.index:
            raise LedgerCorruptionError(
                path,
                offset,
                f"{problem} at index {index}, which was durable (up to "
                f"{self.known_durable.index}): a storage fault, not a torn write",
                truncated,
            )
        self._recover_torn_tail(path, data, offset)
        return None

    def _recover_torn_tail(self, path: Path, data: bytes, offset: int) -> None:
        torn = cut_aside(path, offset, "torn", keep_empty=True)
        nbytes = len(data) - offset
        self.recovered_torn_tail = (path, offset, nbytes)
        log.warning(
            "ledger: torn record at the end of %s at byte %d (%d bytes, never acknowledged) "
            "moved to %s and truncated",
            path,
            offset,
            nbytes,
            torn.name if torn else None,
        )

    def _add_chunk(self, chunk: _Chunk) -> None:
        self._chunks.append(chunk)
        self._chunk_firsts.append(chunk.first_index)

    def set_aside(
        self, path: Path, offset: int, first_lost: int, kind: DamageKind, reason: str
    ) -> Damage:
        """Set the damaged record at ``offset`` in ``path`` (index ``first_lost``) and every
        later byte aside, ending replay there (see the module docstring).

        The damaged chunk's tail goes to ``<chunk>.damaged-<offset>``, later chunks are renamed
        ``<chunk>.damaged``; markers in what was set aside still count for ``known``, which is
        written again as a marker (fdatasync'ed) and in the commit file when it claims entries
        beyond the kept log.
        """
        firsts = {chunk.path.name: chunk.first_index for chunk in self._list_chunks()}
        damaged_first = firsts.get(path.name, first_lost)
        later = sorted(
            (first, self.directory / name)
            for name, first in firsts.items()
            if first > damaged_first
        )
        damaged = [later_path.read_bytes() for _, later_path in later]
        if path.exists():
            damaged.insert(0, path.read_bytes()[offset:])
        for data in damaged:
            self.known = self.known.merge(highest_marker(data) or NO_MARKER)
        for data in damaged:
            self.expected_signatures.update(intact_signatures(data, self.known_commit.index))
        self._release_fds()
        aside = [rename_aside(later_path, "damaged") for _, later_path in reversed(later)]
        if path.exists():
            copy = cut_aside(path, offset, "damaged")
            aside += [copy] if copy is not None else []
        keep = [c for c in self._chunks if c.first_index < damaged_first]
        if offset > 0 and path.exists():
            keep += [c for c in self._chunks if c.path == path]
        self._chunks = keep
        self._chunk_firsts = [c.first_index for c in keep]
        for first in [first for first in self._offsets if first >= damaged_first]:
            if first == damaged_first and offset > 0:
                del self._offsets[first][max(0, first_lost - first) :]
            else:
                del self._offsets[first]
        self._finish_replay(first_lost)
        self.damage = Damage(kind, path, offset, first_lost, reason, tuple(aside))
        log.error("ledger: %s; set aside (kept) as %s", self.damage.describe(), list(aside))
        if self.known_durable.index >= first_lost:
            self.mark(self.known)
            self.sync()
            self.write_commit_file(self.known)
        return self.damage

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
        self._cache_offsets(first_index, array("Q"))
        fsync_directory(self.directory)

    def _flush(self, buffer: bytearray) -> None:
        if buffer:
            assert self._fd is not None  # a record was buffered, so a chunk is open
            _write_all(self._fd, buffer)
            self._size += len(buffer)

    def mark(self, marker: Marker) -> None:
        """Write a commit marker now (made durable by the next ``sync``)."""
        self._check_writable()
        if self._fd is None:
            if self._next_index is None:
                raise LedgerError("a commit marker needs a chunk: nothing was ever stored")
            self._new_chunk(self._next_index)
        fd = self._fd
        assert fd is not None  # opened above
        try:
            record = encode_marker(marker)
            _write_all(fd, record)
        except OSError as exc:
            self._failed = f"write failed ({exc})"
            raise LedgerError(f"ledger write to {self.directory} failed: {exc}") from exc
        self._size += len(record)
        self._dirty = True
        self.known = self.known.merge(marker)

    def append(
        self, payloads: Sequence[bytes], first_index: int, marker: Marker | None = None
    ) -> None:
        """Write a batch of records (one ``os.write`` per chunk touched), led by a commit
        ``marker`` if given; ``sync()`` persists."""
        self._check_writable()
        if self._next_index is not None and first_index != self._next_index:
            raise LedgerError(
                f"append at index {first_index}, but the next index is {self._next_index}"
            )
        if self._base_index is None:
            self._base_index = first_index
        try:
            buffer = bytearray()
            if marker is not None and self._fd is not None:
                buffer += encode_marker(marker)
            placed: list[tuple[array[int], int]] = []
            for number, payload in enumerate(payloads):
                start = self._size + len(buffer)
                if self._fd is None or start >= self.chunk_max_bytes:
                    self._flush(buffer)
                    buffer = bytearray()
                    self._new_chunk(first_index + number)
                    start = 0
                placed.append((self._offsets_of(self._chunks[-1]), start))
                buffer += encode_record(payload)
            self._flush(buffer)
        except OSError as exc:
            self._failed = f"write failed ({exc})"
            raise LedgerError(f"ledger write to {self.directory} failed: {exc}") from exc
        for offsets, start in placed:
            offsets.append(start)
        self._next_index = first_index + len(payloads)
        self._dirty = True
        if marker is not None:
            self.known = self.known.merge(marker)

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
        cut = self._chunks[number]
        cut_offsets = self._offsets_of(cut)
        offset = cut_offsets[first_dropped - cut.first_index]
        try:
            self._release_fds()
            for chunk in reversed(self._chunks[number + 1 :]):
                chunk.path.unlink()
                fsync_directory(self.directory)
                self._offsets.pop(chunk.first_index, None)
            del cut_offsets[first_dropped - cut.first_index :]
            if offset == 0:
                self._offsets.pop(cut.first_index, None)
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
        if (
            self._base_index is None
            or self._next_index is None
            or not self._base_index <= index < self._next_index
        ):
            raise LedgerError(f"index {index} is not stored in {self.directory}")
        chunk = self._chunks[bisect.bisect_right(self._chunk_firsts, index) - 1]
        offset = self._offsets_of(chunk)[index - chunk.first_index]
        fd = self._read_fd(chunk.path)
        header = os.pread(fd, HEADER.size, offset)
        if len(header) != HEADER.size:
            raise LedgerCorruptionError(chunk.path, offset, "record vanished (file shrank)")
        magic, length, crc = HEADER.unpack(header)
        payload = os.pread(fd, length, offset + HEADER.size) if magic == MAGIC else b""
        if magic != MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
            raise LedgerCorruptionError(
                chunk.path, offset, "record fails its checksum (changed on disk)"
            )
        return payload

    def _cache_offsets(self, first_index: int, offsets: array[int]) -> array[int]:
        """Keep ``offsets`` of the chunk starting at ``first_index``; forget the least recently
        used others beyond ``CACHED_CHUNKS`` (never the last chunk's)."""
        self._offsets[first_index] = offsets
        self._offsets.move_to_end(first_index)
        last = self._chunks[-1].first_index if self._chunks else None
        for first in list(self._offsets):
            if len(self._offsets) <= CACHED_CHUNKS + 1:
                break
            if first not in (last, first_index):
                del self._offsets[first]
        return offsets

    def _offsets_of(self, chunk: _Chunk) -> array[int]:
        """Byte offsets of the entry records of ``chunk`` (walked again if not in memory)."""
        offsets = self._offsets.get(chunk.first_index)
        if offsets is not None:
            self._offsets.move_to_end(chunk.first_index)
            return offsets
        return self._cache_offsets(chunk.first_index, self._walk(chunk))

    def _walk(self, chunk: _Chunk) -> array[int]:
        """The entry record offsets of a complete chunk from its record headers; a chunk whose
        headers do not chain to its end, or whose entry count does not reach the next chunk,
        is damage (``LedgerCorruptionError``)."""
        try:
            data = chunk.path.read_bytes()
        except OSError as exc:
            raise LedgerCorruptionError(
                chunk.path, 0, f"chunk does not read: {exc}", DamageKind.MISSING
            ) from exc
        offsets = array("Q")
        offset = 0
        while offset < len(data):
            if len(data) - offset < HEADER.size:
                raise LedgerCorruptionError(chunk.path, offset, "record header is truncated")
            magic, length, _ = HEADER.unpack_from(data, offset)
            if magic not in (MAGIC, MARK) or offset + HEADER.size + length > len(data):
                raise LedgerCorruptionError(chunk.path, offset, "record header does not chain")
            if magic == MAGIC:
                offsets.append(offset)
            offset += HEADER.size + length
        number = bisect.bisect_right(self._chunk_firsts, chunk.first_index)
        following = self._chunk_firsts[number] if number < len(self._chunks) else self._next_index
        if following is not None and chunk.first_index + len(offsets) != following:
            raise LedgerCorruptionError(
                chunk.path,
                len(data),
                f"chunk holds {len(offsets)} entries from {chunk.first_index}, but the next "
                f"index on disk is {following}",
                DamageKind.MISSING,
            )
        return offsets

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
