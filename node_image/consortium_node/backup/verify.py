"""Verify a backup with only the service certificate: what an auditor (or a node resuming a
bucket) runs, from the bucket itself or from a local copy of it (``source``).

Steps, each failure a ``BackupError`` whose ``reason`` is one word (``format.BackupError``) and
whose detail names the object and index:

1. pick the manifest: the one asked for, else the newest (``latest_manifest_key``):
   ``NoManifest`` if there is none;
2. open it with the service certificate (``format.open_manifest``: ``BadSignature``,
   ``WrongService``, ``Malformed``); its key must be the one its last index and envelope name;
3. if the prefix holds a marker (``consortium.json``), it must name the manifest's consortium
   and service certificate (``WrongService``);
4. every listed object must be there (``ObjectMissing``) with the listed size and SHA-256
   (``ObjectDigest``);
5. the segments are replayed in index order (``replay.LedgerReplay``: ``Gap``,
   ``LedgerInvalid``): every entry from 1 on, every signature over the root of all entries
   before it, by a node certificate the service issued; ``first_txid`` must be entry 1 and
   ``last_txid`` the last entry (a signature);
6. every snapshot must match its evidence in that ledger and the ledger itself
   (``SnapshotInvalid``).

Objects are fetched one at a time and dropped once checked: memory is one object plus the
Merkle tree. Errors of the source itself (``s3.StoreError``) are not caught here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from consortium_node.backup.format import (
    LEDGER_DIR,
    MANIFEST_DIR,
    MARKER_KEY,
    SNAPSHOT_DIR,
    BackupError,
    Manifest,
    ObjectRecord,
    manifest_key,
    open_manifest,
    parse_manifest_key,
    parse_marker,
)
from consortium_node.backup.replay import LedgerReplay
from consortium_node.backup.source import BackupSource
from consortium_node.common.timeutil import parse_rfc3339
from consortium_node.identity.cose import decode_sign1
from consortium_node.identity.errors import IdentityError
from consortium_node.ledger.entries import TxId

_OLDEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class VerifiedBackup:
    """What a verified manifest proves: entries ``first_txid..last_txid`` (all of them, every
    signature checked) and the listed snapshots are the service's."""

    consortium: str
    manifest_key: str
    created_at: str
    first_txid: TxId
    last_txid: TxId
    entries: int
    signatures: int
    snapshots: tuple[int, ...]  # indexes of the snapshots verified
    objects: int  # objects the manifest lists
    bytes: int  # their total size
    previous: tuple[str, str] | None  # (key, sha256 hex) of the manifest before, as listed

    def to_json(self) -> dict[str, Any]:
        return {
            "verified": True,
            "consortium": self.consortium,
            "manifest": self.manifest_key,
            "created_at": self.created_at,
            "first_txid": str(self.first_txid),
            "last_txid": str(self.last_txid),
            "entries": self.entries,
            "signatures": self.signatures,
            "snapshots": list(self.snapshots),
            "objects": self.objects,
            "bytes": self.bytes,
            "previous": None
            if self.previous is None
            else {"key": self.previous[0], "sha256": self.previous[1]},
        }


def latest_manifest_key(
    source: BackupSource, service_certificate: x509.Certificate | None = None
) -> str | None:
    """The key of the newest manifest (None: there is none): the highest last index its key
    names; manifests at the same index are ranked by ``created_at``, then by key.

    Without ``service_certificate`` nothing is verified (the ranking reads ``created_at``
    unverified), so a forged newest manifest is chosen and then refused by verification
    instead of being passed over in silence: what an auditor wants. With it, only manifests
    that open with it count: what a node resuming from the bucket wants.
    """
    by_index: dict[int, list[str]] = {}
    for key in source.keys(MANIFEST_DIR):
        index = parse_manifest_key(key)
        if index is not None:
            by_index.setdefault(index, []).append(key)
    for index in sorted(by_index, reverse=True):
        keys = by_index[index]
        if service_certificate is None and len(keys) == 1:
            return keys[0]
        ranked: list[tuple[datetime, str]] = []
        for key in keys:
            manifest = _read_manifest(source, key, service_certificate)
            if manifest is not None or service_certificate is None:
                ranked.append((_created_at(manifest), key))
        if ranked:
            return max(ranked)[1]
    return None


def _read_manifest(
    source: BackupSource, key: str, service_certificate: x509.Certificate | None
) -> Manifest | None:
    """The manifest at ``key`` (verified if a certificate is given), None if it cannot be
    read, does not parse or does not verify."""
    try:
        envelope = source.get(key)
        if service_certificate is not None:
            return open_manifest(envelope, service_certificate)
        return Manifest.from_payload(decode_sign1(envelope).payload)
    except (KeyError, BackupError, IdentityError):
        return None


def _created_at(manifest: Manifest | None) -> datetime:
    if manifest is None:
        return _OLDEST
    try:
        return parse_rfc3339(manifest.created_at)
    except ValueError:
        return _OLDEST


def verify_backup(
    source: BackupSource,
    service_certificate: x509.Certificate,
    *,
    manifest_key: str | None = None,
    on_segment: Callable[[list[bytes]], None] | None = None,
) -> VerifiedBackup:
    """Verify the manifest ``manifest_key`` (default: the newest) and everything it lists.

    ``on_segment`` is given the entry payloads of each segment once it verified, in index
    order (a recovery node copies them into its ledger as they come: one fetch per object)."""
    key = manifest_key if manifest_key is not None else latest_manifest_key(source)
    if key is None:
        raise BackupError("NoManifest", f"no {MANIFEST_DIR}<last index>-<hash>.cose key found")
    manifest = _open(source, key, service_certificate)
    _check_marker(source, manifest)
    _check_listed(source, manifest)
    replay = LedgerReplay(service_certificate, (o.first_index for o in manifest.snapshot_objects))
    for record in manifest.ledger_objects:
        payloads = replay.segment(record, _fetch(source, record))
        if on_segment is not None:
            on_segment(payloads)
    _check_range(manifest, replay)
    for record in manifest.snapshot_objects:
        replay.snapshot(record, _fetch(source, record))
    return VerifiedBackup(
        consortium=manifest.consortium,
        manifest_key=key,
        created_at=manifest.created_at,
        first_txid=manifest.first_txid,
        last_txid=manifest.last_txid,
        entries=replay.tree.size,
        signatures=replay.signatures,
        snapshots=tuple(o.first_index for o in manifest.snapshot_objects),
        objects=len(manifest.objects),
        bytes=sum(o.size for o in manifest.objects),
        previous=manifest.previous,
    )


def _open(source: BackupSource, key: str, service_certificate: x509.Certificate) -> Manifest:
    index = parse_manifest_key(key)
    if index is None:
        raise BackupError(
            "NoManifest", f"{key} is not a manifest key ({MANIFEST_DIR}<last index>-<hash>.cose)"
        )
    try:
        envelope = source.get(key)
    except KeyError as exc:
        raise BackupError("NoManifest", f"{key} is not in the backup") from exc
    manifest = open_manifest(envelope, service_certificate)
    if key != _key_for(manifest, envelope) or index != manifest.last_txid.index:
        raise BackupError(
            "Malformed",
            f"{key}: a manifest ending at {manifest.last_txid} with these bytes belongs under "
            f"{_key_for(manifest, envelope)}",
        )
    return manifest


def _key_for(manifest: Manifest, envelope: bytes) -> str:
    return manifest_key(manifest.last_txid.index, envelope)


def _check_marker(source: BackupSource, manifest: Manifest) -> None:
    try:
        data = source.get(MARKER_KEY)
    except KeyError:
        return  # a marker is a guard for writers; a copy of the objects alone still verifies
    consortium, digest = parse_marker(data)
    if (consortium, digest) != (manifest.consortium, manifest.service_certificate_sha256):
        raise BackupError(
            "WrongService",
            f"{MARKER_KEY} names consortium {consortium!r} with service certificate {digest}, "
            f"the manifest {manifest.consortium!r} with {manifest.service_certificate_sha256}",
        )


def _check_listed(source: BackupSource, manifest: Manifest) -> None:
    """Every listed object is there (one listing per directory), before anything is fetched:
    a missing object is reported at once, not after replaying the segments before it."""
    held = set(source.keys(LEDGER_DIR)) | set(source.keys(SNAPSHOT_DIR))
    for record in manifest.objects:
        if record.key not in held:
            raise BackupError("ObjectMissing", _missing(record))


def _missing(record: ObjectRecord) -> str:
    return (
        f"{record.key} ({record.kind}, indexes {record.first_index}..{record.last_index}) is "
        "listed by the manifest but not in the backup"
    )


def _fetch(source: BackupSource, record: ObjectRecord) -> bytes:
    """The object's bytes, checked against the manifest's size and SHA-256."""
    try:
        data = source.get(record.key)
    except KeyError as exc:
        raise BackupError("ObjectMissing", _missing(record)) from exc
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != record.size or digest != record.sha256:
        raise BackupError(
            "ObjectDigest",
            f"{record.key}: sha256 {digest} ({len(data)} bytes), the manifest lists "
            f"{record.sha256} ({record.size} bytes)",
        )
    return data


def _check_range(manifest: Manifest, replay: LedgerReplay) -> None:
    """``first_txid`` is entry 1 and ``last_txid`` the last entry, a signature."""
    last = replay.last
    if replay.first != manifest.first_txid or manifest.first_txid.index != 1:
        raise BackupError(
            "LedgerInvalid",
            f"manifest.first_txid is {manifest.first_txid}, the ledger's first entry "
            f"{replay.first}",
        )
    if last is None or last.txid != manifest.last_txid:
        raise BackupError(
            "LedgerInvalid",
            f"manifest.last_txid is {manifest.last_txid}, the ledger's last entry "
            f"{None if last is None else last.txid}",
        )
