"""The signed trusted-node list (DESIGN section 4): payload, COSE envelope, rollback-safe store.

Payload bytes = canonical JSON (UTF-8, sorted keys, no whitespace) of exactly::

    {"allowed_measurements": [measurement, ...],    # sorted, unique
     "consortium": str, "issued_at": RFC3339, "service_certificate_sha256": hex64,
     "version": int >= 1,
     "nodes": [{"address": str, "attestation_expires_at": RFC3339, "attested_at": RFC3339,
                "host_data": hex64, "measurement": measurement, "name": str,
                "node_id": hex64 = SHA-256(SPKI DER of public_key_pem),
                "public_key_pem": SPKI PEM as cryptography writes it,
                "status": "Pending" | "Trusted" | "Retired"}, ...]}   # sorted by (name, node_id)

hex64 = 64 lowercase hex digits; measurement = hex64, or 96 lowercase hex digits (an SEV-SNP
launch digest); RFC3339 = UTC, whole seconds, ``Z`` (``2026-01-02T03:04:05Z``).
Why so strict: each list has exactly one valid byte form, so "same version, same content" is a
byte comparison and two issuers can never disagree on what was signed. The constructors sort
nodes and measurements, so an in-memory list always serialises canonically; ``from_payload``
rejects any other spelling instead of normalising it.

Envelope = COSE_Sign1 by the service key (``identity.cose``), kid = SHA-256 of the service
public key SPKI DER, content type ``application/json``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, NoReturn

from cryptography import x509

from consortium_node.common.canonical import canonical_json
from consortium_node.common.timeutil import parse_rfc3339, rfc3339
from consortium_node.identity.certs import ServiceIdentity, certificate_sha256, load_certificate
from consortium_node.identity.cose import decode_sign1, sign1, verify_sign1
from consortium_node.identity.errors import (
    CoseError,
    CoseKeyMismatchError,
    CoseSignatureError,
    IdentityError,
    ListRejection,
    TrustedListError,
)
from consortium_node.identity.keys import (
    PublicKey,
    check_key_type,
    load_public_key,
    node_id_of,
    public_key_der,
    public_key_pem,
)

CONTENT_TYPE = "application/json"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MEASUREMENT = re.compile(r"^(?:[0-9a-f]{64}|[0-9a-f]{96})$")
_MAX_VERSION = 2**53 - 1  # the largest integer every JSON implementation represents exactly


class NodeStatus(StrEnum):
    PENDING = "Pending"
    TRUSTED = "Trusted"
    RETIRED = "Retired"


REFUSALS = tuple(reason for reason in ListRejection if reason is not ListRejection.ROLLBACK)
"""What a node that holds a list counts as a refusal of an offered one (possible tampering).

An older list that passes every other check is *stale* instead (``TrustedListStore.offer``):
it is signed by the service key, so it once was the truth, and it is never adopted. A node
cannot tell the operator's ConfigMap lagging behind the ledger from a deliberate rollback, and
need not: both end the same way, with the newer list kept.
"""


def _reject(reason: ListRejection, detail: str) -> NoReturn:
    raise TrustedListError(reason, detail)


def _malformed(field: str, why: str) -> NoReturn:
    _reject(ListRejection.MALFORMED, f"{field}: {why}")


def _as_certificate(cert: x509.Certificate | str | bytes) -> x509.Certificate:
    if isinstance(cert, x509.Certificate):
        return cert
    return load_certificate(cert, "service certificate")


def _json_type(value: object) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}
    return "null" if value is None else names.get(type(value), "object")


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        _malformed(field, f"expected a string, got {_json_type(value)}")
    if not value:
        _malformed(field, "must not be empty")
    return value


def _measurement(value: object, field: str) -> str:
    if not isinstance(value, str) or not _MEASUREMENT.match(value):
        _malformed(field, f"{value!r} is not 64 or 96 lowercase hex digits (a measurement)")
    return value


def _hex64(value: object, field: str) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        _malformed(field, f"{value!r} is not 64 lowercase hex digits (a SHA-256)")
    return value


def _time(value: object, field: str) -> str:
    try:
        canonical = rfc3339(parse_rfc3339(value))  # type: ignore[arg-type]
    except ValueError as exc:
        _malformed(field, str(exc))
    if canonical != value:
        _malformed(field, f"{value!r} is not UTC with whole seconds; write {canonical!r}")
    return canonical


def _object(value: object, field: str, keys: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        _malformed(field, f"expected an object, got {_json_type(value)}")
    prefix = f"{field}." if field != "payload" else ""
    for key in sorted(keys - value.keys()):
        _malformed(f"{prefix}{key}", "missing")
    for key in sorted(value.keys() - keys):
        _malformed(f"{prefix}{key}", f"unknown key (expected only {', '.join(sorted(keys))})")
    return value


@dataclass(frozen=True)
class NodeEntry:
    """One node as the service knows it; times are RFC 3339 strings exactly as signed."""

    node_id: str
    name: str
    address: str
    public_key_pem: str
    measurement: str
    host_data: str
    status: NodeStatus
    attested_at: str
    attestation_expires_at: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", NodeStatus(self.status))

    @classmethod
    def for_key(
        cls,
        public_key: PublicKey,
        *,
        name: str,
        address: str,
        measurement: str,
        host_data: str,
        status: NodeStatus,
        attested_at: datetime,
        attestation_expires_at: datetime,
    ) -> NodeEntry:
        """Build an entry from a key, deriving node_id and the canonical PEM."""
        return cls(
            node_id_of(public_key), name, address, public_key_pem(public_key), measurement,
            host_data, status, rfc3339(attested_at), rfc3339(attestation_expires_at),
        )  # fmt: skip

    @property
    def attested_at_datetime(self) -> datetime:
        return parse_rfc3339(self.attested_at)

    @property
    def attestation_expires_at_datetime(self) -> datetime:
        return parse_rfc3339(self.attestation_expires_at)

    def is_trusted(self, at: datetime) -> bool:
        """Trusted status and an attestation that has not expired at ``at``."""
        return self.status is NodeStatus.TRUSTED and self.attestation_expires_at_datetime > at

    def to_json(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_json(cls, value: object, field: str) -> NodeEntry:
        """Validate one payload node object; errors name ``field`` (e.g. ``nodes[1]``)."""
        obj = _object(value, field, _NODE_KEYS)
        node_id = _hex64(obj["node_id"], f"{field}.node_id")
        pem = _text(obj["public_key_pem"], f"{field}.public_key_pem")
        try:
            key = load_public_key(pem.encode("utf-8"))
        except IdentityError as exc:
            _malformed(f"{field}.public_key_pem", str(exc))
        if public_key_pem(key) != pem:
            _malformed(f"{field}.public_key_pem", "not in canonical SubjectPublicKeyInfo PEM form")
        if node_id_of(key) != node_id:
            _malformed(
                f"{field}.node_id",
                f"{node_id} is not the SHA-256 of public_key_pem's SPKI DER ({node_id_of(key)})",
            )
        status = obj["status"]
        if status not in tuple(NodeStatus):
            choices = ", ".join(NodeStatus)
            _malformed(f"{field}.status", f"{status!r} is not one of {choices}")
        entry = cls(
            node_id,
            _text(obj["name"], f"{field}.name"),
            _text(obj["address"], f"{field}.address"),
            pem,
            _measurement(obj["measurement"], f"{field}.measurement"),
            _hex64(obj["host_data"], f"{field}.host_data"),
            NodeStatus(status),
            _time(obj["attested_at"], f"{field}.attested_at"),
            _time(obj["attestation_expires_at"], f"{field}.attestation_expires_at"),
        )
        if entry.attestation_expires_at_datetime <= entry.attested_at_datetime:
            _malformed(f"{field}.attestation_expires_at", "is not after attested_at")
        return entry


_NODE_KEYS = frozenset(f.name for f in fields(NodeEntry))


def _node_order(entry: NodeEntry) -> tuple[str, str]:
    return (entry.name, entry.node_id)


@dataclass(frozen=True)
class TrustedNodeList:
    """The payload of one list version; nodes sorted by (name, node_id), measurements sorted."""

    consortium: str
    version: int
    issued_at: str
    service_certificate_sha256: str
    allowed_measurements: tuple[str, ...]
    nodes: tuple[NodeEntry, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_measurements", tuple(sorted(self.allowed_measurements)))
        object.__setattr__(self, "nodes", tuple(sorted(self.nodes, key=_node_order)))

    @property
    def issued_at_datetime(self) -> datetime:
        return parse_rfc3339(self.issued_at)

    def node(self, node_id: str) -> NodeEntry | None:
        return next((entry for entry in self.nodes if entry.node_id == node_id), None)

    def trusted_nodes(self, at: datetime) -> tuple[NodeEntry, ...]:
        """Nodes whose peers may accept them at ``at`` (Trusted, attestation unexpired)."""
        return tuple(entry for entry in self.nodes if entry.is_trusted(at))

    def is_trusted(self, node_id: str, at: datetime) -> bool:
        entry = self.node(node_id)
        return entry is not None and entry.is_trusted(at)

    def with_node(self, entry: NodeEntry) -> TrustedNodeList:
        """The same version with ``entry`` added or replacing the entry of its node_id."""
        others = tuple(n for n in self.nodes if n.node_id != entry.node_id)
        return replace(self, nodes=(*others, entry))

    def next_version(self, issued_at: datetime) -> TrustedNodeList:
        """Version + 1 issued at ``issued_at``; chain ``with_node`` / ``replace`` for changes."""
        return replace(self, version=self.version + 1, issued_at=rfc3339(issued_at))

    def to_json(self) -> dict[str, Any]:
        return {
            "consortium": self.consortium,
            "version": self.version,
            "issued_at": self.issued_at,
            "service_certificate_sha256": self.service_certificate_sha256,
            "allowed_measurements": list(self.allowed_measurements),
            "nodes": [entry.to_json() for entry in self.nodes],
        }

    def to_payload(self) -> bytes:
        """The canonical JSON bytes that get signed (layout in the module docstring)."""
        return canonical_json(self.to_json())

    @classmethod
    def from_payload(cls, data: bytes) -> TrustedNodeList:
        """Parse and validate payload bytes; TrustedListError(Malformed, "<field>: why")."""
        try:
            raw = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_unique_keys)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            _malformed("payload", f"not UTF-8 JSON ({exc})")
        obj = _object(raw, "payload", _LIST_KEYS)
        version = obj["version"]
        if not isinstance(version, int) or isinstance(version, bool):
            _malformed("version", f"expected an integer, got {_json_type(version)}")
        if not 1 <= version <= _MAX_VERSION:
            _malformed("version", f"{version} is not between 1 and {_MAX_VERSION}")
        measurements = obj["allowed_measurements"]
        if not isinstance(measurements, list):
            _malformed("allowed_measurements", f"expected an array, got {_json_type(measurements)}")
        for i, m in enumerate(measurements):
            _measurement(m, f"allowed_measurements[{i}]")
        if measurements != sorted(set(measurements)):
            _malformed("allowed_measurements", "must be sorted and without duplicates")
        raw_nodes = obj["nodes"]
        if not isinstance(raw_nodes, list):
            _malformed("nodes", f"expected an array, got {_json_type(raw_nodes)}")
        nodes = [NodeEntry.from_json(n, f"nodes[{i}]") for i, n in enumerate(raw_nodes)]
        seen: dict[str, int] = {}
        for i, entry in enumerate(nodes):
            if entry.node_id in seen:
                _malformed(f"nodes[{i}].node_id", f"duplicate of nodes[{seen[entry.node_id]}]")
            seen[entry.node_id] = i
        if nodes != sorted(nodes, key=_node_order):
            _malformed("nodes", "must be sorted by name, then node_id")
        lst = cls(
            _text(obj["consortium"], "consortium"),
            version,
            _time(obj["issued_at"], "issued_at"),
            _hex64(obj["service_certificate_sha256"], "service_certificate_sha256"),
            tuple(measurements),
            tuple(nodes),
        )
        if lst.to_payload() != bytes(data):
            _malformed("payload", "not canonical JSON (UTF-8, sorted keys, no whitespace)")
        return lst


_LIST_KEYS = frozenset(f.name for f in fields(TrustedNodeList))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            _malformed(key, "duplicate key in a JSON object")
        out[key] = value
    return out


def sign_trusted_list(lst: TrustedNodeList, service: ServiceIdentity) -> bytes:
    """COSE_Sign1 the list with the service key, refusing anything a verifier would reject."""
    payload = lst.to_payload()
    TrustedNodeList.from_payload(payload)
    if lst.service_certificate_sha256 != service.certificate_sha256:
        _reject(
            ListRejection.WRONG_SERVICE,
            "service_certificate_sha256: is not the signing service identity's certificate",
        )
    return sign1(service.key, payload, kid=service.kid, content_type=CONTENT_TYPE)


def _service_key(cert: x509.Certificate) -> PublicKey:
    key = cert.public_key()
    try:
        check_key_type(key)
    except IdentityError as exc:
        raise TrustedListError(ListRejection.WRONG_SIGNER, f"service certificate: {exc}") from exc
    return key  # type: ignore[return-value]


def verify_trusted_list(
    envelope: bytes,
    service_certificate: x509.Certificate | str | bytes,
    *,
    consortium: str | None = None,
    min_version: int | None = None,
) -> TrustedNodeList:
    """Verify an envelope with only the service certificate (PEM or parsed); return the list.

    Checks, in order: COSE shape (Malformed), kid = SHA-256 of the certificate's SPKI DER and
    alg matching its key (WrongSigner), signature (BadSignature), content type and payload
    (Malformed), certificate digest and consortium (WrongService), ``min_version`` (Rollback).
    A P-256 signature by another key under the right kid is indistinguishable from tampering
    and is reported as BadSignature.
    """
    cert = _as_certificate(service_certificate)
    key = _service_key(cert)
    try:
        message = decode_sign1(envelope)
    except CoseError as exc:
        raise TrustedListError(ListRejection.MALFORMED, str(exc)) from exc
    expected_kid = hashlib.sha256(public_key_der(key)).digest()
    if message.kid != expected_kid:
        shown = message.kid.hex() if message.kid is not None else "none"
        _reject(
            ListRejection.WRONG_SIGNER,
            f"kid: {shown} is not the service key id {expected_kid.hex()}",
        )
    try:
        verify_sign1(envelope, key)
    except CoseKeyMismatchError as exc:
        raise TrustedListError(ListRejection.WRONG_SIGNER, str(exc)) from exc
    except CoseSignatureError as exc:
        raise TrustedListError(ListRejection.BAD_SIGNATURE, str(exc)) from exc
    if message.content_type != CONTENT_TYPE:
        _malformed("envelope content type", f"{message.content_type!r} is not {CONTENT_TYPE!r}")
    lst = TrustedNodeList.from_payload(message.payload)
    digest = certificate_sha256(cert)
    if lst.service_certificate_sha256 != digest:
        _reject(
            ListRejection.WRONG_SERVICE,
            f"service_certificate_sha256: {lst.service_certificate_sha256} is not the given "
            f"service certificate's SHA-256 {digest}",
        )
    if consortium is not None and lst.consortium != consortium:
        _reject(
            ListRejection.WRONG_SERVICE, f"consortium: {lst.consortium!r} is not {consortium!r}"
        )
    if min_version is not None:
        check_not_older(lst, min_version)
    return lst


def check_not_older(lst: TrustedNodeList, min_version: int) -> None:
    """TrustedListError(Rollback) if ``lst`` is older than ``min_version`` (the last accepted)."""
    if lst.version < min_version:
        _reject(
            ListRejection.ROLLBACK,
            f"version: {lst.version} is lower than the last accepted version {min_version}",
        )
