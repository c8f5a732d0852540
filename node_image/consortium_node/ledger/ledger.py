"""The ledger: an append-only log of entries, its Merkle tree, signatures, KV state, receipts.

Why this shape: the log is an explicit sequence of ``(term, index)`` entries whose payloads are
the exact bytes on disk, so a restarted node rebuilds everything by replaying them, and Raft
ships and compares the same payloads: the Raft log IS this ledger. Appending (leader or
follower), durability (``sync``) and commitment (``advance_commit``, decided by consensus) are
separate steps, ``commit_index <= durable_index <= last_index``, and an uncommitted suffix can
be truncated (see the package docstring). Reads and receipts only see committed state; the
speculative public view covers every entry, because Raft acts on the latest configuration in
its log. Periodic signature entries sign the Merkle root of all entries before them with the
node key, which is what makes offline receipts possible. Private entries are encrypted with
the ledger secret version in force at their index (``secrets.LedgerSecrets``); a node that
does not hold a version keeps the log but refuses to serve private state past it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from consortium_node.ledger import restore
from consortium_node.ledger.damage import Damage, DamageKind
from consortium_node.ledger.entries import (
    PUBLIC_PREFIX,
    CheckedWriteSets,
    Entry,
    EntryKind,
    SignatureBody,
    TxId,
    WriteSet,
    decode_entry,
    open_signature,
    peek_position,
    position_label,
    private_entries,
    public_entry,
    signature_entry,
)
from consortium_node.ledger.entry_log import EntryLog
from consortium_node.ledger.errors import (
    EntryFormatError,
    LedgerCorruptionError,
    LedgerError,
    ReceiptNotReadyError,
    SecretUnavailableError,
    StoredEntryDamagedError,
    UnknownTransactionError,
    WriteSetError,
)
from consortium_node.ledger.kv import KVStore
from consortium_node.ledger.merkle import MerkleTree, leaf_hash, root_from_proof, root_of_frontier
from consortium_node.ledger.public_view import PublicView
from consortium_node.ledger.receipt import make_receipt
from consortium_node.ledger.records import Marker, Position
from consortium_node.ledger.replica import (
    Staged,
    TransactionView,
    check_batch,
    check_entry,
    view_of,
)
from consortium_node.ledger.secrets import T_LEDGER_SECRETS, LedgerSecrets
from consortium_node.ledger.signing import (
    CertificateCache,
    LedgerSigner,
    NodeKeySigner,
    sign_root,
)
from consortium_node.ledger.snapshot import T_SNAPSHOTS, SnapshotState
from consortium_node.ledger.snapshot_points import Capture, SnapshotPoints, SnapshotReceipt
from consortium_node.ledger.snapshot_store import SnapshotStore
from consortium_node.ledger.storage import ChunkStore

log = logging.getLogger("consortium_node.ledger")
REPLAY_REPORT_EVERY = 50_000  # entries between progress lines while a ledger is replayed
FLUSH_EVERY = 16_384  # committed leaves kept in memory before the tree flushes them to disk
CACHED_SIGNATURES = 64  # committed signature bodies kept in memory (older ones: read back)

__all__ = [
    "Ledger",
    "LedgerConfig",
    "LedgerSecrets",
    "LedgerSigner",
    "NodeKeySigner",
    "TransactionView",
]


@dataclass(frozen=True)
class LedgerConfig:
    """When to sign, how large a chunk file grows before the next one starts, and where
    snapshots are taken (``SnapshotPoints``): at least ``snapshot_interval`` committed entries
    apart (0: never) and, with ``snapshot_writes_percent`` p > 0, after committed writes of at
    least p % of the rows the previous snapshot held. Every node of a ledger should use the same
    values, so that they take the same snapshots (a node whose values differ takes up the
    primary's points at its next committed snapshot evidence)."""

    signature_interval_tx: int = 100
    signature_interval_ms: int = 100
    chunk_max_bytes: int = 8 * 1024 * 1024
    snapshot_interval: int = 10_000
    snapshot_writes_percent: int = 50

    def __post_init__(self) -> None:
        for name in ("signature_interval_tx", "signature_interval_ms", "chunk_max_bytes"):
            if type(getattr(self, name)) is not int or getattr(self, name) < 1:
                raise ValueError(f"LedgerConfig.{name} must be a positive integer")
        for name in ("snapshot_interval", "snapshot_writes_percent"):
            if type(getattr(self, name)) is not int or getattr(self, name) < 0:
                raise ValueError(f"LedgerConfig.{name} must be a non-negative integer")


class _ShortcutFailedError(LedgerError):
    """The local entries do not lead to the snapshot that was to shortcut their replay;
    ``damage``: what this open set aside, the cause (the reopen finds only its effect)."""

    def __init__(self, message: str, damage: Damage | None = None) -> None:
        super().__init__(message)
        self.damage = damage


def _check_index(name: str, value: object) -> int:
    if type(value) is not int or value < 0:
        raise LedgerError(f"{name} must be a non-negative integer, got {value!r}")
    return value


class Ledger:
    """One node's ledger directory, opened by replaying it (use ``Ledger.open``).

    Not thread-safe: one task owns it (the server serialises appends, syncs and reads).
    """

    def __init__(
        self,
        store: ChunkStore,
        secrets: LedgerSecrets,
        config: LedgerConfig,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._log = EntryLog(store)
        self._log.on_damage = self._read_damaged
        self._on_read_damage: Callable[[StoredEntryDamagedError], None] | None = None
        self._secrets = secrets
        self._unreadable: tuple[int, int] | None = None  # first committed (index, version)
        self._config = config
        self._clock = clock
        self._term = 1
        self._kv = KVStore(track_changes=config.snapshot_interval > 0)  # committed state
        self._commit_index = 0
        # the newest committed signature entries (older ones are read back for receipts)
        self._signatures: OrderedDict[int, SignatureBody] = OrderedDict()
        self._last_signature_time = clock()
        self._certificates = CertificateCache()
        self._commit_file_index, self._commit_file_at = 0, clock()
        self._contradicted: Position | None = None  # see _check_expected
        self.snapshots = SnapshotStore(store.directory / "snapshots")
        self._points = SnapshotPoints(
            self.snapshots, config.snapshot_interval, config.snapshot_writes_percent
        )
        self._partial_captures = False  # ``capture_partially``
        self._whole_next = True  # the next capture is whole (the first, or one was lost)
        self._own_snapshots = True  # ``own_snapshots``

    @classmethod
    def open(
        cls,
        directory: Path | str,
        *,
        ledger_secret: bytes | LedgerSecrets,
        config: LedgerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        repair: bool = False,
        service_certificate: x509.Certificate | None = None,
    ) -> Ledger:
        """Open (or create) the ledger in ``directory``, replaying and checking every chunk.

        ``ledger_secret`` is the version-1 secret alone, or the node's ``LedgerSecrets``
        (every version it holds, and how to unwrap its copy in a rotation entry).
        Every replayed entry is durable and none is committed: consensus says how far the
        log is committed (``advance_commit``); until then the KV state is empty.
        Damage raises LedgerCorruptionError; with ``repair`` it is set aside instead (kept
        on disk), the log ends before it, and ``damage`` and ``missing_committed`` say what
        this node must get back from its peers.

        With the ``service_certificate``, committed local snapshots are used (``restore``):
        a log that starts after a snapshot starts from it, and the newest snapshot lets
        replay skim the entries it covers; the snapshot's index is then committed at once.
        If the tree store (``tree_store``) holds the history below that snapshot and agrees
        with its frontier, replay resumes after it instead, reading none of the entries it
        covers; they are checked when read (a damaged one writes ``check-all``, and the next
        open skims every entry again).
        """
        config = config or LedgerConfig()
        secrets = (
            ledger_secret
            if isinstance(ledger_secret, LedgerSecrets)
            else LedgerSecrets(ledger_secret)
        )
        open_ = functools.partial(
            cls._open,
            directory,
            secrets,
            config=config,
            clock=clock,
            repair=repair,
            certificate=service_certificate,
        )
        try:
            return open_()
        except _ShortcutFailedError as exc:
            log.error("ledger: %s; replaying every entry instead", exc)
            secrets.truncate(0)
            ledger = open_(shortcut=False)
            if exc.damage is not None:  # the reopen sees entries missing: name the damage
                ledger._store.damage = exc.damage
            return ledger

    @classmethod
    def _open(
        cls,
        directory: Path | str,
        secrets: LedgerSecrets,
        *,
        config: LedgerConfig,
        clock: Callable[[], float],
        repair: bool,
        certificate: x509.Certificate | None,
        shortcut: bool = True,
    ) -> Ledger:
        store = ChunkStore(directory, config.chunk_max_bytes)
        ledger: Ledger | None = None
        try:
            ledger = cls(store, secrets, config, clock)
            fast = resume = None
            if certificate is not None:
                base, fast = restore.choose(
                    ledger.snapshots, store.first_chunk(), certificate, secrets
                )
                if base is not None:
                    ledger._start_from(base)
                fast = fast if shortcut else None
                if (
                    fast is not None
                    and not ledger._check_all.exists()
                    and ledger._log.can_resume(fast.index, fast.frontier)
                ):
                    resume, fast = fast, None
                    ledger._resume_from(resume)
            if resume is None:
                ledger._log.history.reset(ledger._log.tree.start)  # rebuilt by this replay
            replay = store.replay(repair=repair, start=ledger.last_index + 1)
            try:
                for payload, path, offset in replay:
                    if fast is not None and ledger.last_index < fast.index:
                        ledger._skim(payload, path, offset, fast)
                    else:
                        ledger._replay(payload, path, offset)
                    if ledger.last_index % REPLAY_REPORT_EVERY == 0:  # shown while starting
                        log.info(
                            "ledger: replayed up to index %d (%s)", ledger.last_index, path.name
                        )
                    ledger._flush_tree(store.known_commit.index)
            except LedgerCorruptionError as exc:  # an entry the store read whole is bad
                if not repair:
                    raise
                replay.close()
                first_lost = ledger.last_index + 1
                store.set_aside(exc.path, exc.offset, first_lost, DamageKind.CORRUPTED, exc.reason)
                secrets.truncate(ledger.last_index)
            if fast is not None and ledger.commit_index < fast.index:
                raise _ShortcutFailedError(
                    f"the log ends at {ledger.last_index}, before the snapshot at {fast.index}",
                    store.damage,
                )
            if resume is not None:
                ledger._check_resumed(resume)
        except BaseException:
            store.close()
            if ledger is not None:
                ledger._log.history.close()
            raise
        ledger._log.replayed()
        ledger._last_signature_time = clock()
        if resume is None:
            ledger._flush_tree(store.known_commit.index, every=1)
        ledger._check_all.unlink(missing_ok=True)
        return ledger

    @property
    def _check_all(self) -> Path:
        """``check-all``: written when a read found an entry or tree hash damaged, so that the
        next open reads and checks every entry instead of resuming from a snapshot."""
        return self._store.directory / "check-all"

    def _flush_tree(self, committed: int, every: int = FLUSH_EVERY) -> None:
        """Move the tree's committed history to disk once ``every`` leaves are in memory."""
        tree = self._log.tree
        size = min(committed, tree.size)
        if size - tree.flushed >= every:
            tree.flush(size)

    def on_read_damage(self, callback: Callable[[StoredEntryDamagedError], None]) -> None:
        """Call ``callback`` (then raise) when a durable entry read back while the node runs
        is damaged on disk (``StoredEntryDamagedError``)."""
        self._on_read_damage = callback

    def scrub(self, count: int) -> bool:
        """Check ``count`` more of the entries a resumed open did not read (``EntryLog.scrub``:
        checksums, decoding, and the snapshot's frontier rebuilt from their leaves); damage is
        reported as a damaged read is. True while some remain (``unscrubbed``)."""
        return self._log.scrub(count)

    @property
    def unscrubbed(self) -> int:
        return self._log.unscrubbed

    def _read_damaged(self, error: StoredEntryDamagedError) -> None:
        """A read found damage: the next open checks every entry (``check-all``)."""
        try:
            self._check_all.touch()
        except OSError as exc:
            log.error("ledger: cannot write %s: %s", self._check_all, exc)
        if self._on_read_damage is not None:
            self._on_read_damage(error)

    # -- starting from a snapshot (see ``restore``) ----------------------------------------

    def _restore(self, state: SnapshotState) -> None:
        """Take the committed state of ``state``: KV, secret schedule, commit index."""
        assert state.private is not None
        self._kv = KVStore.from_tables(
            state.public, state.private, track_changes=self._config.snapshot_interval > 0
        )
        self._secrets.restore(state.public.get(T_LEDGER_SECRETS, {}))
        self._keep_signature(state.index, state.signature)
        self._commit_index = state.index
        self._term = max(self._term, state.term)
        self._points.passed(state.index, self._kv.written, self._kv.rows())

    def _start_from(self, state: SnapshotState) -> None:
        """An empty log starts after the snapshot ``state`` (its chunks, if any, after it)."""
        tree = MerkleTree.from_frontier(state.index - 1, state.frontier, history=self._log.history)
        tree.append(decode_entry(state.signature_entry).leaf())
        self._log.start_from(tree, state.term, state.public)
        self.snapshots.protected = state.index
        self._restore(state)

    def _resume_from(self, state: SnapshotState) -> None:
        """Replay only the entries after the snapshot ``state``: the tree store holds the
        history before it (``EntryLog.can_resume`` checked it against the snapshot)."""
        entries = self._log
        tree = MerkleTree.from_frontier(
            state.index - 1, state.frontier, start=entries.tree.start, history=entries.history
        )
        tree.append(decode_entry(state.signature_entry).leaf())
        entries.resume_from(tree, state.term, state.public)
        self._restore(state)
        log.info("ledger: resuming after the snapshot at %d (tree store verified)", state.index)

    def _check_resumed(self, state: SnapshotState) -> None:
        """The chunks hold the snapshot's signature entry, byte for byte, where it says."""
        try:
            held = self._store.read(state.index)
        except LedgerError as exc:
            raise _ShortcutFailedError(
                f"the snapshot at {state.index} was resumed from, but its entry does not read "
                f"back ({exc})"
            ) from exc
        if held != state.signature_entry:
            raise _ShortcutFailedError(
                f"the entry at {state.index} is not the snapshot's signature entry"
            )

    def _skim(self, payload: bytes, path: Path, offset: int, fast: SnapshotState) -> None:
        """Replay an entry the snapshot ``fast`` covers: its leaf and term only."""
        try:
            entry = decode_entry(payload)
            if entry.index != self.last_index + 1:
                raise EntryFormatError(f"index {entry.index} does not follow {self.last_index}")
            signature = open_signature(entry) if entry.kind is EntryKind.SIGNATURE else None
        except EntryFormatError as exc:
            raise LedgerCorruptionError(
                path, offset, f"entry {position_label(payload)}: {exc}"
            ) from exc
        self._term = max(self._term, entry.term)
        frontier_root = root_of_frontier(fast.frontier) if entry.index == fast.index else None
        if frontier_root is not None and (
            payload != fast.signature_entry or self._log.tree.root() != frontier_root
        ):
            raise _ShortcutFailedError(
                f"the entries up to {fast.index} are not those of the snapshot there"
            )
        self._log.tree.append(entry.leaf())
        self._log.record_skimmed(entry.term, entry.index, signature is not None)
        if entry.index == fast.index:
            self._log.public = PublicView.starting_with(fast.public)
            self._restore(fast)

    def _replay(self, payload: bytes, path: Path, offset: int) -> None:
        log = self._log
        try:
            entry, staged = check_entry(
                payload, log.tree, log.term_at(log.last_index), self._secrets, self._certificates
            )
        except EntryFormatError as exc:
            raise LedgerCorruptionError(
                path, offset, f"entry {position_label(payload)}: {exc}"
            ) from exc
        self._term = max(self._term, entry.term)
        log.tree.append(entry.leaf())
        log.record(staged, keep=False)  # do not keep every replayed write set in memory

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
        return self._log.term_at(index)

    @property
    def last_index(self) -> int:
        return self._log.last_index

    @property
    def base_index(self) -> int:
        """The snapshot this log starts after (0: it holds every entry from index 1)."""
        return self._log.base

    @property
    def last_txid(self) -> TxId:
        return TxId(self.term_at(self.last_index), self.last_index)

    @property
    def durable_index(self) -> int:
        """Highest index written and fdatasync'ed (it may still be truncated unless committed)."""
        return self._log.durable_index

    @property
    def commit_index(self) -> int:
        """Highest index committed by consensus and applied to the KV state (never decreases)."""
        return self._commit_index

    @property
    def commit_txid(self) -> TxId:
        return TxId(self.term_at(self._commit_index), self._commit_index)

    @property
    def last_signed_index(self) -> int:
        """Index of the latest signature entry in the log, committed or not (0: none)."""
        return self._log.last_signed_index

    @property
    def unsigned_count(self) -> int:
        """Entries appended after the latest signature entry."""
        return self.last_index - self.last_signed_index

    @property
    def secrets(self) -> LedgerSecrets:
        """The secret versions of this log and those this node holds."""
        return self._secrets

    @property
    def unreadable_from(self) -> tuple[int, int] | None:
        """``(index, secret version)`` of the first committed private entry this node cannot
        decrypt (it was not a recipient of that rotation), or None."""
        return self._unreadable

    @property
    def damage(self) -> Damage | None:
        """The storage fault a repairing open set aside, if any."""
        return self._store.damage

    @property
    def known_commit(self) -> Position:
        """The highest position this node knows was committed: its commit index, or a commit
        marker it wrote earlier (which survives restarts and repairs)."""
        here = Position(self._commit_index, self.term_at(self._commit_index))
        return max(here, self._store.known_commit)

    @property
    def missing_committed(self) -> Position | None:
        """The known committed position this log does not reach (entries lost to a storage
        fault and not yet replicated again), or None."""
        known = self._store.known_commit
        return known if known.index > self.last_index else None

    @property
    def unvouched(self) -> Position | None:
        """A position this node knew durable (so it may have acknowledged it) that its log's
        end no longer reaches, as Raft compares logs; or None. While it is set the node must
        not lead nor vote for a log that does not reach it (``replication.raft``): the entries
        may be committed with this node's acknowledgement. A log that goes past it in a
        later term (a leader's) settles it: those entries were then never committed."""
        known = self._store.known_durable
        end = Position(self.last_index, self.term_at(self.last_index))
        return known if end.raft_order() < known.raft_order() else None

    @property
    def diverged(self) -> Position | None:
        """A known committed position whose entry has another term in this log: the history
        replicated to this node is not the one it knew committed (never expected), or None."""
        known = self._store.known_commit
        if 0 < known.index <= self.last_index and self.term_at(known.index) != known.term:
            return known
        return self._contradicted

    @property
    def recovered_torn_tail(self) -> tuple[Path, int, int] | None:
        """``(chunk, offset, bytes)`` of an unacknowledged torn write repaired at open."""
        return self._store.recovered_torn_tail

    @property
    def chunk_paths(self) -> list[Path]:
        return self._store.chunk_paths

    # -- append -------------------------------------------------------------------------

    def append(self, write_sets: Sequence[WriteSet], kind: EntryKind) -> list[TxId]:
        """Append transactions (all or none); durable at ``sync()``, committed later.

        PRIVATE entries are encrypted with the current secret version (SecretUnavailableError
        if this node does not hold it); a PUBLIC rotation entry makes the next version current.
        Write sets are copied two levels deep; do not mutate their values afterwards.
        """
        if kind not in (EntryKind.PUBLIC, EntryKind.PRIVATE):
            raise WriteSetError("kind", "append takes PUBLIC or PRIVATE; use append_signature")
        first, term = self.last_index + 1, self._term
        if kind is EntryKind.PRIVATE:
            version, aead = self._secrets.encrypting()  # SecretUnavailableError: not held here
            entries = private_entries(aead, term, first, write_sets, secret_version=version)
        else:
            entries = [public_entry(term, first + n, ws) for n, ws in enumerate(write_sets)]
        # Checked write sets were handed over (nobody else holds them); others are copied.
        kept: Sequence[WriteSet] = (
            write_sets
            if isinstance(write_sets, CheckedWriteSets)
            else [{table: dict(rows) for table, rows in ws.items()} for ws in write_sets]
        )
        txids = [TxId(term, entry.index) for entry in entries]
        if kind is EntryKind.PUBLIC:
            try:
                for txid, writes in zip(txids, kept, strict=True):
                    self._secrets.observe(txid, writes)
            except BaseException:
                self._secrets.truncate(first - 1)
                raise
        tree, record = self._log.tree, self._log.record
        for entry, txid, writes in zip(entries, txids, kept, strict=True):
            tree.append(entry.leaf())
            record(Staged(txid, kind, entry.encode(), writes, None), keep=True)
        return txids

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
        tree, index = self._log.tree, self.last_index + 1
        body = sign_root(signer, tree.root(), index - 1, self._term, self._certificates)
        entry = signature_entry(self._term, index, body)
        tree.append(entry.leaf())
        self._log.record(Staged(entry.txid, entry.kind, entry.encode(), None, body), keep=True)
        self._last_signature_time = self._clock()
        return entry.txid

    def append_entries(self, payloads: Sequence[bytes]) -> int:
        """Append a leader's entry payloads (as ``raw_entries`` returns them), all or none.

        Each must be the next index with a term >= the previous entry's, and is checked as
        replay checks it (a SIGNATURE must sign the root over the entries before it with its
        certificate's key; a PRIVATE entry must decrypt). Raises ``EntryFormatError`` naming
        the entry and the reason, appending nothing. Raises ``term`` to the highest term seen.
        Returns the last index.
        """
        tree, base = self._log.tree, self.last_index
        self._check_expected(payloads, base + 1)
        checked = check_batch(payloads, tree, self.term_at(base), self._secrets, self._certificates)
        for entry, staged in checked:
            self._log.record(staged, keep=True)
            if entry.kind is EntryKind.SIGNATURE:
                self._last_signature_time = self._clock()
        if checked:
            self._term = max(self._term, checked[-1][0].term)
        return self.last_index

    def _check_expected(self, payloads: Sequence[bytes], first: int) -> None:
        """Entries replicated again after a storage fault must be the signature entries this
        node still holds (set aside, intact): each signs the root over every entry before it.
        LedgerError (nothing appended) otherwise: that history contradicts the committed one."""
        expected = self._store.expected_signatures
        if not expected:
            return
        for index, payload in enumerate(payloads, start=first):
            digest = expected.get(index)
            if digest is not None and hashlib.sha256(payload).digest() != digest:
                self._contradicted = Position(index, peek_position(payload)[0])
                raise LedgerError(
                    f"entry {index} differs from the committed signature entry this node held "
                    "before a storage fault (set aside): refusing a contradicting history"
                )
            expected.pop(index, None)

    # -- durability, commitment, truncation -----------------------------------------------

    def sync(self) -> int:
        """Write and fdatasync every pending entry, with a commit marker if the commit index
        moved since the last one; returns ``durable_index`` (commits nothing). At most once a
        second the commit position also goes to the commit file (``storage``)."""
        durable = self._log.sync(self._marker() if self.durable_index < self.last_index else None)
        now = self._clock()
        if durable > self._commit_file_index and now - self._commit_file_at >= 1.0:
            self._store.write_commit_file(self._state())
            self._commit_file_index, self._commit_file_at = durable, now
        return durable

    def _state(self) -> Marker:
        """What this node knows now: committed and durable positions."""
        c, d = self._commit_index, self.durable_index
        return Marker(Position(c, self.term_at(c)), Position(d, self.term_at(d)))

    def _marker(self) -> Marker | None:
        """A marker, if the commit or durable index moved since the last one written."""
        state, known = self._state(), self._store.known
        if state.commit.index > known.commit.index or state.durable.index > known.durable.index:
            return state
        return None

    def advance_commit(self, index: int) -> int:
        """Commit entries up to ``min(index, durable_index)`` in order; returns ``commit_index``.

        Applies their write sets to the KV state and makes their signatures usable for
        receipts. Never moves backwards. Entries no longer in memory (replayed at open) are
        read back from disk, decoded and decrypted one at a time. A private entry this node
        cannot decrypt is committed unread, and private reads fail from then on.
        """
        target = min(_check_index("commit index", index), self.durable_index)
        first, apply = self._commit_index + 1, self._kv.apply
        try:
            for next_index, staged in enumerate(
                self._log.staged_run(first, target, self._secrets), first
            ):
                writes, signature = staged.writes, staged.signature
                if writes is not None:
                    apply(writes, staged.txid)
                    if T_SNAPSHOTS in writes:
                        self._points.book_evidence(staged.txid, writes[T_SNAPSHOTS])
                elif staged.unreadable is not None and self._unreadable is None:
                    self._unreadable = (next_index, staged.unreadable)
                if signature is not None:
                    self._keep_signature(next_index, signature)
                self._commit_index = next_index
                if signature is not None:
                    self._at_signature(next_index)
        finally:
            self._log.forget_through(self._commit_index)
        self._flush_tree(self._commit_index)
        return self._commit_index

    def _keep_signature(self, index: int, body: SignatureBody) -> None:
        self._signatures[index] = body
        while len(self._signatures) > CACHED_SIGNATURES:
            self._signatures.popitem(last=False)

    def _signature_body(self, index: int) -> SignatureBody:
        """The committed signature entry at ``index`` (read back if no longer in memory)."""
        body = self._signatures.get(index)
        if body is None:
            entry = self._log.stored_entry(index)
            try:
                body = open_signature(entry)
            except EntryFormatError as exc:
                raise self._log.damaged(index, f"signature entry does not open: {exc}") from exc
        return body

    # -- snapshots ----------------------------------------------------------------------

    def _at_signature(self, index: int) -> None:
        """A committed signature entry: capture the state if it is a snapshot point (and this
        node can see every private value there)."""
        due = self._points.due(index, self._kv.written, self._kv.rows())
        if not due or self._unreadable is not None:
            return
        version = self._secrets.version_at(index)
        if not self._secrets.holds(version):
            return
        if not self._own_snapshots:  # the primary's is fetched once its evidence commits
            self._kv.forget_changes()
            self._whole_next = True
            self._flush_tree(index, every=1)  # as at a capture: a restart may start here
            return
        partial = self._partial_captures and not self._whole_next
        public, private, changes = self._kv.capture(partial=partial)
        self._whole_next = False
        state = SnapshotState(
            term=self.term_at(index),
            index=index,
            signature_entry=self._log.payload(index),
            frontier=self._log.tree.frontier(index - 1),
            public=public,
            private=private,
            secret_version=version,
        )
        self._flush_tree(index, every=1)  # a restart resumes here (frontier read first)
        self._points.captured(Capture(state, self._secrets.parts_cipher(version), changes))

    def capture_partially(self) -> None:
        """The caller encodes every capture, in order, with one ``RowEncodings`` (the
        snapshot duty): from the second capture on, a capture's private tables then hold only
        the rows written since the previous one (``KVStore.capture(partial=True)``), so the
        event loop does not copy the whole state at every snapshot point."""
        self._partial_captures = True

    def own_snapshots(self, own: bool) -> None:
        """``own``: capture the state at each snapshot point, to encode it (the primary, and
        a ledger used alone); else only note the points and capture nothing: the snapshot is
        the primary's, fetched and checked against its committed evidence (the bytes are the
        same: snapshots are deterministic). A point passed without a capture ends the chain
        of encodings (``KVStore.forget_changes``): the next capture is whole."""
        self._own_snapshots = own

    @property
    def owns_snapshots(self) -> bool:
        """Captures are taken at snapshot points (``own_snapshots``)."""
        return self._own_snapshots

    def snapshot_encoding_lost(self) -> None:
        """A capture was not encoded (it failed, or was partial and could not be): the next
        one is whole."""
        self._whole_next = True

    def no_snapshots_before(self, index: int) -> None:
        """Take no snapshot before ``index`` (``SnapshotPoints.floor``: a recovered ledger)."""
        self._points.floor(index)

    def snapshot_captures(self) -> list[Capture]:
        """The snapshots taken since the last call, to be encoded and written (in order)."""
        return self._points.captures()

    def snapshot_receipts(self) -> list[SnapshotReceipt]:
        """Evidence entries that a committed signature now covers, with their receipts, to
        commit the snapshots they record (``snapshots.commit``), oldest first."""

        def covered(index: int) -> bool:
            signed = self._log.signature_after(index)
            return signed is not None and signed <= self._commit_index

        return self._points.receipts(covered, self.receipt)

    def sync_and_commit(self) -> int:
        """``sync()`` then ``advance_commit(durable_index)``: a single node's whole path."""
        return self.advance_commit(self.sync())

    def truncate(self, last_kept: int) -> None:
        """Drop every entry after ``last_kept`` from memory and disk (Raft log conflict).

        Committed entries are never removed: ``last_kept < commit_index`` raises LedgerError
        and changes nothing. ``term`` is unchanged (terms never decrease).
        """
        _check_index("last_kept", last_kept)
        if last_kept < self._commit_index:
            raise LedgerError(
                f"cannot truncate after index {last_kept}: the ledger is committed up to "
                f"{self.commit_txid} and committed entries are never removed"
            )
        if last_kept < self._store.known_commit.index:
            raise LedgerError(
                f"cannot truncate after index {last_kept}: index {self._store.known_commit.index}"
                " is known committed (a commit marker) and committed entries are never removed"
            )
        known = self._store.known
        if known.durable.index > last_kept:  # first void the claim that they were durable
            kept = Position(last_kept, self.term_at(last_kept))
            self._store.write_commit_file(Marker(known.commit, kept), lower=True)
        self._log.truncate(last_kept)
        self._secrets.truncate(last_kept)

    # -- reads --------------------------------------------------------------------------

    def get(self, table: str, key: str) -> tuple[Any, TxId] | None:
        """Committed value of ``key`` in ``table`` and the transaction that wrote it.

        SecretUnavailableError for a private table once a committed private entry could not be
        decrypted here: the value might be stale, and a stale answer would be silent data loss.
        """
        if self._unreadable is not None and not table.startswith(PUBLIC_PREFIX):
            index, version = self._unreadable
            raise SecretUnavailableError(
                f"private state is unreadable on this node from index {index}: it does not hold "
                f"ledger secret version {version}"
            )
        return self._kv.get(table, key)

    @property
    def kv(self) -> KVStore:
        """The committed key-value state (read only by convention)."""
        return self._kv

    def public_get(self, table: str, key: str) -> tuple[Any, TxId] | None:
        """Latest value of a public key over the whole log, committed or not (speculative)."""
        return self._log.public.get(table, key)

    def public_keys(self, table: str) -> list[str]:
        """Keys of a public table over the whole log, committed or not (speculative)."""
        return self._log.public.keys(table)

    @property
    def public_position(self) -> TxId | None:
        """The newest public entry in the log: the public view changes only when this does."""
        return self._log.public.last_txid

    def _committed_entry(self, txid: TxId) -> Entry:
        if not 1 <= txid.index <= self._commit_index:
            raise UnknownTransactionError(
                f"transaction {txid} is unknown: the ledger is committed up to {self.commit_txid}"
            )
        term = self.term_at(txid.index)
        if term != txid.term:
            raise UnknownTransactionError(
                f"transaction {txid} is unknown: index {txid.index} has term {term} "
                f"(the ledger is committed up to {self.commit_txid})"
            )
        return self._log.stored_entry(txid.index)

    def read(self, txid: TxId) -> TransactionView:
        """The committed transaction ``txid``, decrypted."""
        return view_of(self._committed_entry(txid), self._secrets)

    def receipt(self, txid: TxId) -> dict[str, Any]:
        """A receipt proving ``txid`` is in the tree signed by the next committed signature."""
        entry = self._committed_entry(txid)
        signed_at = self._log.signature_after(txid.index)
        if signed_at is None or signed_at > self._commit_index:
            raise ReceiptNotReadyError(
                f"transaction {txid} is committed but no signature covers it yet (last "
                f"committed signature at index {self._log.signature_through(self._commit_index)})"
                "; retry"
            )
        body = self._signature_body(signed_at)
        proof = self._log.tree.inclusion_proof(txid.index - 1, body.tree_size)
        if root_from_proof(leaf_hash(entry.leaf()), proof) != body.root:
            raise self._log.damaged(
                txid.index, f"its proof (from the tree store) does not fold to {signed_at}'s root"
            )
        signature_txid = TxId(self.term_at(signed_at), signed_at)
        return make_receipt(entry.leaf_components(), proof, body, signature_txid)

    def raw_entries(self, start: int, end: int) -> list[bytes]:
        """Payloads of indices ``start..end`` inclusive (in any state), for replication."""
        if start < 1 or end > self.last_index:
            raise LedgerError(f"entries {start}..{end} are outside 1..{self.last_index}")
        return [self._log.payload(index) for index in range(start, end + 1)]

    def signature_through(self, index: int) -> int:
        """Index of the last signature entry at or before ``index`` (0: none)."""
        return self._log.signature_through(index)

    def signature_after(self, index: int) -> int | None:
        """Index of the first signature entry after ``index``, if this log holds one."""
        return self._log.signature_after(index)

    def entries_from(self, start: int, max_count: int, max_bytes: int) -> list[bytes]:
        """Payloads from ``start`` on: at most ``max_count`` entries and ``max_bytes`` bytes,
        but at least one entry if ``start <= last_index`` (empty if ``start`` is beyond it)."""
        return self._log.entries_from(start, max_count, max_bytes)

    def close(self) -> None:
        """Sync pending entries (a clean shutdown loses nothing; commits nothing) and close."""
        try:
            self._log.sync(self._marker())
            final = self._marker()  # a clean close records what is committed and durable
            if final is not None:
                self._log.sync(final)
            if self.durable_index > 0:
                self._store.write_commit_file(self._state())
        finally:
            self._store.close()
            self._log.history.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
