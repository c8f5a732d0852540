"""Genuine backups for tests: a real ledger (the project's ``Ledger``, signatures by nodes the
service certified, snapshots with their evidence) written out in the bucket layout of
``consortium_node.backup.format`` by test code, not by the shipper under test.

``build_ledger`` makes the ledger; ``write_backup`` writes a copy of a bucket prefix into a
directory (segments ending at signature entries, the committed snapshots, the marker, a
manifest signed by the service key). ``resign`` writes a manifest payload the test tampered
with, signed again by the real service key, so that a test can reach the checks behind the
signature.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from consortium_node.backup.format import (
    CERTIFICATE_KEY,
    CONTENT_TYPE,
    MARKER_KEY,
    Manifest,
    ObjectRecord,
    encode_marker,
    encode_segment,
    manifest_key,
    segment_key,
    sign_manifest,
    snapshot_key,
)
from consortium_node.common.canonical import canonical_json
from consortium_node.common.timeutil import utcnow
from consortium_node.identity.certs import (
    ServiceIdentity,
    certificate_pem,
    issue_node_certificate,
)
from consortium_node.identity.cose import sign1
from consortium_node.identity.keys import generate_key
from consortium_node.ledger import EntryKind, Ledger, LedgerConfig, NodeKeySigner, TxId
from consortium_node.ledger.snapshot import encode_snapshot, evidence_write_set
from tests.support.clock import FakeClock

CONSORTIUM = "backup-test"
CREATED_AT = "2026-01-02T03:04:05Z"
CONFIG = LedgerConfig(signature_interval_tx=10, signature_interval_ms=10**6, snapshot_interval=25)


def node_signer(service: ServiceIdentity, *, expired: bool = False) -> NodeKeySigner:
    """A node key with a certificate the service issued (``expired``: valid until yesterday,
    as for a node retired long ago whose signatures stay in the ledger)."""
    key = generate_key("p256")
    now = utcnow()
    start, end = (now - timedelta(days=3), now - timedelta(days=1)) if expired else (now, None)
    cert = issue_node_certificate(
        service,
        key.public_key(),
        subject_alt_names=["node-0"],
        not_before=start,
        not_after=end or now + timedelta(days=1),
    )
    return NodeKeySigner(key, certificate_pem(cert))


def _fill(ledger: Ledger, signer: NodeKeySigner, batches: int, tag: str) -> None:
    """Private batches of 7 entries, signing when due, committing after each."""
    for batch in range(batches):
        writes = [{"app": {f"{tag}{batch}-{i}": {"n": i}}} for i in range(7)]
        ledger.append(writes, EntryKind.PRIVATE)
        if ledger.signature_due():
            ledger.append_signature(signer)
        ledger.sync_and_commit()


def _snapshot_and_record(ledger: Ledger, signer: NodeKeySigner) -> None:
    """Write the snapshots the ledger took, record their evidence, sign, commit."""
    taken = []
    for capture in ledger.snapshot_captures():
        data = encode_snapshot(capture.state, capture.cipher)
        digest, size = ledger.snapshots.write(capture.state.index, data)
        taken.append((capture.state.txid, digest, size))
    for txid, digest, size in taken:
        ledger.append([evidence_write_set(txid, digest, size)], EntryKind.PUBLIC)
    ledger.append_signature(signer)
    ledger.sync_and_commit()


def build_ledger(directory: Path, service: ServiceIdentity) -> Ledger:
    """A committed ledger of about 150 entries ending at a signature: governance and
    application entries, signatures by a node whose certificate has expired since and by a
    current one, and at least two snapshots whose evidence it holds."""
    ledger = Ledger.open(directory, ledger_secret=os.urandom(32), config=CONFIG, clock=FakeClock())
    old, current = node_signer(service, expired=True), node_signer(service)
    ledger.append([{"public:consortium.info": {"name": {"v": 1}}}], EntryKind.PUBLIC)
    _fill(ledger, old, batches=8, tag="a")
    _snapshot_and_record(ledger, old)
    ledger.term = 2  # a new primary, a new term
    _fill(ledger, current, batches=8, tag="b")
    _snapshot_and_record(ledger, current)
    assert ledger.snapshots.indices(), "the ledger took no snapshot"
    return ledger


@dataclass(frozen=True)
class BuiltBackup:
    root: Path  # the copy of the bucket prefix
    manifest: Manifest
    manifest_key: str
    envelope: bytes

    def payload(self) -> dict[str, Any]:
        """The manifest payload as JSON, for a test to tamper with (``resign``)."""
        result: dict[str, Any] = json.loads(self.manifest.to_payload())
        return result


def write_backup(
    ledger: Ledger,
    service: ServiceIdentity,
    root: Path,
    *,
    segment_entries: int = 40,
    created_at: str = CREATED_AT,
) -> BuiltBackup:
    """Write ``ledger``'s committed entries and snapshots into ``root`` in the bucket layout:
    segments of about ``segment_entries`` entries, each ending at a signature entry."""
    last = ledger.signature_through(ledger.commit_index)
    objects: list[ObjectRecord] = []
    start = 1
    while start <= last:
        end = ledger.signature_through(min(start + segment_entries - 1, last))
        if end < start:
            end = ledger.signature_after(start) or last
        key = segment_key(start, end)
        data = encode_segment(ledger.raw_entries(start, end))
        objects.append(ObjectRecord.for_bytes(key, "ledger", start, end, data))
        _put(root, key, data)
        start = end + 1
    for index in sorted(ledger.snapshots.indices()):
        stored = ledger.snapshots.get(index)
        assert stored is not None
        data = stored.path.read_bytes()
        objects.append(ObjectRecord.for_bytes(snapshot_key(index), "snapshot", index, index, data))
        _put(root, snapshot_key(index), data)
    manifest = Manifest(
        consortium=CONSORTIUM,
        service_certificate_sha256=service.certificate_sha256,
        created_at=created_at,
        first_txid=TxId(ledger.term_at(1), 1),
        last_txid=TxId(ledger.term_at(last), last),
        objects=tuple(objects),
    )
    _put(root, MARKER_KEY, encode_marker(CONSORTIUM, service.certificate_sha256, created_at))
    _put(root, CERTIFICATE_KEY, service.certificate_pem.encode())
    envelope = sign_manifest(manifest, service)
    key = manifest_key(last, envelope)
    _put(root, key, envelope)
    return BuiltBackup(root, manifest, key, envelope)


def resign(root: Path, service: ServiceIdentity, payload: dict[str, Any]) -> str:
    """Sign ``payload`` (a manifest payload, possibly one ``Manifest`` would refuse to build)
    with the service key, write it under its key and return the key."""
    envelope = sign1(
        service.key, canonical_json(payload), kid=service.kid, content_type=CONTENT_TYPE
    )
    key = manifest_key(int(payload["last_txid"].split(".")[1]), envelope)
    _put(root, key, envelope)
    return key


def record_for(key: str, kind: str, first: int, last: int, data: bytes) -> dict[str, Any]:
    """A manifest object entry for ``data``."""
    return {
        "key": key,
        "kind": kind,
        "first_index": first,
        "last_index": last,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


def _put(root: Path, key: str, data: bytes) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
