"""ECIES wrapping of secrets to a node's attested P-256 key (DESIGN section 5, step 5)."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium_node.identity.errors import IdentityError, WrapError
from consortium_node.identity.keys import generate_key
from consortium_node.identity.wrap import (
    MIN_BLOB_LENGTH,
    NONCE_LENGTH,
    POINT_LENGTH,
    TAG_LENGTH,
    unwrap,
    wrap,
)

CONTEXT = b"demo/join/" + b"ab" * 32
SECRET = b'{"ledger_secret":"00ff"}'


def _p256() -> ec.EllipticCurvePrivateKey:
    key = generate_key("p256")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


@pytest.fixture(scope="module")
def recipient() -> ec.EllipticCurvePrivateKey:
    return _p256()


@pytest.fixture(scope="module")
def blob(recipient: ec.EllipticCurvePrivateKey) -> bytes:
    return wrap(recipient.public_key(), SECRET, CONTEXT)


def test_round_trip(recipient: ec.EllipticCurvePrivateKey, blob: bytes) -> None:
    assert unwrap(recipient, blob, CONTEXT) == SECRET


def test_blob_layout(blob: bytes) -> None:
    version, point_length = struct.unpack_from(">BH", blob)
    assert (version, point_length) == (1, POINT_LENGTH)
    assert blob[3] == 0x04  # uncompressed point
    assert len(blob) == 3 + POINT_LENGTH + NONCE_LENGTH + len(SECRET) + TAG_LENGTH


def test_each_wrap_uses_fresh_ephemeral_key_and_nonce(
    recipient: ec.EllipticCurvePrivateKey,
) -> None:
    first = wrap(recipient.public_key(), SECRET, CONTEXT)
    second = wrap(recipient.public_key(), SECRET, CONTEXT)
    assert first[3 : 3 + POINT_LENGTH] != second[3 : 3 + POINT_LENGTH]
    assert first != second


def test_empty_plaintext_and_context(recipient: ec.EllipticCurvePrivateKey) -> None:
    blob = wrap(recipient.public_key(), b"", b"")
    assert len(blob) == MIN_BLOB_LENGTH
    assert unwrap(recipient, blob, b"") == b""


def test_other_recipient_key_fails(blob: bytes) -> None:
    with pytest.raises(WrapError, match="authentication failed"):
        unwrap(_p256(), blob, CONTEXT)


@pytest.mark.parametrize("context", [b"", CONTEXT + b"x", CONTEXT[:-1], b"other/join/00"])
def test_other_context_fails(
    recipient: ec.EllipticCurvePrivateKey, blob: bytes, context: bytes
) -> None:
    with pytest.raises(WrapError, match="authentication failed"):
        unwrap(recipient, blob, context)


def _offset(region: str, blob: bytes) -> int:
    offsets = {
        "version": 0,
        "epk": 3 + POINT_LENGTH // 2,  # a coordinate byte: the point leaves the curve
        "nonce": 3 + POINT_LENGTH + NONCE_LENGTH // 2,
        "ciphertext": 3 + POINT_LENGTH + NONCE_LENGTH,
        "tag": len(blob) - 1,
    }
    return offsets[region]


@pytest.mark.parametrize("region", ["version", "epk", "nonce", "ciphertext", "tag"])
def test_tampered_byte_fails(
    recipient: ec.EllipticCurvePrivateKey, blob: bytes, region: str
) -> None:
    altered = bytearray(blob)
    altered[_offset(region, blob)] ^= 0x01
    with pytest.raises(WrapError):
        unwrap(recipient, bytes(altered), CONTEXT)


def test_unknown_version_is_named(recipient: ec.EllipticCurvePrivateKey, blob: bytes) -> None:
    with pytest.raises(WrapError, match="byte 0: unknown version 2"):
        unwrap(recipient, b"\x02" + blob[1:], CONTEXT)


def test_wrong_point_length_fails(recipient: ec.EllipticCurvePrivateKey, blob: bytes) -> None:
    with pytest.raises(WrapError, match="bytes 1-2: ephemeral key length 33"):
        unwrap(recipient, blob[:1] + struct.pack(">H", 33) + blob[3:], CONTEXT)


def test_compressed_point_prefix_fails(recipient: ec.EllipticCurvePrivateKey, blob: bytes) -> None:
    with pytest.raises(WrapError, match="byte 3: ephemeral key is not an uncompressed point"):
        unwrap(recipient, blob[:3] + b"\x02" + blob[4:], CONTEXT)


def test_substituted_valid_ephemeral_key_fails(
    recipient: ec.EllipticCurvePrivateKey, blob: bytes
) -> None:
    other = wrap(recipient.public_key(), SECRET, CONTEXT)
    spliced = blob[:3] + other[3 : 3 + POINT_LENGTH] + blob[3 + POINT_LENGTH :]
    with pytest.raises(WrapError, match="authentication failed"):
        unwrap(recipient, spliced, CONTEXT)


@pytest.mark.parametrize("length", [0, 1, 2, 3, 40, 3 + POINT_LENGTH, MIN_BLOB_LENGTH - 1])
def test_truncated_header_or_body_fails(
    recipient: ec.EllipticCurvePrivateKey, blob: bytes, length: int
) -> None:
    with pytest.raises(WrapError, match=r"shorter|truncated"):
        unwrap(recipient, blob[:length], CONTEXT)


@pytest.mark.parametrize("cut", [1, TAG_LENGTH, len(SECRET)])
def test_truncated_ciphertext_fails(
    recipient: ec.EllipticCurvePrivateKey, blob: bytes, cut: int
) -> None:
    with pytest.raises(WrapError):
        unwrap(recipient, blob[:-cut], CONTEXT)


def test_appended_bytes_fail(recipient: ec.EllipticCurvePrivateKey, blob: bytes) -> None:
    with pytest.raises(WrapError, match="authentication failed"):
        unwrap(recipient, blob + b"\x00", CONTEXT)


def test_non_p256_recipient_public_key_fails() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(WrapError, match="secp384r1; only P-256"):
        wrap(p384.public_key(), SECRET, CONTEXT)
    ed = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(WrapError, match="not an EC key"):
        wrap(ed.public_key(), SECRET, CONTEXT)  # type: ignore[arg-type]


def test_non_p256_recipient_private_key_fails(blob: bytes) -> None:
    with pytest.raises(WrapError, match="secp384r1; only P-256"):
        unwrap(ec.generate_private_key(ec.SECP384R1()), blob, CONTEXT)
    with pytest.raises(WrapError, match="not an EC key"):
        unwrap(ed25519.Ed25519PrivateKey.generate(), blob, CONTEXT)  # type: ignore[arg-type]


def test_wrap_error_is_an_identity_error() -> None:
    assert issubclass(WrapError, IdentityError)


@settings(max_examples=50, deadline=None)
@given(plaintext=st.binary(max_size=4096), context=st.binary(max_size=256))
def test_round_trip_property(plaintext: bytes, context: bytes) -> None:
    key = _RECIPIENT
    blob = wrap(key.public_key(), plaintext, context)
    assert unwrap(key, blob, context) == plaintext
    with pytest.raises(WrapError):
        unwrap(key, blob, context + b"\x00")


_RECIPIENT = _p256()
