"""Entry format: transaction ids, write-set rules, encode/decode and encryption of each kind."""

from __future__ import annotations

import hashlib
import json
import os

import cbor2
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from consortium_node.common.canonical import canonical_json
from consortium_node.ledger.entries import (
    Entry,
    EntryKind,
    SignatureBody,
    TxId,
    decode_entry,
    decrypt_body,
    open_entry,
    open_signature,
    peek_position,
    private_aad,
    private_entry,
    public_entry,
    signature_entry,
    validate_write_set,
)
from consortium_node.ledger.errors import EntryFormatError, WriteSetError


@pytest.fixture
def aead() -> AESGCM:
    return AESGCM(os.urandom(32))


@pytest.mark.parametrize(("text", "term", "index"), [("2.15", 2, 15), ("0.0", 0, 0), ("1.1", 1, 1)])
def test_txid_parses_and_prints(text: str, term: int, index: int) -> None:
    txid = TxId.parse(text)
    assert (txid.term, txid.index) == (term, index)
    assert str(txid) == text


@pytest.mark.parametrize(
    "text", ["", "2", "2.", ".3", "2.3.4", "a.b", "-1.2", "01.2", "2.03", " 2.3", "2.3\n", "2,3"]
)
def test_txid_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not of the form <term>\.<index>"):
        TxId.parse(text)


def test_txid_rejects_bad_numbers() -> None:
    with pytest.raises(ValueError, match=r"TxId\.index"):
        TxId(1, -1)
    with pytest.raises(ValueError, match=r"TxId\.term"):
        TxId(2**64, 1)
    assert TxId(1, 9) < TxId(2, 1)


def test_public_entry_round_trip() -> None:
    ws = {"public:members": {"m1": {"cert": "PEM"}, "m0": None}}
    entry = public_entry(3, 7, ws)
    payload = entry.encode()
    assert payload == cbor2.dumps([1, 3, 7, 1, entry.write_set_digest, entry.body], canonical=True)
    decoded = decode_entry(payload)
    assert decoded == entry
    assert decoded.body == canonical_json({"salt": "", "writes": ws})
    assert decoded.write_set_digest == hashlib.sha256(decoded.body).digest()
    assert open_entry(AESGCM(os.urandom(32)), decoded) == ("", ws)
    assert peek_position(payload) == (3, 7)


def test_private_entry_round_trip_and_salted_digest(aead: AESGCM) -> None:
    ws = {"app": {"balance": 100, "gone": None}}
    entry = private_entry(aead, 2, 300, ws)
    decoded = decode_entry(entry.encode())
    assert decoded == entry
    salt, writes = open_entry(aead, decoded)
    assert writes == ws
    assert len(salt) == 32 and int(salt, 16) >= 0
    plaintext = canonical_json({"salt": salt, "writes": ws})
    assert decoded.write_set_digest == hashlib.sha256(plaintext).digest()
    # the digest of the unsalted write set is not what is published
    assert (
        decoded.write_set_digest
        != hashlib.sha256(canonical_json({"salt": "", "writes": ws})).digest()
    )
    # two writes of the same value publish different digests
    assert private_entry(aead, 2, 300, ws).write_set_digest != entry.write_set_digest


def test_private_body_is_nonce_then_aes_gcm_with_positional_aad(aead: AESGCM) -> None:
    entry = private_entry(aead, 2, 5, {"app": {"k": "secret-value"}}, salt="00" * 16)
    nonce, ciphertext = entry.body[:12], entry.body[12:]
    plaintext = aead.decrypt(
        nonce, ciphertext, b"CLE1" + (2).to_bytes(8, "big") + (5).to_bytes(8, "big") + b"\x02"
    )
    assert json.loads(plaintext) == {"salt": "00" * 16, "writes": {"app": {"k": "secret-value"}}}
    assert (
        private_aad(2, 5, EntryKind.PRIVATE)
        == b"CLE1" + bytes(7) + b"\x02" + bytes(7) + b"\x05\x02"
    )
    assert b"secret-value" not in entry.encode()


def test_wrong_secret_or_moved_ciphertext_does_not_decrypt(aead: AESGCM) -> None:
    entry = private_entry(aead, 1, 4, {"app": {"k": "v"}})
    with pytest.raises(EntryFormatError, match="does not decrypt"):
        decrypt_body(AESGCM(os.urandom(32)), entry)
    moved = Entry(1, 5, entry.kind, entry.write_set_digest, entry.body)
    with pytest.raises(EntryFormatError, match="does not decrypt"):
        decrypt_body(aead, moved)


def test_signature_entry_round_trip() -> None:
    body = SignatureBody("ab" * 32, b"\x01" * 32, 9, b"\x30\x02", "-----BEGIN CERTIFICATE-----", 4)
    entry = signature_entry(4, 10, body)
    decoded = decode_entry(entry.encode())
    assert decoded.kind is EntryKind.SIGNATURE
    assert open_signature(decoded) == body
    assert json.loads(decoded.body) == {
        "node_id": "ab" * 32,
        "root": "01" * 32,
        "tree_size": 9,
        "signature": "3002",
        "node_certificate": "-----BEGIN CERTIFICATE-----",
        "term": 4,
    }


def test_leaf_is_sha256_of_canonical_components(aead: AESGCM) -> None:
    for entry in (
        public_entry(1, 1, {"public:t": {"k": 1}}),
        private_entry(aead, 12, 123456, {"app": {"k": [1, "x"]}}),
    ):
        components = entry.leaf_components()
        assert components == {
            "txid": f"{entry.term}.{entry.index}",
            "kind": int(entry.kind),
            "write_set_sha256": entry.write_set_digest.hex(),
            "body_sha256": hashlib.sha256(entry.body).hexdigest(),
        }
        assert entry.leaf() == hashlib.sha256(canonical_json(components)).digest()


@pytest.mark.parametrize(
    ("ws", "kind", "field"),
    [
        ({"app": {"k": 1}}, EntryKind.PUBLIC, "writes.app"),
        ({"public:gov": {"k": 1}}, EntryKind.PRIVATE, "writes.public:gov"),
        ([], EntryKind.PRIVATE, "writes"),
        ({"": {}}, EntryKind.PRIVATE, "writes"),
        ({"app": ["k"]}, EntryKind.PRIVATE, "writes.app"),
        ({"app": {1: "v"}}, EntryKind.PRIVATE, "writes.app"),
        ({"app": {"k": 1}}, EntryKind.SIGNATURE, "kind"),
    ],
)
def test_write_set_validation(ws: object, kind: EntryKind, field: str) -> None:
    with pytest.raises(WriteSetError) as caught:
        validate_write_set(ws, kind)
    assert caught.value.field == field


def test_floats_are_rejected_when_encoding(aead: AESGCM) -> None:
    with pytest.raises(WriteSetError, match="floats"):
        private_entry(aead, 1, 1, {"app": {"k": 1.5}})


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x9f\x01", "not CBOR"),
        (cbor2.dumps([1, 1, 1, 1, b"x" * 32, b""]) + b"junk", "4 bytes follow"),
        (cbor2.dumps([1, 2, 3]), "array of 6"),
        (cbor2.dumps([2, 1, 1, 1, b"x" * 32, b""]), "version"),
        (cbor2.dumps([1, 1, 1, 9, b"x" * 32, b""]), "kind"),
        (cbor2.dumps([1, 1, 1, 1, b"x" * 31, b""]), "32-byte"),
        (cbor2.dumps([1, -1, 1, 1, b"x" * 32, b""]), "term"),
        (cbor2.dumps([1, 1, 1, 1, b"x" * 32, "text"]), "body"),
    ],
)
def test_decode_rejects_malformed_payloads(payload: bytes, reason: str) -> None:
    with pytest.raises(EntryFormatError, match=reason):
        decode_entry(payload)


def test_tampered_public_body_fails_digest_check() -> None:
    entry = public_entry(1, 1, {"public:t": {"k": 1}})
    forged = Entry(1, 1, entry.kind, entry.write_set_digest, entry.body.replace(b"1", b"2"))
    with pytest.raises(EntryFormatError, match="write_set_digest"):
        open_entry(AESGCM(os.urandom(32)), forged)


def test_peek_position_handles_large_integers() -> None:
    entry = public_entry(2**40, 2**33 + 5, {"public:t": {}})
    assert peek_position(entry.encode()) == (2**40, 2**33 + 5)
    with pytest.raises(EntryFormatError):
        peek_position(b"\x85\x01\x01")


# --- the hand-written encoders equal the library's canonical encoders ------------------------


_U64 = st.integers(min_value=0, max_value=2**64 - 1)
_EDGES = st.sampled_from([0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1])


@given(
    fmt=st.sampled_from([1, 2]),
    term=_U64 | _EDGES,
    index=_U64 | _EDGES,
    kind=st.sampled_from(list(EntryKind)),
    digest=st.binary(min_size=0, max_size=40),
    body=st.binary(min_size=0, max_size=300) | st.sampled_from([b"x" * 65536, b"y" * 70000]),
)
def test_entry_encode_is_cbor2_canonical(
    fmt: int, term: int, index: int, kind: EntryKind, digest: bytes, body: bytes
) -> None:
    entry = Entry(term, index, kind, digest, body, fmt)
    expected = cbor2.dumps([fmt, term, index, int(kind), digest, body], canonical=True)
    assert entry.encode() == expected


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(value=_JSON)
def test_canonical_json_is_sorted_compact_utf8_json(value: object) -> None:
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == expected.encode("utf-8")
