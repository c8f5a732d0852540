"""Encrypt secrets to a node's attested public key (DESIGN section 5, step 5).

The primary hands the ledger secret and the service key to a joining node encrypted to the
P-256 key the node's quote attested; only that node's enclave can open them. The scheme is
ECIES over P-256:

1. a fresh ephemeral P-256 key pair ``(e, E)`` per message;
2. ``shared = ECDH(e, R)`` with the recipient public key ``R``;
3. ``key = HKDF-SHA256(shared, salt=None, info, length=32)`` with
   ``info = b"consortium-wrap-v1" || E || R || context`` (``E`` and ``R`` as uncompressed
   X9.62 points, 65 bytes each, so ``context`` is unambiguous at the end);
4. AES-256-GCM under ``key`` with a random 12-byte nonce and AAD = ``context``.

Blob layout (all offsets in bytes)::

    offset  length  field
    0       1       version, 0x01
    1       2       len(E), unsigned big-endian; always 65
    3       65      E, uncompressed X9.62 point (0x04 || X || Y)
    68      12      AES-GCM nonce
    80      n + 16  ciphertext of the n-byte plaintext, then the 16-byte GCM tag

``context`` binds a blob to its purpose (e.g. the consortium and the recipient node_id): it
is mixed into the key and authenticated as AAD, so a blob opened with another context fails.
Every failure (wrong recipient key, wrong context, truncated or altered blob, unknown
version, a key that is not P-256) raises :class:`WrapError`; nothing is returned unverified.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from consortium_node.identity.errors import WrapError
from consortium_node.identity.keys import generate_key

VERSION = 1
INFO_PREFIX = b"consortium-wrap-v1"
POINT_LENGTH = 65  # uncompressed P-256 point: 0x04 || X (32) || Y (32)
NONCE_LENGTH = 12
TAG_LENGTH = 16
KEY_LENGTH = 32

_HEADER = struct.Struct(">BH")  # version, len(E)
_POINT_OFFSET = _HEADER.size
_NONCE_OFFSET = _POINT_OFFSET + POINT_LENGTH
_CIPHERTEXT_OFFSET = _NONCE_OFFSET + NONCE_LENGTH
MIN_BLOB_LENGTH = _CIPHERTEXT_OFFSET + TAG_LENGTH


def _require_p256(key: object, what: str) -> None:
    if not isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        raise WrapError(f"{what}: {type(key).__name__} is not an EC key; only P-256 is accepted")
    if not isinstance(key.curve, ec.SECP256R1):
        raise WrapError(f"{what}: EC key on curve {key.curve.name}; only P-256 is accepted")


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _derive_key(
    shared: bytes, ephemeral_point: bytes, recipient_point: bytes, context: bytes
) -> bytes:
    info = INFO_PREFIX + ephemeral_point + recipient_point + context
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LENGTH, salt=None, info=info).derive(shared)


def wrap(recipient: ec.EllipticCurvePublicKey, plaintext: bytes, context: bytes) -> bytes:
    """Encrypt ``plaintext`` to ``recipient`` (P-256) bound to ``context``; see the module doc."""
    _require_p256(recipient, "recipient public key")
    ephemeral = generate_key("p256")
    assert isinstance(ephemeral, ec.EllipticCurvePrivateKey)
    ephemeral_point = _point(ephemeral.public_key())
    shared = ephemeral.exchange(ec.ECDH(), recipient)
    key = _derive_key(shared, ephemeral_point, _point(recipient), context)
    nonce = os.urandom(NONCE_LENGTH)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, context)
    return _HEADER.pack(VERSION, len(ephemeral_point)) + ephemeral_point + nonce + ciphertext


def unwrap(recipient_key: ec.EllipticCurvePrivateKey, blob: bytes, context: bytes) -> bytes:
    """Open a blob made by :func:`wrap` with the recipient's private key and the same context."""
    _require_p256(recipient_key, "recipient private key")
    if len(blob) < _HEADER.size:
        raise WrapError(f"blob: {len(blob)} bytes is shorter than the {_HEADER.size}-byte header")
    version, point_length = _HEADER.unpack_from(blob)
    if version != VERSION:
        raise WrapError(f"blob byte 0: unknown version {version}; only {VERSION} is supported")
    if point_length != POINT_LENGTH:
        raise WrapError(
            f"blob bytes 1-2: ephemeral key length {point_length}; an uncompressed P-256 point "
            f"is {POINT_LENGTH} bytes"
        )
    if len(blob) < MIN_BLOB_LENGTH:
        raise WrapError(
            f"blob: {len(blob)} bytes is truncated; at least {MIN_BLOB_LENGTH} bytes "
            "(header, ephemeral key, nonce, tag) are needed"
        )
    ephemeral_point = blob[_POINT_OFFSET:_NONCE_OFFSET]
    if ephemeral_point[0] != 0x04:
        raise WrapError(
            f"blob byte {_POINT_OFFSET}: ephemeral key is not an uncompressed point "
            f"(prefix 0x{ephemeral_point[0]:02x}, expected 0x04)"
        )
    try:
        ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ephemeral_point)
    except ValueError as exc:
        raise WrapError(
            f"blob bytes {_POINT_OFFSET}-{_NONCE_OFFSET - 1}: ephemeral key is not a P-256 "
            f"point ({exc})"
        ) from exc
    nonce = blob[_NONCE_OFFSET:_CIPHERTEXT_OFFSET]
    ciphertext = blob[_CIPHERTEXT_OFFSET:]
    shared = recipient_key.exchange(ec.ECDH(), ephemeral)
    key = _derive_key(shared, ephemeral_point, _point(recipient_key.public_key()), context)
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, context)
    except InvalidTag:
        raise WrapError(
            f"blob bytes {_CIPHERTEXT_OFFSET}-{len(blob) - 1}: authentication failed (another "
            "recipient key, another context, or the blob was altered)"
        ) from None
