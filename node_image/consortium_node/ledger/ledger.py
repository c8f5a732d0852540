"""The ledger: an append-only log of entries, its Merkle tree, signatures, KV state, receipts.

Why this shape: the log is an explicit sequence of ``(term, index)`` entries whose payloads are
the exact bytes on disk, so a restarted node rebuilds everything by replaying them, and Raft
(part 2) can ship and compare the same payloads. Appends are buffered and become committed only
in ``sync()`` after an fdatasync, which is when the caller may acknowledge them; the KV state
only ever reflects committed entries. Periodic signature entries sign the Merkle root of all
entries before them with the node key, which is what makes offline receipts possible.
"""

from __future__ import annotations

import bisect
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consortium_node.ledger.entries import (
    SECRET_SIZE,
    Entry,
    EntryKind,
    SignatureBody,
    TxId,
    WriteSet,
    decode_entry,
    leaf_of,
    open_entry,
    open_signature,
    position_label,
    private_entry,
    public_entry,
    signature_entry,
)
from consortium_node.ledger.errors import (
    EntryFormatError,
    LedgerCorruptionError,
    LedgerError,
    ReceiptNotReadyError,
    UnknownTransactionError,
    WriteSetError,
)
from consortium_node.ledger.kv import KVStore
from consortium_node.ledger.merkle import MerkleTree
from consortium_node.ledger.signing import (
    CertificateCache,
    LedgerSigner,
    NodeKeySigner,
    check_signature,
    sign_root,
)
from consortium_node.ledger.storage import ChunkStore

__all__ = [
    "Ledger",
    "LedgerConfig",
    "LedgerSigner",
    "NodeKeySigner",
    "TransactionView",
]


@dataclass(frozen=True)
class LedgerConfig:
    """When to sign, and how large a chunk file grows before the next one starts."""

    signature_interval_tx: int = 100
    signature_interval_ms: int = 100
    chunk_max_bytes: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("signature_interval_tx", "signature_interval_ms", "chunk_max_bytes"):
            if type(getattr(self, name)) is not int or getattr(self, name) < 1:
                raise ValueError(f"LedgerConfig.{name} must be a positive integer")


@dataclass(frozen=True)
class TransactionView:
    """A committed transaction as stored, decrypted (signature entries: ``signature`` set)."""

    txid: TxId
    kind: EntryKind
    writes: WriteSet
    salt: str
    leaf_components: dict[str, Any]
    signature: SignatureBody | None = None


@dataclass
class _Pending:
    txid: TxId
    payload: bytes
    writes: WriteSet | None
    signature: SignatureBody | None


class Ledger:
    """One node's ledger directory, opened by replaying it (use ``Ledger.open``).

    Not thread-safe: one task owns it (the server serialises appends, syncs and reads).
    """

    def __init__(
        self,
        store: ChunkStore,
        ledger_secret: bytes,
        config: LedgerConfig,
        clock: Callable[[], float],
    ) -> None:
        if not isinstance(ledger_secret, bytes) or len(ledger_secret) != SECRET_SIZE:
            raise LedgerError(f"the ledger secret must be {SECRET_SIZE} bytes")
        self._store = store
        self._aead = AESGCM(ledger_secret)
        self._config = config
        self._clock = clock
        self._tree = MerkleTree()
        self._kv = KVStore()
        self._terms = array("Q")  # term of index i is _terms[i - 1]
        self._term = 1
        self._commit_index = 0
        self._pending: list[_Pending] = []
        self._signature_indices: list[int] = []  # committed signature entries, ascending
        self._signatures: dict[int, SignatureBody] = {}
        self._last_signed_index = 0
        self._last_signature_time = clock()
        self._certificates = CertificateCache()

    @classmethod
    def open(
        cls,
        directory: Path | str,
        *,
        ledger_secret: bytes,
        config: LedgerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Ledger:
        """Open (or create) the ledger in ``directory``, replaying and checking every chunk."""
        config = config or LedgerConfig()
        store = ChunkStore(directory, config.chunk_max_bytes)
        try:
            ledger = cls(store, ledger_secret, config, clock)
            for payload, path, offset in store.replay():
                ledger._replay(payload, path, offset)
        except BaseException:
            store.close()
            raise
        ledger._commit_index = ledger.last_index
        ledger._last_signature_time = clock()
        return ledger

    # -- replay -------------------------------------------------------------------------

    def _replay(self, payload: bytes, path: Path, offset: int) -> None:
        try:
            entry = decode_entry(payload)
            if entry.index != self.last_index + 1:
                raise EntryFormatError(f"index {entry.index} follows {self.last_index}")
            if entry.term < self._term:
                raise EntryFormatError(f"term {entry.term} is lower than the previous {self._term}")
            writes: WriteSet | None = None
            body: SignatureBody | None = None
            if entry.kind is EntryKind.SIGNATURE:
                body = open_signature(entry)
                check_signature(entry, body, self._tree.root(), self._certificates)
            else:
                _, writes = open_entry(self._aead, entry)
        except EntryFormatError as exc:
            raise LedgerCorruptionError(
                path, offset, f"entry {position_label(payload)}: {exc}"
            ) from exc
        self._term = entry.term
        self._push(entry, payload, writes, body)
        self._commit(self._pending.pop())

    # -- state --------------------------------------------------------------------------

    @property
    def term(self) -> int:
        """The term new entries are appended in (Raft raises it; it never decreases)."""
        return self._term

    @term.setter
    def term(self, value: int) -> None:
        if type(value) is not int or value < self._term:
            raise LedgerError(f"term {value!r} must be an integer >= the current term {self._term}")
        self._term = value

    def term_at(self, index: int) -> int:
        """Term of the entry at ``index`` (0 for index 0, Raft's empty prefix)."""
        if index == 0:
            return 0
        if not 1 <= index <= self.last_index:
            raise UnknownTransactionError(
                f"index {index} is beyond the last index {self.last_index}"
            )
        return self._terms[index - 1]

    @property
    def last_index(self) -> int:
        return self._tree.size

    @property
    def last_txid(self) -> TxId:
        return TxId(self.term_at(self.last_index), self.last_index)

    @property
    def commit_index(self) -> int:
        """Highest index that is durable (fdatasync'ed) and applied to the KV state."""
        return self._commit_index

    @property
    def commit_txid(self) -> TxId:
        return TxId(self.term_at(self._commit_index), self._commit_index)

    @property
    def last_signed_index(self) -> int:
        """Index of the latest signature entry appended (0: none yet)."""
        return self._last_signed_index

    @property
    def unsigned_count(self) -> int:
        """Entries appended after the latest signature entry."""
        return self.last_index - self._last_signed_index

    @property
    def recovered_torn_tail(self) -> tuple[Path, int, int] | None:
        """``(chunk, offset, bytes)`` of an unacknowledged torn write repaired at open."""
        return self._store.recovered_torn_tail

    @property
    def chunk_paths(self) -> list[Path]:
        return self._store.chunk_paths

    # -- append -------------------------------------------------------------------------

    def _push(
        self, entry: Entry, payload: bytes, writes: WriteSet | None, body: SignatureBody | None
    ) -> None:
        self._tree.append(entry.leaf())
        self._terms.append(entry.term)
        self._pending.append(_Pending(entry.txid, payload, writes, body))
        if body is not None:
            self._last_signed_index = entry.index

    def append(self, write_sets: Sequence[WriteSet], kind: EntryKind) -> list[TxId]:
        """Append transactions (all or none); they commit at the next ``sync()``.

        Write sets are copied two levels deep; do not mutate their values until synced.
        """
        if kind not in (EntryKind.PUBLIC, EntryKind.PRIVATE):
            raise WriteSetError("kind", "append takes PUBLIC or PRIVATE; use append_signature")
        first = self.last_index + 1
        made: list[tuple[Entry, WriteSet]] = []
        for number, write_set in enumerate(write_sets):
            index = first + number
            if kind is EntryKind.PUBLIC:
                entry = public_entry(self._term, index, write_set)
            else:
                entry = private_entry(self._aead, self._term, index, write_set)
            made.append((entry, {table: dict(rows) for table, rows in write_set.items()}))
        for entry, writes in made:
            self._push(entry, entry.encode(), writes, None)
        return [entry.txid for entry, _ in made]

    def signature_due(self) -> bool:
        """True when enough entries or enough time have passed since the last signature."""
        count = self.unsigned_count
        if count == 0:
            return False
        if count >= self._config.signature_interval_tx:
            return True
        elapsed_ms = (self._clock() - self._last_signature_time) * 1000.0
        return elapsed_ms >= self._config.signature_interval_ms

    def append_signature(self, signer: LedgerSigner) -> TxId | None:
        """Sign the root of every entry so far; None if nothing was appended since the last."""
        if self.unsigned_count == 0:
            return None
        index = self.last_index + 1
        body = sign_root(signer, self._tree.root(), index - 1, self._term, self._certificates)
        entry = signature_entry(self._term, index, body)
        self._push(entry, entry.encode(), None, body)
        self._last_signature_time = self._clock()
        return entry.txid

    def sync(self) -> int:
        """Write and fdatasync every pending entry, apply them, and return the commit index."""
        if self._pending:
            first = self._pending[0].txid.index
            self._store.append([pending.payload for pending in self._pending], first)
            self._store.sync()
            for pending in self._pending:
                self._commit(pending)
            self._pending = []
        return self._commit_index

    def _commit(self, pending: _Pending) -> None:
        if pending.writes is not None:
            self._kv.apply(pending.writes, pending.txid)
        if pending.signature is not None:
            self._signature_indices.append(pending.txid.index)
            self._signatures[pending.txid.index] = pending.signature
        self._commit_index = pending.txid.index

    # -- reads --------------------------------------------------------------------------

    def get(self, table: str, key: str) -> tuple[Any, TxId] | None:
        """Committed value of ``key`` in ``table`` and the transaction that wrote it."""
        return self._kv.get(table, key)

    @property
    def kv(self) -> KVStore:
        """The committed key-value state (read only by convention)."""
        return self._kv

    def _committed_entry(self, txid: TxId) -> Entry:
        if not 1 <= txid.index <= self._commit_index:
            raise UnknownTransactionError(
                f"transaction {txid} is unknown: the ledger is committed up to {self.commit_txid}"
            )
        term = self._terms[txid.index - 1]
        if term != txid.term:
            raise UnknownTransactionError(
                f"transaction {txid} is unknown: index {txid.index} has term {term} "
                f"(the ledger is committed up to {self.commit_txid})"
            )
        payload = self._store.read(txid.index)
        try:
            return decode_entry(payload)
        except EntryFormatError as exc:  # CRC matched, so this was written corrupt
            raise LedgerError(f"entry {txid} does not decode: {exc}") from exc

    def read(self, txid: TxId) -> TransactionView:
        """The committed transaction ``txid``, decrypted."""
        entry = self._committed_entry(txid)
        components = entry.leaf_components()
        try:
            if entry.kind is EntryKind.SIGNATURE:
                body = open_signature(entry)
                return TransactionView(txid, entry.kind, {}, "", components, body)
            salt, writes = open_entry(self._aead, entry)
        except EntryFormatError as exc:
            raise LedgerError(f"entry {txid} does not open: {exc}") from exc
        return TransactionView(txid, entry.kind, writes, salt, components)

    def receipt(self, txid: TxId) -> dict[str, Any]:
        """A receipt proving ``txid`` is in the tree signed by the next committed signature."""
        entry = self._committed_entry(txid)
        position = bisect.bisect_right(self._signature_indices, txid.index)
        if position == len(self._signature_indices):
            raise ReceiptNotReadyError(
                f"transaction {txid} is committed but no signature covers it yet "
                f"(last committed signature at index {self._last_committed_signature()}); retry"
            )
        signed_at = self._signature_indices[position]
        body = self._signatures[signed_at]
        proof = self._tree.inclusion_proof(txid.index - 1, body.tree_size)
        components = entry.leaf_components()
        return {
            "txid": str(txid),
            "leaf": leaf_of(components).hex(),
            "leaf_components": components,
            "proof": [{side: sibling.hex()} for side, sibling in proof],
            "root": body.root.hex(),
            "tree_size": body.tree_size,
            "signature": body.signature.hex(),
            "signature_txid": str(TxId(self._terms[signed_at - 1], signed_at)),
            "node_id": body.node_id,
            "node_certificate": body.node_certificate,
        }

    def _last_committed_signature(self) -> int:
        return self._signature_indices[-1] if self._signature_indices else 0

    def raw_entries(self, start: int, end: int) -> list[bytes]:
        """Payloads of indices ``start..end`` inclusive (committed or pending), for replication."""
        if start < 1 or end > self.last_index:
            raise LedgerError(f"entries {start}..{end} are outside 1..{self.last_index}")
        pending_first = self.last_index - len(self._pending) + 1
        return [
            self._pending[index - pending_first].payload
            if index >= pending_first
            else self._store.read(index)
            for index in range(start, end + 1)
        ]

    def close(self) -> None:
        """Sync pending entries (a clean shutdown loses nothing) and close the chunk files."""
        try:
            if self._pending:
                self.sync()
        finally:
            self._store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
