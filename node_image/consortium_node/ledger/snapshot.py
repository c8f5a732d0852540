"""Snapshots: the committed KV state at a signature entry, so a node need not replay from 1.

Why this shape (modelled on CCF's snapshots): a snapshot is taken at a committed SIGNATURE
entry ``s``, so it carries that entry itself and the Merkle frontier of the entries before it;
the signature signs the root of that frontier, so the frontier is authenticated by the same
key that signs the ledger, and every later signature entry a node replicates on top of it
re-checks the whole chain. The KV state is authenticated by its digest, which the primary
writes into the public table ``T_SNAPSHOTS`` in a later entry (the *evidence*); a receipt for
the evidence entry therefore proves, with the service certificate alone, which snapshot bytes
are genuine. A node only starts from a snapshot whose evidence receipt verifies.

Snapshots are deterministic: every node that commits ``s`` with the same interval writes the
same bytes (the private part's nonce is derived from its plaintext, see below), so a follower
checks its own snapshot against the primary's evidence and any node can serve it.

Byte format (``encode_snapshot``; integers unsigned, ``||`` concatenation)::

    b"CLS1" || canonical CBOR [format = 1, term, index, signature_entry, frontier,
                               public, secret_version, private]

* ``term``, ``index``: the snapshot's txid, the SIGNATURE entry ``s``;
* ``signature_entry``: that entry's payload, exactly as in the ledger;
* ``frontier``: array of 32-byte hashes, the Merkle frontier of ``D[0:s-1]`` (``merkle``),
  whose root the signature entry signs;
* ``public``: map ``public:*`` table → key → ``[value, term, index]`` (the committed value and
  the txid that wrote it; values are the JSON values of the write sets);
* ``secret_version``: the ledger secret version ``v`` in force at ``s``;
* ``private``: ``nonce(12) || AES-256-GCM(secret_v, nonce, plaintext, aad)`` with
  ``plaintext`` = canonical CBOR of the private tables shaped like ``public``,
  ``aad = b"CLS1" || u64be(term) || u64be(index) || u32be(v)`` and
  ``nonce = SHA-256(b"CLS1 nonce" || aad || SHA-256(plaintext))[:12]`` (a synthetic IV: two
  different plaintexts never share a nonce, and equal ones give equal bytes).

Evidence record, ``T_SNAPSHOTS[str(s)]`` (a PUBLIC entry that writes only this row)::

    {"txid": "<term>.<s>", "sha256": hex SHA-256(snapshot bytes), "size": len(snapshot)}

Files (``SnapshotStore``): ``<ledger dir>/snapshots/snapshot_<s:020d>.snap`` (written
atomically when taken) and, once the evidence entry is committed and covered by a committed
signature, ``snapshot_<s:020d>.receipt``: the evidence entry's receipt (canonical JSON). A
snapshot with a receipt is *committed*; only committed snapshots are used or served.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidTag

from consortium_node.common.canonical import canonical_json
from consortium_node.ledger.entries import (
    PUBLIC_PREFIX,
    EntryKind,
    SignatureBody,
    TxId,
    WriteSet,
    cbor_head,
    decode_entry,
    open_signature,
    read_uint,
)
from consortium_node.ledger.errors import EntryFormatError, LedgerError
from consortium_node.ledger.kv import Changes, Row, Tables
from consortium_node.ledger.merkle import HASH_SIZE, frontier_sizes, root_of_frontier
from consortium_node.ledger.receipt import VerifiedReceipt, node_certificate_key, verify_receipt
from consortium_node.ledger.secrets import PartsCipher
from consortium_node.ledger.signing import CertificateCache, check_signature
from consortium_node.ledger.snapshot_rows import RowEncodings

MAGIC = b"CLS1"
MAX_U64 = 2**64 - 1
FORMAT = 1
NONCE_SIZE = 12
T_SNAPSHOTS = "public:consortium.snapshots"
EVIDENCE_FIELDS = frozenset({"txid", "sha256", "size"})


class SnapshotError(LedgerError):
    """A snapshot is malformed, does not match its evidence, or does not verify; ``reason``
    is a short name (``digest``, ``receipt``, ``evidence``, ``signature``, ``format``…)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"snapshot refused ({reason}): {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SnapshotState:
    """What a snapshot holds, in memory (decrypted)."""

    term: int
    index: int
    signature_entry: bytes
    frontier: list[bytes]
    public: Tables
    private: Tables | None  # None: decoded without the secret (an auditor's check)
    secret_version: int

    @property
    def txid(self) -> TxId:
        return TxId(self.term, self.index)

    @property
    def signature(self) -> SignatureBody:
        return open_signature(decode_entry(self.signature_entry))


def _aad(term: int, index: int, version: int) -> bytes:
    return MAGIC + struct.pack(">QQI", term, index, version)


def _rows(tables: Tables) -> dict[str, dict[str, list[Any]]]:
    return {table: {key: list(row) for key, row in rows.items()} for table, rows in tables.items()}


def encode_snapshot(
    state: SnapshotState,
    cipher: PartsCipher,
    encodings: RowEncodings | None = None,
    changes: Changes | None = None,
) -> bytes:
    """The snapshot bytes of ``state``; ``cipher`` is secret version ``state.secret_version``
    (``LedgerSecrets.parts_cipher``).
    ``encodings``: the private part of the snapshot encoded before, and ``changes`` the keys
    written since, so that only those rows are encoded again (``snapshot_rows``)."""
    return b"".join(snapshot_parts(state, cipher, encodings, changes))


def snapshot_parts(
    state: SnapshotState,
    cipher: PartsCipher,
    encodings: RowEncodings | None = None,
    changes: Changes | None = None,
) -> list[bytes]:
    """``encode_snapshot``'s bytes in parts, for a writer and a digest that take them one
    after the other (``SnapshotStore.write``) instead of a copy of the whole snapshot joined
    in memory. The private state is never joined either: it is hashed and encrypted a chunk
    of rows at a time (no call holds the GIL for long)."""
    if state.private is None:
        raise LedgerError("a snapshot decoded without its secret cannot be encoded again")
    plain = (encodings or RowEncodings()).encode_parts(state.private, changes)
    aad = _aad(state.term, state.index, state.secret_version)
    digest = hashlib.sha256()
    for part in plain:
        digest.update(part)
    nonce = hashlib.sha256(MAGIC + b" nonce" + aad + digest.digest()).digest()[:NONCE_SIZE]
    sealed = cipher.encrypt_parts(nonce, plain, aad)
    del plain  # the largest buffers: at most two alive at once
    head = [
        FORMAT,
        state.term,
        state.index,
        state.signature_entry,
        list(state.frontier),
        _rows(state.public),
        state.secret_version,
    ]
    # Canonical CBOR of the 8-array, the way cbor2.dumps(head + [nonce + sealed]) writes it
    # (an array is its head and its items' encodings), without copying the sealed state.
    return (
        [MAGIC, cbor_head(4, len(head) + 1)]
        + [cbor2.dumps(item, canonical=True) for item in head]
        + [cbor_head(2, NONCE_SIZE + sum(len(part) for part in sealed)), nonce]
        + sealed
    )


def _tables(value: object, public: bool, where: str) -> Tables:
    if not isinstance(value, dict):
        raise SnapshotError("format", f"{where} is not a map")
    out: Tables = {}
    for table, rows in value.items():
        if not isinstance(table, str) or table.startswith(PUBLIC_PREFIX) != public:
            raise SnapshotError("format", f"{where} holds table {table!r}")
        if not isinstance(rows, dict):
            raise SnapshotError("format", f"{where}[{table}] is not a map")
        parsed: dict[str, Row] = {}
        for key, row in rows.items():
            if (
                not isinstance(key, str)
                or not isinstance(row, list)
                or len(row) != 3
                or type(row[1]) is not int
                or type(row[2]) is not int
                or not 0 <= row[1] <= MAX_U64 >= row[2] >= 0
            ):
                raise SnapshotError("format", f"{where}[{table}][{key!r}] is not [value, t, i]")
            parsed[key] = (row[0], row[1], row[2])
        out[table] = parsed
    return out


def peek_txid(data: bytes) -> TxId:
    """The txid a snapshot says it reflects, from its header alone (before its digest is
    checked, so nothing else of it is decoded)."""
    if not data.startswith(MAGIC + b"\x88\x01"):
        raise SnapshotError("format", "does not start with b'CLS1' and an 8-array of format 1")
    try:
        term, pos = read_uint(data, len(MAGIC) + 2)
        index, _ = read_uint(data, pos)
        return TxId(term, index)
    except (EntryFormatError, ValueError) as exc:
        raise SnapshotError("format", f"header: {exc}") from exc


def decode_snapshot(data: bytes, aead_for: Any) -> SnapshotState:
    """Decode (and decrypt) snapshot bytes whose digest was already checked against their
    evidence: ``aead_for(version)`` gives the cipher of a secret version (None: the private
    tables stay encrypted, ``private`` is None). SnapshotError names what is wrong. (The C
    CBOR decoder is used: the bytes are authenticated by then.)"""
    if not data.startswith(MAGIC):
        raise SnapshotError("format", "does not start with b'CLS1'")
    try:
        body = cbor2.loads(data[len(MAGIC) :])
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise SnapshotError("format", f"CBOR does not decode: {exc}") from exc
    if not isinstance(body, list) or len(body) != 8 or body[0] != FORMAT:
        raise SnapshotError("format", "is not the 8-element array of format 1")
    _, term, index, signature_entry, frontier, public, version, private = body
    if not all(type(n) is int and n >= 1 for n in (term, index, version)):
        raise SnapshotError("format", "term, index and secret_version must be positive integers")
    if not isinstance(signature_entry, bytes) or not isinstance(private, bytes):
        raise SnapshotError("format", "signature_entry and private must be byte strings")
    if (
        not isinstance(frontier, list)
        or len(frontier) != len(frontier_sizes(index - 1))
        or not all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in frontier)
    ):
        raise SnapshotError("format", f"frontier is not that of a tree of {index - 1} leaves")
    private_tables = None
    if aead_for is not None:
        aad = _aad(term, index, version)
        try:
            plaintext = aead_for(version).decrypt(private[:NONCE_SIZE], private[NONCE_SIZE:], aad)
        except InvalidTag as exc:
            raise SnapshotError("private", "the private tables do not decrypt") from exc
        private_tables = _tables(cbor2.loads(plaintext), False, "private")
    return SnapshotState(
        term,
        index,
        signature_entry,
        frontier,
        _tables(public, True, "public"),
        private_tables,
        version,
    )


def evidence_record(txid: TxId, digest: bytes, size: int) -> dict[str, Any]:
    """The ``T_SNAPSHOTS`` row recording a snapshot taken at ``txid``."""
    return {"txid": str(txid), "sha256": digest.hex(), "size": size}


def evidence_write_set(txid: TxId, digest: bytes, size: int) -> WriteSet:
    """The write set of an evidence entry (it writes nothing else)."""
    return {T_SNAPSHOTS: {str(txid.index): evidence_record(txid, digest, size)}}


def parse_evidence(index: str, record: object) -> tuple[TxId, bytes, int]:
    """``(txid, sha256, size)`` of a ``T_SNAPSHOTS`` row; SnapshotError if malformed."""
    if not isinstance(record, Mapping) or set(record) != EVIDENCE_FIELDS:
        raise SnapshotError("evidence", f"{T_SNAPSHOTS}[{index}] is not {sorted(EVIDENCE_FIELDS)}")
    try:
        txid = TxId.parse(record["txid"])
        digest = bytes.fromhex(record["sha256"])
    except (ValueError, TypeError) as exc:
        raise SnapshotError("evidence", f"{T_SNAPSHOTS}[{index}]: {exc}") from exc
    size = record["size"]
    if str(txid.index) != index or len(digest) != 32 or type(size) is not int or size < 1:
        raise SnapshotError("evidence", f"{T_SNAPSHOTS}[{index}] is inconsistent")
    return txid, digest, size


def evidence_components(txid: TxId, digest: bytes, size: int) -> dict[str, str]:
    """The ``write_set_sha256`` an evidence entry for this snapshot has (PUBLIC bodies have
    no salt, so it is fixed by the record)."""
    body = canonical_json({"salt": "", "writes": evidence_write_set(txid, digest, size)})
    return {
        "kind": str(int(EntryKind.PUBLIC)),
        "write_set_sha256": hashlib.sha256(body).hexdigest(),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }


def verify_snapshot(
    data: bytes,
    receipt: Mapping[str, Any],
    service_certificate: x509.Certificate,
    aead_for: Any,
) -> tuple[SnapshotState, VerifiedReceipt]:
    """Check snapshot bytes against the receipt of their evidence entry and decode them.

    The receipt must verify with the service certificate; its entry must be a PUBLIC entry
    writing exactly the evidence of these bytes (digest, size, the txid the snapshot says);
    the snapshot's signature entry must sign the root of its frontier with a node certificate
    the service certificate issued; the evidence must come after the snapshot.
    SnapshotError names the reason.
    """
    try:
        verified = verify_receipt(receipt, service_certificate)
    except LedgerError as exc:
        raise SnapshotError("receipt", str(exc)) from exc
    digest = hashlib.sha256(data).digest()
    txid = peek_txid(data)
    expected = evidence_components(txid, digest, len(data))
    components = receipt["leaf_components"]
    got = {k: str(components[k]) for k in expected}
    if got != expected:
        raise SnapshotError(
            "digest",
            f"the receipt's entry {verified.txid} is not the evidence of these bytes (sha256 "
            f"{digest.hex()}, {len(data)} bytes, txid {txid})",
        )
    if verified.txid.index <= txid.index:
        raise SnapshotError("evidence", f"evidence {verified.txid} is not after {txid}")
    state = decode_snapshot(data, aead_for)  # authenticated now
    check_state(state, service_certificate)
    return state, verified


def check_state(state: SnapshotState, service_certificate: x509.Certificate | None) -> None:
    """The snapshot's own consistency: its signature entry is entry ``state.txid`` and signs
    the root of its frontier (with a certificate the service issued, if one is given)."""
    try:
        entry = decode_entry(state.signature_entry)
    except EntryFormatError as exc:
        raise SnapshotError("signature", f"signature entry does not decode: {exc}") from exc
    if entry.txid != state.txid or entry.kind is not EntryKind.SIGNATURE:
        raise SnapshotError("signature", f"entry {entry.txid} is not the signature {state.txid}")
    try:
        body = open_signature(entry)
        check_signature(entry, body, root_of_frontier(state.frontier), CertificateCache())
        if service_certificate is not None:
            node_certificate_key(body.node_certificate, body.node_id, service_certificate)
    except LedgerError as exc:
        raise SnapshotError("signature", str(exc)) from exc
