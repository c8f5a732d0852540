"""The byte formats of a backup: bucket keys, ledger segments, the marker and the manifest.

Keys (relative to the configured prefix; zero-padded so that lexical order is index order):

* ``consortium.json``: the **marker**, written once: canonical JSON
  ``{"format": "consortium-backup/v1", "consortium", "service_certificate_sha256",
  "created_at"}``. A prefix whose marker names another consortium or service is never written.
* ``service-certificate.pem``: a convenience copy; verification never trusts it.
* ``ledger/<first:020d>-<last:020d>.entries``: a **segment**: ``b"CLG1"`` then, for each index
  ``first..last`` in order, ``u32be(len(payload)) || payload`` where ``payload`` is the entry's
  stored bytes (``ledger.entries.decode_entry``; the bytes Raft ships and chunks hold). The last
  entry of a segment is a committed SIGNATURE entry. Segments are deterministic: any node
  encodes the same range to the same bytes.
* ``snapshots/<index:020d>.snapshot``: a committed snapshot (``ledger.snapshot``, ``CLS1``).
* ``manifests/<last:020d>-<h>.cose``: a **manifest**, ``h`` = the first 16 hex digits of the
  SHA-256 of the envelope (two manifests never share a key).

Manifest: COSE_Sign1 (RFC 9052, ``identity.cose``) by the service key, ``kid`` = SHA-256 of
the service public key DER, content type ``application/json``; payload = canonical JSON
``{"format": "consortium-backup-manifest/v1", "consortium", "service_certificate_sha256",
"created_at", "first_txid", "last_txid", "objects": [{"key", "kind", "first_index",
"last_index", "sha256", "size"}], "previous": {"key", "sha256"} | null}``. ``kind`` is
``ledger`` (listed in index order, contiguous from 1 to ``last_txid``'s index) or
``snapshot`` (``first_index == last_index`` = the snapshot's index).

Every parse here is strict: unknown or missing fields, wrong types or a key that does not
match its range raise ``BackupError`` with a reason and the offending field.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from consortium_node.common.canonical import canonical_json
from consortium_node.identity.certs import ServiceIdentity, certificate_sha256
from consortium_node.identity.cose import decode_sign1, sign1, verify_sign1
from consortium_node.identity.errors import CoseError, IdentityError
from consortium_node.identity.keys import check_key_type, public_key_der
from consortium_node.ledger.entries import TxId

SEGMENT_MAGIC = b"CLG1"
MARKER_FORMAT = "consortium-backup/v1"
MANIFEST_FORMAT = "consortium-backup-manifest/v1"
CONTENT_TYPE = "application/json"
MARKER_KEY = "consortium.json"
CERTIFICATE_KEY = "service-certificate.pem"
LEDGER_DIR, SNAPSHOT_DIR, MANIFEST_DIR = "ledger/", "snapshots/", "manifests/"
KINDS = ("ledger", "snapshot")
_LEN = struct.Struct(">I")
_SEGMENT_KEY = re.compile(r"ledger/(\d{20})-(\d{20})\.entries")
_SNAPSHOT_KEY = re.compile(r"snapshots/(\d{20})\.snapshot")
_MANIFEST_KEY = re.compile(r"manifests/(\d{20})-([0-9a-f]{16})\.cose")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BackupError(Exception):
    """A backup (or a part of one) is not what it must be. ``reason`` is one word a script can
    test (``Malformed``, ``BadSignature``, ``WrongService``, ``ObjectMissing``,
    ``ObjectDigest``, ``Gap``, ``LedgerInvalid``, ``SnapshotInvalid``, ``NoManifest``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# ----------------------------------------------------------------------------- keys
def segment_key(first: int, last: int) -> str:
    return f"ledger/{first:020d}-{last:020d}.entries"


def parse_segment_key(key: str) -> tuple[int, int] | None:
    """``(first, last)`` of a segment key, None if ``key`` is not one (or its range is empty)."""
    found = _SEGMENT_KEY.fullmatch(key)
    if found is None:
        return None
    first, last = int(found[1]), int(found[2])
    return (first, last) if 1 <= first <= last else None


def snapshot_key(index: int) -> str:
    return f"snapshots/{index:020d}.snapshot"


def parse_snapshot_key(key: str) -> int | None:
    found = _SNAPSHOT_KEY.fullmatch(key)
    return int(found[1]) if found is not None and int(found[1]) >= 1 else None


def manifest_key(last_index: int, envelope: bytes) -> str:
    return f"manifests/{last_index:020d}-{hashlib.sha256(envelope).hexdigest()[:16]}.cose"


def parse_manifest_key(key: str) -> int | None:
    """The last index a manifest key names, None if ``key`` is not a manifest key."""
    found = _MANIFEST_KEY.fullmatch(key)
    return int(found[1]) if found is not None else None


# ----------------------------------------------------------------------------- segments
def encode_segment(payloads: Iterable[bytes]) -> bytes:
    """``CLG1`` followed by each payload with its u32be length (see the module docstring)."""
    out = bytearray(SEGMENT_MAGIC)
    for payload in payloads:
        out += _LEN.pack(len(payload))
        out += payload
    return bytes(out)


def decode_segment(data: bytes, key: str = "segment") -> list[bytes]:
    """The payloads of a segment; BackupError(Malformed) if the framing is wrong."""
    if data[:4] != SEGMENT_MAGIC:
        raise BackupError("Malformed", f"{key}: does not start with {SEGMENT_MAGIC!r}")
    payloads: list[bytes] = []
    pos, end = 4, len(data)
    while pos < end:
        if pos + 4 > end:
            raise BackupError("Malformed", f"{key}: a length prefix is cut at byte {pos}")
        (size,) = _LEN.unpack_from(data, pos)
        pos += 4
        if pos + size > end:
            raise BackupError("Malformed", f"{key}: entry {len(payloads) + 1} is cut at byte {pos}")
        payloads.append(data[pos : pos + size])
        pos += size
    return payloads


# ----------------------------------------------------------------------------- marker
def encode_marker(consortium: str, service_certificate_sha256: str, created_at: str) -> bytes:
    return canonical_json(
        {
            "format": MARKER_FORMAT,
            "consortium": consortium,
            "service_certificate_sha256": service_certificate_sha256,
            "created_at": created_at,
        }
    )


def parse_marker(data: bytes) -> tuple[str, str]:
    """``(consortium, service_certificate_sha256)`` of a marker; BackupError(Malformed)."""
    obj = _json_object(data, MARKER_KEY)
    fields = _exact(
        obj, MARKER_KEY, ("format", "consortium", "service_certificate_sha256", "created_at")
    )
    if fields["format"] != MARKER_FORMAT:
        raise BackupError("Malformed", f"{MARKER_KEY}: format {fields['format']!r} is unknown")
    return _str(fields, "consortium", MARKER_KEY), _hex64(
        fields, "service_certificate_sha256", MARKER_KEY
    )


# ----------------------------------------------------------------------------- manifest
@dataclass(frozen=True)
class ObjectRecord:
    """One object a manifest vouches for."""

    key: str
    kind: str  # ledger | snapshot
    first_index: int
    last_index: int
    sha256: str  # lowercase hex
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "first_index": self.first_index,
            "last_index": self.last_index,
            "sha256": self.sha256,
            "size": self.size,
        }

    @classmethod
    def for_bytes(cls, key: str, kind: str, first: int, last: int, data: bytes) -> ObjectRecord:
        return cls(key, kind, first, last, hashlib.sha256(data).hexdigest(), len(data))


@dataclass(frozen=True)
class Manifest:
    consortium: str
    service_certificate_sha256: str
    created_at: str
    first_txid: TxId
    last_txid: TxId
    objects: tuple[ObjectRecord, ...]
    previous: tuple[str, str] | None = None  # (key, sha256 hex) of the manifest before

    def __post_init__(self) -> None:
        check_objects(self.objects, self.last_txid.index)

    @property
    def ledger_objects(self) -> tuple[ObjectRecord, ...]:
        return tuple(o for o in self.objects if o.kind == "ledger")

    @property
    def snapshot_objects(self) -> tuple[ObjectRecord, ...]:
        return tuple(o for o in self.objects if o.kind == "snapshot")

    def to_payload(self) -> bytes:
        return canonical_json(
            {
                "format": MANIFEST_FORMAT,
                "consortium": self.consortium,
                "service_certificate_sha256": self.service_certificate_sha256,
                "created_at": self.created_at,
                "first_txid": str(self.first_txid),
                "last_txid": str(self.last_txid),
                "objects": [o.to_json() for o in self.objects],
                "previous": None
                if self.previous is None
                else {"key": self.previous[0], "sha256": self.previous[1]},
            }
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> Manifest:
        obj = _json_object(payload, "manifest")
        fields = _exact(
            obj,
            "manifest",
            (
                "format",
                "consortium",
                "service_certificate_sha256",
                "created_at",
                "first_txid",
                "last_txid",
                "objects",
                "previous",
            ),
        )
        if fields["format"] != MANIFEST_FORMAT:
            raise BackupError("Malformed", f"manifest.format: {fields['format']!r} is unknown")
        objects = fields["objects"]
        if not isinstance(objects, list):
            raise BackupError("Malformed", "manifest.objects: must be a list")
        previous = fields["previous"]
        if previous is not None:
            prev = _exact(previous, "manifest.previous", ("key", "sha256"))
            previous = (
                _str(prev, "key", "manifest.previous"),
                _hex64(prev, "sha256", "manifest.previous"),
            )
        return cls(
            consortium=_str(fields, "consortium", "manifest"),
            service_certificate_sha256=_hex64(fields, "service_certificate_sha256", "manifest"),
            created_at=_str(fields, "created_at", "manifest"),
            first_txid=_txid(fields, "first_txid"),
            last_txid=_txid(fields, "last_txid"),
            objects=tuple(
                _object_record(o, f"manifest.objects[{i}]") for i, o in enumerate(objects)
            ),
            previous=previous,
        )


def check_objects(objects: tuple[ObjectRecord, ...], last_index: int) -> None:
    """Ledger objects contiguous from 1 to ``last_index`` in order, snapshots inside it, every
    key the one its range names, no key twice."""
    expected = 1
    keys: set[str] = set()
    for i, record in enumerate(objects):
        where = f"manifest.objects[{i}]"
        if record.key in keys:
            raise BackupError("Malformed", f"{where}.key: {record.key} is listed twice")
        keys.add(record.key)
        if record.kind == "ledger":
            if record.key != segment_key(record.first_index, record.last_index):
                raise BackupError("Malformed", f"{where}.key: {record.key} does not name its range")
            if record.first_index != expected:
                raise BackupError(
                    "Gap", f"{where}: starts at index {record.first_index}, expected {expected}"
                )
            expected = record.last_index + 1
        else:
            if (
                record.key != snapshot_key(record.first_index)
                or record.first_index != record.last_index
            ):
                raise BackupError("Malformed", f"{where}.key: {record.key} does not name its index")
            if record.first_index > last_index:
                raise BackupError(
                    "Malformed", f"{where}: snapshot {record.first_index} is past the backup's end"
                )
    if expected != last_index + 1:
        raise BackupError(
            "Gap",
            f"manifest: ledger objects end at index {expected - 1}, last_txid is at {last_index}",
        )


def sign_manifest(manifest: Manifest, service: ServiceIdentity) -> bytes:
    """The COSE_Sign1 envelope of ``manifest``, signed by the service key."""
    if manifest.service_certificate_sha256 != service.certificate_sha256:
        raise BackupError("WrongService", "manifest names another service certificate")
    return sign1(service.key, manifest.to_payload(), kid=service.kid, content_type=CONTENT_TYPE)


def open_manifest(envelope: bytes, service_certificate: x509.Certificate) -> Manifest:
    """Verify a manifest envelope with only the service certificate and parse it.

    BadSignature: the kid is not the service key's or the signature does not verify;
    WrongService: the payload names another certificate; Malformed: anything else."""
    key = service_certificate.public_key()
    try:
        check_key_type(key)
        message = decode_sign1(envelope)
    except (CoseError, IdentityError) as exc:
        raise BackupError("Malformed", f"manifest envelope: {exc}") from exc
    kid = hashlib.sha256(public_key_der(key)).digest()  # type: ignore[arg-type]
    if message.kid != kid:
        raise BackupError("BadSignature", "manifest kid is not the service key's id")
    try:
        verify_sign1(envelope, key)  # type: ignore[arg-type]
    except (CoseError, IdentityError) as exc:
        raise BackupError("BadSignature", f"manifest: {exc}") from exc
    if message.content_type != CONTENT_TYPE:
        raise BackupError("Malformed", f"manifest content type {message.content_type!r}")
    manifest = Manifest.from_payload(message.payload)
    digest = certificate_sha256(service_certificate)
    if manifest.service_certificate_sha256 != digest:
        raise BackupError(
            "WrongService",
            f"manifest names service certificate {manifest.service_certificate_sha256}, "
            f"not {digest}",
        )
    return manifest


# ----------------------------------------------------------------------------- strict JSON
def _json_object(data: bytes, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BackupError("Malformed", f"{where}: not JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise BackupError("Malformed", f"{where}: must be a JSON object")
    return obj


def _exact(obj: object, where: str, names: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(obj, dict):
        raise BackupError("Malformed", f"{where}: must be an object")
    if set(obj) != set(names):
        raise BackupError("Malformed", f"{where}: must have exactly the fields {sorted(names)}")
    return obj


def _str(fields: Mapping[str, Any], name: str, where: str) -> str:
    value = fields[name]
    if not isinstance(value, str) or not value:
        raise BackupError("Malformed", f"{where}.{name}: must be a non-empty string")
    return value


def _hex64(fields: Mapping[str, Any], name: str, where: str) -> str:
    value = fields[name]
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise BackupError("Malformed", f"{where}.{name}: must be 64 lowercase hex digits")
    return value


def _int(fields: Mapping[str, Any], name: str, where: str) -> int:
    value = fields[name]
    if type(value) is not int or value < 0:
        raise BackupError("Malformed", f"{where}.{name}: must be a non-negative integer")
    return value


def _txid(fields: Mapping[str, Any], name: str) -> TxId:
    value = fields[name]
    try:
        return TxId.parse(value)
    except ValueError as exc:
        raise BackupError("Malformed", f"manifest.{name}: {value!r} is not a txid") from exc


def _object_record(obj: object, where: str) -> ObjectRecord:
    fields = _exact(obj, where, ("key", "kind", "first_index", "last_index", "sha256", "size"))
    kind = fields["kind"]
    if kind not in KINDS:
        raise BackupError("Malformed", f"{where}.kind: {kind!r} is not one of {list(KINDS)}")
    record = ObjectRecord(
        key=_str(fields, "key", where),
        kind=kind,
        first_index=_int(fields, "first_index", where),
        last_index=_int(fields, "last_index", where),
        sha256=_hex64(fields, "sha256", where),
        size=_int(fields, "size", where),
    )
    if not 1 <= record.first_index <= record.last_index:
        raise BackupError("Malformed", f"{where}: first_index..last_index is not a range")
    return record
