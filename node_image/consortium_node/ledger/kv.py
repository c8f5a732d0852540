"""Committed key-value state: the result of applying every committed write set in order.

Why separate from the log: the log is the truth and can always rebuild this map (replay), while
readers need O(1) lookups of the latest committed value and the transaction that wrote it.
The ledger applies only committed write sets to its KV state, so a reader never sees a value
that a crash or a new Raft leader could take back (``public_view`` reuses this class for the
speculative view of public tables).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from consortium_node.ledger.entries import JSON, PUBLIC_PREFIX, TxId, WriteSet

# A row: the committed value and the term and index of the transaction that wrote it, as plain
# integers. A tuple whose items are all atomic (a string or integer value, two integers) is
# untracked by Python's cyclic garbage collector, so the state a node holds (one row per key)
# adds nothing to the collector's full passes; a TxId object per row did (two tracked objects
# per key, scanned at every full collection: several percent of a busy node's CPU).
Row = tuple[JSON, int, int]
Tables = dict[str, dict[str, Row]]


@dataclass(frozen=True)
class Changes:
    """The keys written or deleted, per table, in one store between two of its captures
    (``KVStore.capture``): ``since`` numbers the capture they follow (0: the store's start)."""

    store: object  # the store's token: a store made anew (a snapshot install) has another
    since: int
    keys: dict[str, set[str]]
    # A partial capture's private tables hold only the rows of ``keys``: the number of rows
    # of every non-empty private table then (None: a whole capture).
    counts: dict[str, int] | None = None


class KVStore:
    """table → key → row (value, term, index of the write); a ``None`` value deletes.

    With ``track_changes`` it also notes which keys each write touched since the last
    ``capture`` (what a snapshot encoder needs to encode only those rows again)."""

    __slots__ = ("_captures", "_changed", "_tables", "_token", "_tracking", "written")

    def __init__(self, *, track_changes: bool = False) -> None:
        self._tables: Tables = {}
        self._tracking = track_changes
        self._changed: dict[str, set[str]] = {}
        self._captures = 0
        self._token = object()
        self.written = 0  # rows written by ``apply`` (a deletion counts, a rewrite too)

    def apply(self, write_set: WriteSet, txid: TxId) -> None:
        """Apply one committed write set, in log order."""
        term, index = txid.term, txid.index
        for table, writes in write_set.items():
            rows = self._tables.get(table)
            if rows is None:
                rows = self._tables[table] = {}
            if self._tracking:
                changed = self._changed.get(table)
                if changed is None:
                    changed = self._changed[table] = set()
                changed.update(writes)
            self.written += len(writes)
            for key, value in writes.items():
                if value is None:
                    rows.pop(key, None)
                else:
                    rows[key] = (value, term, index)

    def get(self, table: str, key: str) -> tuple[JSON, TxId] | None:
        """The committed value of ``key`` and the transaction that wrote it, if any."""
        rows = self._tables.get(table)
        row = None if rows is None else rows.get(key)
        return None if row is None else (row[0], TxId(row[1], row[2]))

    def keys(self, table: str) -> Iterator[str]:
        """The keys currently present in ``table`` (insertion order)."""
        return iter(list(self._tables.get(table, {})))

    def capture(self, *, partial: bool = False) -> tuple[Tables, Tables, Changes]:
        """``copy_tables`` and the keys written since the previous capture (all of them
        written since the store was made, for the first; a store made ``from_tables`` or
        without ``track_changes`` does not know them: its changes cover no capture chain).

        ``partial``: the private tables hold only the rows of those keys (and the changes
        every private table's size), in time proportional to the changes instead of the
        state: for an encoder that encoded every capture before (``snapshot_rows``). The
        first capture of a store, or of one without ``track_changes``, is whole anyway."""
        counts = None
        if partial and self._tracking and self._captures:
            public, private = self.copy_tables(only=self._changed)
            counts = {
                table: len(rows)
                for table, rows in self._tables.items()
                if rows and not table.startswith(PUBLIC_PREFIX)
            }
        else:
            public, private = self.copy_tables()
        changes = Changes(self._token, self._captures, self._changed, counts)
        if not self._tracking:
            changes = Changes(object(), -1, {})  # follows no capture: encode in full
        self._changed, self._captures = {}, self._captures + 1
        return public, private, changes

    def forget_changes(self) -> None:
        """Stop noting the keys written since the last capture and start a new chain: the
        next capture's changes follow no encoding (it is encoded whole). For a node that
        does not encode snapshots at its points (``Ledger.own_snapshots``)."""
        self._changed, self._token = {}, object()

    def copy_tables(self, only: dict[str, set[str]] | None = None) -> tuple[Tables, Tables]:
        """``(public, private)``: a copy of every non-empty table, split by name (the rows are
        copied, the values shared: committed values are never mutated). ``only``: of the
        private tables, only the rows of these keys (per table; a key without a row: none)."""
        public: Tables = {}
        private: Tables = {}
        for table, rows in self._tables.items():
            if not rows:
                continue
            if table.startswith(PUBLIC_PREFIX):
                public[table] = dict(rows)
            elif only is None:
                private[table] = dict(rows)
            else:
                private[table] = {key: rows[key] for key in only.get(table, ()) if key in rows}
        return public, private

    @classmethod
    def from_tables(cls, *parts: Tables, track_changes: bool = False) -> KVStore:
        """A store holding ``parts`` (a snapshot's tables); the rows are copied."""
        store = cls(track_changes=track_changes)
        for tables in parts:
            for table, rows in tables.items():
                store._tables[table] = dict(rows)
        return store

    def rows(self) -> int:
        """How many rows the store holds, in every table."""
        return sum(map(len, self._tables.values()))

    def tables(self) -> list[str]:
        """Names of the tables that were ever written."""
        return sorted(self._tables)
