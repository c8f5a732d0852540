"""Keys and the identifiers derived from them (DESIGN section 3)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from consortium_node.identity.certs import certificate_der, self_signed_certificate
from consortium_node.identity.errors import KeyMaterialError
from consortium_node.identity.keys import (
    KeyKind,
    generate_key,
    load_private_key,
    load_public_key,
    member_id_of,
    node_id_of,
    private_key_pem,
    public_key_der,
    public_key_pem,
    sign,
    verify,
)

KINDS: list[KeyKind] = ["p256", "ed25519"]


def _pkcs8(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _spki(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def p384_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.mark.parametrize("kind", KINDS)
def test_node_id_is_sha256_of_spki_der(kind: KeyKind) -> None:
    key = generate_key(kind)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    expected = hashlib.sha256(spki).hexdigest()
    assert public_key_der(key) == spki
    assert node_id_of(key) == expected
    assert node_id_of(key.public_key()) == expected
    assert len(expected) == 64 and expected == expected.lower()


@pytest.mark.parametrize("kind", KINDS)
def test_member_id_is_sha256_of_certificate_der(kind: KeyKind) -> None:
    cert = self_signed_certificate(generate_key(kind), "member-a")
    der = certificate_der(cert)
    assert member_id_of(der) == hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize("kind", KINDS)
def test_sign_and_verify(kind: KeyKind) -> None:
    key, other = generate_key(kind), generate_key(kind)
    signature = sign(key, b"ledger root")
    assert verify(key.public_key(), signature, b"ledger root")
    assert not verify(key.public_key(), signature, b"ledger root!")
    assert not verify(other.public_key(), signature, b"ledger root")


def test_signature_formats() -> None:
    assert len(sign(generate_key("ed25519"), b"x")) == 64
    assert sign(generate_key("p256"), b"x")[0] == 0x30  # DER SEQUENCE


@pytest.mark.parametrize("kind", KINDS)
def test_private_and_public_pem_round_trip(kind: KeyKind) -> None:
    key = generate_key(kind)
    loaded = load_private_key(private_key_pem(key))
    assert node_id_of(loaded) == node_id_of(key)
    assert node_id_of(load_public_key(public_key_pem(key).encode())) == node_id_of(key)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)


def test_generate_rejects_unknown_kind() -> None:
    with pytest.raises(KeyMaterialError, match="'rsa' is not supported"):
        generate_key("rsa")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("which", "loader", "message"),
    [
        ("rsa", "private", "RSAPrivateKey: only P-256 and Ed25519 are accepted"),
        ("p384", "private", "curve secp384r1: only P-256"),
        ("rsa", "public", "RSAPublicKey: only P-256 and Ed25519 are accepted"),
        ("p384", "public", "curve secp384r1: only P-256"),
    ],
)
def test_load_rejects_other_key_types(
    which: str,
    loader: str,
    message: str,
    rsa_key: rsa.RSAPrivateKey,
    p384_key: ec.EllipticCurvePrivateKey,
) -> None:
    key = rsa_key if which == "rsa" else p384_key
    with pytest.raises(KeyMaterialError, match=message):
        if loader == "private":
            load_private_key(_pkcs8(key))
        else:
            load_public_key(_spki(key))


@pytest.mark.parametrize("data", [b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n"])
def test_load_private_key_rejects_non_pem(data: bytes) -> None:
    with pytest.raises(KeyMaterialError, match="not an unencrypted PEM private key"):
        load_private_key(data)


def test_load_public_key_rejects_non_pem() -> None:
    with pytest.raises(KeyMaterialError, match="not a PEM public key"):
        load_public_key(b"garbage")
