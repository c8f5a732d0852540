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

Costs about the encoded private state in memory. One encoding at a time (the snapshot task's).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

import cbor2

from consortium_node.ledger.entries import JSON, cbor_head
from consortium_node.ledger.kv import Changes, Row, Tables


class _StaleError(Exception):
    """What is kept does not follow from the changes: encode every row."""


class _Table:
    """One table's pieces: by key, and all of them in canonical order."""

    __slots__ = ("by_key", "ordered")

    def __init__(self, by_key: dict[str, bytes], ordered: list[bytes]) -> None:
        self.by_key = by_key
        self.ordered = ordered


class RowEncodings:
    """``encode``: ``cbor2.dumps(rows(tables), canonical=True)`` of successive captures."""

    def __init__(self) -> None:
        self._tables: dict[str, _Table] = {}
        self._next: tuple[object, int] | None = None  # the Changes that may follow

    def encode(self, tables: Tables, changes: Changes | None = None) -> bytes:
        """The canonical CBOR of ``{table: {key: [value, term, index]}}``; ``changes``: the keys
        written since the capture encoded last (None: unknown, encode every row)."""
        try:
            try:
                if changes is None or self._next != (changes.store, changes.since):
                    raise _StaleError("no changes that follow the last encoding")
                self._patch(tables, changes)
            except _StaleError:
                self._tables = {name: _full(rows) for name, rows in tables.items()}
            # Tables in the order of their names' encodings (distinct, none a prefix of
            # another: the order of the whole items), every byte copied once, by one join.
            parts = [cbor_head(5, len(self._tables))]
            for encoded, table in sorted((_text(n), t) for n, t in self._tables.items()):
                parts += (encoded, cbor_head(5, len(table.ordered)))
                parts += table.ordered
        except BaseException:
            self._tables, self._next = {}, None
            raise
        self._next = None if changes is None else (changes.store, changes.since + 1)
        return b"".join(parts)

    def _patch(self, tables: Tables, changes: Changes) -> None:
        for name in [name for name in self._tables if name not in tables]:
            del self._tables[name]  # emptied: a capture holds only non-empty tables
        for name, rows in tables.items():
            table = self._tables.setdefault(name, _Table({}, []))
            _patch_table(table, rows, changes.keys.get(name, ()))
            if len(table.ordered) != len(rows):  # the changes did not name every write
                raise _StaleError(f"table {name!r}: the changes miss rows")


def _patch_table(table: _Table, rows: dict[str, Row], keys: Iterable[str]) -> None:
    by_key, ordered = table.by_key, table.ordered
    added: list[bytes] = []
    removed: set[bytes] = set()
    for key in keys:
        old = by_key.get(key)
        row = rows.get(key)
        if row is None:
            if old is not None:
                removed.add(by_key.pop(key))
            continue
        new = by_key[key] = _text(key) + _row(*row)
        if old is None:
            added.append(new)
        elif new != old:  # the same key: the same place in the order
            at = bisect.bisect_left(ordered, old)
            if at == len(ordered) or ordered[at] != old:
                raise _StaleError(f"key {key!r}: its piece is not in the order")
            ordered[at] = new
    if removed:
        ordered[:] = [piece for piece in ordered if piece not in removed]
    if added:
        added.sort()
        ordered += added
        ordered.sort()  # two sorted runs: timsort merges them in linear time


def _full(rows: dict[str, Row]) -> _Table:
    by_key = {key: _text(key) + _row(*row) for key, row in rows.items()}
    return _Table(by_key, sorted(by_key.values()))


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
