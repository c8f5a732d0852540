"""The speculative public view: ``public:*`` tables as of the last entry in the log.

Why: Raft configuration (and other governance state a node must act on before it commits)
lives in PUBLIC entries, and Raft requires a node to use the latest configuration in its log,
committed or not. So unlike the committed KV state, this view covers every appended entry,
pending, durable or replayed, and it rolls back when an uncommitted suffix is truncated.
Public entries are rare, so the write sets of uncommitted ones are kept in memory and a
truncation simply rebuilds the view from the surviving ones; committed ones can never be
truncated, so ``settle`` folds them into the base (memory stays the size of the state, not of
the history).
"""

from __future__ import annotations

import bisect

from consortium_node.ledger.entries import JSON, TxId, WriteSet
from consortium_node.ledger.kv import KVStore, Tables


class PublicView:
    """``public:*`` table → key → (value, TxId) over every PUBLIC entry appended so far."""

    __slots__ = ("_base", "_base_txid", "_entries", "_indices", "_state")

    def __init__(self) -> None:
        self._entries: list[tuple[TxId, WriteSet]] = []  # ascending index
        self._indices: list[int] = []
        self._state = KVStore()
        self._base = KVStore()  # committed public state: a snapshot's, then settled entries
        self._base_txid: TxId | None = None

    @classmethod
    def starting_with(cls, public: Tables) -> PublicView:
        """A view over a log started from a snapshot whose public tables are ``public`` (its
        position is their newest write); never truncated below it."""
        view = cls()
        view._base = KVStore.from_tables(public)
        newest = max(
            ((term, index) for rows in public.values() for _, term, index in rows.values()),
            default=None,
        )
        view._base_txid = None if newest is None else TxId(*newest)
        view._state = KVStore.from_tables(public)
        return view

    def apply(self, txid: TxId, writes: WriteSet) -> None:
        """Add the write set of the PUBLIC entry ``txid`` (appended in log order)."""
        if self._indices and txid.index <= self._indices[-1]:
            raise ValueError(f"public entry {txid} is not after {self._indices[-1]}")
        self._entries.append((txid, writes))
        self._indices.append(txid.index)
        self._state.apply(writes, txid)

    def settle(self, committed: int) -> None:
        """Fold the entries up to ``committed`` (never truncated) into the base."""
        settled = bisect.bisect_right(self._indices, committed)
        if not settled:
            return
        for txid, writes in self._entries[:settled]:
            self._base.apply(writes, txid)
        self._base_txid = self._entries[settled - 1][0]
        del self._entries[:settled]
        del self._indices[:settled]

    def truncate(self, last_kept: int) -> None:
        """Forget every entry with index ``> last_kept`` and rebuild the view if any was."""
        keep = bisect.bisect_right(self._indices, last_kept)
        if keep == len(self._entries):
            return
        del self._entries[keep:]
        del self._indices[keep:]
        self._state = KVStore.from_tables(self._base.copy_tables()[0])
        for txid, writes in self._entries:
            self._state.apply(writes, txid)

    def get(self, table: str, key: str) -> tuple[JSON, TxId] | None:
        """The latest value of ``key`` in the log and the transaction that wrote it."""
        return self._state.get(table, key)

    def keys(self, table: str) -> list[str]:
        """The keys present in ``table`` as of the last entry (first-write order)."""
        return list(self._state.keys(table))

    @property
    def last_txid(self) -> TxId | None:
        """The newest public entry; it identifies the view's state (a truncated and rewritten
        suffix carries a newer term, so the same index never names two states)."""
        return self._entries[-1][0] if self._entries else self._base_txid
