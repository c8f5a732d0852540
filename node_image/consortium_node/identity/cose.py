"""COSE_Sign1 (RFC 9052) built from cbor2 and cryptography only.

Why by hand: the envelope is a public contract (DESIGN section 4) that any COSE library must
verify with only the service certificate, so we emit the smallest, most conventional form and
keep no COSE library in the enclave image. Tests verify our bytes with pycose independently.

Byte layout of what ``sign1`` emits (CBOR, definite lengths)::

    COSE_Sign1 = #6.18([                      ; tag 18 (d2), array of 4 (84)
        protected:   bstr .cbor {             ; map encoded canonically, keys 1, 3, 4
                         1: alg,              ; -7 ES256 (P-256) or -8 EdDSA (Ed25519)
                         3: content_type,     ; tstr, e.g. "application/json"
                         4: kid,              ; bstr, e.g. SHA-256 of the signer's SPKI DER
                     },
        unprotected: {},                      ; empty map (a0)
        payload:     bstr,                    ; embedded (never detached / nil)
        signature:   bstr,                    ; ES256: r || s, 32 bytes each, big-endian
    ])                                        ; EdDSA: the 64-byte Ed25519 signature

    to-be-signed = CBOR(["Signature1", protected, h'', payload])   ; Sig_structure, no AAD

Decoding accepts the tagged form and, as RFC 9052 section 2 allows when the type is known
from context, the bare untagged array; every other tag is rejected. Only ``alg``, ``crit``,
``content type`` and ``kid`` are read, and only from the protected bucket; a label present in
both buckets, or a ``crit`` label we do not understand, is rejected. Duplicate map keys inside
the protected header are not detected (cbor2 keeps the last one); the signature still covers
the exact protected bytes, so this cannot be used to alter a verified header.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import cbor2
from cbor2 import _types as _pure_types  # the pure-Python decoder's types (_loads_exactly)
from cbor2._decoder import CBORDecoder as _PureDecoder
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from consortium_node.identity.errors import (
    CoseError,
    CoseKeyMismatchError,
    CoseSignatureError,
    KeyMaterialError,
)
from consortium_node.identity.keys import PrivateKey, PublicKey, check_key_type

COSE_SIGN1_TAG = 18
ALG_ES256 = -7
ALG_EDDSA = -8
HEADER_ALG = 1
HEADER_CRIT = 2
HEADER_CONTENT_TYPE = 3
HEADER_KID = 4
_UNDERSTOOD = frozenset({HEADER_ALG, HEADER_CRIT, HEADER_CONTENT_TYPE, HEADER_KID})
_ALG_NAMES = {ALG_ES256: "ES256", ALG_EDDSA: "EdDSA"}
_P256_COORDINATE = 32


@dataclass(frozen=True)
class CoseSign1:
    """A decoded COSE_Sign1; ``verify_sign1`` returns one only after the signature checked out."""

    protected: dict[Any, Any]
    alg: int
    kid: bytes | None
    content_type: str | int | None
    payload: bytes
    protected_bytes: bytes
    signature: bytes


def alg_for_key(key: PrivateKey | PublicKey) -> int:
    """The COSE algorithm a key signs with: ES256 for P-256, EdDSA for Ed25519."""
    try:
        check_key_type(key)
    except KeyMaterialError as exc:
        raise CoseError(f"key: {exc}") from exc
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return ALG_EDDSA
    return ALG_ES256


def sig_structure(protected_bytes: bytes, payload: bytes) -> bytes:
    """The to-be-signed bytes: CBOR ``["Signature1", protected, h'', payload]``."""
    return bytes(cbor2.dumps(["Signature1", protected_bytes, b"", payload]))


def sign1(
    key: PrivateKey, payload: bytes, *, kid: bytes, content_type: str = "application/json"
) -> bytes:
    """Sign ``payload`` into a tagged COSE_Sign1 envelope (layout in the module docstring)."""
    alg = alg_for_key(key)
    protected_bytes = bytes(
        cbor2.dumps(
            {HEADER_ALG: alg, HEADER_CONTENT_TYPE: content_type, HEADER_KID: bytes(kid)},
            canonical=True,
        )
    )
    tbs = sig_structure(protected_bytes, bytes(payload))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(tbs, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(_P256_COORDINATE, "big") + s.to_bytes(_P256_COORDINATE, "big")
    else:
        signature = key.sign(tbs)
    message = [protected_bytes, {}, bytes(payload), signature]
    return bytes(cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, message)))


def _loads_exactly(data: bytes, what: str) -> Any:
    """Decode one CBOR item that must span all of ``data`` (no trailing bytes).

    With cbor2's pure-Python decoder: envelopes come from anyone (a governance document is
    posted without a client certificate), and cbor2 5.x's C decoder corrupts the heap on a
    definite-length text string whose declared length passes the end of the data after
    65,536 to 131,071 bytes (found by tests/integration/test_hostile_input.py: the node
    aborted). An envelope is small; the Python decoder costs microseconds more.
    """
    stream = io.BytesIO(data)
    try:
        value = _PureDecoder(stream).decode()
    except (_pure_types.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise CoseError(f"{what}: not valid CBOR ({exc})") from exc
    if stream.tell() != len(data):
        raise CoseError(
            f"{what}: {len(data) - stream.tell()} trailing bytes at offset {stream.tell()}"
        )
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _header_view(protected: dict[Any, Any], unprotected: dict[Any, Any]) -> None:
    """Enforce the header rules from the module docstring."""
    both = sorted((set(protected) & set(unprotected)), key=repr)
    if both:
        raise CoseError(f"header labels {both} appear in both the protected and unprotected map")
    if HEADER_CRIT in unprotected:
        raise CoseError("unprotected header: crit (label 2) must be protected")
    if HEADER_CRIT in protected:
        crit = protected[HEADER_CRIT]
        if not isinstance(crit, list) or not crit:
            raise CoseError("protected header: crit (label 2) must be a non-empty array")
        unknown = [label for label in crit if not _is_int(label) or label not in _UNDERSTOOD]
        if unknown:
            raise CoseError(f"protected header: crit lists labels we do not understand: {unknown}")


def decode_sign1(envelope: bytes) -> CoseSign1:
    """Parse a COSE_Sign1 without verifying it (e.g. to read ``kid`` and pick the key)."""
    if not isinstance(envelope, bytes | bytearray | memoryview):
        raise CoseError(f"envelope: expected bytes, got {type(envelope).__name__}")
    item = _loads_exactly(bytes(envelope), "envelope")
    if isinstance(item, _pure_types.CBORTag):
        if item.tag != COSE_SIGN1_TAG:
            raise CoseError(f"envelope: CBOR tag {item.tag} is not COSE_Sign1 (tag 18)")
        item = item.value
    if not isinstance(item, list | tuple) or len(item) != 4:
        shape = f"array of {len(item)}" if isinstance(item, list | tuple) else type(item).__name__
        raise CoseError(
            f"envelope: expected [protected, unprotected, payload, signature], got {shape}"
        )
    protected_bytes, unprotected, payload, signature = item
    if not isinstance(protected_bytes, bytes):
        raise CoseError("envelope[0] protected header: not a byte string")
    protected = (
        _loads_exactly(protected_bytes, "envelope[0] protected header") if protected_bytes else {}
    )
    if not isinstance(protected, dict):
        raise CoseError("envelope[0] protected header: the byte string does not hold a CBOR map")
    if not isinstance(unprotected, dict):
        raise CoseError("envelope[1] unprotected header: not a CBOR map")
    if payload is None:
        raise CoseError("envelope[2] payload: detached payloads (nil) are not supported")
    if not isinstance(payload, bytes):
        raise CoseError("envelope[2] payload: not a byte string")
    if not isinstance(signature, bytes):
        raise CoseError("envelope[3] signature: not a byte string")
    _header_view(protected, unprotected)
    alg = protected.get(HEADER_ALG)
    if alg is None:
        raise CoseError("protected header: alg (label 1) is missing")
    if not _is_int(alg) or alg not in _ALG_NAMES:
        raise CoseError(
            f"protected header: alg {alg!r} is not supported (use -7 ES256 or -8 EdDSA)"
        )
    kid = protected.get(HEADER_KID)
    if kid is not None and not isinstance(kid, bytes):
        raise CoseError("protected header: kid (label 4) is not a byte string")
    content_type = protected.get(HEADER_CONTENT_TYPE)
    if content_type is not None and (
        not isinstance(content_type, str) and not _is_int(content_type)
    ):
        raise CoseError("protected header: content type (label 3) is not a text string or uint")
    return CoseSign1(protected, alg, kid, content_type, payload, protected_bytes, signature)


def _check_signature(message: CoseSign1, public_key: PublicKey) -> None:
    tbs = sig_structure(message.protected_bytes, message.payload)
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            if len(message.signature) != 2 * _P256_COORDINATE:
                raise CoseSignatureError(
                    f"signature: ES256 needs 64 bytes (r || s), got {len(message.signature)}"
                )
            r = int.from_bytes(message.signature[:_P256_COORDINATE], "big")
            s = int.from_bytes(message.signature[_P256_COORDINATE:], "big")
            public_key.verify(encode_dss_signature(r, s), tbs, ec.ECDSA(hashes.SHA256()))
        else:
            public_key.verify(message.signature, tbs)
    except InvalidSignature as exc:
        raise CoseSignatureError(
            f"signature: does not verify with the given {_ALG_NAMES[message.alg]} key "
            "(the envelope was altered or signed by another key)"
        ) from exc


def verify_sign1(envelope: bytes, public_key: PublicKey) -> CoseSign1:
    """Decode and verify a COSE_Sign1 with ``public_key``; raise CoseError saying why not.

    Raises CoseKeyMismatchError when ``alg`` is not the key's algorithm and CoseSignatureError
    when the signature does not verify; both are CoseError.
    """
    message = decode_sign1(envelope)
    expected = alg_for_key(public_key)
    if message.alg != expected:
        raise CoseKeyMismatchError(
            f"protected header: alg {_ALG_NAMES[message.alg]} ({message.alg}) does not match the "
            f"{_ALG_NAMES[expected]} verification key"
        )
    _check_signature(message, public_key)
    return message
