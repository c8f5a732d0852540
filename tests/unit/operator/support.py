"""Shared builders for the operator unit tests: certificates of any key type and valid specs."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from consortium_operator.api.spec import ConsortiumSpec, MemberSpec, parse_consortium, parse_member

M1 = "a1" * 32
M2 = "0b" * 32
EXTRA_HOST_DATA = "cd" * 32
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def certificate(kind: str, common_name: str = "alice") -> tuple[str, bytes]:
    """A self-signed certificate with a fresh ``kind`` key (p256, ed25519, rsa): (PEM, DER)."""
    key: Any
    algorithm: Any = hashes.SHA256()
    if kind == "p256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif kind == "p384":
        key = ec.generate_private_key(ec.SECP384R1())
    elif kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
        algorithm = None
    elif kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:  # pragma: no cover - a typo in a test
        raise AssertionError(kind)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0 - timedelta(days=1))
        .not_valid_after(T0 + timedelta(days=365))
        .sign(key, algorithm)
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return pem, cert.public_bytes(serialization.Encoding.DER)


@cache
def cached_certificate(kind: str, common_name: str) -> tuple[str, bytes]:
    return certificate(kind, common_name)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def full_spec() -> dict[str, Any]:
    """A Consortium spec with every field set (as the API server stores it after defaulting)."""
    return {
        "nodes": 5,
        "image": "registry.example:5000/consortium-node:1.2.3",
        "imagePullPolicy": "Always",
        "attestation": {
            "platform": "insecure-virtual",
            "measurements": [M2, M1],
            "hostData": [EXTRA_HOST_DATA],
            "validity": "12h",
            "renewBefore": "4h",
        },
        "governance": {"threshold": 2, "autoTrustNodes": False},
        "storage": {"size": "2Gi", "storageClassName": "fast", "retainOnDelete": True},
        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}},
        "ledger": {"signatureIntervalTx": 50, "signatureInterval": "250ms"},
        "clientSelector": {"matchLabels": {"team": "ledger"}},
    }


def minimal_spec() -> dict[str, Any]:
    """Only the required fields: everything else takes its default."""
    return {"image": "localhost/consortium-node:dev", "attestation": {"measurements": [M1]}}


def spec_with(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``base`` (default: full_spec()) with the dotted ``path`` set to ``value`` (``...`` = del)."""
    data = copy.deepcopy(full_spec() if base is None else base)
    *parents, last = path.split(".")
    target = data
    for part in parents:
        target = target.setdefault(part, {})
    if value is ...:
        target.pop(last, None)
    else:
        target[last] = value
    return data


def consortium(name: str = "demo", **overrides: Any) -> ConsortiumSpec:
    data = full_spec()
    for path, value in overrides.items():
        data = spec_with(path.replace("__", "."), value, data)
    return parse_consortium(name, data)


def member(common_name: str, role: str = "governor", kind: str = "p256") -> MemberSpec:
    pem, _ = cached_certificate(kind, common_name)
    return parse_member(common_name, {"consortium": "demo", "role": role, "certificate": pem})


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386, as the API server applies a status written as ``merge-patch+json``."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = value
    return out
