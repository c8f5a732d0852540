"""Raft wire messages (CBOR, every field validated) and the commit rule's majority_index."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import cbor2
import pytest

from consortium_node.replication.messages import (
    MAX_MESSAGE_BYTES,
    MAX_U64,
    AppendRequest,
    AppendResponse,
    FetchRequest,
    FetchResponse,
    MessageError,
    VoteRequest,
    VoteResponse,
    decode,
    encode,
)
from consortium_node.replication.raft import majority_index

NODE = "ab" * 32

MESSAGES: list[Any] = [
    AppendRequest(7, NODE, "n0.raft.test:8443", 41, 6, (b"\x00entry", b"", b"\xff" * 300), 40),
    AppendRequest(1, NODE, "n0", 0, 0, (), 0),
    AppendRequest(MAX_U64, NODE, "n0", MAX_U64, MAX_U64, (b"x",), MAX_U64),
    AppendResponse(7, True, 44, 44, NODE),
    AppendResponse(8, False, 0, 12, NODE),
    VoteRequest(9, NODE, 44, 7),
    VoteRequest(1, NODE, 0, 0),
    VoteResponse(9, True, NODE),
    VoteResponse(10, False, NODE),
    FetchRequest(4, NODE, 57, 61),
    FetchResponse(4, NODE, 80, 0, 3, (b"\x00entry", b"x" * 300)),
    FetchResponse(5, NODE, 90, 60, 0, ()),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Any) -> None:
    data = encode(message)
    assert isinstance(data, bytes)
    decoded = decode(data, type(message))
    assert decoded == message
    assert type(decoded) is type(message)
    if isinstance(message, AppendRequest | FetchResponse):
        assert isinstance(decoded.entries, tuple)
        assert cbor2.loads(data)["entries"] == list(message.entries)  # a CBOR array of bytes
    assert encode(decoded) == data


def _raw(message: Any, **changes: Any) -> bytes:
    """The CBOR map of ``message`` with fields changed (``None`` value: field removed)."""
    data = asdict(message)
    if "entries" in data:
        data["entries"] = list(data["entries"])
    for name, value in changes.items():
        if value is None:
            data.pop(name)
        else:
            data[name] = value
    return bytes(cbor2.dumps(data))


APPEND = AppendRequest(3, NODE, "n0", 5, 2, (b"a", b"b"), 4)
APPEND_RESPONSE = AppendResponse(3, True, 7, 7, NODE)
VOTE = VoteRequest(3, NODE, 5, 2)
VOTE_RESPONSE = VoteResponse(3, False, NODE)
FETCH = FetchRequest(3, NODE, 10, 12)
FETCHED = FetchResponse(3, NODE, 12, 0, 2, (b"a",))


@pytest.mark.parametrize(
    ("data", "cls", "field", "reason"),
    [
        (b"\xa2\x01", AppendRequest, "body", "not CBOR"),  # a map cut short
        (b"\xff", AppendRequest, "body", "expected a CBOR map"),  # a lone "break"
        (b"", VoteRequest, "body", "not CBOR"),
        (b"\x1c", VoteResponse, "body", "not CBOR"),  # reserved additional information
        (cbor2.dumps([3, NODE, 5, 2]), VoteRequest, "body", "expected a CBOR map"),
        (cbor2.dumps("term"), AppendResponse, "body", "expected a CBOR map"),
        (cbor2.dumps(None), AppendRequest, "body", "expected a CBOR map"),
        (_raw(VOTE, extra=1), VoteRequest, "extra", "unknown field"),
        (_raw(APPEND, leader_id=None, zzz=1, aaa=2), AppendRequest, "aaa", "unknown field"),
        (encode(VOTE), AppendRequest, "candidate_id", "unknown field"),  # the wrong message
        (_raw(VOTE, term=None), VoteRequest, "term", "missing"),
        (_raw(APPEND, entries=None), AppendRequest, "entries", "missing"),
        (_raw(VOTE_RESPONSE, node_id=None), VoteResponse, "node_id", "missing"),
        (_raw(APPEND, term=True), AppendRequest, "term", "unsigned 64-bit"),
        (_raw(VOTE, last_index=False), VoteRequest, "last_index", "unsigned 64-bit"),
        (_raw(APPEND, prev_index=-1), AppendRequest, "prev_index", "unsigned 64-bit"),
        (_raw(APPEND_RESPONSE, match_index=-5), AppendResponse, "match_index", "unsigned"),
        (_raw(VOTE, last_term=MAX_U64 + 1), VoteRequest, "last_term", "unsigned 64-bit"),
        (_raw(APPEND, leader_commit="4"), AppendRequest, "leader_commit", "unsigned 64-bit"),
        (_raw(APPEND, prev_term=2.0), AppendRequest, "prev_term", "unsigned 64-bit"),
        (_raw(APPEND, entries="ab"), AppendRequest, "entries", "list of byte strings"),
        (_raw(APPEND, entries=["a", "b"]), AppendRequest, "entries", "list of byte strings"),
        (_raw(APPEND, entries=[b"a", 1]), AppendRequest, "entries", "list of byte strings"),
        (_raw(APPEND, entries=b"ab"), AppendRequest, "entries", "list of byte strings"),
        (_raw(APPEND_RESPONSE, success=1), AppendResponse, "success", "boolean"),
        (_raw(VOTE_RESPONSE, granted="yes"), VoteResponse, "granted", "boolean"),
        (_raw(VOTE, candidate_id=""), VoteRequest, "candidate_id", "non-empty string"),
        (_raw(APPEND, leader_address=b"n0"), AppendRequest, "leader_address", "string"),
        (_raw(APPEND, leader_id="x" * 1025), AppendRequest, "leader_id", "string"),
        (_raw(VOTE_RESPONSE, node_id=7), VoteResponse, "node_id", "non-empty string"),
        (_raw(FETCH, known_commit=None), FetchRequest, "known_commit", "missing"),
        (_raw(FETCH, start=-1), FetchRequest, "start", "unsigned 64-bit"),
        (_raw(FETCHED, entries=[1]), FetchResponse, "entries", "list of byte strings"),
        (_raw(FETCHED, base_index="0"), FetchResponse, "base_index", "unsigned 64-bit"),
        (b"\x81" * 1000 + b"\x00", FetchResponse, "body", "not CBOR"),  # nested 1,000 deep
        (b"\x00" * (MAX_MESSAGE_BYTES + 1), AppendRequest, "body", "more than"),
    ],
)
def test_decode_rejects(data: bytes, cls: type[Any], field: str, reason: str) -> None:
    with pytest.raises(MessageError) as caught:
        decode(data, cls)
    assert caught.value.field == field
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{field}: ")
    assert isinstance(caught.value, ValueError)  # transports treat it as a failed RPC


def test_decode_accepts_the_bounds() -> None:
    assert decode(_raw(VOTE, term=0, last_term=MAX_U64), VoteRequest).last_term == MAX_U64
    assert decode(_raw(VOTE, candidate_id="x" * 1024), VoteRequest).candidate_id == "x" * 1024
    assert decode(_raw(APPEND, entries=[]), AppendRequest).entries == ()


@pytest.mark.parametrize(
    ("matches", "expected"),
    [
        ([], 0),
        ([5], 5),
        ([5, 3], 3),
        ([5, 3, 1], 3),
        ([1, 3, 5], 3),
        ([9, 9, 1, 1], 1),
        ([7, 7, 7, 1, 1], 7),
        ([1, 7, 1, 7, 7], 7),
        ([7, 7, 1, 1, 1], 1),
        ([0, 0, 0], 0),
    ],
)
def test_majority_index(matches: list[int], expected: int) -> None:
    assert majority_index(matches) == expected
