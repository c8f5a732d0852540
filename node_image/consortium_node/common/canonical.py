"""Canonical JSON: the one byte encoding we sign and hash.

Canonical form (DESIGN section 4): UTF-8, object keys sorted by code point, no insignificant
whitespace, no floats (their text form is not unique across implementations), no NaN.
Two equal values always encode to the same bytes, so signatures and digests over them are
reproducible by any verifier with a JSON library.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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


# One encoder for every call: ``json.dumps`` with options builds a new encoder (and its C
# encoder) per call, most of the cost of encoding a small write set. The C encoder is made
# once here, without circular-reference markers (a ``_plain`` value is a tree: it came from
# JSON or from code that builds trees), and used only if it gives the library's bytes.
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_SELF_TEST = {"b": [1, -2, 2**70, None, True, False], "a": '\u00e9\n"\\\x01\u2028', "": {}}


def _fast_encoder() -> Callable[[Any], str]:
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is not None:
        try:
            encoder = make(
                None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",",
                True, False, False,
            )  # fmt: skip

            def encode(value: Any) -> str:
                return "".join(encoder(value, 0))

            if encode(_SELF_TEST) == _ENCODER.encode(_SELF_TEST):
                return encode
        except TypeError:  # another Python's signature: use the library's path
            pass
    return _ENCODER.encode


canonical_text: Callable[[Any], str] = _fast_encoder()
"""The canonical JSON text of a value already known to be plain JSON (no check)."""


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON bytes (sorted keys, compact, UTF-8)."""
    if not _plain(value):
        _check(value, "$")
    return canonical_text(value).encode("utf-8")
