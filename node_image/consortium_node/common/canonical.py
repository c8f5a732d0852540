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


def _plain(value: Any) -> bool:
    """True if ``value`` is made of exactly the JSON types (no float, string keys): the fast
    check every encoding runs; ``_check`` walks again only to name what is wrong."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is dict:
        return all(type(key) is str and _plain(item) for key, item in value.items())
    if kind is list or kind is tuple:
        return all(_plain(item) for item in value)
    return False  # a float, another type, or a subclass: ``_check`` decides and names it


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON bytes (sorted keys, compact, UTF-8)."""
    if not _plain(value):
        _check(value, "$")
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
