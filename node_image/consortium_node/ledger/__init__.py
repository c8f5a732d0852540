"""The ledger: RFC 6962 Merkle tree, entry format, durable chunks, KV state and receipts.

Modelled on CCF's ledger (DESIGN section 6). This docstring is the byte-level contract; the
code that implements each part is named in brackets. All integers are unsigned; ``||`` is
concatenation; ``u32be``/``u64be`` are big-endian; hex is lowercase; canonical JSON is
``common.canonical.canonical_json`` (UTF-8, sorted keys, no whitespace, no floats).

Transaction id [entries.TxId]
    ``"<term>.<index>"``: decimal, no leading zeros. ``index`` starts at 1 and increases by one
    per entry (signature entries included); ``term`` never decreases along the log.

Write set [entries.validate_write_set]
    ``{table: {key: value | null}}`` (``null`` deletes). Tables named ``public:*`` only in
    PUBLIC entries, all other tables only in PRIVATE entries.

Entry payload [entries.Entry.encode, entries.decode_entry]
    Canonical CBOR (RFC 8949 core deterministic encoding, ``cbor2.dumps(canonical=True)``) of
    the 6-element array ``[format, term, index, kind, write_set_digest, body]`` where
    ``format`` is 1 or 2 (below), ``kind`` is 1 PUBLIC (governance), 2 PRIVATE (application),
    3 SIGNATURE, ``write_set_digest`` is a 32-byte string and ``body`` a byte string:

    * PUBLIC:    ``body = canonical_json({"salt": "", "writes": ws})``
    * PRIVATE:   ``plaintext = canonical_json({"salt": s, "writes": ws})`` with ``s`` = 32 hex
      digits of 16 random bytes, encrypted with the ledger secret version ``v`` in force at
      ``index`` (see Ledger secrets):

      - ``v = 1``, format 1: ``body = nonce(12 random bytes) || AES-256-GCM(secret_1, nonce,
        plaintext, aad)`` (ciphertext then the 16-byte tag), ``aad = b"CLE1" || u64be(term) ||
        u64be(index) || u8(kind)``. This is the only format ledgers written before secret
        rotation contain; such entries read as version 1, unchanged.
      - ``v >= 2``, format 2: ``body = u32be(v) || nonce(12) || AES-256-GCM(secret_v, nonce,
        plaintext, aad)``, ``aad = b"CLE2" || u64be(term) || u64be(index) || u8(kind) ||
        u32be(v)``. Format 2 is refused for other kinds and for ``v < 2``, so every entry has
        exactly one encoding (followers compare bytes), and ``v`` is inside ``body``, so the
        leaf (``body_sha256``) and receipts commit to it without changing the leaf format.

      Either way a ciphertext cannot be moved to another position, kind or secret version.
    * SIGNATURE: ``body = canonical_json({"node_id", "root": hex, "tree_size", "signature":
      hex of DER ECDSA, "node_certificate": PEM, "term"})``.

    ``write_set_digest = SHA-256(plaintext body)`` (for PUBLIC and SIGNATURE the plaintext is
    ``body``). The random salt keeps a low-entropy private value from being guessed by hashing
    candidates against the public digest.

Ledger secrets [secrets.LedgerSecrets]
    Version 1 is in force from index 1 (created at genesis). A *rotation entry* is a PUBLIC
    entry at index ``r`` writing exactly ``{"public:consortium.ledger_secrets": {"<v>":
    {"version": v, "applies_from": r + 1, "wrapped": {node_id: base64 blob}}}}`` with ``v``
    the previous version + 1; version ``v`` is in force from ``r + 1``. A PRIVATE entry must
    name the version in force at its index (``UnknownSecretVersionError`` otherwise: refused on
    append and replay). Each node unwraps its own blob when the entry is appended, replicated
    or replayed; a node that is no recipient keeps the entry and the log but cannot decrypt
    later private entries (``SecretUnavailableError`` on private reads).

Leaf [entries.Entry.leaf_components, entries.leaf_of]
    ``leaf_components = {"txid": "<term>.<index>", "kind": int, "write_set_sha256": hex of
    write_set_digest, "body_sha256": hex SHA-256(body as stored, ciphertext for PRIVATE)}``;
    ``leaf = SHA-256(canonical_json(leaf_components))`` (32 bytes). The leaf of index ``i`` is
    leaf ``i - 1`` of the Merkle tree, whose leaf hash is ``SHA-256(0x00 || leaf)`` and node
    hash ``SHA-256(0x01 || left || right)`` (RFC 6962) [merkle].

Signature entries [ledger.Ledger.append_signature, signing.check_signature]
    The signature entry at index ``s`` signs the root of the tree over indices ``1..s-1``
    (``tree_size = s - 1``): ``signature = ECDSA-P256-SHA256(node key, root)`` over the raw 32
    bytes, DER encoded. It is itself a leaf, covered by the next signature. Replay and
    ``append_entries`` recompute every signed root and verify every signature with its
    ``node_certificate``'s key. A receipt uses the first signature after its entry, once that
    signature is committed.

Chunk files [storage, records]
    ``<dir>/ledger_<first_index:020d>.chunk``, a sequence of entry records ``b"CLE1" ||
    u32be(len(payload)) || u32be(zlib.crc32(payload)) || payload`` (indices consecutive across
    files) and commit markers ``b"CLM1" || u32be(16) || u32be(crc32(body)) || u64be(commit
    index) || u64be(its term)``, written in the same write as the entries of a sync when the
    commit index moved, and on a clean close. A chunk is closed at an entry boundary once it
    reaches ``chunk_max_bytes``. An incomplete record at the very end of the last chunk, above
    the highest marker, is an unacknowledged torn write: its bytes are moved to
    ``<chunk>.torn-<offset>`` and the chunk truncated. Any other damage (a record at or below
    the highest marker cut short, bad bytes, a missing chunk) is a storage fault:
    ``LedgerCorruptionError`` naming file and byte offset, or, when opened with ``repair``, the
    damaged suffix is moved aside (``<chunk>.damaged-<offset>``, later chunks
    ``<chunk>.damaged``; never deleted) and ``missing_committed`` tells consensus which
    committed entries the node must get back [damage].

Tree store [tree_store, merkle.MerkleTree.flush]
    ``<dir>/tree/level_<k:02d>.hashes`` hold the hashes of the complete subtrees of ``2**k``
    leaves below the committed index (position ``j`` at byte ``32 * j``) and
    ``<dir>/tree/state.json`` = canonical JSON ``{"format": 1, "start", "flushed"}`` says
    which: written atomically after the level files are fdatasync'ed, every ``FLUSH_EVERY``
    committed entries and at each snapshot point. Memory then holds O(log n) hashes plus the
    unflushed suffix. Nothing read back is trusted: the store is used at open only when its
    frontier at a committed snapshot's index equals the frontier the verified snapshot
    carries, and each hash read later is folded to a root this node computed or verified
    (``HistoryMismatchError``, reported like a damaged entry). ``<dir>/check-all``, written
    when a read found damage, makes the next open read and check every entry; it is removed
    once an open succeeded.

Log positions [ledger.Ledger, entry_log.EntryLog]
    The Raft log IS the ledger. Three positions, ``commit_index <= durable_index <=
    last_index``, move separately:

    * ``last_index``: entries appended in memory, by the leader (``append``,
      ``append_signature``) or as a follower (``append_entries(payloads)``, the exact bytes
      of the leader's ``raw_entries``/``entries_from``, each checked as replay checks it,
      all or none per call).
    * ``durable_index``: entries written and fdatasync'ed by ``sync()``. On one node this is
      what an acknowledgement means; a durable entry may still be truncated.
    * ``commit_index``: entries consensus declared committed, ``advance_commit(i)`` (capped at
      ``durable_index``, never decreasing; ``sync_and_commit()`` on a single node). Only
      committed write sets reach the KV state (``get``, ``kv``), and only committed entries
      and committed signatures serve ``read`` and ``receipt``.

    ``Ledger.open`` replays and verifies every chunk (tree, terms, signature roots and
    keys, secret versions, decryption with every version held) but commits nothing:
    ``commit_index`` is 0 and the KV state empty until consensus calls ``advance_commit``
    (entries are then read back from disk and decrypted on demand). With the service
    certificate and a committed local snapshot, the snapshot's index is committed at once,
    and when the tree store agrees with it, only the chunks after it are read (entries
    before it are checked against the tree when they are read). ``close()`` syncs, it
    does not commit. The speculative public view (``public_get``, ``public_keys``) covers
    every appended entry, committed or not, because Raft uses the latest configuration in
    its log.

Truncation [ledger.Ledger.truncate, storage.ChunkStore.truncate]
    ``truncate(last_kept)`` drops every entry with index ``> last_kept`` from memory, disk,
    the tree, the terms, the signature positions and the public view; it refuses
    (LedgerError, nothing changed) if ``last_kept`` is below ``commit_index`` or the highest
    commit marker: committed entries are never removed, even after a restart. On disk,
    chunk files wholly beyond ``last_kept`` are unlinked newest first with a directory
    fsync after each (a crash leaves a consecutive prefix of chunks), then
    the chunk holding ``last_kept + 1`` is cut at that record's offset and fsynced (unlinked
    if that record was its first). The next entry is ``last_kept + 1``; ``term`` is kept.
    The record format is unchanged: a truncated ledger is an ordinary, shorter ledger.

Receipt [ledger.Ledger.receipt, receipt.verify_receipt]
    JSON object ``{"txid", "leaf": hex, "leaf_components", "proof": [{"left": hex} |
    {"right": hex}, ...] (leaf to root; the side the sibling is on), "root": hex, "tree_size",
    "signature": hex DER, "signature_txid", "node_id", "node_certificate": PEM}``. Valid iff the
    leaf matches its components, folding the proof from ``SHA-256(0x00 || leaf)`` yields the
    root, the signature verifies over the root with the node certificate's key, and the node
    certificate was issued by the service certificate.
"""

from consortium_node.ledger.entries import EntryKind, TxId, WriteSet, peek_position
from consortium_node.ledger.errors import (
    EntryFormatError,
    LedgerCorruptionError,
    LedgerError,
    ReceiptError,
    ReceiptNotReadyError,
    SecretUnavailableError,
    StoredEntryDamagedError,
    UnknownSecretVersionError,
    UnknownTransactionError,
    WriteSetError,
)
from consortium_node.ledger.ledger import (
    Ledger,
    LedgerConfig,
    LedgerSigner,
    NodeKeySigner,
    TransactionView,
)
from consortium_node.ledger.receipt import VerifiedReceipt, verify_receipt
from consortium_node.ledger.secrets import (
    T_LEDGER_SECRETS,
    HeldSecret,
    LedgerSecrets,
    Rotation,
    rotation_record,
)

__all__ = [
    "T_LEDGER_SECRETS",
    "EntryFormatError",
    "EntryKind",
    "HeldSecret",
    "Ledger",
    "LedgerConfig",
    "LedgerCorruptionError",
    "LedgerError",
    "LedgerSecrets",
    "LedgerSigner",
    "NodeKeySigner",
    "ReceiptError",
    "ReceiptNotReadyError",
    "Rotation",
    "SecretUnavailableError",
    "StoredEntryDamagedError",
    "TransactionView",
    "TxId",
    "UnknownSecretVersionError",
    "UnknownTransactionError",
    "VerifiedReceipt",
    "WriteSet",
    "WriteSetError",
    "peek_position",
    "rotation_record",
    "verify_receipt",
]
