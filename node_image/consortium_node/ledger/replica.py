"""Checking entries this node did not just build: a leader's (``append_entries``) or the disk's.

Why one checker: a follower must hold a log it could replay, so an entry a leader ships is
checked exactly as replay checks an entry read from a chunk (position, term order, signature
root and key, digest, decryption); only the way a failure is reported differs (the caller wraps
the ``EntryFormatError``: ``LedgerCorruptionError`` with file and offset on replay, the batch
position on append). Entries read back from disk after replay are checked against the leaf the
tree already holds for them, so a record swapped on disk since replay is caught.

A private entry must name the secret version in force at its position (``secrets``); if this
node does not hold that version (it was left out of a rotation) the entry is kept unopened
(``Staged.unreadable``): its leaf and position are still checked, its writes are unknown here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consortium_node.ledger.entries import (
    FORMAT_VERSION,
    Entry,
    EntryKind,
    SignatureBody,
    TxId,
    WriteSet,
    _decode_shortest,
    decode_entry,
    decrypt_body,
    open_entry,
    open_signature,
    parse_body,
    position_label,
)
from consortium_node.ledger.errors import (
    EntryFormatError,
    LedgerError,
    SecretUnavailableError,
    UnknownSecretVersionError,
)
from consortium_node.ledger.merkle import MerkleTree, leaf_hash
from consortium_node.ledger.secrets import LedgerSecrets
from consortium_node.ledger.signing import CertificateCache, check_signature


@dataclass
class Staged:
    """An entry held in memory until it is committed: its bytes and what they decode to."""

    txid: TxId
    kind: EntryKind
    payload: bytes
    writes: WriteSet | None  # PUBLIC and PRIVATE entries (None: unreadable here)
    signature: SignatureBody | None  # SIGNATURE entries
    unreadable: int | None = None  # PRIVATE: the secret version this node does not hold


@dataclass(frozen=True)
class TransactionView:
    """A committed transaction as stored, decrypted (signature entries: ``signature`` set)."""

    txid: TxId
    kind: EntryKind
    writes: WriteSet
    salt: str
    leaf_components: dict[str, Any]
    signature: SignatureBody | None = None


def view_of(entry: Entry, secrets: LedgerSecrets) -> TransactionView:
    """The decrypted view of a stored entry; LedgerError if it does not open
    (SecretUnavailableError if this node does not hold its secret version)."""
    components = entry.leaf_components()
    try:
        if entry.kind is EntryKind.SIGNATURE:
            body = open_signature(entry)
            return TransactionView(entry.txid, entry.kind, {}, "", components, body)
        salt, writes = open_entry(secrets.aead(entry.secret_version), entry)
    except SecretUnavailableError as exc:
        raise SecretUnavailableError(f"entry {entry.txid}: {exc}") from exc
    except EntryFormatError as exc:
        raise LedgerError(f"entry {entry.txid} does not open: {exc}") from exc
    return TransactionView(entry.txid, entry.kind, writes, salt, components)


def staged_from(entry: Entry, payload: bytes, secrets: LedgerSecrets) -> Staged:
    """Open a decoded entry (digest, decryption, write-set shape); a PRIVATE entry whose
    secret version this node does not hold is staged unopened (``unreadable``)."""
    if entry.kind is EntryKind.SIGNATURE:
        return Staged(entry.txid, entry.kind, payload, None, open_signature(entry))
    aead = None
    if entry.kind is EntryKind.PRIVATE:
        try:
            aead = secrets.aead(entry.secret_version)  # UnknownSecretVersionError: never introduced
        except SecretUnavailableError:
            return Staged(entry.txid, entry.kind, payload, None, None, entry.secret_version)
    _, writes = open_entry(aead, entry)
    return Staged(entry.txid, entry.kind, payload, writes, None)


def check_entry(
    payload: bytes,
    tree: MerkleTree,
    previous_term: int,
    secrets: LedgerSecrets,
    certificates: CertificateCache,
    *,
    canonical: bool = False,
) -> tuple[Entry, Staged]:
    """Check that ``payload`` may follow the ``tree.size`` entries before it.

    It must decode, have index ``tree.size + 1`` and a term ``>= previous_term`` (and
    ``>= 1``); a SIGNATURE must sign ``tree.root()`` with its own certificate's key; a
    PUBLIC or PRIVATE entry must open, a PRIVATE one with the secret version in force at its
    index. A PUBLIC rotation entry is booked in ``secrets`` (the caller truncates ``secrets``
    if it then drops the entry). With ``canonical`` the payload must also be exactly the
    canonical encoding of the entry (a follower stores the leader's bytes, nothing else).
    EntryFormatError names the reason.
    """
    entry = decode_entry(payload, canonical=canonical)
    if entry.index != tree.size + 1:
        raise EntryFormatError(f"index {entry.index} does not follow {tree.size}")
    if entry.term < max(previous_term, 1):
        raise EntryFormatError(
            f"term {entry.term} is lower than the previous entry's term {previous_term}"
            if previous_term >= 1
            else f"term {entry.term} is not a Raft term (terms start at 1)"
        )
    if entry.kind is EntryKind.PRIVATE and entry.secret_version != secrets.current_version:
        raise UnknownSecretVersionError(
            f"private entry names ledger secret version {entry.secret_version}, but version "
            f"{secrets.current_version} is in force at index {entry.index}"
        )
    staged = staged_from(entry, payload, secrets)
    if staged.signature is not None:
        check_signature(entry, staged.signature, tree.root(), certificates)
    elif staged.writes is not None and entry.kind is EntryKind.PUBLIC:
        secrets.observe(entry.txid, staged.writes)
    return entry, staged


def check_batch(
    payloads: Sequence[bytes],
    tree: MerkleTree,
    previous_term: int,
    secrets: LedgerSecrets,
    certificates: CertificateCache,
) -> list[tuple[Entry, Staged]]:
    """Check a leader's batch that follows the ``tree.size`` entries before it, all or none.

    The leaves of the checked entries are appended to ``tree`` (a signature later in the
    batch signs a root over them); on any failure the tree is truncated back and
    EntryFormatError names the entry, its batch position and the reason (rotations the batch
    booked in ``secrets`` are dropped again).
    """
    base = tree.size
    checked: list[tuple[Entry, Staged]] = []
    version, aead = _cipher_in_force(secrets)
    try:
        for position, payload in enumerate(payloads):
            try:
                if not isinstance(payload, bytes):
                    raise EntryFormatError(f"payload is {type(payload).__name__}, not bytes")
                fast = _checked_private(payload, tree.size + 1, previous_term, version, aead)
                if fast is None:
                    entry, staged = check_entry(
                        payload, tree, previous_term, secrets, certificates, canonical=True
                    )
                    version, aead = _cipher_in_force(secrets)  # a rotation entry moves it
                else:
                    entry, staged = fast
            except EntryFormatError as exc:
                label = position_label(payload) if isinstance(payload, bytes) else "?"
                raise type(exc)(  # EntryFormatError or its UnknownSecretVersionError
                    f"append_entries: entry {label} (batch position {position}, expected "
                    f"index {tree.size + 1}) rejected, nothing appended: {exc}"
                ) from exc
            tree.append(entry.leaf())
            previous_term = entry.term
            checked.append((entry, staged))
    except BaseException:
        tree.truncate(base)
        secrets.truncate(base)
        raise
    return checked


def _cipher_in_force(secrets: LedgerSecrets) -> tuple[int, AESGCM | None]:
    """The secret version in force and this node's cipher of it (None: not held here)."""
    version = secrets.current_version
    try:
        return version, secrets.aead(version)
    except LedgerError:  # not held: ``check_entry`` stages its entries unreadable
        return version, None


def _checked_private(
    payload: bytes, index: int, previous_term: int, version: int, aead: AESGCM | None
) -> tuple[Entry, Staged] | None:
    """``check_entry(..., canonical=True)`` of the common entry, a canonical PRIVATE entry
    at ``index`` of the secret ``version`` in force, held here (``aead``), that opens; in
    fewer steps (two of every three nodes check every private entry a leader appends: the
    calls around the decryption and the decoding were a sixth of it). None for anything
    else, a failure included: ``check_entry`` then decides, and names what is wrong."""
    entry = _decode_shortest(payload)  # a canonical payload, or None
    if entry is None or entry.kind is not EntryKind.PRIVATE or aead is None:
        return None
    term = entry.term
    if (
        entry.index != index
        or term < previous_term
        or term < 1
        or (1 if entry.format == FORMAT_VERSION else entry.secret_version) != version
    ):
        return None
    try:
        plaintext = decrypt_body(aead, entry)
        if hashlib.sha256(plaintext).digest() != entry.write_set_digest:
            return None
        _, writes = parse_body(plaintext, EntryKind.PRIVATE)
    except EntryFormatError:
        return None
    return entry, Staged(TxId._make((term, index)), EntryKind.PRIVATE, payload, writes, None)


def check_stored(payload: bytes, index: int, term: int, tree: MerkleTree) -> Entry:
    """Decode an entry read back from disk and check it is the one replayed at ``index``."""
    try:
        entry = decode_entry(payload)
    except EntryFormatError as exc:  # CRC matched, so this was written corrupt
        raise LedgerError(
            f"entry {term}.{index} read back from disk does not decode: {exc}"
        ) from exc
    if entry.txid != TxId(term, index) or leaf_hash(entry.leaf()) != tree.leaf_hash_at(index - 1):
        raise LedgerError(
            f"entry {term}.{index} read back from disk is not the entry replayed there "
            f"(found {entry.txid}, or its leaf differs)"
        )
    return entry
