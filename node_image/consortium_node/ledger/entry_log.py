"""The log itself: entries in order, their Merkle tree and terms, and where their bytes are.

Why separate from ``Ledger``: this is the part Raft reasons about (last index and term,
durability, truncation of a conflicting suffix, shipping payloads), independent of what
committing an entry means (KV state, receipts), which stays in ``ledger.py``.

Entries ``1..last_index`` are all in the tree and the terms array. Their payloads are in
memory for the suffix appended since open and not yet committed (``_recent``), on disk up to
``durable_index``; every entry not in memory is durable (it was replayed, or committed), so it
can always be read back. Signature positions and the public view cover every entry.

A log started from a snapshot at index ``base`` (``start_from``) holds entries ``base + 1``
on: the tree holds only the frontier below them, the term of ``base`` is known, and asking
for an earlier entry raises ``HistoryNotHeldError``.

A log *resumed* at a snapshot ``r`` (``resume_from``: a restart whose tree store verified
against that snapshot) holds every entry from ``base + 1`` as before, but replayed only those
after ``r``: terms and signature positions are in memory from ``r`` on, and for an earlier
entry they are read from its record (signature positions by a short scan: a signature entry
follows at most ``signature_interval_tx`` entries later). Terms are kept as runs (one item
per term change), signature positions 8 bytes each: memory does not grow with the entries.
The entries before ``r`` are checked afterwards, in slices, while the node runs (``scrub``):
each record's checksum and decoding, and that their leaves rebuild the frontier the snapshot
signs; damage is reported like a damaged read, so a restart finds it and repairs it.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from consortium_node.ledger.entries import Entry, EntryKind, decode_entry, peek_position
from consortium_node.ledger.errors import (
    EntryFormatError,
    HistoryNotHeldError,
    LedgerCorruptionError,
    LedgerError,
    StoredEntryDamagedError,
    UnknownTransactionError,
)
from consortium_node.ledger.kv import Tables
from consortium_node.ledger.merkle import (
    Frontier,
    HistoryMismatchError,
    MerkleTree,
    frontier_sizes,
    leaf_hash,
)
from consortium_node.ledger.public_view import PublicView
from consortium_node.ledger.records import Marker
from consortium_node.ledger.replica import Staged, check_stored, staged_from
from consortium_node.ledger.secrets import LedgerSecrets
from consortium_node.ledger.storage import ChunkStore
from consortium_node.ledger.tree_store import TreeStore


@dataclass
class _Scrub:
    """Where the check of the entries a resumed open did not read has got to."""

    next: int  # the next index to read
    frontier: Frontier  # of the leaves before ``next``
    target: list[bytes]  # the frontier the snapshot signs (of the leaves before ``resumed``)


class EntryLog:
    """The ordered entries of one ledger over its chunk store (owned by one ``Ledger``)."""

    def __init__(self, store: ChunkStore) -> None:
        self.store = store
        self.history = TreeStore(store.directory / "tree")
        self.tree = MerkleTree(self.history)
        self.public = PublicView()  # public tables over every entry, committed or not
        # runs of terms from ``resumed``: entries from _run_firsts[i] on have _run_terms[i]
        self._run_firsts = array("Q")
        self._run_terms = array("Q")
        self._recent: list[Staged] = []  # indices (last_index - len, last_index]
        self._durable_index = 0
        self._signature_indices = array("Q")  # signature entries from ``resumed``, ascending
        self.base = 0  # a snapshot's index this log starts after (0: it holds every entry)
        self.resumed = 0  # the index replay started after (base, or a later snapshot)
        self._known_terms: dict[int, int] = {0: 0}  # terms of base and resumed
        # Told of a durable entry found damaged on a read (the node restarts to repair it).
        self.on_damage: Callable[[StoredEntryDamagedError], None] | None = None
        self._base_frontier: list[bytes] = []  # the tree's frontier at ``base``
        self._scrub: _Scrub | None = None

    def start_from(self, tree: MerkleTree, term: int, public: Tables) -> None:
        """Start an empty log after the snapshot at ``tree.size`` (its signature entry, in
        term ``term``): ``tree`` holds its frontier and its leaf, ``public`` its public
        tables."""
        assert self.last_index == 0, "only an empty log starts from a snapshot"
        self.tree = tree
        self.base = self.resumed = tree.size
        self._known_terms = {self.base: term}
        self._durable_index = self.base
        self._signature_indices = array("Q", [self.base])
        self.public = PublicView.starting_with(public)
        self._base_frontier = tree.frontier()

    def resume_from(self, tree: MerkleTree, term: int, public: Tables) -> None:
        """Replay goes on after the snapshot at ``tree.size`` (its signature entry, in term
        ``term``) whose entries this log holds on disk: ``tree`` holds its frontier and reads
        the rest from the tree store, ``public`` is its public tables."""
        assert self.last_index == self.base, "only a log not yet replayed resumes"
        self.tree = tree
        self.resumed = tree.size
        self._known_terms[self.resumed] = term
        self._durable_index = self.resumed
        self._signature_indices = array("Q", [self.resumed])
        self.public = PublicView.starting_with(public)
        start = Frontier(self.base, self._base_frontier)
        self._scrub = _Scrub(self.base + 1, start, tree.frontier(self.resumed - 1))

    def scrub(self, count: int) -> bool:
        """Check ``count`` more of the entries before ``resumed``, oldest first: each record
        reads back whole (checksum) and decodes at its index, and once all are read, their
        leaves must rebuild the frontier the snapshot signs (a record rewritten with a valid
        checksum). Damage raises ``StoredEntryDamagedError`` (``damaged``). True while some
        remain."""
        scrub = self._scrub
        if scrub is None:
            return False
        end = min(scrub.next + count, self.resumed)
        for index in range(scrub.next, end):
            entry = self._peek(index)
            if entry.index != index:
                raise self.damaged(index, f"the record holds entry {entry.txid}")
            scrub.frontier.append_hash(leaf_hash(entry.leaf()))
            scrub.next = index + 1
        if end < self.resumed:
            return True
        self._scrub = None
        if scrub.frontier.pieces != scrub.target:
            raise self.damaged(
                self.resumed,
                f"the entries {self.base + 1}..{self.resumed - 1} do not rebuild the Merkle "
                f"frontier the snapshot at {self.resumed} signs (a record was rewritten)",
            )
        return False

    @property
    def unscrubbed(self) -> int:
        """How many entries before ``resumed`` are still to be checked (``scrub``)."""
        return 0 if self._scrub is None else self.resumed - self._scrub.next

    def can_resume(self, index: int, frontier: list[bytes]) -> bool:
        """Whether the tree store holds the history below the snapshot at ``index`` whose
        frontier (of ``index - 1`` leaves) is ``frontier``, for this log's start."""
        history, size = self.history, index - 1
        if not history.usable or history.start != self.tree.start or history.flushed < size:
            return False
        pieces = frontier_sizes(size)
        if not all(history.holds(level, position) for level, position in pieces):
            return False
        try:
            return [history.read(level, position) for level, position in pieces] == frontier
        except LedgerError:
            return False

    def _peek(self, index: int) -> Entry:
        """The entry at ``index`` below ``resumed``, decoded but not checked against its leaf
        (a position lookup, or ``scrub``, which checks the leaves together)."""
        try:
            return decode_entry(self._read(index))
        except EntryFormatError as exc:
            raise self.damaged(index, f"read back from disk does not decode: {exc}") from exc

    # -- positions ----------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        return self.tree.size

    @property
    def durable_index(self) -> int:
        return self._durable_index

    def term_at(self, index: int) -> int:
        """Term of the entry at ``index`` (0 for index 0, Raft's empty prefix)."""
        if index == 0:
            return 0
        if not 1 <= index <= self.last_index:
            raise UnknownTransactionError(
                f"index {index} is beyond the last index {self.last_index}"
            )
        known = self._known_terms.get(index)
        if known is not None:
            return known
        if index <= self.base:
            raise HistoryNotHeldError(index, self.base + 1)
        if index < self.resumed:
            return peek_position(self._read(index))[0]
        return self._run_terms[bisect.bisect_right(self._run_firsts, index) - 1]

    def _add_term(self, index: int, term: int) -> None:
        if not self._run_terms or self._run_terms[-1] != term:
            self._run_firsts.append(index)
            self._run_terms.append(term)

    @property
    def last_signed_index(self) -> int:
        return self._signature_indices[-1] if self._signature_indices else 0

    def signature_after(self, index: int) -> int | None:
        """Index of the first signature entry after ``index``, if there is one."""
        for scanned in range(max(index, self.base) + 1, self.resumed):
            if self._peek(scanned).kind is EntryKind.SIGNATURE:
                return scanned
        position = bisect.bisect_right(self._signature_indices, index)
        return (
            self._signature_indices[position] if position < len(self._signature_indices) else None
        )

    def signature_through(self, index: int) -> int:
        """Index of the last signature entry at or before ``index`` (0: none)."""
        if index < self.resumed:
            for scanned in range(index, self.base, -1):
                if self._peek(scanned).kind is EntryKind.SIGNATURE:
                    return scanned
            return self.base if index >= self.base else 0
        position = bisect.bisect_right(self._signature_indices, index)
        return self._signature_indices[position - 1] if position else 0

    # -- changes ------------------------------------------------------------------------

    def record(self, staged: Staged, *, keep: bool) -> None:
        """Book an entry whose leaf was just appended to ``tree``; ``keep`` holds it in memory
        until it is committed (replayed entries are not kept: they are read back)."""
        self._add_term(staged.txid.index, staged.txid.term)
        if staged.signature is not None:
            self._signature_indices.append(staged.txid.index)
        elif staged.writes is not None and staged.kind is EntryKind.PUBLIC:
            self.public.apply(staged.txid, staged.writes)
        if keep:
            self._recent.append(staged)

    def record_skimmed(self, term: int, index: int, signature: bool) -> None:
        """Book an entry a snapshot covers (its leaf was appended to ``tree``): replay read
        only its term and kind; the public view comes from the snapshot."""
        self._add_term(index, term)
        if signature:
            self._signature_indices.append(index)

    def replayed(self) -> None:
        """Every entry so far came from disk: they are durable."""
        self._durable_index = self.last_index

    def sync(self, marker: Marker | None = None) -> int:
        """Write and fdatasync the entries after ``durable_index``, led by a commit ``marker``
        if given (written and synced even when no entry is pending); returns the new one."""
        count = self.last_index - self._durable_index
        if count:
            pending = self._recent[len(self._recent) - count :]
            self.store.append(
                [staged.payload for staged in pending], self._durable_index + 1, marker
            )
            self.store.sync()
            self._durable_index = self.last_index
        elif marker is not None:
            self.store.mark(marker)
            self.store.sync()
        return self._durable_index

    def truncate(self, last_kept: int) -> None:
        """Drop every entry after ``last_kept`` (the caller refuses committed ones)."""
        dropped = self.last_index - last_kept
        if dropped <= 0:
            return
        if last_kept < self._durable_index:
            self.store.truncate(last_kept)  # first: if it fails, memory still matches disk
            self._durable_index = last_kept
        del self._recent[len(self._recent) - min(dropped, len(self._recent)) :]
        self.tree.truncate(last_kept)
        runs = bisect.bisect_right(self._run_firsts, last_kept)
        del self._run_firsts[runs:]
        del self._run_terms[runs:]
        del self._signature_indices[bisect.bisect_right(self._signature_indices, last_kept) :]
        self.public.truncate(last_kept)

    def forget_through(self, index: int) -> None:
        """Release the in-memory entries up to ``index`` (committed: readable from disk)."""
        count = index - (self.last_index - len(self._recent))
        if count > 0:
            del self._recent[:count]
        self.public.settle(index)

    # -- reads --------------------------------------------------------------------------

    def _recent_first(self) -> int:
        return self.last_index - len(self._recent) + 1

    def stored_entry(self, index: int) -> Entry:
        """The durable entry at ``index`` read back from disk, checked against its leaf."""
        if index <= self.base:
            raise HistoryNotHeldError(index, self.base + 1)
        payload = self._read(index)
        try:
            term = self.term_at(index) if index >= self.resumed else peek_position(payload)[0]
            return check_stored(payload, index, term, self.tree)
        except (LedgerError, EntryFormatError, HistoryMismatchError) as exc:
            raise self.damaged(index, str(exc)) from exc

    def _read(self, index: int) -> bytes:
        """The durable record at ``index``; a CRC failure is ``StoredEntryDamagedError``."""
        try:
            return self.store.read(index)
        except LedgerCorruptionError as exc:
            raise self.damaged(index, str(exc)) from exc

    def damaged(self, index: int, reason: str) -> StoredEntryDamagedError:
        error = StoredEntryDamagedError(index, reason)
        if self.on_damage is not None:
            self.on_damage(error)
        return error

    def staged(self, index: int, secrets: LedgerSecrets) -> Staged:
        """The entry at ``index`` opened: from memory, or read back and decrypted (``unreadable``
        if this node does not hold its secret version)."""
        first = self._recent_first()
        if index >= first:
            return self._recent[index - first]
        entry = self.stored_entry(index)
        try:
            return staged_from(entry, b"", secrets)
        except EntryFormatError as exc:
            raise LedgerError(
                f"entry {entry.txid} read back from disk does not open: {exc}"
            ) from exc

    def staged_run(self, first: int, last: int, secrets: LedgerSecrets) -> Iterator[Staged]:
        """``staged(index)`` for ``first..last`` in order: a slice of the in-memory suffix
        where it holds them (one lookup for the run, not one per entry)."""
        recent = self._recent_first()
        for index in range(first, min(last, recent - 1) + 1):
            yield self.staged(index, secrets)
        if last >= recent:
            yield from self._recent[max(first, recent) - recent : last - recent + 1]

    def payload(self, index: int) -> bytes:
        first = self._recent_first()
        if index >= first:
            return self._recent[index - first].payload
        if index <= self.base:
            raise HistoryNotHeldError(index, self.base + 1)
        return self._read(index)  # below the in-memory suffix everything is durable

    def entries_from(self, start: int, max_count: int, max_bytes: int) -> list[bytes]:
        """Up to ``max_count`` payloads and ``max_bytes`` bytes from ``start``, at least one."""
        if type(start) is not int or start < 1:
            raise LedgerError(f"entries_from start must be an index >= 1, got {start!r}")
        if type(max_count) is not int or max_count < 1:
            raise LedgerError(f"entries_from max_count must be >= 1, got {max_count!r}")
        out: list[bytes] = []
        total = 0
        for index in range(start, min(self.last_index, start + max_count - 1) + 1):
            payload = self.payload(index)
            if out and total + len(payload) > max_bytes:
                break
            out.append(payload)
            total += len(payload)
        return out
