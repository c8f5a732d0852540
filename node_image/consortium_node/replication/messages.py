"""Raft RPC messages and their wire encoding.

Messages travel between nodes over mutually authenticated TLS as CBOR maps (ledger entries are
raw bytes, so CBOR avoids base64). Decoding validates every field's type and range and raises
``MessageError(field, reason)``: a peer's bytes are never trusted to be well formed.

    AppendRequest  {"term", "leader_id", "leader_address", "prev_index", "prev_term",
                    "entries": [bytes...], "leader_commit"}
    AppendResponse {"term", "success", "match_index", "last_index", "node_id"}
    VoteRequest    {"term", "candidate_id", "last_index", "last_term"}
    VoteResponse   {"term", "granted", "node_id"}
    FetchRequest   {"term", "node_id", "start", "known_commit"}
    FetchResponse  {"term", "node_id", "commit_index", "base_index", "prev_term",
                    "entries": [bytes...]}

Each kind has its own route (``/internal/raft/append``, ``/internal/raft/vote``,
``/internal/raft/fetch``). A **fetch** is not part of Raft's protocol: a node whose log lacks
entries it knew committed (a storage fault) asks any voter for the committed entries from
``start`` (its log's end + 1); ``known_commit`` is the index it knew committed, so the peer can
say why no leader is elected when nobody holds them. The answer carries only entries at or
below the answering node's ``commit_index`` (committed entries are the same on every node), from
``start`` on if its log holds ``start - 1`` (``base_index``: where its log begins, after a
snapshot), with the term of entry ``start - 1`` for the asker to check against its own.
A node that predates fetch answers the route with 404. A **pre-vote**
(``/internal/raft/prevote``, ``election.py``) reuses VoteRequest and VoteResponse unchanged, so
no message changed and older nodes still decode every message sent to them; what differs is the
meaning: the request's ``term`` is the term the candidate *would* campaign in (its own + 1,
not persisted anywhere), and the response's ``term`` is the voter's current term, which a
pre-vote never changes. A node that predates pre-vote answers the route with 404.

Bounds: a body is at most the node's ``limits.max_body_bytes`` (the HTTP server refuses more)
and ``MAX_MESSAGE_BYTES`` here; nesting is bounded by the CBOR decoder (cbor2 refuses more than
400 nested containers, and every message is a flat map whose only container value is a list of
byte strings, checked below); integers are unsigned 64-bit and strings at most 1,024 characters.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar

import cbor2

MAX_U64 = 2**64 - 1
MAX_MESSAGE_BYTES = 128 * 1024 * 1024  # a batch (RaftTiming.max_batch_bytes) and an entry beyond


class MessageError(ValueError):
    """A Raft message is malformed; names the field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class AppendRequest:
    term: int
    leader_id: str
    leader_address: str
    prev_index: int
    prev_term: int
    entries: tuple[bytes, ...]
    leader_commit: int


@dataclass(frozen=True)
class AppendResponse:
    term: int
    success: bool
    match_index: int
    last_index: int
    node_id: str


@dataclass(frozen=True)
class VoteRequest:
    term: int
    candidate_id: str
    last_index: int
    last_term: int


@dataclass(frozen=True)
class VoteResponse:
    term: int
    granted: bool
    node_id: str


@dataclass(frozen=True)
class FetchRequest:
    term: int
    node_id: str  # the asking node
    start: int  # the first index it lacks
    known_commit: int  # the index it knew committed before its storage fault


@dataclass(frozen=True)
class FetchResponse:
    term: int
    node_id: str  # the answering node
    commit_index: int
    base_index: int  # its log holds entries after this index (a snapshot before it)
    prev_term: int  # the term of entry ``start - 1`` in its log (0: it does not hold it)
    entries: tuple[bytes, ...]  # committed entries from ``start`` (empty: none to give)


Message = AppendRequest | AppendResponse | VoteRequest | VoteResponse | FetchRequest | FetchResponse
M = TypeVar(
    "M", AppendRequest, AppendResponse, VoteRequest, VoteResponse, FetchRequest, FetchResponse
)


def encode(message: Message) -> bytes:
    """CBOR bytes of a message (entries as a list of byte strings)."""
    # Shallow on purpose: dataclasses.asdict would deep-copy every entry of every batch.
    data = {f.name: getattr(message, f.name) for f in fields(message)}
    if isinstance(message, AppendRequest | FetchResponse):
        data["entries"] = list(message.entries)
    return bytes(cbor2.dumps(data))


def _check(name: str, value: Any, kind: type) -> Any:
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_U64:
            raise MessageError(name, "expected an unsigned 64-bit integer")
    elif kind is bool:
        if not isinstance(value, bool):
            raise MessageError(name, "expected a boolean")
    elif kind is str:
        if not isinstance(value, str) or not 0 < len(value) <= 1024:
            raise MessageError(name, "expected a non-empty string")
    elif kind is tuple:
        if not isinstance(value, list | tuple) or not all(isinstance(e, bytes) for e in value):
            raise MessageError(name, "expected a list of byte strings")
        return tuple(value)
    return value


_KINDS = {"int": int, "bool": bool, "str": str, "tuple[bytes, ...]": tuple}


def decode(data: bytes, cls: type[M]) -> M:
    """Decode and validate one message of type ``cls``."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError("body", f"{len(data)} bytes, more than {MAX_MESSAGE_BYTES}")
    try:
        raw = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types for bad input
        raise MessageError("body", f"not CBOR: {exc}") from exc
    if not isinstance(raw, dict):
        raise MessageError("body", "expected a CBOR map")
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(names), key=str)
    if unknown:
        raise MessageError(str(unknown[0]), "unknown field")
    values = {}
    for name, field in names.items():
        if name not in raw:
            raise MessageError(name, "missing")
        values[name] = _check(name, raw[name], _KINDS[str(field.type)])
    return cls(**values)
