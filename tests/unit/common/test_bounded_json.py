"""The bounded JSON loader: each limit at its edge and one past it, the path it names, and the
inputs that answered 500 before it existed (a 5,000-digit number, 10,000, 900 and 300 deep)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium_node.common import bounded_json
from consortium_node.common.bounded_json import (
    MAX_DEPTH,
    MAX_NUMBER_CHARS,
    BoundedJSONError,
    loads,
)


def nested(depth: int, inner: bytes = b"1") -> bytes:
    """``depth`` arrays inside each other around ``inner``."""
    return b"[" * depth + inner + b"]" * depth


def nested_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def in_writes(value: bytes) -> bytes:
    """A transaction body with ``value`` as the value of key ``a`` of the fourth transaction."""
    ok = b'{"writes":{"k":1}}'
    return b'{"transactions":[' + ok + b"," + ok + b"," + ok + b',{"writes":{"a":' + value + b"}}]}"


WRITE = "body.transactions[3].writes.a"

ACCEPTED: list[Any] = [
    pytest.param(nested(MAX_DEPTH), id="arrays-at-the-depth-limit"),
    pytest.param(nested_objects(MAX_DEPTH), id="objects-at-the-depth-limit"),
    pytest.param(b"1" * MAX_NUMBER_CHARS, id="integer-at-the-length-limit"),
    pytest.param(b"-" + b"1" * (MAX_NUMBER_CHARS - 1), id="negative-at-the-length-limit"),
    pytest.param(b"-2.2250738585072014e-308", id="longest-double"),
    pytest.param(b"1e308", id="large-finite-double"),
    pytest.param(b'"\\ud83d\\ude00"', id="surrogate-pair"),
    pytest.param(b'"\\\\ud800"', id="escaped-backslash-then-ud800"),
    pytest.param(b'{"NaN": "Infinity", "x": [true, false, null]}', id="words-inside-strings"),
    pytest.param(b'"[[[[[[' + b"[" * 1000 + b'"', id="brackets-inside-a-string"),
    pytest.param(b' \n\t{"a" : [ 1 , 2 ] }\r\n', id="whitespace"),
]


@pytest.mark.parametrize("raw", ACCEPTED)
def test_accepted_within_the_limits(raw: bytes) -> None:
    assert loads(raw, "body") == json.loads(raw)


REFUSED: list[Any] = [
    # Nesting: one past the limit, and the depths seen answering 500 (or committed) before.
    pytest.param(nested(MAX_DEPTH + 1), "body" + "[0]" * MAX_DEPTH, "nested deeper", id="65"),
    pytest.param(
        nested_objects(MAX_DEPTH + 1), "body" + ".a" * MAX_DEPTH, "nested deeper", id="65-objects"
    ),
    pytest.param(nested(300), "body" + "[0]" * MAX_DEPTH, "nested deeper", id="300-deep"),
    pytest.param(nested(900), "body" + "[0]" * MAX_DEPTH, "nested deeper", id="900-deep"),
    pytest.param(nested(10_000), "body" + "[0]" * MAX_DEPTH, "nested deeper", id="10000-deep"),
    pytest.param(
        b"[" * 10_000, "body" + "[0]" * MAX_DEPTH, "nested deeper", id="10000-deep-unclosed"
    ),
    pytest.param(
        in_writes(b'{"b":[0,' + nested(MAX_DEPTH) + b"]}"),
        WRITE + ".b[1]" + "[0]" * (MAX_DEPTH - 6),  # 6 levels down to b
        "nested deeper",
        id="deep-inside-a-value",
    ),
    # Numbers: one past the length limit, the 5,000-digit one, NaN and Infinity, overflow.
    pytest.param(
        b"[" + b"1" * (MAX_NUMBER_CHARS + 1) + b"]", "body[0]", "33 characters", id="33-digits"
    ),
    pytest.param(in_writes(b"9" * 5000), WRITE, "5000 characters", id="5000-digits"),
    pytest.param(in_writes(b"-" + b"9" * 5000), WRITE, "5001 characters", id="5000-negative"),
    pytest.param(in_writes(b"0." + b"1" * 40), WRITE, "42 characters", id="long-fraction"),
    pytest.param(in_writes(b"[1,NaN]"), WRITE + "[1]", "NaN is not", id="nan"),
    pytest.param(in_writes(b"Infinity"), WRITE, "Infinity is not", id="infinity"),
    pytest.param(in_writes(b'{"b":-Infinity}'), WRITE + ".b", "-Infinity is not", id="-inf"),
    pytest.param(in_writes(b"1e999"), WRITE, "out of range", id="overflow"),
    pytest.param(in_writes(b"-1.5E+400"), WRITE, "out of range", id="negative-overflow"),
    # Strings that could not be written as UTF-8 again.
    pytest.param(in_writes(b'"x\\ud800"'), WRITE, "lone surrogate", id="lone-high"),
    pytest.param(in_writes(b'["\\udc00"]'), WRITE + "[0]", "lone surrogate", id="lone-low"),
    pytest.param(
        in_writes(b'"\\ud800\\ud800"'), WRITE, "lone surrogate", id="two-highs-are-not-a-pair"
    ),
    pytest.param(b'{"\\udfff": 1}', "body.\\udfff", "lone surrogate", id="lone-surrogate-in-a-key"),
    # Not UTF-8, and not JSON: named where it happened.
    pytest.param(b"\xff\xfe", "body", "not UTF-8 at byte 0", id="utf16-bom"),
    pytest.param(in_writes(b'"caf\xc3"'), WRITE, "not UTF-8", id="truncated-utf8"),
    pytest.param(in_writes(b'"\xed\xa0\x80"'), WRITE, "not UTF-8", id="utf8-encoded-surrogate"),
    pytest.param(b"", "body", "malformed JSON", id="empty"),
    pytest.param(b"{not json", "body", "malformed JSON", id="not-json"),
    pytest.param(b'{"a": [1, 2, ]}', "body.a[2]", "malformed JSON", id="trailing-comma"),
    pytest.param(b'{"a": {"b": "x\x01"}}', "body.a.b", "malformed JSON", id="control-character"),
    pytest.param(b'{"a": "unterminated', "body.a", "malformed JSON", id="unterminated"),
    pytest.param(b"[1] [2]", "body", "Extra data", id="two-documents"),
    pytest.param(b"[1]]", "body", "Extra data", id="unbalanced"),
    pytest.param(
        b'{"' + b"k" * 100 + b'": nope}',
        "body." + "k" * 32 + "…",
        "malformed JSON",
        id="long-key-shown-short",
    ),
]


@pytest.mark.parametrize(("raw", "path", "reason"), REFUSED)
def test_refused_naming_the_path(raw: bytes, path: str, reason: str) -> None:
    with pytest.raises(BoundedJSONError) as caught:
        loads(raw, "body")
    assert caught.value.path == path
    assert reason in caught.value.reason
    assert isinstance(caught.value, ValueError)


def test_root_names_the_document() -> None:
    with pytest.raises(BoundedJSONError) as caught:
        loads(b'{"vote": NaN}', "payload")
    assert caught.value.path == "payload.vote"


# Random documents: the fast filter must never pass what the token scan refuses (it may only
# raise false alarms), and whatever is accepted decodes exactly as json.loads decodes it.
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["\ud800", "\udfff", "[", '"', "\\u", "NaN"])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


def _text(value: Any, depth: int, wrap: str) -> str:
    opening, closing = ("[", "]") if wrap == "[" else ('{"x":', "}")
    return opening * depth + json.dumps(value, ensure_ascii=False) + closing * depth


@settings(max_examples=300, deadline=None)
@given(_VALUES, st.integers(0, 70), st.sampled_from(["[", "{"]), st.booleans())
def test_filter_never_clears_what_the_scan_refuses(
    value: Any, depth: int, wrap: str, ascii_only: bool
) -> None:
    text = _text(value, depth, wrap)
    if ascii_only:  # the escaped form: surrogates become \\uXXXX escapes
        text = json.dumps(json.loads(text))
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        return  # a raw surrogate in a str: never bytes on the wire
    refused = None
    try:
        bounded_json._scan(text, "$")
    except BoundedJSONError as exc:
        refused = exc
    if bounded_json._plainly_within_limits(text):
        assert refused is None, (text[:200], refused)
    try:
        decoded = loads(raw)
    except BoundedJSONError:
        return
    assert json.dumps(decoded, sort_keys=True) == json.dumps(json.loads(text), sort_keys=True)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_only_the_loaders_error(raw: bytes) -> None:
    try:
        loads(raw)
    except BoundedJSONError as exc:
        assert exc.path.startswith("$") and exc.reason
