"""The private part of successive snapshots, encoded in time proportional to what changed.

Why: a snapshot's private plaintext is the canonical CBOR of the whole committed private state
(``snapshot`` module docstring), and encoding every row again at every snapshot point costs
time in proportion to the state once per ``snapshot_interval`` entries, on every node: at 150k
keys about 0.6 s of CPU per snapshot, which at a few thousand writes a second was most of a
node's work. The bytes stay exactly what ``cbor2.dumps(rows, canonical=True)`` gives; only the
way they are produced changes:

* A canonical map is its head and its items ordered by their keys' encodings (RFC 8949 section
  4.2.1). Each item here is one *piece*, ``key encoding || [value, term, index] encoding``, and
  no text string's encoding is a prefix of another's (its head holds its length), so ordering
  the pieces' bytes orders the items by key. Canonical CBOR nests: a piece's bytes do not
  depend on its neighbours, so a piece is encoded once and kept while its row stays.
* The KV store names the keys written between two captures (``kv.Changes``); only those rows
  are encoded again, and the sorted pieces are patched (a changed value keeps its key's place;
  new keys are merged in, a linear merge of two sorted runs). Anything that breaks the chain
  (the first capture, a capture not encoded here, a store replaced by a snapshot install, an
  error) makes the next encoding a full one.
* A table's sorted pieces are kept in *chunks* of about ``chunk`` pieces (consecutive runs of
  the order), and the encoding is returned in parts, a join per chunk (``encode_parts``): the
  encoder runs on a worker thread, and a sort or join of the whole state is one C call that
  holds the GIL for tens of milliseconds (measured: a join of 450k pieces, ~50 ms), stalling
  the node's event loop; per chunk each is ~0.1 ms. A change is placed in its chunk by the
  chunks' first pieces; only chunks with changes are sorted again.

Costs about the encoded private state in memory, on the node that encodes (the primary: a
node that stops being primary drops it, ``server.snapshots``). One encoding at a time (the
snapshot task's).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

import cbor2

from consortium_node.ledger.entries import JSON, cbor_head
from consortium_node.ledger.errors import LedgerError
from consortium_node.ledger.kv import Changes, Row, Tables


class _StaleError(Exception):
    """What is kept does not follow from the changes: encode every row."""


class PartialCaptureError(LedgerError):
    """A partial capture (``KVStore.capture(partial=True)``) that does not follow the last
    encoding (that one failed or was skipped): it cannot be encoded; capture whole next."""


CHUNK = 1024
"""Pieces per chunk, about (a chunk is split in two past twice that)."""


class _Table:
    """One table's pieces: by key, and all of them in canonical order, in chunks
    (``chunks[i]`` sorted and non-empty, every piece of it before those of ``chunks[i + 1]``;
    ``firsts[i]`` is ``chunks[i][0]``)."""

    __slots__ = ("by_key", "chunks", "firsts")

    def __init__(self, by_key: dict[str, bytes], chunks: list[list[bytes]]) -> None:
        self.by_key = by_key
        self.chunks = chunks
        self.firsts = [chunk[0] for chunk in chunks]

    def __len__(self) -> int:
        return sum(len(chunk) for chunk in self.chunks)


class RowEncodings:
    """``encode``: ``cbor2.dumps(rows(tables), canonical=True)`` of successive captures;
    ``encode_parts``: the same bytes in parts. ``chunk``: pieces per chunk (tests use few)."""

    def __init__(self, chunk: int = CHUNK) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be positive, got {chunk}")
        self._chunk = chunk
        self._tables: dict[str, _Table] = {}
        self._next: tuple[object, int] | None = None  # the Changes that may follow

    def holds_rows(self) -> bool:
        """Pieces are kept (of the last encoding)."""
        return bool(self._tables)

    def encode(self, tables: Tables, changes: Changes | None = None) -> bytes:
        """The canonical CBOR of ``{table: {key: [value, term, index]}}``; ``changes``: the keys
        written since the capture encoded last (None: unknown, encode every row)."""
        return b"".join(self.encode_parts(tables, changes))

    def encode_parts(self, tables: Tables, changes: Changes | None = None) -> list[bytes]:
        """``encode``'s bytes in parts (heads, and one part per chunk of pieces). ``tables``
        of a partial capture (``changes.counts`` set) hold only the changed rows: encoded
        only if they follow the last encoding, else PartialCaptureError."""
        partial = changes is not None and changes.counts is not None
        try:
            try:
                if changes is None or self._next != (changes.store, changes.since):
                    raise _StaleError("no changes that follow the last encoding")
                self._patch(tables, changes)
            except _StaleError as exc:
                if partial:
                    raise PartialCaptureError(f"a partial capture: {exc}") from None
                self._tables = {name: self._full(rows) for name, rows in tables.items()}
            # Tables in the order of their names' encodings (distinct, none a prefix of
            # another: the order of the whole items); a join per chunk.
            parts = [cbor_head(5, len(self._tables))]
            for encoded, table in sorted((_text(n), t) for n, t in self._tables.items()):
                parts += (encoded, cbor_head(5, len(table)))
                parts += [b"".join(chunk) for chunk in table.chunks]
        except BaseException:
            self._tables, self._next = {}, None
            raise
        self._next = None if changes is None else (changes.store, changes.since + 1)
        return parts

    def _patch(self, tables: Tables, changes: Changes) -> None:
        # The non-empty tables and their sizes (a capture holds only non-empty tables).
        counts = changes.counts or {name: len(rows) for name, rows in tables.items()}
        for name in [name for name in self._tables if name not in counts]:
            del self._tables[name]  # emptied
        for name, count in counts.items():
            table = self._tables.setdefault(name, _Table({}, []))
            _patch_table(table, tables.get(name, {}), changes.keys.get(name, ()), self._chunk)
            if len(table) != count:  # the changes did not name every write
                raise _StaleError(f"table {name!r}: the changes miss rows")

    def _full(self, rows: dict[str, Row]) -> _Table:
        by_key = {key: _piece(key, row) for key, row in rows.items()}
        return _Table(by_key, _split(sorted(by_key.values()), self._chunk))


def _patch_table(table: _Table, rows: dict[str, Row], keys: Iterable[str], size: int) -> None:
    by_key, chunks, firsts = table.by_key, table.chunks, table.firsts
    added: dict[int, list[bytes]] = {}
    removed: dict[int, set[bytes]] = {}
    for key in keys:
        old = by_key.get(key)
        row = rows.get(key)
        if row is None:
            if old is not None:
                removed.setdefault(bisect.bisect_right(firsts, old) - 1, set()).add(old)
                del by_key[key]
            continue
        new = by_key[key] = _piece(key, row)
        if old is None:  # into the chunk whose first piece is the last one before it
            added.setdefault(max(bisect.bisect_right(firsts, new) - 1, 0), []).append(new)
        elif new != old:  # the same key: the same place in the order
            number = bisect.bisect_right(firsts, old) - 1
            chunk = chunks[number] if number >= 0 else []
            at = bisect.bisect_left(chunk, old)
            if at == len(chunk) or chunk[at] != old:
                raise _StaleError(f"key {key!r}: its piece is not in the order")
            chunk[at] = new
            if at == 0:
                firsts[number] = new
    if not added and not removed:
        return
    if not chunks:
        chunks.append([])
    for number in removed.keys() | added.keys():
        chunk = chunks[number]
        gone = removed.get(number)
        if gone:
            kept = [piece for piece in chunk if piece not in gone]
            if len(kept) != len(chunk) - len(gone):
                raise _StaleError("a deleted key's piece is not in the order")
            chunk[:] = kept
        new_pieces = added.get(number)
        if new_pieces:
            chunk += new_pieces
            chunk.sort()  # a sorted run and a few more: timsort merges in linear time
    table.chunks = _rechunk(chunks, size)
    table.firsts = [chunk[0] for chunk in table.chunks]


def _rechunk(chunks: list[list[bytes]], size: int) -> list[list[bytes]]:
    """Chunks past ``2 * size`` pieces split, empty ones dropped, small neighbours joined."""
    out: list[list[bytes]] = []
    for chunk in chunks:
        if len(chunk) > 2 * size:
            out += _split(chunk, size)
        elif out and len(out[-1]) + len(chunk) <= size // 2:
            out[-1] += chunk
        elif chunk:
            out.append(chunk)
    return out


def _split(ordered: list[bytes], size: int) -> list[list[bytes]]:
    return [ordered[at : at + size] for at in range(0, len(ordered), size)]


def _piece(key: str, row: Row) -> bytes:
    """``_text(key) + _row(*row)``; the common case (key and value strings under 256 bytes
    of UTF-8, a term under 256, an index under 2**32) with heads looked up or packed in
    place instead of a function call each: building the pieces of the rows written since the
    previous snapshot is most of a snapshot's Python work."""
    value, term, index = row
    data = key.encode("utf-8")
    if type(value) is str and len(data) < 256 and term < 256 and index < 0x100000000:
        encoded = value.encode("utf-8")
        if len(encoded) < 256:
            return b"".join(
                (
                    _TEXT_HEADS[len(data)],
                    data,
                    b"\x83",
                    _TEXT_HEADS[len(encoded)],
                    encoded,
                    _UINT_HEADS[term],
                    _UINT_HEADS[index]
                    if index < 256
                    else (b"\x19" + index.to_bytes(2, "big"))
                    if index < 0x10000
                    else (b"\x1a" + index.to_bytes(4, "big")),
                )
            )
    return _text(key) + _row(value, term, index)


def _text(text: str) -> bytes:
    """Canonical CBOR of a text string (major type 3)."""
    data = text.encode("utf-8")
    return cbor_head(3, len(data)) + data


def _row(value: JSON, term: int, index: int) -> bytes:
    """Canonical CBOR of ``[value, term, index]``: by hand for a string, an integer of 64 bits,
    a boolean or null (most values), by cbor2 for the rest."""
    kind = type(value)
    if kind is str:
        encoded = _text(value)
    elif kind is int and -(2**64) <= value < 2**64:
        encoded = cbor_head(0, value) if value >= 0 else cbor_head(1, -1 - value)
    elif value is None or kind is bool:
        encoded = _SIMPLE[value]
    else:
        encoded = cbor2.dumps(value, canonical=True)
    return b"\x83" + encoded + cbor_head(0, term) + cbor_head(0, index)


_SIMPLE = {False: b"\xf4", True: b"\xf5", None: b"\xf6"}
_TEXT_HEADS = [cbor_head(3, n) for n in range(256)]
_UINT_HEADS = [cbor_head(0, n) for n in range(256)]
