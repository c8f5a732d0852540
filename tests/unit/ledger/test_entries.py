"""Entry format: transaction ids, write-set rules, encode/decode and encryption of each kind."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

import cbor2
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium_node.common.canonical import canonical_json
from consortium_node.ledger.entries import (
    NONCE_SIZE,
    SALT_BYTES,
    CheckedWriteSets,
    Entry,
    EntryKind,
    SignatureBody,
    TxId,
    _decode_cbor,
    _decode_shortest,
    _json_of,
    decode_entry,
    decrypt_body,
    open_entry,
    open_signature,
    parse_body,
    peek_position,
    private_aad,
    private_entries,
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


T = TypeVar("T")


# --- the hand-written decoder takes exactly what the library's decoder takes, canonically -----


def _reference_decode(payload: bytes, canonical: bool) -> Entry:
    """The decoder before the hand-written fast path: cbor2, then the canonical comparison."""
    entry = _decode_cbor(payload)
    if canonical and entry.encode() != payload:
        raise EntryFormatError("payload is not the canonical CBOR encoding of its entry")
    return entry


def _outcome(decode: Callable[[], T]) -> T | str:
    try:
        return decode()
    except EntryFormatError:
        return "refused"


@settings(max_examples=500)
@given(
    fmt=st.sampled_from([1, 2]),
    term=_U64 | _EDGES,
    index=_U64 | _EDGES,
    kind=st.sampled_from([1, 2, 3, 0, 4, 24]),
    digest=st.binary(min_size=31, max_size=33),
    body=st.binary(min_size=0, max_size=80),
    edit=st.sampled_from(["none", "flip", "truncate", "append", "insert", "cut"]),
    where=st.integers(min_value=0, max_value=10**6),
    byte=st.integers(min_value=0, max_value=255),
    canonical=st.booleans(),
)
def test_decode_entry_agrees_with_cbor2_on_any_bytes(
    fmt: int,
    term: int,
    index: int,
    kind: int,
    digest: bytes,
    body: bytes,
    edit: str,
    where: int,
    byte: int,
    canonical: bool,
) -> None:
    payload = bytearray(cbor2.dumps([fmt, term, index, kind, digest, body], canonical=True))
    at = where % len(payload)
    if edit == "flip":
        payload[at] ^= byte or 1
    elif edit == "truncate":
        del payload[at:]
    elif edit == "append":
        payload.append(byte)
    elif edit == "insert":
        payload.insert(at, byte)
    elif edit == "cut":
        del payload[at]
    data = bytes(payload)
    expected = _outcome(lambda: _reference_decode(data, canonical))
    assert _outcome(lambda: decode_entry(data, canonical=canonical)) == expected
    fast = _outcome(lambda: _decode_shortest(data))
    if fast is not None:  # the fast path takes only canonical payloads of valid entries
        assert _outcome(lambda: _reference_decode(data, canonical=True)) == fast


@pytest.mark.parametrize(
    "items",
    [
        [1, 1, 1, 1, b"x" * 32, b""],
        [1, 2**64 - 1, 2**32, 3, b"x" * 32, b"y" * 300],
        [2, 1, 5, 2, b"x" * 32, (2).to_bytes(4, "big") + b"n" * 28],
    ],
)
def test_non_shortest_heads_decode_but_are_not_canonical(items: list[Any]) -> None:
    canonical = cbor2.dumps(items, canonical=True)
    entry = decode_entry(canonical, canonical=True)
    assert _decode_shortest(canonical) == entry
    stretched = b"\x86\x18" + bytes([items[0]]) + canonical[2:]  # format as a 1-byte head
    assert _decode_shortest(stretched) is None
    assert decode_entry(stretched) == entry  # any encoding decodes, as before
    with pytest.raises(EntryFormatError, match="not the canonical CBOR"):
        decode_entry(stretched, canonical=True)


@pytest.mark.parametrize(
    "data",
    [
        b'{"salt":"","writes":{"app":{"k":"\xc3\xa9"}}}',
        '{"salt":"","writes":{}}'.encode("utf-16"),
        '{"salt":"","writes":{}}'.encode("utf-16-le"),
        b"\xef\xbb\xbf{}",
        b'{"a":1} x',
        b"\xff{}",
        b"[1,2]",
        # What orjson would read otherwise than json: json decides (the same values, types).
        b'{"salt":"","writes":{"app":{"k":18446744073709551616}}}',  # 2**64: a float to orjson
        b'{"salt":"","writes":{"app":{"k":-9223372036854775809}}}',  # -2**63 - 1
        b'{"salt":"","writes":{"app":{"k":1180591620717411303424}}}',  # 2**70
        b'{"a":18446744073709551615,"b":-9223372036854775808}',  # 64 bits: orjson's, as ints
        b'{"a":"\\ud800"}',  # an escaped lone surrogate: orjson refuses, json keeps it
        b'{"a":"\\udc00\\ud800"}',
        b"[NaN]",
        b"[-Infinity]",
        b"[1e400]",
        b"[1.5,-0.0,1E2]",
        b'{"a":1,"a":2}',
        b'{"a":"\\u0000\\n\\u00e9"}',
        b'{"salt":"1234567890123456789012345678abcd","writes":{}}',  # 19 digits in a string
        b" [ 1 , 2 ] ",
        b"",
        b"[" * 2000 + b"]" * 2000,  # too deep for orjson: json decides (RecursionError)
    ],
)
def test_body_json_is_read_as_json_loads_reads_it(data: bytes) -> None:
    expected = _outcome_json(lambda: json.loads(data))
    assert _outcome_json(lambda: _json_of(data)) == expected


@given(value=st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-(2**80), 2**80) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
))  # fmt: skip
def test_any_canonical_json_is_read_as_json_loads_reads_it(value: object) -> None:
    data = canonical_json({"salt": os.urandom(SALT_BYTES).hex(), "writes": value})
    assert _outcome_json(lambda: _json_of(data)) == _outcome_json(lambda: json.loads(data))


@given(
    writes=st.recursive(
        st.none() | st.integers() | st.sampled_from(["", "app", "public:gov", "public:"]),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(["", "app", "public:gov", "public:", "k"]), inner)
        ),
        max_leaves=12,
    ),
    kind=st.sampled_from([EntryKind.PUBLIC, EntryKind.PRIVATE]),
)
def test_a_body_is_refused_exactly_when_its_write_set_is_invalid(
    writes: object, kind: EntryKind
) -> None:
    body = canonical_json({"salt": "", "writes": writes})
    writes = json.loads(body)["writes"]  # as decoded: its keys sorted
    try:
        validate_write_set(writes, kind)
    except WriteSetError as exc:
        with pytest.raises(EntryFormatError, match=re.escape(f"body {exc}")):
            parse_body(body, kind)
    else:
        assert parse_body(body, kind) == ("", writes)


def _outcome_json(load: Callable[[], object]) -> object:
    """The value with every type spelled out (a float is not an int equal to it), or the
    exception's type."""
    try:
        return repr(load())
    except (ValueError, RecursionError) as exc:
        return type(exc).__name__


# --- a batch of private entries is byte for byte what one entry at a time gives -------------

_KEY = st.text(min_size=1, max_size=8)
_WRITE_SETS = st.lists(
    st.dictionaries(
        st.sampled_from(["app", "other"]),
        st.dictionaries(_KEY, _JSON, min_size=1, max_size=3),
        min_size=1,
        max_size=2,
    ),
    min_size=1,
    max_size=5,
)


@given(
    write_sets=_WRITE_SETS,
    term=_U64 | _EDGES,
    first=st.integers(min_value=0, max_value=2**32),
    version=st.sampled_from([1, 2, 2**32 - 1]),
    checked=st.booleans(),
    data=st.data(),
)
def test_private_entries_are_private_entry_with_one_call_for_randomness(
    write_sets: list[dict[str, dict[str, Any]]],
    term: int,
    first: int,
    version: int,
    checked: bool,
    data: st.DataObject,
) -> None:
    aead = AESGCM(bytes(range(32)))
    step = SALT_BYTES + NONCE_SIZE
    randomness = data.draw(
        st.binary(min_size=step * len(write_sets), max_size=step * len(write_sets))
    )
    given_sets = CheckedWriteSets(write_sets) if checked else write_sets
    batch = private_entries(
        aead, term, first, given_sets, secret_version=version, randomness=randomness
    )
    one_by_one = [
        private_entry(
            aead,
            term,
            first + n,
            ws,
            salt=randomness[n * step : n * step + SALT_BYTES].hex(),
            nonce=randomness[n * step + SALT_BYTES : (n + 1) * step],
            secret_version=version,
        )
        for n, ws in enumerate(write_sets)
    ]
    assert batch == one_by_one


def test_private_entries_check_unchecked_write_sets_and_their_randomness(aead: AESGCM) -> None:
    with pytest.raises(WriteSetError, match="public"):
        private_entries(aead, 1, 1, [{"app": {"k": 1}}, {"public:t": {"k": 1}}])
    with pytest.raises(WriteSetError, match="float"):
        private_entries(aead, 1, 1, [{"app": {"k": 1.5}}])
    with pytest.raises(ValueError, match="28 bytes per write set"):
        private_entries(aead, 1, 1, [{"app": {"k": 1}}], randomness=bytes(27))
    first, second = private_entries(aead, 1, 1, [{"app": {"k": 1}}] * 2)
    assert first.body[:12] != second.body[:12]  # fresh nonces
    assert first.write_set_digest != second.write_set_digest  # fresh salts
