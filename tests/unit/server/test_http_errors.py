"""http_errors: the one table from the node's exceptions to HTTP status and JSON error body.

The bodies are pinned byte for byte (key order included): clients, the operator and the
joiner read them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from consortium_node.governance.errors import GovernanceError, SignatureRefusedError
from consortium_node.ledger import StoredEntryDamagedError, TxId
from consortium_node.ledger.errors import HistoryNotHeldError
from consortium_node.replication.raft import CommitTimeoutError, NotLeaderError
from consortium_node.server.errors import (
    BadRequestError,
    ConflictError,
    DocumentTooLargeError,
    ForbiddenError,
    JoinRefusedError,
    NoLedgerSecretError,
    NotCommittedYetError,
    NotFoundError,
    NotReadyError,
    RefreshRefusedError,
    RetryLaterError,
    ServiceNotOpenError,
    ShareRefusedError,
    UnauthenticatedError,
    UnavailableError,
)
from consortium_node.server.http_errors import ANSWERED, HTTP_ERRORS, ApiError, api_error
from consortium_node.server.peers import MisdirectedError, PeerRejectedError, check_recipient

CASES: list[tuple[Exception, int, dict[str, Any]]] = [
    (
        BadRequestError("body", "expected a JSON object"),
        400,
        {"code": "BadRequest", "reason": "expected a JSON object", "field": "body"},
    ),
    (
        GovernanceError("actions[0]", "unknown action"),
        400,
        {"code": "BadRequest", "reason": "unknown action", "field": "actions[0]"},
    ),
    (
        UnauthenticatedError("client_certificate", "needs one"),
        401,
        {"code": "Unauthenticated", "reason": "needs one", "field": "client_certificate"},
    ),
    (
        ForbiddenError("member_id", "not an Active member or user"),
        403,
        {"code": "Forbidden", "reason": "not an Active member or user", "field": "member_id"},
    ),
    (
        PeerRejectedError("no client certificate"),
        403,
        {"code": "PeerRejected", "reason": "no client certificate", "field": "client_certificate"},
    ),
    (
        MisdirectedError("ab" * 32, "cd" * 32),
        421,
        {
            "code": "Misdirected",
            "reason": f"this is node {'cd' * 8}…, not {'ab' * 8}… (another node answers at that "
            "node's address, e.g. one that joined again under a new identity)",
            "field": "Consortium-Recipient",
        },
    ),
    (
        JoinRefusedError("MeasurementNotAllowed", "measurement ab… is not allowed"),
        403,
        {
            "code": "JoinRefused",
            "reason": "measurement ab… is not allowed",
            "field": "MeasurementNotAllowed",
        },
    ),
    (
        RefreshRefusedError("nonce", "not a fresh nonce"),
        403,
        {"code": "RefreshRefused", "reason": "not a fresh nonce", "field": "nonce"},
    ),
    (
        SignatureRefusedError("document.kid", "unknown signer"),
        403,
        {"code": "SignatureRefused", "reason": "unknown signer", "field": "document.kid"},
    ),
    (
        NotFoundError("txid", "not in the primary's log", commit="2.3"),
        404,
        {
            "code": "NotFound",
            "reason": "not in the primary's log",
            "commit": "2.3",
            "field": "txid",
        },
    ),
    (
        NotCommittedYetError("txid", "retry", commit=None),
        404,
        {"code": "NotCommittedYet", "reason": "retry", "commit": None, "field": "txid"},
    ),
    (
        HistoryNotHeldError(3, 101),
        404,
        {
            "code": "HistoryNotHeld",
            "reason": str(HistoryNotHeldError(3, 101)),
            "held_from": 101,
            "field": "txid",
        },
    ),
    (
        ConflictError("proposal", "already submitted"),
        409,
        {"code": "Conflict", "reason": "already submitted", "field": "proposal"},
    ),
    (
        DocumentTooLargeError("body", "at most 262144 bytes"),
        413,
        {"code": "TooLarge", "reason": "at most 262144 bytes", "field": "body"},
    ),
    (
        NoLedgerSecretError("key", "version 2 not held"),
        503,
        {"code": "SecretUnavailable", "reason": "version 2 not held", "field": "key"},
    ),
    (
        NoLedgerSecretError(None, "version 2 not held"),
        503,
        {"code": "SecretUnavailable", "reason": "version 2 not held"},
    ),
    (
        StoredEntryDamagedError(42, "record changed on disk since replay"),
        503,
        {
            "code": "LedgerDamaged",
            "reason": "the entry at index 42 is damaged on disk: record changed on disk since "
            "replay; this node stops and repairs it from its peers",
            "index": 42,
        },
    ),
    (
        RetryLaterError("the previous trusted-node list is not committed yet"),
        503,
        {"code": "RetryLater", "reason": "the previous trusted-node list is not committed yet"},
    ),
    (
        UnavailableError("forwarding failed"),
        503,
        {"code": "Unavailable", "reason": "forwarding failed"},
    ),
    (NotReadyError("catching up"), 503, {"code": "NotReady", "reason": "catching up"}),
    (
        ServiceNotOpenError("service", "recovering", phase="WaitingForRecoveryShares"),
        503,
        {
            "code": "ServiceNotOpen",
            "reason": "recovering",
            "phase": "WaitingForRecoveryShares",
            "field": "service",
        },
    ),
    (
        ShareRefusedError("ShareDoesNotMatch", "not the committed share"),
        422,
        {"code": "ShareRefused", "reason": "not the committed share", "field": "ShareDoesNotMatch"},
    ),
    (
        NotLeaderError("ab" * 32, "n1:8443"),
        503,
        {
            "code": "NotLeader",
            "reason": "this node is not the primary; the primary is n1:8443",
            "leader_address": "n1:8443",
        },
    ),
    (
        NotLeaderError(None, None),
        503,
        {
            "code": "NotLeader",
            "reason": "this node is not the primary; the primary is not known yet (an election "
            "may be running)",
            "leader_address": None,
        },
    ),
    (
        NotLeaderError(None, None, "node abcd lost committed entries 5..9"),
        503,
        {
            "code": "NotLeader",
            "reason": "this node is not the primary; the primary is not known yet (an election "
            "may be running); node abcd lost committed entries 5..9",
            "leader_address": None,
        },
    ),
]


@pytest.mark.parametrize(("exc", "status", "error"), CASES, ids=lambda c: type(c).__name__)
def test_each_error_has_its_status_and_body(
    exc: Exception, status: int, error: dict[str, Any]
) -> None:
    answer = api_error(exc)
    assert answer.status == status
    body = answer.body()
    assert json.dumps(body) == json.dumps({"error": error})  # same keys, same order


def test_every_row_is_pinned_here() -> None:
    assert {type(exc) for exc, _, _ in CASES} | {CommitTimeoutError} == set(HTTP_ERRORS)
    assert set(ANSWERED) == set(HTTP_ERRORS)


def test_commit_timeout_names_the_transactions() -> None:
    exc = CommitTimeoutError([TxId(2, 7)], 5.0, "no quorum")
    body = api_error(exc).body()
    assert body == {
        "error": {"code": "CommitTimeout", "reason": str(exc), "txids": ["2.7"]},
    }


def test_an_unknown_exception_has_no_answer() -> None:
    with pytest.raises(TypeError, match="ValueError"):
        api_error(ValueError("a bug"))


def test_error_body_shape() -> None:
    err = ApiError(404, "NotFound", "txid", "unknown")
    assert err.body() == {"error": {"code": "NotFound", "field": "txid", "reason": "unknown"}}


def test_a_raft_rpc_is_refused_by_any_node_but_its_recipient() -> None:
    check_recipient("cd" * 32, "cd" * 32)
    check_recipient(None, "cd" * 32)  # a peer that predates the header
    with pytest.raises(MisdirectedError):
        check_recipient("ab" * 32, "cd" * 32)
