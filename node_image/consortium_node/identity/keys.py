"""Key pairs and the identifiers derived from them (DESIGN section 3).

Nodes and the service use ECDSA P-256 (COSE ``ES256``, TLS-friendly everywhere). Members may
use P-256 or Ed25519. Identifiers are plain SHA-256 digests so anyone can recompute them:

* ``node_id``   = lowercase hex SHA-256 of the node public key, SubjectPublicKeyInfo DER.
* ``member_id`` = lowercase hex SHA-256 of the member certificate, DER.

Signatures produced here are DER-encoded ECDSA (SHA-256) or raw 64-byte Ed25519.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from consortium_node.identity.errors import KeyMaterialError

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
KeyKind = Literal["p256", "ed25519"]


def generate_key(kind: KeyKind = "p256") -> PrivateKey:
    """A fresh private key: ECDSA P-256 (default) or Ed25519."""
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise KeyMaterialError(f"key kind {kind!r} is not supported; use p256 or ed25519")


def public_key_der(key: PrivateKey | PublicKey) -> bytes:
    """SubjectPublicKeyInfo DER of a key (private keys give their public half)."""
    public = key.public_key() if isinstance(key, PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_pem(key: PrivateKey | PublicKey) -> str:
    """SubjectPublicKeyInfo PEM of a key (private keys give their public half)."""
    public = key.public_key() if isinstance(key, PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def node_id_of(key: PrivateKey | PublicKey) -> str:
    """node_id: lowercase hex SHA-256 of the public key's SubjectPublicKeyInfo DER."""
    return hashlib.sha256(public_key_der(key)).hexdigest()


def member_id_of(certificate_der: bytes) -> str:
    """member_id: lowercase hex SHA-256 of the member certificate's DER bytes."""
    return hashlib.sha256(certificate_der).hexdigest()


def private_key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM. Callers seal it or write it 0600; never log it."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(pem: bytes) -> PrivateKey:
    """Load a PEM private key; only P-256 and Ed25519 are accepted."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyMaterialError(f"private key: not an unencrypted PEM private key ({exc})") from exc
    check_key_type(key)
    assert isinstance(key, PrivateKey)
    return key


def load_public_key(pem: bytes) -> PublicKey:
    """Load a PEM SubjectPublicKeyInfo; only P-256 and Ed25519 are accepted."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise KeyMaterialError(f"public key: not a PEM public key ({exc})") from exc
    check_key_type(key)
    assert isinstance(key, PublicKey)
    return key


def check_key_type(key: object) -> None:
    """Raise unless ``key`` is a P-256 or Ed25519 key (private or public)."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return
        raise KeyMaterialError(
            f"EC key on curve {key.curve.name}: only P-256 (secp256r1) is accepted"
        )
    raise KeyMaterialError(f"key type {type(key).__name__}: only P-256 and Ed25519 are accepted")


def sign(key: PrivateKey, data: bytes) -> bytes:
    """Sign ``data``: ECDSA P-256 with SHA-256 (DER signature) or Ed25519 (64 bytes)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    return key.sign(data)


def verify(key: PublicKey, signature: bytes, data: bytes) -> bool:
    """True iff ``signature`` over ``data`` verifies with ``key`` (formats as in ``sign``)."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
