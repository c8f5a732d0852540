import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consortium_node.common.canonical import CanonicalJSONError, canonical_json
from consortium_node.common.timeutil import (
    format_duration,
    parse_duration,
    parse_rfc3339,
    rfc3339,
)


def test_canonical_json_sorts_keys_and_is_compact_utf8() -> None:
    assert (
        canonical_json({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'.encode()
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"x": 1.5}, "$.x: floats are not allowed"),
        ({1: "a"}, "object key 1 is not a string"),
        ([b"bytes"], "$[0]: type bytes is not JSON"),
    ],
)
def test_canonical_json_rejects(value: object, message: str) -> None:
    with pytest.raises(CanonicalJSONError, match=message.replace("[", r"\[").replace("$", r"\$")):
        canonical_json(value)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    )
)
def test_canonical_json_is_deterministic(value: object) -> None:
    assert canonical_json(json.loads(canonical_json(value))) == canonical_json(value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("24h", 86400), ("1h30m", 5400), ("500ms", 0.5), ("1.5h", 5400)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "5x", "h", "1h 2m", "0s", "-1s", "m5"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0.25, 1, 59, 60, 61, 3600, 5400, 86400 + 1])
def test_format_duration_round_trips(seconds: float) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


def test_rfc3339_round_trip_and_rejects_naive() -> None:
    moment = datetime(2026, 11, 23, 20, 21, 5, tzinfo=UTC)
    assert rfc3339(moment) == "2026-11-23T20:21:05Z"
    assert parse_rfc3339("2026-11-23T21:21:05+01:00") == moment
    with pytest.raises(ValueError, match="naive"):
        rfc3339(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_rfc3339("2026-11-23 20:21:05")
