"""Request validation: each bad input is a 400 naming the field; good input is typed."""

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consortium_node.server.config import Limits
from consortium_node.server.errors import BadRequestError, DocumentTooLargeError
from consortium_node.server.http_errors import api_error
from consortium_node.server.validation import (
    MAX_DOCUMENT,
    _has_float,
    check_document,
    parse_forwarded,
    parse_json_body,
    parse_list_format,
    parse_node_id,
    parse_nonce,
    parse_proposal_id,
    parse_query,
    parse_transactions,
    parse_txid,
)

LIMITS = Limits(max_batch=3, max_key_bytes=8, max_value_bytes=16)


def test_transactions_become_app_write_sets() -> None:
    batch = parse_transactions(
        {"transactions": [{"writes": {"a": "1", "b": None}}, {"writes": {"c": [1, {"d": 2}]}}]},
        LIMITS,
    )
    assert batch.write_sets == ({"app": {"a": "1", "b": None}}, {"app": {"c": [1, {"d": 2}]}})


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ([], "body", "expected a JSON object"),
        ({}, "transactions", "required"),
        ({"transactions": [], "x": 1}, "x", "unknown key"),
        ({"transactions": []}, "transactions", "non-empty list"),
        ({"transactions": [{"writes": {"a": "1"}}] * 4}, "transactions", "batch limit 3"),
        ({"transactions": ["a"]}, "transactions[0]", "expected an object"),
        ({"transactions": [{"writes": {}}]}, "transactions[0].writes", "non-empty object"),
        ({"transactions": [{"writes": {"a": 1}, "id": 2}]}, "transactions[0].id", "unknown key"),
        ({"transactions": [{"writes": {"": 1}}]}, "transactions[0].writes", "non-empty strings"),
        ({"transactions": [{"writes": {"a" * 9: 1}}]}, "transactions[0].writes.", "exceeds 8"),
        ({"transactions": [{"writes": {"a": "x" * 20}}]}, "transactions[0].writes.a", "limit 16"),
        ({"transactions": [{"writes": {"a": 1.5}}]}, "transactions[0].writes.a", "floats"),
        # An error body echoes the field: an empty key is shown, a long one cut short.
        ({"": None}, '""', "unknown key"),
        ({"x" * 5000: None}, "x" * 32 + "…", "unknown key"),
        ({"transactions": [{"writes": {"a": 1}, "": 2}]}, 'transactions[0].""', "unknown key"),
    ],
)
def test_bad_transactions(body: Any, field: str, reason: str) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_transactions(body, LIMITS)
    assert api_error(info.value).status == 400
    assert info.value.field is not None and info.value.field.startswith(field)
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"{", "malformed JSON"), (b"\xff\xfe", "not UTF-8"), (b"", "malformed JSON")],
)
def test_malformed_json(raw: bytes, reason: str) -> None:
    with pytest.raises(BadRequestError, match=reason) as info:
        parse_json_body(raw)
    assert info.value.field == "body"


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        (b'{"transactions": [' + b"[" * 900 + b"]" * 900 + b"]}", "body.transactions", "deeper"),
        (b'{"transactions": [{"writes": {"a": ' + b"5" * 5000 + b"}}]}", "body", "5000"),
        (b'{"transactions": [{"writes": {"a": NaN}}]}', "body.transactions[0].writes.a", "NaN"),
        (b'{"transactions": [{"writes": {"a": "\\ud800"}}]}', "body.", "lone surrogate"),
    ],
)
def test_hostile_json_is_a_400_naming_the_path(raw: bytes, field: str, reason: str) -> None:
    """Each of these answered 500 before the bounded loader (common/bounded_json.py)."""
    with pytest.raises(BadRequestError) as info:
        parse_json_body(raw)
    assert info.value.field is not None and info.value.field.startswith(field)
    assert reason in info.value.reason
    assert api_error(info.value).status == 400


def test_floats_are_found_at_any_depth_without_recursion() -> None:
    value: Any = 1.5
    for _ in range(10_000):  # deeper than the interpreter's recursion limit
        value = [0, {"a": value}]
    assert _has_float(value)
    assert not _has_float([[0, {"a": ["x", None, True]}]] * 3)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("00" * 16, True),
        ("ab" * 64, True),
        ("00" * 15, False),
        ("AB" * 16, False),
        ("zz" * 16, False),
        ("0" * 33, False),
        ("ab" * 65, False),
    ],
)
def test_nonce(text: str, ok: bool) -> None:
    if ok:
        assert parse_nonce(text) == bytes.fromhex(text)
    else:
        with pytest.raises(BadRequestError, match="nonce"):
            parse_nonce(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.1", (1, 1)),
        ("3.42", (3, 42)),
        ("0.1", None),
        ("1.0", None),
        ("1", None),
        ("a.b", None),
        ("1.2.3", None),
        ("-1.2", None),
        ("1" * 20 + ".1", None),
    ],
)
def test_txid(text: str, expected: tuple[int, int] | None) -> None:
    if expected:
        assert parse_txid(text) == expected
    else:
        with pytest.raises(BadRequestError) as info:
            parse_txid(text)
        assert info.value.field == "txid"


def test_query_unknown_and_missing() -> None:
    assert parse_query({"txid": "1.1"}, {"txid"}, {"txid"}) == {"txid": "1.1"}
    with pytest.raises(BadRequestError, match="unknown query parameter") as info:
        parse_query({"txid": "1.1", "x": "y"}, {"txid"}, set())
    assert info.value.field == "x"
    with pytest.raises(BadRequestError, match="required query parameter"):
        parse_query({}, {"txid"}, {"txid"})


@pytest.mark.parametrize(
    ("body", "ok"),
    [({"node_id": "ab"}, True), ({"node_id": 1}, False), ({}, False), (["ab"], False)],
)
def test_node_id_body(body: Any, ok: bool) -> None:
    if ok:
        assert parse_node_id(body) == body["node_id"]
    else:
        with pytest.raises(BadRequestError) as info:
            parse_node_id(body)
        assert info.value.field == "node_id"


def test_forwarded_write() -> None:
    assert parse_forwarded({"member_id": "m", "body": {"x": 1}}) == ("m", {"x": 1})
    with pytest.raises(BadRequestError, match="member_id, body") as info:
        parse_forwarded({"member_id": "m"})
    assert info.value.field == "body"


def test_governance_document_size() -> None:
    assert check_document(b"x" * MAX_DOCUMENT) == b"x" * MAX_DOCUMENT
    with pytest.raises(BadRequestError) as info:
        check_document(b"")
    assert info.value.field == "body"
    with pytest.raises(DocumentTooLargeError) as too_large:
        check_document(b"x" * (MAX_DOCUMENT + 1))
    assert api_error(too_large.value).status == 413


def test_proposal_id_and_list_format() -> None:
    assert parse_proposal_id("ab" * 32) == "ab" * 32
    with pytest.raises(BadRequestError, match="64 lowercase hex"):
        parse_proposal_id("AB" * 32)
    assert parse_list_format({}) == "cose"
    assert parse_list_format({"format": "json"}) == "json"
    with pytest.raises(BadRequestError) as info:
        parse_list_format({"format": "xml"})
    assert info.value.field == "format"


@given(value=st.text(max_size=40))
def test_a_string_value_is_refused_exactly_when_its_json_exceeds_the_limit(value: str) -> None:
    """The size check skips strings too short to exceed the limit however escaped; the
    decision is still exactly "JSON bytes > max_value_bytes"."""
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    body = {"transactions": [{"writes": {"k": value}}]}
    if size > LIMITS.max_value_bytes:
        with pytest.raises(BadRequestError, match="exceeds the limit 16"):
            parse_transactions(body, LIMITS)
    else:
        assert parse_transactions(body, LIMITS).write_sets == ({"app": {"k": value}},)
