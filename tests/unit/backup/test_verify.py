"""Verifying a backup with only the service certificate: a genuine backup of a real ledger
verifies and reports what it covers; every way of tampering with it is refused with the
reason that names it (tampered manifests are signed again with the real service key where
needed, to reach the checks behind the signature)."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from consortium_node.backup.format import (
    CONTENT_TYPE,
    MARKER_KEY,
    BackupError,
    decode_segment,
    encode_marker,
    encode_segment,
    snapshot_key,
)
from consortium_node.backup.source import DirectorySource
from consortium_node.backup.verify import latest_manifest_key, verify_backup
from consortium_node.common.timeutil import utcnow
from consortium_node.identity.certs import ServiceIdentity
from consortium_node.identity.cose import sign1
from consortium_node.ledger import EntryKind, Ledger
from consortium_node.ledger.entries import decode_entry, open_signature, signature_entry
from consortium_node.ledger.merkle import MerkleTree
from consortium_node.ledger.signing import CertificateCache, sign_root
from tests.support.backups import BuiltBackup, node_signer, record_for, resign, write_backup


def verify(backup: BuiltBackup, cert: x509.Certificate, key: str | None = None) -> Any:
    return verify_backup(DirectorySource(backup.root), cert, manifest_key=key)


def ledger_objects(backup: BuiltBackup) -> list[dict[str, Any]]:
    return [o for o in backup.payload()["objects"] if o["kind"] == "ledger"]


def payloads(backup: BuiltBackup, key: str) -> list[bytes]:
    return decode_segment((backup.root / key).read_bytes())


def replace_object(
    backup: BuiltBackup, service: ServiceIdentity, key: str, data: bytes, **record: Any
) -> str:
    """Write ``data`` under ``key`` and sign a manifest that vouches for exactly these bytes."""
    (backup.root / key).write_bytes(data)
    payload = backup.payload()
    for obj in payload["objects"]:
        if obj["key"] == key:
            obj.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data), **record)
    return resign(backup.root, service, payload)


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- genuine
def test_a_genuine_backup_verifies_and_reports_what_it_covers(
    backup: BuiltBackup, ledger: Ledger, service: ServiceIdentity
) -> None:
    verified = verify(backup, service.certificate)
    last = ledger.signature_through(ledger.commit_index)
    kinds = [decode_entry(p).kind for p in ledger.raw_entries(1, last)]
    assert len(ledger_objects(backup)) >= 3
    assert verified.manifest_key == backup.manifest_key
    assert (str(verified.first_txid), str(verified.last_txid)) == ("1.1", f"2.{last}")
    assert verified.entries == last
    assert verified.signatures == kinds.count(EntryKind.SIGNATURE)
    assert verified.snapshots == tuple(sorted(ledger.snapshots.indices()))
    assert len(verified.snapshots) >= 2
    assert verified.objects == len(backup.manifest.objects)
    assert verified.bytes == sum(o.size for o in backup.manifest.objects)
    assert (verified.consortium, verified.previous) == ("backup-test", None)


def test_signatures_by_a_node_certificate_that_has_expired_since_still_verify(
    backup: BuiltBackup, service: ServiceIdentity
) -> None:
    first = ledger_objects(backup)[0]["key"]
    body = open_signature(decode_entry(payloads(backup, first)[-1]))
    cert = x509.load_pem_x509_certificate(body.node_certificate.encode())
    assert cert.not_valid_after_utc < utcnow()  # as receipts: validity is not checked
    assert verify(backup, service.certificate).entries > 0


def test_the_newest_manifest_is_chosen_by_index_then_created_at(
    backup: BuiltBackup, ledger: Ledger, service: ServiceIdentity, other_service: ServiceIdentity
) -> None:
    source = DirectorySource(backup.root)
    shorter = backup.payload()
    first = ledger_objects(backup)[0]
    shorter["objects"] = [first]
    shorter["last_txid"] = f"1.{first['last_index']}"
    older_key = resign(backup.root, service, shorter)
    assert latest_manifest_key(source) == backup.manifest_key
    assert verify(backup, service.certificate, older_key).last_txid.index == first["last_index"]

    later = write_backup(ledger, service, backup.root, created_at="2026-06-01T00:00:00Z")
    assert later.manifest_key != backup.manifest_key
    assert latest_manifest_key(source) == later.manifest_key  # same index, newer
    assert verify(backup, service.certificate).created_at == "2026-06-01T00:00:00Z"

    forged = backup.payload()
    forged["created_at"] = "2030-01-01T00:00:00Z"
    forged_key = resign(backup.root, other_service, forged)
    assert latest_manifest_key(source) == forged_key  # unverified: the auditor sees it ...
    with pytest.raises(BackupError) as refused:
        verify(backup, service.certificate)
    assert refused.value.reason == "BadSignature"  # ... and verification refuses it
    assert latest_manifest_key(source, service.certificate) == later.manifest_key


# --------------------------------------------------------------------------- refusals
def _other_key_same_kid(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> str:
    envelope = sign1(o.key, b.manifest.to_payload(), kid=s.kid, content_type=CONTENT_TYPE)
    (b.root / b.manifest_key).write_bytes(envelope)
    return b.manifest_key


def _other_key(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> str:
    return resign(b.root, o, b.payload())


def _flipped_payload_byte(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> str:
    envelope = b.envelope.replace(b'"backup-test"', b'"backup-tesu"')
    assert envelope != b.envelope
    (b.root / b.manifest_key).write_bytes(envelope)
    return b.manifest_key


def _other_service_digest(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> str:
    payload = b.payload()
    payload["service_certificate_sha256"] = o.certificate_sha256
    return resign(b.root, s, payload)


def _marker_of_another_consortium(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> None:
    marker = encode_marker("someone-else", s.certificate_sha256, "2026-01-01T00:00:00Z")
    (b.root / MARKER_KEY).write_bytes(marker)


def _no_manifest(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> None:
    shutil.rmtree(b.root / "manifests")


def _manifest_under_another_key(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> str:
    key = b.manifest_key.rsplit("-", 1)[0] + "-0123456789abcdef.cose"
    (b.root / key).write_bytes(b.envelope)
    return key


def _missing_segment(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> None:
    (b.root / ledger_objects(b)[1]["key"]).unlink()


def _missing_snapshot(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> None:
    (b.root / snapshot_key(b.manifest.snapshot_objects[0].first_index)).unlink()


def _flipped_segment_byte(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> None:
    flip(b.root / ledger_objects(b)[1]["key"], 100)


def _flipped_snapshot_byte(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> None:
    flip(b.root / b.manifest.snapshot_objects[0].key, 50)


def _skipped_range(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> str:
    payload = b.payload()
    skipped = ledger_objects(b)[1]["key"]
    payload["objects"] = [obj for obj in payload["objects"] if obj["key"] != skipped]
    return resign(b.root, s, payload)


def _segment_missing_an_entry(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> str:
    key = ledger_objects(b)[1]["key"]
    entries = payloads(b, key)
    return replace_object(b, s, key, encode_segment(entries[:3] + entries[4:]))


def _segment_cut_short(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> str:
    key = ledger_objects(b)[1]["key"]
    return replace_object(b, s, key, encode_segment(payloads(b, key)[:-2]))


def _segment_repeating_an_entry(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> str:
    key = ledger_objects(b)[1]["key"]
    entries = payloads(b, key)
    return replace_object(b, s, key, encode_segment(entries[:3] + entries[2:-1]))


def _forged_entry(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> str:
    """A private entry whose ciphertext changed: bytes the re-signed manifest vouches for,
    but the next signature entry no longer signs the Merkle root over them."""
    key = ledger_objects(b)[1]["key"]
    entries = payloads(b, key)
    entry = decode_entry(entries[2])
    assert entry.kind is EntryKind.PRIVATE
    body = bytearray(entry.body)
    body[-1] ^= 0x01
    entries[2] = entry._replace(body=bytes(body)).encode()
    return replace_object(b, s, key, encode_segment(entries))


def _signature_by_a_foreign_node(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> str:
    """The last signature entry replaced by one that signs the right root, with a node
    certificate another service issued."""
    tree = MerkleTree()
    objects = ledger_objects(b)
    for obj in objects:
        for payload in payloads(b, obj["key"]):
            tree.append(decode_entry(payload).leaf())
    key = objects[-1]["key"]
    entries = payloads(b, key)
    last = decode_entry(entries[-1])
    size = last.index - 1
    body = sign_root(node_signer(o), tree.root(size), size, last.term, CertificateCache())
    entries[-1] = signature_entry(last.term, last.index, body).encode()
    return replace_object(b, s, key, encode_segment(entries))


def _wrong_last_term(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> str:
    payload = b.payload()
    payload["last_txid"] = "1." + payload["last_txid"].split(".")[1]
    return resign(b.root, s, payload)


def _wrong_first_term(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> str:
    payload = b.payload()
    payload["first_txid"] = "2.1"
    return resign(b.root, s, payload)


def _snapshot_not_its_evidence(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> str:
    first, second = b.manifest.snapshot_objects[:2]
    other = (b.root / second.key).read_bytes()
    return replace_object(b, s, first.key, other)


def _snapshot_without_evidence(b: BuiltBackup, s: ServiceIdentity, o: ServiceIdentity) -> str:
    """A snapshot object at an index the ledger recorded no evidence for."""
    data = (b.root / b.manifest.snapshot_objects[0].key).read_bytes()
    (b.root / snapshot_key(10)).write_bytes(data)
    payload = b.payload()
    payload["objects"].append(record_for(snapshot_key(10), "snapshot", 10, 10, data))
    return resign(b.root, s, payload)


Tamper = Callable[[BuiltBackup, ServiceIdentity, ServiceIdentity], "str | None"]
REFUSALS: list[tuple[str, Tamper, str, str]] = [
    ("another key's kid", _other_key, "BadSignature", "kid"),
    ("another key, the service's kid", _other_key_same_kid, "BadSignature", "manifest"),
    ("a flipped payload byte", _flipped_payload_byte, "BadSignature", "manifest"),
    ("another service certificate", _other_service_digest, "WrongService", "names service"),
    ("a marker of another consortium", _marker_of_another_consortium, "WrongService", "someone"),
    ("no manifest", _no_manifest, "NoManifest", "manifests/"),
    ("a manifest under another key", _manifest_under_another_key, "Malformed", "belongs under"),
    ("a missing segment", _missing_segment, "ObjectMissing", "ledger/"),
    ("a missing snapshot", _missing_snapshot, "ObjectMissing", "snapshots/"),
    ("a flipped segment byte", _flipped_segment_byte, "ObjectDigest", "ledger/"),
    ("a flipped snapshot byte", _flipped_snapshot_byte, "ObjectDigest", "snapshots/"),
    ("a skipped range", _skipped_range, "Gap", "starts at index"),
    ("a segment missing an entry", _segment_missing_an_entry, "Gap", "was expected"),
    ("a segment cut short", _segment_cut_short, "Gap", "ends at index"),
    ("a repeated entry", _segment_repeating_an_entry, "LedgerInvalid", "was expected"),
    ("a forged entry", _forged_entry, "LedgerInvalid", "is not the Merkle root"),
    ("a foreign node", _signature_by_a_foreign_node, "LedgerInvalid", "issued by the service"),
    ("a wrong last_txid term", _wrong_last_term, "LedgerInvalid", "last_txid"),
    ("a wrong first_txid term", _wrong_first_term, "LedgerInvalid", "first_txid"),
    ("a snapshot unlike its evidence", _snapshot_not_its_evidence, "SnapshotInvalid", "evidence"),
    ("a snapshot without evidence", _snapshot_without_evidence, "SnapshotInvalid", "no evidence"),
]


@pytest.mark.parametrize(
    ("tamper", "reason", "detail"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_a_tampered_backup_is_refused_with_its_reason(
    backup: BuiltBackup,
    service: ServiceIdentity,
    other_service: ServiceIdentity,
    tamper: Tamper,
    reason: str,
    detail: str,
) -> None:
    key = tamper(backup, service, other_service)
    with pytest.raises(BackupError) as refused:
        verify(backup, service.certificate, key)
    assert refused.value.reason == reason, refused.value
    assert detail in refused.value.detail


def test_the_certificate_of_another_service_verifies_nothing(
    backup: BuiltBackup, other_service: ServiceIdentity
) -> None:
    with pytest.raises(BackupError) as refused:
        verify(backup, other_service.certificate)
    assert refused.value.reason == "BadSignature"


def test_a_backup_without_its_marker_still_verifies(
    backup: BuiltBackup, service: ServiceIdentity
) -> None:
    (backup.root / MARKER_KEY).unlink()
    assert verify(backup, service.certificate).manifest_key == backup.manifest_key


# --------------------------------------------------------------------------- source
def test_a_directory_source_lists_by_prefix_and_reads_only_inside_it(tmp_path: Path) -> None:
    for key in ("ledger/a.entries", "ledger/b.entries", "manifests/m.cose", "top.json"):
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(key.encode())
    (tmp_path.parent / "outside").write_bytes(b"secret")
    source = DirectorySource(tmp_path)
    assert source.keys("ledger/") == ["ledger/a.entries", "ledger/b.entries"]
    assert source.keys("ledger/b") == ["ledger/b.entries"]
    assert source.keys("") == sorted(
        ["ledger/a.entries", "ledger/b.entries", "manifests/m.cose", "top.json"]
    )
    assert source.keys("nothing/") == [] and source.keys("../") == []
    assert source.get("manifests/m.cose") == b"manifests/m.cose"
    for key in ("ledger/c.entries", "ledger", "../outside", "/etc/passwd", "ledger//a.entries"):
        with pytest.raises(KeyError):
            source.get(key)
    with pytest.raises(FileNotFoundError):
        DirectorySource(tmp_path / "absent")
