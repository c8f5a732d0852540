"""Replaying a backup's ledger segments as a node replays its chunks, with only the service
certificate (no ledger secret), and checking its snapshots against that ledger.

Checked for each entry, in index order (every failure a ``BackupError`` naming the object and
the entry):

* its payload decodes (``entries.decode_entry``), its index is the next one (``Gap`` when
  entries are missing, ``LedgerInvalid`` when one repeats or goes back) and inside its
  segment's range, and its term is ``>= 1`` and ``>=`` the previous entry's (Raft terms never
  decrease along the log);
* a PUBLIC entry opens (``entries.open_entry``: the digest is that of the body, the body a
  valid write set); a PRIVATE entry cannot be opened without the ledger secret, but its leaf
  commits to its ciphertext and the signatures cover the leaves;
* a SIGNATURE entry signs the Merkle root of every entry before it with the key of its own
  node certificate (``signing.check_signature``, exactly as a node's replay does), and that
  certificate was issued by the service certificate (``receipt.node_certificate_key``, the
  check receipts make: no validity-period check, since a signature stays valid after its
  node's certificate expired, as a receipt does);
* every segment ends at a signature entry and holds exactly its range.

A snapshot object (``snapshot``) must be recorded by an evidence row
``public:consortium.snapshots[S]`` in a PUBLIC entry after ``S`` inside the backed-up ledger,
have the evidence's SHA-256, size and txid (that of the ledger's entry ``S``), and carry the
ledger's own signature entry ``S`` and the Merkle frontier of the entries before it (the CBOR
is decoded without opening the private tables).

Memory: the Merkle tree (about 64 bytes per entry) and one segment; the evidence rows and the
signature entries at snapshot indexes are kept only for the snapshots the manifest lists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from consortium_node.backup.format import BackupError, ObjectRecord, decode_segment
from consortium_node.ledger.entries import (
    Entry,
    EntryKind,
    TxId,
    decode_entry,
    open_entry,
    open_signature,
    position_label,
)
from consortium_node.ledger.errors import EntryFormatError, LedgerError
from consortium_node.ledger.merkle import MerkleTree
from consortium_node.ledger.receipt import node_certificate_key
from consortium_node.ledger.signing import CertificateCache, check_signature
from consortium_node.ledger.snapshot import (
    T_SNAPSHOTS,
    SnapshotError,
    decode_snapshot,
    parse_evidence,
    peek_txid,
)


@dataclass(frozen=True)
class Evidence:
    """An evidence row as the ledger recorded it."""

    txid: TxId  # the snapshot's txid
    sha256: bytes
    size: int
    recorded_at: int  # index of the PUBLIC entry that wrote the row


class LedgerReplay:
    """Feed it the segments in index order (``segment``), then the snapshots (``snapshot``)."""

    def __init__(
        self, service_certificate: x509.Certificate, snapshot_indexes: Iterable[int] = ()
    ) -> None:
        self.tree = MerkleTree()
        self.first: TxId | None = None
        self.last: Entry | None = None
        self.signatures = 0
        self._service_certificate = service_certificate
        self._keys = CertificateCache()
        self._issued: set[tuple[str, str]] = set()  # (node certificate PEM, node_id) checked
        self._wanted = frozenset(snapshot_indexes)
        self._evidence: dict[int, Evidence] = {}
        self._held: dict[int, bytes] = {}  # payloads at the wanted indexes

    # ------------------------------------------------------------------------ ledger
    def segment(self, record: ObjectRecord, data: bytes) -> list[bytes]:
        """Replay the entries of one segment (its bytes already matched the manifest); its
        entry payloads, in index order."""
        payloads = decode_segment(data, record.key)
        for payload in payloads:
            self._entry(record, payload)
        if self.tree.size < record.last_index:
            raise BackupError(
                "Gap",
                f"{record.key}: ends at index {self.tree.size}, its range ends at "
                f"{record.last_index}",
            )
        if self.last is None or self.last.kind is not EntryKind.SIGNATURE:
            last = "nothing" if self.last is None else f"entry {self.last.txid}"
            raise BackupError(
                "LedgerInvalid", f"{record.key}: ends at {last}, which is not a signature entry"
            )
        return payloads

    def _entry(self, record: ObjectRecord, payload: bytes) -> None:
        expected = self.tree.size + 1
        if expected > record.last_index:
            raise BackupError(
                "LedgerInvalid",
                f"{record.key}: entry {position_label(payload)} is past the segment's range "
                f"{record.first_index}..{record.last_index}",
            )
        try:
            entry = decode_entry(payload)
        except EntryFormatError as exc:
            raise BackupError(
                "LedgerInvalid", f"{record.key}: entry {position_label(payload)}: {exc}"
            ) from exc
        if entry.index != expected:
            raise BackupError(
                "Gap" if entry.index > expected else "LedgerInvalid",
                f"{record.key}: entry {entry.txid} where index {expected} was expected",
            )
        try:
            self._check(entry)
        except SnapshotError as exc:  # a malformed evidence row of a listed snapshot
            raise BackupError(
                "SnapshotInvalid", f"{record.key}: entry {entry.txid}: {exc}"
            ) from exc
        except LedgerError as exc:
            raise BackupError("LedgerInvalid", f"{record.key}: entry {entry.txid}: {exc}") from exc
        if entry.index in self._wanted:
            self._held[entry.index] = payload
        if self.first is None:
            self.first = entry.txid
        self.last = entry
        self.tree.append(entry.leaf())

    def _check(self, entry: Entry) -> None:
        """The checks a node's replay makes that need no ledger secret."""
        previous = self.last.term if self.last is not None else 1
        if entry.term < previous:
            raise EntryFormatError(f"term {entry.term} is lower than the previous term {previous}")
        if entry.kind is EntryKind.SIGNATURE:
            body = open_signature(entry)
            check_signature(entry, body, self.tree.root(), self._keys)
            if (body.node_certificate, body.node_id) not in self._issued:
                node_certificate_key(body.node_certificate, body.node_id, self._service_certificate)
                self._issued.add((body.node_certificate, body.node_id))
            self.signatures += 1
        elif entry.kind is EntryKind.PUBLIC:
            _, writes = open_entry(None, entry)
            self._book_evidence(entry.index, writes.get(T_SNAPSHOTS, {}))

    def _book_evidence(self, index: int, rows: Mapping[str, Any]) -> None:
        """Keep the rows of the listed snapshots (the latest write of a row wins, as in the
        KV state; a deletion removes it)."""
        for snapshot in self._wanted:
            key = str(snapshot)
            if key not in rows:
                continue
            if rows[key] is None:
                self._evidence.pop(snapshot, None)
                continue
            txid, digest, size = parse_evidence(key, rows[key])
            self._evidence[snapshot] = Evidence(txid, digest, size, index)

    # ------------------------------------------------------------------------ snapshots
    def snapshot(self, record: ObjectRecord, data: bytes) -> None:
        """Check a snapshot (its bytes already matched the manifest) against the replayed
        ledger; call after every segment."""
        index, key = record.first_index, record.key
        evidence = self._evidence.get(index)
        if evidence is None or evidence.recorded_at <= index:
            raise BackupError(
                "SnapshotInvalid",
                f"{key}: the backed-up ledger (1..{self.tree.size}) holds no evidence "
                f"{T_SNAPSHOTS}[{index}] after index {index}",
            )
        digest = hashlib.sha256(data).digest()
        if digest != evidence.sha256 or len(data) != evidence.size:
            raise BackupError(
                "SnapshotInvalid",
                f"{key}: sha256 {digest.hex()} ({len(data)} bytes) is not the evidence's "
                f"{evidence.sha256.hex()} ({evidence.size} bytes) recorded at index "
                f"{evidence.recorded_at}",
            )
        payload = self._held[index]  # the evidence names index <= tree.size: it was replayed
        entry = decode_entry(payload)
        try:
            txid = peek_txid(data)
            state = decode_snapshot(data, None)  # the private tables stay sealed
        except SnapshotError as exc:
            raise BackupError("SnapshotInvalid", f"{key}: {exc}") from exc
        if not txid == evidence.txid == entry.txid:
            raise BackupError(
                "SnapshotInvalid",
                f"{key}: the snapshot says {txid}, its evidence {evidence.txid}, the ledger's "
                f"entry there is {entry.txid}",
            )
        if entry.kind is not EntryKind.SIGNATURE or state.signature_entry != payload:
            raise BackupError(
                "SnapshotInvalid", f"{key}: does not carry the ledger's signature entry {txid}"
            )
        if state.frontier != self.tree.frontier(index - 1):
            raise BackupError(
                "SnapshotInvalid",
                f"{key}: its Merkle frontier is not that of the ledger's entries 1..{index - 1}",
            )
