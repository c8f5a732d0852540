"""Request validation: JSON bodies and query strings → typed values, or an ApiError.

Every rejection names the field (a JSON-path-like string) and the reason, and is raised before
the node is touched, so a bad request changes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from consortium_node.server.config import Limits

NONCE_RE = re.compile(r"^[0-9a-f]{32,128}$")
TXID_RE = re.compile(r"^(\d{1,19})\.(\d{1,19})$")
APP_TABLE = "app"


class ApiError(Exception):
    """An HTTP error with a JSON body ``{"error": {"code", "field", "reason"}}``."""

    def __init__(
        self, status: int, code: str, field: str | None, reason: str, **extra: Any
    ) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.status, self.code, self.field, self.reason = status, code, field, reason
        self.extra = extra

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "reason": self.reason, **self.extra}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


def bad_request(field: str | None, reason: str) -> ApiError:
    return ApiError(400, "BadRequest", field, reason)


def parse_json_body(raw: bytes) -> Any:
    """Decode a UTF-8 JSON body; malformed input → 400 naming the body and the position."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise bad_request("body", f"not UTF-8 at byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        raise bad_request(
            "body", f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc


def check_keys(obj: Mapping[str, Any], path: str, allowed: set[str], required: set[str]) -> None:
    """Reject unknown and missing keys of one JSON object."""
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise bad_request(
            f"{path}.{unknown[0]}" if path else unknown[0],
            f"unknown key; allowed keys are {', '.join(sorted(allowed))}",
        )
    for key in sorted(required):
        if key not in obj:
            raise bad_request(f"{path}.{key}" if path else key, "required")


@dataclass(frozen=True)
class TransactionBatch:
    """Validated ``POST /app/transactions``: one write set per transaction (table ``app``)."""

    write_sets: tuple[dict[str, dict[str, Any]], ...]


def parse_transactions(body: Any, limits: Limits) -> TransactionBatch:
    """Validate ``{"transactions": [{"writes": {key: value|null}}, ...]}``.

    A value is any JSON value (null deletes the key); keys are non-empty strings.
    """
    if not isinstance(body, dict):
        raise bad_request("body", "expected a JSON object")
    check_keys(body, "", {"transactions"}, {"transactions"})
    txs = body["transactions"]
    if not isinstance(txs, list) or not txs:
        raise bad_request("transactions", "expected a non-empty list")
    if len(txs) > limits.max_batch:
        raise bad_request(
            "transactions", f"{len(txs)} transactions exceed the batch limit {limits.max_batch}"
        )
    write_sets = []
    for i, tx in enumerate(txs):
        path = f"transactions[{i}]"
        if not isinstance(tx, dict):
            raise bad_request(path, 'expected an object {"writes": {...}}')
        check_keys(tx, path, {"writes"}, {"writes"})
        writes = tx["writes"]
        if not isinstance(writes, dict) or not writes:
            raise bad_request(f"{path}.writes", "expected a non-empty object of key: value")
        for key, value in writes.items():
            _check_key(key, f"{path}.writes", limits)
            size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
            if size > limits.max_value_bytes:
                raise bad_request(
                    f"{path}.writes.{key}",
                    f"value of {size} bytes exceeds the limit {limits.max_value_bytes}",
                )
            if _has_float(value):
                raise bad_request(
                    f"{path}.writes.{key}", "floats are not allowed (use a string or integer)"
                )
        write_sets.append({APP_TABLE: dict(writes)})
    return TransactionBatch(tuple(write_sets))


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    return False


def _check_key(key: str, path: str, limits: Limits) -> None:
    if not key:
        raise bad_request(path, "keys must be non-empty strings")
    if len(key.encode()) > limits.max_key_bytes:
        raise bad_request(f"{path}.{key[:32]}…", f"key exceeds {limits.max_key_bytes} bytes")


def check_key_param(key: str, limits: Limits) -> str:
    """Validate a key taken from a URL path."""
    _check_key(key, "key", limits)
    return key


def parse_query(query: Mapping[str, str], allowed: set[str], required: set[str]) -> dict[str, str]:
    """Reject unknown and missing query parameters."""
    unknown = sorted(set(query) - allowed)
    if unknown:
        allowed_text = ", ".join(sorted(allowed)) or "none"
        raise bad_request(unknown[0], f"unknown query parameter; allowed: {allowed_text}")
    for key in sorted(required):
        if not query.get(key):
            raise bad_request(key, "required query parameter")
    return dict(query)


def parse_nonce(text: str) -> bytes:
    """A verifier's nonce: 16 to 64 bytes of lowercase hex."""
    if not NONCE_RE.match(text) or len(text) % 2:
        raise bad_request("nonce", "must be 16 to 64 bytes as lowercase hex (32-128 hex digits)")
    return bytes.fromhex(text)


def parse_txid(text: str) -> tuple[int, int]:
    """A transaction id ``<term>.<index>`` with term ≥ 1 and index ≥ 1."""
    match = TXID_RE.match(text)
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise bad_request("txid", f"{text[:40]!r} is not a transaction id like 1.42")
    return int(match.group(1)), int(match.group(2))
