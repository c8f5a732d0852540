"""Canonical JSON: the one byte encoding we sign and hash.

Canonical form (DESIGN section 4): UTF-8, object keys sorted by code point, no insignificant
whitespace, no floats (their text form is not unique across implementations), no NaN.
Two equal values always encode to the same bytes, so signatures and digests over them are
reproducible by any verifier with a JSON library.
"""

from __future__ import annotations

import json
from typing import Any


class CanonicalJSONError(ValueError):
    """The value cannot be encoded canonically (float, non-string key, unsupported type)."""


def _check(value: Any, path: str) -> None:
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        raise CanonicalJSONError(f"{path}: floats are not allowed in canonical JSON")
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalJSONError(f"{path}: object key {key!r} is not a string")
            _check(item, f"{path}.{key}")
        return
    raise CanonicalJSONError(f"{path}: type {type(value).__name__} is not JSON")


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON bytes (sorted keys, compact, UTF-8)."""
    _check(value, "$")
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
