"""The bucket side of shipping backups: where a shipper resumes, and retention.

Why apart from the shipper: these are the rules about what is already in the bucket, which a
new primary must trust only as far as it can verify (the marker names this consortium and
service; the newest manifest verifies with the service certificate; segments uploaded after it
are adopted later only if their bytes are what this node encodes for the same range), and which
objects retention may delete (never ledger segments: they are the history).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509

from consortium_node.backup import format as fmt
from consortium_node.backup.s3 import S3Store, StoreError
from consortium_node.common.timeutil import rfc3339, utcnow
from consortium_node.identity.certs import ServiceIdentity, certificate_pem
from consortium_node.ledger import TxId

log = logging.getLogger("consortium_node.backup")

KEEP_NEWEST_MANIFESTS = 3


@dataclass
class Remote:
    """What the bucket holds, as far as this shipper knows (rebuilt on every promotion)."""

    chain: list[fmt.ObjectRecord] = field(default_factory=list)  # ledger segments from 1
    snapshots: dict[int, fmt.ObjectRecord] = field(default_factory=dict)
    first_txid: TxId | None = None
    previous: tuple[str, str] | None = None  # newest manifest (key, sha256)
    pending: dict[int, int] = field(default_factory=dict)  # unlisted segments: first → last
    swept_at: float = 0.0

    @property
    def end(self) -> int:
        return self.chain[-1].last_index if self.chain else 0


def open_bucket(
    store: S3Store, consortium_name: str, service: ServiceIdentity
) -> tuple[Remote, int]:
    """Check the marker (write it into an empty prefix), then find where to resume: the
    bucket as the newest verifiable manifest describes it, and the index that manifest covers."""
    store.check_bucket()
    try:
        consortium, digest = fmt.parse_marker(store.get(fmt.MARKER_KEY))
    except KeyError:
        consortium, digest = consortium_name, service.certificate_sha256
        marker = fmt.encode_marker(consortium, digest, rfc3339(utcnow()))
        store.put_new(fmt.MARKER_KEY, marker, "application/json")
        store.put_new(
            fmt.CERTIFICATE_KEY, certificate_pem(service.certificate).encode(), "text/plain"
        )
        log.info("backup: new backup at %s", store.settings.location)
    except fmt.BackupError as exc:
        raise StoreError(
            "BucketOwnedByAnotherConsortium",
            f"{store.settings.location}{fmt.MARKER_KEY} is not a consortium backup marker "
            f"({exc.detail}); choose another bucket or prefix",
        ) from exc
    if (consortium, digest) != (consortium_name, service.certificate_sha256):
        raise StoreError(
            "BucketOwnedByAnotherConsortium",
            f"{store.settings.location} holds the backup of consortium {consortium!r} "
            f"(service certificate {digest[:16]}…); nothing is written there",
        )
    remote = Remote()
    shipped = 0
    manifests = sorted(
        (index, key)
        for key in store.keys(fmt.MANIFEST_DIR)
        if (index := fmt.parse_manifest_key(key)) is not None
    )
    for _, key in reversed(manifests):
        envelope = store.get(key)
        try:
            manifest = fmt.open_manifest(envelope, service.certificate)
        except fmt.BackupError as exc:
            log.warning("backup: manifest %s does not verify (%s); skipped", key, exc)
            continue
        remote.chain = list(manifest.ledger_objects)
        remote.snapshots = {o.first_index: o for o in manifest.snapshot_objects}
        remote.first_txid = manifest.first_txid
        remote.previous = (key, hashlib.sha256(envelope).hexdigest())
        shipped = manifest.last_txid.index
        log.info("backup: resuming after %s (through index %d)", key, remote.end)
        break
    for key in store.keys(fmt.LEDGER_DIR):
        found = fmt.parse_segment_key(key)
        if found is not None and found[0] > remote.end:
            remote.pending.setdefault(found[0], found[1])
    return remote, shipped


def sweep(
    store: S3Store, remote: Remote, retention: timedelta, service_certificate: x509.Certificate
) -> None:
    """Apply ``retention`` (module docstring)."""
    horizon = datetime.now(UTC) - retention
    manifests = [
        (key, modified)
        for key, modified in store.keys_with_times(fmt.MANIFEST_DIR)
        if fmt.parse_manifest_key(key) is not None
    ]
    manifests.sort(key=lambda item: (fmt.parse_manifest_key(item[0]), item[1]))
    keep = {key for key, _ in manifests[-KEEP_NEWEST_MANIFESTS:]}
    days: set[str] = set()
    for key, modified in sorted(manifests, key=lambda item: item[1]):
        day = modified.astimezone(UTC).date().isoformat()
        if modified >= horizon and day not in days:
            days.add(day)
            keep.add(key)
    drop = [key for key, _ in manifests if key not in keep]
    snapshots = store.keys_with_times(fmt.SNAPSHOT_DIR)
    for key, modified in snapshots[:-1]:  # the newest snapshot is always listed
        index = fmt.parse_snapshot_key(key)
        if index is not None and modified < horizon:
            remote.snapshots.pop(index, None)  # the next manifests no longer list it
    listed: set[str] = set()
    for key in keep:
        try:
            listed |= {
                o.key for o in fmt.open_manifest(store.get(key), service_certificate).objects
            }
        except (KeyError, fmt.BackupError):
            continue
    snapshot_drop = [
        key
        for key, _ in snapshots
        if key not in listed and fmt.parse_snapshot_key(key) not in remote.snapshots
    ]
    store.delete(drop + snapshot_drop)
    remote.swept_at = time.time()
    if drop or snapshot_drop:
        log.info(
            "backup retention: deleted %d manifests and %d snapshots",
            len(drop),
            len(snapshot_drop),
        )
