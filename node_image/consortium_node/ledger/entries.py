"""Ledger entries: transaction ids, write sets, and the byte format of one entry.

Why this shape: an entry must be replayable by itself (Raft will ship these exact payloads to
followers), its leaf must commit to everything stored for it (so a receipt proves the stored
bytes, ciphertext included), and private values must not be guessable from anything public.
The byte formats are documented in ``consortium_node.ledger`` (package docstring); this module
is their single implementation. Everything here is pure: no files, no clocks.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple, TypeAlias

import cbor2
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consortium_node.common.canonical import CanonicalJSONError, canonical_json, canonical_text
from consortium_node.ledger.errors import EntryFormatError, WriteSetError

FORMAT_VERSION = 1  # every entry kind; a PRIVATE entry in this format uses secret version 1
FORMAT_VERSIONED = 2  # PRIVATE entries only: the body names the secret version (>= 2)
AAD_MAGIC = b"CLE1"
AAD_MAGIC_VERSIONED = b"CLE2"
SECRET_VERSION_SIZE = 4
TAG_SIZE = 16
NONCE_SIZE = 12
SECRET_SIZE = 32
DIGEST_SIZE = 32
SALT_BYTES = 16
PUBLIC_PREFIX = "public:"
_U64_MAX = 2**64 - 1
_U32_MAX = 2**32 - 1

# A JSON value (null, bool, int, str, list, object; no floats). Typed as Any on purpose: a
# precise recursive alias makes ordinary ``dict[str, int]`` write sets fail type checking
# (dict is invariant); values are checked at runtime by canonical_json when encoded.
JSON: TypeAlias = Any
WriteSet: TypeAlias = "dict[str, dict[str, JSON]]"  # table → key → value (None deletes)


class EntryKind(IntEnum):
    """What an entry carries; the value is stored in the entry and in its leaf."""

    PUBLIC = 1  # governance: write set in clear text
    PRIVATE = 2  # application: write set encrypted with the ledger secret
    SIGNATURE = 3  # a node's signature over the Merkle root of everything before it


_TXID = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")


class _TxIdFields(NamedTuple):
    term: int
    index: int  # type: ignore[assignment]  # the field hides tuple.index(), unused here


class TxId(_TxIdFields):
    """A transaction id: the Raft term it was appended in and its log index.

    A tuple (ordered by term, then index): cheap to make, once per transaction on every node,
    and untracked by the cyclic garbage collector."""

    __slots__ = ()

    def __new__(cls, term: int, index: int) -> TxId:
        if not (type(term) is int and type(index) is int and 0 <= term <= _U64_MAX >= index >= 0):
            for name, value in (("term", term), ("index", index)):
                if type(value) is not int or not 0 <= value <= _U64_MAX:
                    raise ValueError(f"TxId.{name} must be an integer in [0, 2**64), got {value!r}")
        return tuple.__new__(cls, (term, index))

    def __str__(self) -> str:
        return f"{self.term}.{self.index}"

    @classmethod
    def parse(cls, text: str) -> TxId:
        """Parse ``"<term>.<index>"`` (decimal, no sign, no leading zeros)."""
        match = _TXID.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(
                f"transaction id {text!r} is not of the form <term>.<index> "
                "(two decimal integers without leading zeros, e.g. 2.15)"
            )
        return cls(int(match.group(1)), int(match.group(2)))


def validate_write_set(write_set: object, kind: EntryKind) -> None:
    """Check the two-level shape and the table rule; values are checked when encoded.

    Tables named ``public:...`` may only be written by PUBLIC entries, all others only by
    PRIVATE entries, so the visibility of a key never depends on who wrote it.
    """
    if kind not in (EntryKind.PUBLIC, EntryKind.PRIVATE):
        raise WriteSetError("kind", f"{kind!r} entries carry no write set")
    if not isinstance(write_set, dict):
        raise WriteSetError(
            "writes", f"must be an object of tables, got {type(write_set).__name__}"
        )
    for table, writes in write_set.items():
        if not isinstance(table, str) or not table:
            raise WriteSetError("writes", f"table name {table!r} is not a non-empty string")
        is_public = table.startswith(PUBLIC_PREFIX)
        if kind is EntryKind.PUBLIC and not is_public:
            raise WriteSetError(
                f"writes.{table}", f"a public entry may only write {PUBLIC_PREFIX}* tables"
            )
        if kind is EntryKind.PRIVATE and is_public:
            raise WriteSetError(
                f"writes.{table}", f"a private entry may not write {PUBLIC_PREFIX}* tables"
            )
        if not isinstance(writes, dict):
            raise WriteSetError(f"writes.{table}", "must be an object of key → value")
        for key in writes:
            if not isinstance(key, str):
                raise WriteSetError(f"writes.{table}", f"key {key!r} is not a string")


def _body_json(salt: str, write_set: WriteSet) -> bytes:
    try:
        return canonical_json({"salt": salt, "writes": write_set})
    except CanonicalJSONError as exc:
        raise WriteSetError("writes", str(exc)) from exc


def private_aad(term: int, index: int, kind: EntryKind, secret_version: int = 1) -> bytes:
    """AES-GCM associated data: b"CLE1" || u64be term || u64be index || u8 kind for secret
    version 1; b"CLE2" || u64be term || u64be index || u8 kind || u32be secret_version after."""
    if secret_version == 1:
        return AAD_MAGIC + struct.pack(">QQB", term, index, kind)
    return AAD_MAGIC_VERSIONED + struct.pack(">QQBI", term, index, kind, secret_version)


def check_secret_version(version: object) -> int:
    """A ledger secret version: an integer in [1, 2**32)."""
    if type(version) is not int or not 1 <= version <= _U32_MAX:
        raise EntryFormatError(f"ledger secret version {version!r} is not an integer in [1, 2**32)")
    return version


class Entry(NamedTuple):
    """One decoded ledger entry, exactly the fields of its CBOR payload (``format`` is its
    first element: 1, or 2 for a PRIVATE entry encrypted with secret version >= 2). A tuple:
    one is made per transaction on every node."""

    term: int
    index: int  # type: ignore[assignment]  # the field hides tuple.index(), unused here
    kind: EntryKind
    write_set_digest: bytes
    body: bytes
    format: int = FORMAT_VERSION

    @property
    def secret_version(self) -> int:
        """The ledger secret version a PRIVATE entry is encrypted with (1 in format 1)."""
        if self.format == FORMAT_VERSION:
            return 1
        return int.from_bytes(self.body[:SECRET_VERSION_SIZE], "big")

    @property
    def txid(self) -> TxId:
        return TxId(self.term, self.index)

    def leaf_components(self) -> dict[str, Any]:
        """The JSON object whose canonical form hashes to this entry's leaf."""
        return {
            "txid": f"{self.term}.{self.index}",
            "kind": int(self.kind),
            "write_set_sha256": self.write_set_digest.hex(),
            "body_sha256": hashlib.sha256(self.body).hexdigest(),
        }

    def leaf(self) -> bytes:
        """The 32-byte leaf: SHA-256(canonical_json(leaf_components)).

        Written out by hand because it runs once per append: every value is a decimal or hex
        string or an integer, so these are exactly the canonical JSON bytes (keys sorted).
        """
        text = (
            f'{{"body_sha256":"{hashlib.sha256(self.body).hexdigest()}",'
            f'"kind":{int(self.kind)},"txid":"{self.term}.{self.index}",'
            f'"write_set_sha256":"{self.write_set_digest.hex()}"}}'
        )
        return hashlib.sha256(text.encode("ascii")).digest()

    def encode(self) -> bytes:
        """The payload: canonical CBOR [format, term, index, kind, write_set_digest, body].

        Written out by hand (it runs once per append): an array of 6 (0x86), then four
        unsigned integers and two byte strings, each head in its shortest form (RFC 8949
        section 4.2.1), exactly the bytes ``cbor2.dumps(..., canonical=True)`` gives.
        """
        fmt, kind, digest, body = self.format, self.kind, self.write_set_digest, self.body
        return b"".join(
            (
                bytes((0x86, fmt)) if fmt < 24 else b"\x86" + cbor_head(0, fmt),
                cbor_head(0, self.term),
                cbor_head(0, self.index),
                bytes((kind,)),  # 1, 2 or 3: a one-byte head
                _DIGEST_HEAD if len(digest) == DIGEST_SIZE else cbor_head(2, len(digest)),
                digest,
                cbor_head(2, len(body)),
                body,
            )
        )


_DIGEST_HEAD = b"\x58\x20"  # a byte string of 32: major type 2, one-byte length 32


def cbor_head(major: int, value: int) -> bytes:
    """A CBOR head: major type ``major`` with argument ``value`` (0 <= value < 2**64) in
    the shortest encoding."""
    top = major << 5
    if value < 24:
        return bytes((top | value,))
    if value < 0x100:
        return bytes((top | 24, value))
    if value < 0x10000:
        return bytes((top | 25,)) + value.to_bytes(2, "big")
    if value < 0x100000000:
        return bytes((top | 26,)) + value.to_bytes(4, "big")
    return bytes((top | 27,)) + value.to_bytes(8, "big")


def leaf_of(components: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical JSON of the leaf components."""
    return hashlib.sha256(canonical_json(dict(components))).digest()


def public_entry(term: int, index: int, write_set: WriteSet) -> Entry:
    """A clear-text governance entry; body = canonical_json({"salt": "", "writes": ws})."""
    validate_write_set(write_set, EntryKind.PUBLIC)
    body = _body_json("", write_set)
    return Entry(term, index, EntryKind.PUBLIC, hashlib.sha256(body).digest(), body)


class CheckedWriteSets(tuple[dict[str, dict[str, Any]], ...]):
    """PRIVATE write sets whose maker has checked them (``validate_write_set`` holds and every
    value is plain JSON: what ``canonical_json`` takes without error) and hands them over: the
    ledger keeps them as they are, without checking or copying them again. The API builds
    them from a request it has just validated (``server.validation.parse_transactions``)."""

    __slots__ = ()


def private_entry(
    aead: AESGCM,
    term: int,
    index: int,
    write_set: WriteSet,
    *,
    salt: str | None = None,
    nonce: bytes | None = None,
    secret_version: int = 1,
) -> Entry:
    """An application entry encrypted with ``aead``, the secret of ``secret_version``.

    Version 1 is written in format 1 (byte for byte what nodes wrote before rotation existed),
    later versions in format 2 with the version leading the body; the digest is over the
    salted plaintext.
    """
    validate_write_set(write_set, EntryKind.PRIVATE)
    check_secret_version(secret_version)
    plaintext = _body_json(secrets.token_hex(SALT_BYTES) if salt is None else salt, write_set)
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    return _sealed(aead, term, index, plaintext, nonce, secret_version=secret_version)


def private_entries(
    aead: AESGCM,
    term: int,
    first: int,
    write_sets: Sequence[WriteSet],
    *,
    secret_version: int = 1,
    randomness: bytes | None = None,
) -> list[Entry]:
    """``private_entry`` for each write set, at indexes ``first, first + 1, ...``: the same
    bytes, with the salts and nonces of the whole batch read from the OS in one call
    (``randomness``: that call's bytes, SALT_BYTES + NONCE_SIZE per write set, for tests).
    ``CheckedWriteSets`` are encoded without being checked again; others are checked each."""
    check_secret_version(secret_version)
    step = SALT_BYTES + NONCE_SIZE
    if randomness is None:
        randomness = os.urandom(step * len(write_sets))
    elif len(randomness) != step * len(write_sets):
        raise ValueError(f"randomness must be {step} bytes per write set")
    checked = isinstance(write_sets, CheckedWriteSets)
    entries = []
    for number, write_set in enumerate(write_sets):
        offset = number * step
        salt = randomness[offset : offset + SALT_BYTES].hex()
        if checked:  # canonical: "salt" sorts before "writes", and hex needs no escaping
            text = f'{{"salt":"{salt}","writes":{canonical_text(write_set)}}}'
            plaintext = text.encode("utf-8")
        else:
            validate_write_set(write_set, EntryKind.PRIVATE)
            plaintext = _body_json(salt, write_set)
        nonce = randomness[offset + SALT_BYTES : offset + step]
        entry = _sealed(aead, term, first + number, plaintext, nonce, secret_version=secret_version)
        entries.append(entry)
    return entries


def _sealed(
    aead: AESGCM, term: int, index: int, plaintext: bytes, nonce: bytes, *, secret_version: int
) -> Entry:
    aad = private_aad(term, index, EntryKind.PRIVATE, secret_version)
    sealed = nonce + aead.encrypt(nonce, plaintext, aad)
    digest = hashlib.sha256(plaintext).digest()
    if secret_version == 1:
        return Entry(term, index, EntryKind.PRIVATE, digest, sealed)
    body = secret_version.to_bytes(SECRET_VERSION_SIZE, "big") + sealed
    return Entry(term, index, EntryKind.PRIVATE, digest, body, FORMAT_VERSIONED)


def decrypt_body(aead: AESGCM, entry: Entry) -> bytes:
    """Plaintext of a PRIVATE entry, ``aead`` being the secret of ``entry.secret_version``;
    EntryFormatError if the secret or the bytes are wrong. (Runs on every follower for every
    private entry: the version is read once.)"""
    if entry.format == FORMAT_VERSION:
        version, sealed = 1, entry.body
    else:
        version, sealed = entry.secret_version, entry.body[SECRET_VERSION_SIZE:]
    if len(sealed) < NONCE_SIZE + TAG_SIZE:
        raise EntryFormatError(f"private body is {len(entry.body)} bytes, too short for AES-GCM")
    aad = private_aad(entry.term, entry.index, entry.kind, version)
    try:
        return aead.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], aad)
    except InvalidTag as exc:
        raise EntryFormatError(
            f"private body does not decrypt with ledger secret version {version} "
            "(wrong secret, or the bytes were altered)"
        ) from exc


_decode_text = json.JSONDecoder().decode
# 19 digits in a row: perhaps an integer outside orjson's 64 bits (it would give a float).
# Found by two C passes (digits to b"#", the rest to b" "; then a search): a regular
# expression's search costs four times orjson's decoding.
_DIGIT_RUNS = bytes(ord("#") if c in b"0123456789" else ord(" ") for c in range(256))
_LONG_RUN = b"#" * 19


def _json_of(data: bytes) -> Any:
    """``json.loads(data)``, the same values, in a third of its time for what nodes write.

    orjson decodes a body (every follower decodes every entry's body: a third of checking a
    leader's entry was ``json``'s decoder) unless it might decode it otherwise than ``json``:
    it refuses what is not strict UTF-8 JSON (a byte order mark, UTF-16, NaN, an escaped lone
    surrogate, a number out of a double's range) and reads an integer outside 64 bits as a
    float, so a refusal, or a run of 19 digits anywhere (a salt's hex may hold one, rarely),
    goes to ``json``: UTF-8 text straight to its decoder, anything else through
    ``json.loads``, which also detects UTF-16/32 and a byte order mark."""
    if _LONG_RUN not in data.translate(_DIGIT_RUNS):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    try:
        return _decode_text(data.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError: json.loads decides
        return json.loads(data)


def parse_body(plaintext: bytes, kind: EntryKind) -> tuple[str, WriteSet]:
    """Decode a PUBLIC or PRIVATE plaintext body into ``(salt, writes)``, re-validated."""
    try:
        obj = _json_of(plaintext)
    except ValueError as exc:
        raise EntryFormatError(f"body is not JSON ({exc})") from exc
    if type(obj) is not dict or len(obj) != 2 or "salt" not in obj or "writes" not in obj:
        raise EntryFormatError('body must be an object with exactly "salt" and "writes"')
    salt, writes = obj["salt"], obj["writes"]
    if type(salt) is not str:
        raise EntryFormatError("body salt is not a string")
    if not _decoded_write_set_ok(writes, kind is EntryKind.PUBLIC):
        try:
            validate_write_set(writes, kind)
        except WriteSetError as exc:
            raise EntryFormatError(f"body {exc}") from exc
    return salt, writes


def _decoded_write_set_ok(writes: object, public: bool) -> bool:
    """``validate_write_set`` of a decoded JSON write set, the common case in one pass: every
    JSON object's keys are strings, so only the tables are looked at (False: the full check
    names what is wrong)."""
    return type(writes) is dict and all(
        type(rows) is dict and table != "" and table.startswith(PUBLIC_PREFIX) is public
        for table, rows in writes.items()
    )


def open_entry(aead: AESGCM | None, entry: Entry) -> tuple[str, WriteSet]:
    """Salt and write set of a PUBLIC or PRIVATE entry, with its digest checked (``aead``: the
    secret of a PRIVATE entry's version; unused for PUBLIC)."""
    if entry.kind is EntryKind.PRIVATE:
        if aead is None:
            raise EntryFormatError("a private entry needs its ledger secret to open")
        plaintext = decrypt_body(aead, entry)
    else:
        plaintext = entry.body
    if hashlib.sha256(plaintext).digest() != entry.write_set_digest:
        raise EntryFormatError("write_set_digest is not the SHA-256 of the plaintext body")
    return parse_body(plaintext, entry.kind)


def read_uint(payload: bytes, pos: int) -> tuple[int, int]:
    """A CBOR unsigned integer (major type 0) at ``pos``: ``(value, next_pos)``."""
    if pos >= len(payload):
        raise EntryFormatError("payload ends inside the entry header")
    initial = payload[pos]
    if initial >> 5 != 0:
        raise EntryFormatError(f"expected an unsigned integer at payload byte {pos}")
    info = initial & 0x1F
    if info < 24:
        return info, pos + 1
    width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    if width is None or pos + 1 + width > len(payload):
        raise EntryFormatError(f"bad integer encoding at payload byte {pos}")
    return int.from_bytes(payload[pos + 1 : pos + 1 + width], "big"), pos + 1 + width


def peek_position(payload: bytes) -> tuple[int, int]:
    """``(term, index)`` of a payload from its CBOR header alone (no full decode)."""
    if payload[:2] not in (b"\x86\x01", b"\x86\x02"):
        raise EntryFormatError("payload is not a CBOR array of 6 starting with format 1 or 2")
    term, pos = read_uint(payload, 2)
    index, _ = read_uint(payload, pos)
    return term, index


def position_label(payload: bytes) -> str:
    """``term.index`` of a payload for error messages, or ``?`` if its header is unreadable."""
    try:
        term, index = peek_position(payload)
    except EntryFormatError:
        return "?"
    return f"{term}.{index}"


def decode_entry(payload: bytes, *, canonical: bool = False) -> Entry:
    """Decode and check a payload; EntryFormatError says which part is wrong. With
    ``canonical`` the payload must also be exactly ``Entry.encode`` of what it decodes to.

    Every entry a node writes is canonical, so ``_decode_shortest`` (by hand, shortest heads
    only) decodes almost all of them; anything it does not take goes through cbor2, which
    accepts any encoding and names what is wrong.
    """
    entry = _decode_shortest(payload)
    if entry is not None:
        return entry
    entry = _decode_cbor(payload)
    if canonical and entry.encode() != payload:
        raise EntryFormatError("payload is not the canonical CBOR encoding of its entry")
    return entry


def _uint_head(payload: bytes, pos: int, top: int) -> tuple[int, int]:
    """``(argument, next_pos)`` of a CBOR head of initial byte ``top | info`` in its shortest
    form at ``pos`` (``top`` = major type << 5); ``(-1, pos)`` for anything else."""
    if pos >= len(payload):
        return -1, pos
    info = payload[pos] ^ top
    if info < 24:
        return info, pos + 1
    width = _WIDTHS.get(info, 0)
    end = pos + 1 + width
    if not width or end > len(payload):
        return -1, pos
    value = int.from_bytes(payload[pos + 1 : end], "big")
    if value < _SHORTEST_MIN[width]:  # a shorter head would do: not canonical
        return -1, pos
    return value, end


_WIDTHS = {24: 1, 25: 2, 26: 4, 27: 8}
_SHORTEST_MIN = {1: 24, 2: 0x100, 4: 0x10000, 8: 0x100000000}


def _decode_shortest(payload: bytes) -> Entry | None:
    """The entry if ``payload`` is exactly ``Entry.encode`` of a valid entry, else None.

    Reads ``0x86`` (array of 6), four unsigned heads (format, term, index, kind; format and
    kind are 1 to 3, so their heads are one byte), ``0x58 0x20`` and the 32-byte digest, the
    body's byte string head and the body, nothing after; every head in its shortest form
    (RFC 8949 section 4.2.1), so the payload is canonical whenever this returns an entry.
    """
    if len(payload) < 40 or payload[0] != 0x86:  # 40 bytes: the smallest entry
        return None
    version, term = payload[1], payload[2]  # format is 1 or 2: a one-byte head
    pos = 3
    if term > 23:
        term, pos = _uint_head(payload, 2, 0x00)
    index, pos = _uint_head(payload, pos, 0x00)
    if version not in (FORMAT_VERSION, FORMAT_VERSIONED) or term < 0 or index < 0:
        return None
    kind = payload[pos]  # 1, 2 or 3: a one-byte head
    if kind not in (1, 2, 3) or payload[pos + 1 : pos + 3] != b"\x58\x20":  # bytes(32) head
        return None
    digest_at = pos + 3
    size, pos = _uint_head(payload, digest_at + DIGEST_SIZE, 0x40)
    if size < 0 or pos + size != len(payload):
        return None
    digest = payload[digest_at : digest_at + DIGEST_SIZE]
    body = payload[pos:]
    if version == FORMAT_VERSIONED:
        _check_versioned(kind, body)
    return Entry(term, index, _KINDS[kind], digest, body, version)


_KINDS = {kind.value: kind for kind in EntryKind}


def _decode_cbor(payload: bytes) -> Entry:
    """Any CBOR encoding of the entry array (cbor2), every part checked and named."""
    stream = io.BytesIO(payload)
    try:
        obj = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:  # cbor2 raises several types for malformed input
        raise EntryFormatError(f"payload is not CBOR ({exc})") from exc
    if stream.tell() != len(payload):
        raise EntryFormatError(f"{len(payload) - stream.tell()} bytes follow the CBOR array")
    if not isinstance(obj, list) or len(obj) != 6:
        raise EntryFormatError("payload is not a CBOR array of 6 items")
    version, term, index, kind, digest, body = obj
    if type(version) is not int or version not in (FORMAT_VERSION, FORMAT_VERSIONED):
        raise EntryFormatError(
            f"entry format version {version!r} is not {FORMAT_VERSION} or {FORMAT_VERSIONED}"
        )
    for name, value in (("term", term), ("index", index)):
        if type(value) is not int or not 0 <= value <= _U64_MAX:
            raise EntryFormatError(f"{name} {value!r} is not an unsigned 64-bit integer")
    if type(kind) is not int or kind not in EntryKind._value2member_map_:
        raise EntryFormatError(f"entry kind {kind!r} is not 1, 2 or 3")
    if not isinstance(digest, bytes) or len(digest) != DIGEST_SIZE:
        raise EntryFormatError("write_set_digest is not a 32-byte string")
    if not isinstance(body, bytes):
        raise EntryFormatError("body is not a byte string")
    if version == FORMAT_VERSIONED:
        _check_versioned(kind, body)
    return Entry(term, index, EntryKind(kind), digest, body, version)


def _check_versioned(kind: int, body: bytes) -> None:
    """Format 2 is only for PRIVATE entries of secret version >= 2 (one encoding per entry)."""
    if kind != EntryKind.PRIVATE:
        raise EntryFormatError(
            f"entry format version 2 is only for private entries, not kind {kind}"
        )
    if len(body) < SECRET_VERSION_SIZE + NONCE_SIZE + TAG_SIZE:
        raise EntryFormatError(f"format version 2 private body is {len(body)} bytes, too short")
    secret_version = int.from_bytes(body[:SECRET_VERSION_SIZE], "big")
    if secret_version < 2:
        raise EntryFormatError(
            f"format 2 names ledger secret version {secret_version}; version 1 is written in "
            "format 1"
        )


@dataclass(frozen=True)
class SignatureBody:
    """The body of a SIGNATURE entry: who signed which root, and with which certificate."""

    node_id: str
    root: bytes
    tree_size: int
    signature: bytes
    node_certificate: str
    term: int

    def to_json(self) -> bytes:
        return canonical_json(
            {
                "node_id": self.node_id,
                "root": self.root.hex(),
                "tree_size": self.tree_size,
                "signature": self.signature.hex(),
                "node_certificate": self.node_certificate,
                "term": self.term,
            }
        )

    @classmethod
    def from_json(cls, body: bytes) -> SignatureBody:
        try:
            obj = json.loads(body)
            fields = {"node_id", "root", "tree_size", "signature", "node_certificate", "term"}
            if not isinstance(obj, dict) or set(obj) != fields:
                raise EntryFormatError(f"signature body must have exactly {sorted(fields)}")
            result = cls(
                node_id=str(obj["node_id"]),
                root=bytes.fromhex(obj["root"]),
                tree_size=obj["tree_size"],
                signature=bytes.fromhex(obj["signature"]),
                node_certificate=str(obj["node_certificate"]),
                term=obj["term"],
            )
        except (ValueError, TypeError) as exc:
            raise EntryFormatError(f"signature body is malformed ({exc})") from exc
        if type(result.tree_size) is not int or type(result.term) is not int:
            raise EntryFormatError("signature body tree_size and term must be integers")
        if len(result.root) != DIGEST_SIZE:
            raise EntryFormatError("signature body root is not 32 bytes")
        return result


def signature_entry(term: int, index: int, body: SignatureBody) -> Entry:
    """A SIGNATURE entry; its digest is SHA-256 of its (clear) body like a public entry."""
    data = body.to_json()
    return Entry(term, index, EntryKind.SIGNATURE, hashlib.sha256(data).digest(), data)


def open_signature(entry: Entry) -> SignatureBody:
    """The checked body of a SIGNATURE entry."""
    if hashlib.sha256(entry.body).digest() != entry.write_set_digest:
        raise EntryFormatError("write_set_digest is not the SHA-256 of the signature body")
    return SignatureBody.from_json(entry.body)
