"""COSE_Sign1: our envelopes, checked by us and independently by pycose."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st
from pycose.algorithms import EdDSA, Es256
from pycose.headers import KID, Algorithm, ContentType
from pycose.keys.curves import P256, Ed25519
from pycose.keys.ec2 import EC2Key
from pycose.keys.okp import OKPKey
from pycose.messages.sign1message import Sign1Message

from consortium_node.identity.certs import ServiceIdentity, self_signed_certificate
from consortium_node.identity.cose import decode_sign1, sig_structure, sign1, verify_sign1
from consortium_node.identity.errors import CoseError, CoseKeyMismatchError, CoseSignatureError
from consortium_node.identity.keys import KeyKind, PrivateKey, generate_key, public_key_der

PAYLOAD = b'{"hello":"world"}'
KID_BYTES = b"\x01" * 32


def _pycose_key_from_certificate(cert: x509.Certificate) -> EC2Key | OKPKey:
    """A pycose verification key built from nothing but the certificate's public key."""
    public = cert.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        numbers = public.public_numbers()
        return EC2Key(crv=P256, x=numbers.x.to_bytes(32, "big"), y=numbers.y.to_bytes(32, "big"))
    assert isinstance(public, ed25519.Ed25519PublicKey)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return OKPKey(crv=Ed25519, x=raw)


@pytest.mark.parametrize(("kind", "alg"), [("p256", -7), ("ed25519", -8)])
def test_round_trip(kind: KeyKind, alg: int) -> None:
    key = generate_key(kind)
    envelope = sign1(key, PAYLOAD, kid=KID_BYTES)
    message = verify_sign1(envelope, key.public_key())
    assert (message.alg, message.kid, message.content_type) == (alg, KID_BYTES, "application/json")
    assert message.payload == PAYLOAD
    assert message.protected == {1: alg, 3: "application/json", 4: KID_BYTES}
    assert decode_sign1(envelope) == message


@pytest.mark.parametrize("kind", ["p256", "ed25519"])
def test_byte_layout(kind: KeyKind) -> None:
    key = generate_key(kind)
    envelope = sign1(key, PAYLOAD, kid=KID_BYTES, content_type="text/plain")
    assert envelope[:2] == b"\xd2\x84"  # tag 18, array of four
    item = cbor2.loads(envelope)
    protected, unprotected, payload, signature = item.value
    assert unprotected == {} and payload == PAYLOAD and len(signature) == 64
    alg = -7 if kind == "p256" else -8
    assert protected == cbor2.dumps({1: alg, 3: "text/plain", 4: KID_BYTES}, canonical=True)
    assert sig_structure(protected, PAYLOAD) == cbor2.dumps(["Signature1", protected, b"", PAYLOAD])


@pytest.mark.parametrize(("kind", "alg"), [("p256", Es256), ("ed25519", EdDSA)])
def test_pycose_verifies_with_only_the_certificate(kind: KeyKind, alg: Any) -> None:
    key = generate_key(kind)
    cert = self_signed_certificate(key, "signer")
    kid = hashlib.sha256(public_key_der(cert.public_key())).digest()  # type: ignore[arg-type]
    envelope = sign1(key, PAYLOAD, kid=kid)
    message = Sign1Message.decode(envelope)
    message.key = _pycose_key_from_certificate(cert)
    assert message.verify_signature()
    assert message.payload == PAYLOAD
    assert message.phdr[Algorithm] is alg
    assert message.phdr[KID] == kid
    assert message.phdr[ContentType] == "application/json"


def test_pycose_verifies_the_service_identity_envelope(service: ServiceIdentity) -> None:
    envelope = sign1(service.key, PAYLOAD, kid=service.kid)
    message = Sign1Message.decode(envelope)
    message.key = _pycose_key_from_certificate(service.certificate)
    assert message.verify_signature()


def test_pycose_rejects_tampered_envelope(service: ServiceIdentity) -> None:
    item = cbor2.loads(sign1(service.key, PAYLOAD, kid=service.kid))
    item.value[2] = b'{"hello":"there"}'
    message = Sign1Message.decode(cbor2.dumps(item))
    message.key = _pycose_key_from_certificate(service.certificate)
    assert not message.verify_signature()


def test_we_verify_a_pycose_envelope() -> None:
    key = generate_key("p256")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    numbers = key.private_numbers()
    cose_key = EC2Key(
        crv=P256,
        x=numbers.public_numbers.x.to_bytes(32, "big"),
        y=numbers.public_numbers.y.to_bytes(32, "big"),
        d=numbers.private_value.to_bytes(32, "big"),
    )
    message = Sign1Message(phdr={Algorithm: Es256, KID: KID_BYTES}, payload=PAYLOAD, key=cose_key)
    decoded = verify_sign1(message.encode(), key.public_key())
    assert (decoded.payload, decoded.kid, decoded.content_type) == (PAYLOAD, KID_BYTES, None)


def test_untagged_array_is_accepted() -> None:
    key = generate_key("p256")
    untagged = cbor2.dumps(cbor2.loads(sign1(key, PAYLOAD, kid=KID_BYTES)).value)
    assert verify_sign1(untagged, key.public_key()).payload == PAYLOAD


_TRUNCATED_LONG_TEXT = """
from consortium_node.identity.cose import decode_sign1
from consortium_node.identity.errors import CoseError

# a text string declared 2**40 bytes long that ends 66,000 bytes in
envelope = b"\\x7b" + (2**40).to_bytes(8, "big") + b"x" * 66_000
refused = 0
for _ in range(50):
    try:
        decode_sign1(envelope)
    except CoseError:
        refused += 1
    churn = [bytes(1000 + i) for i in range(200)]  # allocations that meet a corrupt heap
print("refused", refused)
"""


def test_a_truncated_long_text_string_does_not_corrupt_memory() -> None:
    """cbor2 5.x's C decoder frees such a string twice (a node aborted on a 66 KB POST to
    /gov/proposals, which needs no client certificate). glibc's MALLOC_CHECK_=3 turns the
    corruption into an abort at once, so the decode runs in a child process."""
    child = subprocess.run(
        [sys.executable, "-c", _TRUNCATED_LONG_TEXT],
        env={**os.environ, "MALLOC_CHECK_": "3"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (child.returncode, child.stdout.strip()) == (0, "refused 50"), child.stderr[-2000:]


def _build(
    protected: Any = None,
    unprotected: Any = None,
    payload: Any = PAYLOAD,
    signature: Any = b"\x00" * 64,
    tag: int | None = 18,
) -> bytes:
    if protected is None:
        protected = {1: -7, 3: "application/json", 4: KID_BYTES}
    protected_bytes = cbor2.dumps(protected) if isinstance(protected, dict) else protected
    body = [protected_bytes, {} if unprotected is None else unprotected, payload, signature]
    return bytes(cbor2.dumps(body if tag is None else cbor2.CBORTag(tag, body)))


MALFORMED: list[tuple[str, bytes, str]] = [
    ("empty", b"", "envelope: not valid CBOR"),
    ("huge length", b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff", "envelope: not valid CBOR"),
    ("trailing", _build() + b"\x00", "envelope: 1 trailing bytes"),
    ("other tag", _build(tag=98), "CBOR tag 98 is not COSE_Sign1"),
    ("map", cbor2.dumps({1: 2}), "got dict"),
    ("three items", cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b""])), "got array of 3"),
    ("protected text", _build(protected="x"), "protected header: not a byte string"),
    ("protected array", _build(protected=cbor2.dumps([1])), "does not hold a CBOR map"),
    ("protected junk", _build(protected=b"\x19\x01"), "protected header: not valid CBOR"),
    ("unprotected list", _build(unprotected=[]), "unprotected header: not a CBOR map"),
    ("detached", _build(payload=None), "detached payloads (nil) are not supported"),
    ("payload text", _build(payload="x"), "payload: not a byte string"),
    ("signature int", _build(signature=5), "signature: not a byte string"),
    ("no alg", _build(protected={4: KID_BYTES}), "alg (label 1) is missing"),
    ("empty protected", _build(protected=b""), "alg (label 1) is missing"),
    ("ES384", _build(protected={1: -35}), "alg -35 is not supported"),
    ("alg float", _build(protected={1: -7.0}), "alg -7.0 is not supported"),
    ("alg array", _build(protected={1: [-7]}), "alg [-7] is not supported"),
    ("alg bool", _build(protected={1: True}), "alg True is not supported"),
    ("crit array label", _build(protected={1: -7, 2: [[1]]}), "do not understand: [[1]]"),
    ("kid text", _build(protected={1: -7, 4: "k"}), "kid (label 4) is not a byte string"),
    ("ctype list", _build(protected={1: -7, 3: [1]}), "content type (label 3) is not"),
    ("both buckets", _build(unprotected={4: KID_BYTES}), "appear in both"),
    ("crit unknown", _build(protected={1: -7, 2: [99], 99: 1}), "do not understand: [99]"),
    ("crit empty", _build(protected={1: -7, 2: []}), "crit (label 2) must be a non-empty"),
    ("crit unprotected", _build(unprotected={2: [1]}), "crit (label 2) must be protected"),
]


@pytest.mark.parametrize(
    ("envelope", "message"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_decode_rejects(envelope: bytes, message: str) -> None:
    with pytest.raises(CoseError, match=re.escape(message)):
        decode_sign1(envelope)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(CoseError, match="expected bytes, got str"):
        decode_sign1("d284")  # type: ignore[arg-type]


@pytest.mark.parametrize(("signer", "verifier"), [("p256", "ed25519"), ("ed25519", "p256")])
def test_alg_must_match_key_type(signer: KeyKind, verifier: KeyKind) -> None:
    envelope = sign1(generate_key(signer), PAYLOAD, kid=KID_BYTES)
    with pytest.raises(CoseKeyMismatchError, match="does not match the"):
        verify_sign1(envelope, generate_key(verifier).public_key())


Tamper = Callable[[list[Any]], None]


def _set_payload(body: list[Any]) -> None:
    body[2] = b'{"hello":"there"}'


def _flip_signature(body: list[Any]) -> None:
    body[3] = bytes([body[3][0] ^ 1]) + body[3][1:]


def _other_content_type(body: list[Any]) -> None:
    body[0] = cbor2.dumps({**cbor2.loads(body[0]), 3: "text/plain"}, canonical=True)


def _zero_signature(body: list[Any]) -> None:
    body[3] = b"\x00" * 64


@pytest.mark.parametrize("kind", ["p256", "ed25519"])
@pytest.mark.parametrize(
    "tamper", [_set_payload, _flip_signature, _other_content_type, _zero_signature]
)
def test_bad_signature(kind: KeyKind, tamper: Tamper) -> None:
    key = generate_key(kind)
    item = cbor2.loads(sign1(key, PAYLOAD, kid=KID_BYTES))
    tamper(item.value)
    with pytest.raises(CoseSignatureError, match="does not verify"):
        verify_sign1(cbor2.dumps(item), key.public_key())


@pytest.mark.parametrize("kind", ["p256", "ed25519"])
def test_signature_by_other_key(kind: KeyKind) -> None:
    envelope = sign1(generate_key(kind), PAYLOAD, kid=KID_BYTES)
    with pytest.raises(CoseSignatureError):
        verify_sign1(envelope, generate_key(kind).public_key())


@pytest.mark.parametrize("length", [0, 63, 65, 72])
def test_es256_signature_must_be_64_bytes(length: int) -> None:
    key = generate_key("p256")
    item = cbor2.loads(sign1(key, PAYLOAD, kid=KID_BYTES))
    item.value[3] = b"\x01" * length
    with pytest.raises(CoseSignatureError, match=f"needs 64 bytes \\(r \\|\\| s\\), got {length}"):
        verify_sign1(cbor2.dumps(item), key.public_key())


def test_sign_rejects_unsupported_key() -> None:
    key: Any = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(CoseError, match="only P-256"):
        sign1(key, PAYLOAD, kid=KID_BYTES)


def test_private_key_type_is_p256_or_ed25519() -> None:
    keys: list[PrivateKey] = [generate_key("p256"), generate_key("ed25519")]
    assert [decode_sign1(sign1(k, b"", kid=b"")).alg for k in keys] == [-7, -8]


_VALID = sign1(generate_key("p256"), PAYLOAD, kid=KID_BYTES)


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.tuples(st.integers(0, len(_VALID) - 1), st.integers(1, 255)).map(
            lambda c: _VALID[: c[0]] + bytes([_VALID[c[0]] ^ c[1]]) + _VALID[c[0] + 1 :]
        ),
        st.integers(0, len(_VALID) - 1).map(lambda n: _VALID[:n]),
    )
)
def test_property_decode_fails_only_with_cose_error(data: bytes) -> None:
    """Arbitrary and mutated input never escapes as anything but CoseError."""
    with contextlib.suppress(CoseError):
        decode_sign1(data)
