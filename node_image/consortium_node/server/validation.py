"""Request validation: JSON bodies, query strings and path parameters → typed values.

Every request body, query string and path parameter the API takes is parsed here, and only
here. Every rejection is a BadRequestError (``errors.py``) naming the field (a JSON-path-like
string) and the reason, raised before the node is touched, so a bad request changes nothing.
JSON bodies are decoded by ``common/bounded_json.py`` (nesting, number and Unicode limits,
no recursion), whose refusals name the path from ``body`` (``body.transactions[3].writes``).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from consortium_node.common import bounded_json
from consortium_node.governance.actions import is_sha256_hex
from consortium_node.identity import keys
from consortium_node.ledger.entries import CheckedWriteSets
from consortium_node.server.config import Limits
from consortium_node.server.errors import BadRequestError, DocumentTooLargeError

NONCE_RE = re.compile(r"^[0-9a-f]{32,128}$")
TXID_RE = re.compile(r"^(\d{1,19})\.(\d{1,19})$")
APP_TABLE = "app"
MAX_DOCUMENT = 256 * 1024  # bytes of one signed governance document
MAX_SANS = 16
_KEY_SHOWN = 32  # characters of a key named in an error's field
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
)


def parse_json_body(raw: bytes) -> Any:
    """Decode a UTF-8 JSON body within the bounded loader's limits; anything else → 400
    naming the JSON path where it went wrong (``body`` itself for a body that is not JSON)."""
    try:
        return bounded_json.loads(raw, root="body")
    except bounded_json.BoundedJSONError as exc:
        raise BadRequestError(exc.path, exc.reason) from exc


def key_field(path: str, key: str) -> str:
    """The field naming ``key`` of the object at ``path``. An error body echoes it, so an
    empty key is shown as ``""`` and a long one is cut short."""
    shown = key[:_KEY_SHOWN] + "…" if len(key) > _KEY_SHOWN else key or '""'
    return f"{path}.{shown}" if path else shown


def check_keys(obj: Mapping[str, Any], path: str, allowed: set[str], required: set[str]) -> None:
    """Reject unknown and missing keys of one JSON object."""
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise BadRequestError(
            key_field(path, unknown[0]),
            f"unknown key; allowed keys are {', '.join(sorted(allowed))}",
        )
    for key in sorted(required):
        if key not in obj:
            raise BadRequestError(key_field(path, key), "required")


@dataclass(frozen=True)
class TransactionBatch:
    """Validated ``POST /app/transactions``: one write set per transaction (table ``app``)."""

    write_sets: CheckedWriteSets  # checked here: the ledger encodes them as they are


# The most JSON bytes one character of a string can take (ensure_ascii=False): a control
# character is written \u00XX (6 bytes); any other character at most 4 UTF-8 bytes.
MAX_JSON_BYTES_PER_CHAR = 6


def parse_transactions(body: Any, limits: Limits) -> TransactionBatch:
    """Validate ``{"transactions": [{"writes": {key: value|null}}, ...]}``.

    A value is any JSON value (null deletes the key); keys are non-empty strings.
    """
    if not isinstance(body, dict):
        raise BadRequestError("body", "expected a JSON object")
    check_keys(body, "", {"transactions"}, {"transactions"})
    txs = body["transactions"]
    if not isinstance(txs, list) or not txs:
        raise BadRequestError("transactions", "expected a non-empty list")
    if len(txs) > limits.max_batch:
        raise BadRequestError(
            "transactions", f"{len(txs)} transactions exceed the batch limit {limits.max_batch}"
        )
    write_sets = []
    for i, tx in enumerate(txs):
        path = f"transactions[{i}]"
        if not isinstance(tx, dict):
            raise BadRequestError(path, 'expected an object {"writes": {...}}')
        check_keys(tx, path, {"writes"}, {"writes"})
        writes = tx["writes"]
        if not isinstance(writes, dict) or not writes:
            raise BadRequestError(f"{path}.writes", "expected a non-empty object of key: value")
        for key, value in writes.items():
            _check_key(key, f"{path}.writes", limits)
            if (
                type(value) is str
                and len(value) * MAX_JSON_BYTES_PER_CHAR + 2 <= limits.max_value_bytes
            ):
                continue  # a string this short cannot exceed the limit, however escaped
            where = key_field(f"{path}.writes", key)
            size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
            if size > limits.max_value_bytes:
                raise BadRequestError(
                    where, f"value of {size} bytes exceeds the limit {limits.max_value_bytes}"
                )
            if _has_float(value):
                raise BadRequestError(where, "floats are not allowed (use a string or integer)")
        write_sets.append({APP_TABLE: dict(writes)})
    return TransactionBatch(CheckedWriteSets(write_sets))


def _has_float(value: Any) -> bool:
    """Whether a float is anywhere in ``value``; a loop over a stack, not recursion, so no
    nesting can exhaust the interpreter's stack."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float):
            return True
        if isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
    return False


def _check_key(key: str, path: str, limits: Limits) -> None:
    if not key:
        raise BadRequestError(path, "keys must be non-empty strings")
    if len(key.encode()) > limits.max_key_bytes:
        raise BadRequestError(f"{path}.{key[:32]}…", f"key exceeds {limits.max_key_bytes} bytes")


def check_key_param(key: str, limits: Limits) -> str:
    """Validate a key taken from a URL path."""
    _check_key(key, "key", limits)
    return key


def parse_query(query: Mapping[str, str], allowed: set[str], required: set[str]) -> dict[str, str]:
    """Reject unknown and missing query parameters."""
    unknown = sorted(set(query) - allowed)
    if unknown:
        allowed_text = ", ".join(sorted(allowed)) or "none"
        raise BadRequestError(unknown[0], f"unknown query parameter; allowed: {allowed_text}")
    for key in sorted(required):
        if not query.get(key):
            raise BadRequestError(key, "required query parameter")
    return dict(query)


def parse_nonce(text: str) -> bytes:
    """A verifier's nonce: 16 to 64 bytes of lowercase hex."""
    if not NONCE_RE.match(text) or len(text) % 2:
        raise BadRequestError(
            "nonce", "must be 16 to 64 bytes as lowercase hex (32-128 hex digits)"
        )
    return bytes.fromhex(text)


def parse_txid(text: str) -> tuple[int, int]:
    """A transaction id ``<term>.<index>`` with term ≥ 1 and index ≥ 1."""
    match = TXID_RE.match(text)
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise BadRequestError("txid", f"{text[:40]!r} is not a transaction id like 1.42")
    return int(match.group(1)), int(match.group(2))


def parse_list_format(query: Mapping[str, str]) -> str:
    """``GET /node/trusted-list?format=``: ``cose`` (the default) or ``json``."""
    fmt = parse_query(query, {"format"}, set()).get("format", "cose")
    if fmt not in ("cose", "json"):
        raise BadRequestError("format", "must be cose or json")
    return fmt


def parse_node_id(body: Any) -> str:
    """``{"node_id": "<hex>"}`` (``POST /gov/nodes/retire``)."""
    if (
        not isinstance(body, dict)
        or set(body) != {"node_id"}
        or not isinstance(body["node_id"], str)
    ):
        raise BadRequestError("node_id", 'expected {"node_id": "<hex>"}')
    return body["node_id"]


def parse_forwarded(data: Any) -> tuple[str, Any]:
    """A backup's forwarded write: ``{member_id, body}`` → (member_id, the member's body)."""
    if not isinstance(data, dict) or set(data) != {"member_id", "body"}:
        raise BadRequestError("body", "expected {member_id, body}")
    return str(data["member_id"]), data["body"]


def check_document(body: bytes) -> bytes:
    """A signed governance document (COSE_Sign1 bytes): present, at most ``MAX_DOCUMENT``."""
    if not body:
        raise BadRequestError("body", "expected a COSE_Sign1 document")
    if len(body) > MAX_DOCUMENT:
        raise DocumentTooLargeError(
            "body", f"a governance document is at most {MAX_DOCUMENT} bytes"
        )
    return body


def parse_proposal_id(text: str) -> str:
    """A proposal id taken from a URL path: 64 lowercase hex digits."""
    if not is_sha256_hex(text):
        raise BadRequestError("proposal_id", "expected 64 lowercase hex digits")
    return text


# ---------------------------------------------------------------------- node to node
@dataclass(frozen=True)
class JoinRequest:
    name: str
    address: str
    public_key_pem: str
    public_key_der: bytes
    quote: dict[str, Any]
    nonce: bytes
    subject_alt_names: tuple[str, ...] = ()


def parse_sans(value: Any) -> tuple[str, ...]:
    """``subject_alt_names`` of a join request: ≤16 DNS names or IP addresses."""
    if not isinstance(value, list) or len(value) > MAX_SANS:
        raise BadRequestError("subject_alt_names", f"expected a list of at most {MAX_SANS} names")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise BadRequestError(f"subject_alt_names[{i}]", "expected a string")
        try:
            ipaddress.ip_address(item)
        except ValueError:
            if not _DNS_NAME.match(item):
                raise BadRequestError(
                    f"subject_alt_names[{i}]", f"{item!r} is neither a DNS name nor an IP"
                ) from None
    return tuple(value)


def parse_join(body: Any) -> JoinRequest:
    """Validate ``POST /node/join``; 400 naming the field otherwise."""
    if not isinstance(body, dict):
        raise BadRequestError("body", "expected a JSON object")
    fields = {"name", "address", "public_key", "quote", "nonce"}
    check_keys(body, "", fields | {"subject_alt_names"}, fields)
    for name in ("name", "address", "public_key", "nonce"):
        if not isinstance(body[name], str) or not body[name]:
            raise BadRequestError(name, "expected a non-empty string")
    if not isinstance(body["quote"], dict):
        raise BadRequestError("quote", "expected the quote JSON object")
    try:
        public = keys.load_public_key(body["public_key"].encode())
        nonce = bytes.fromhex(body["nonce"])
    except ValueError as exc:
        raise BadRequestError("nonce", f"not hex: {exc}") from exc
    except Exception as exc:
        raise BadRequestError("public_key", str(exc)) from exc
    return JoinRequest(
        body["name"],
        body["address"],
        body["public_key"],
        keys.public_key_der(public),
        body["quote"],
        nonce,
        parse_sans(body.get("subject_alt_names", [])),
    )


@dataclass(frozen=True)
class RefreshRequest:
    address: str
    subject_alt_names: tuple[str, ...]
    quote: dict[str, Any]
    nonce: bytes


def parse_refresh(body: Any) -> RefreshRequest:
    """Validate ``POST /node/refresh``; 400 naming the field otherwise."""
    if not isinstance(body, dict):
        raise BadRequestError("body", "expected a JSON object")
    fields = {"address", "subject_alt_names", "quote", "nonce"}
    check_keys(body, "", fields, fields)
    address = body["address"]
    host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    if not host or not port.isdigit():
        raise BadRequestError("address", "expected HOST:PORT")
    if not isinstance(body["quote"], dict):
        raise BadRequestError("quote", "expected the quote JSON object")
    try:
        nonce = bytes.fromhex(str(body["nonce"]))
    except ValueError as exc:
        raise BadRequestError("nonce", f"not hex: {exc}") from exc
    return RefreshRequest(address, parse_sans(body["subject_alt_names"]), body["quote"], nonce)
