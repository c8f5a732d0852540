"""How the node's errors look over HTTP: one table from exception type to status and body.

Why: domain code (the primary, governance, request validation, the ledger and consensus)
raises exceptions that say what is wrong in its own terms (``errors.py``, and the governance
and replication layers' own); only this module knows HTTP status codes. The API's middleware
(``app.py``) answers every exception found here, including those of aiohttp's own it renders,
as JSON ``{"error": {"code", "reason", [details], "field"}}`` (``field`` only when one part
of the request is at fault); any other exception is a bug, answered 500 by aiohttp.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consortium_node.governance.errors import GovernanceError, SignatureRefusedError
from consortium_node.ledger.errors import HistoryNotHeldError, StoredEntryDamagedError
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
    RequestError,
    RetryLaterError,
    ServiceNotOpenError,
    ShareRefusedError,
    UnauthenticatedError,
    UnavailableError,
)
from consortium_node.server.peers import RECIPIENT_HEADER, MisdirectedError, PeerRejectedError


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


# What an error body names: (field, reason, further details).
Details = tuple[str | None, str, dict[str, Any]]


def _request(exc: RequestError) -> Details:
    return exc.field, exc.reason, exc.extra


def _governance(exc: GovernanceError) -> Details:
    return exc.field, exc.reason, {}


def _join_refused(exc: JoinRefusedError) -> Details:
    return exc.reason, exc.detail, {}


def _peer_rejected(exc: PeerRejectedError) -> Details:
    return "client_certificate", str(exc), {}


def _misdirected(exc: MisdirectedError) -> Details:
    return RECIPIENT_HEADER, str(exc), {}


def _stored_damage(exc: StoredEntryDamagedError) -> Details:
    return None, f"{exc}; this node stops and repairs it from its peers", {"index": exc.index}


def _not_leader(exc: NotLeaderError) -> Details:
    """Names the primary's address when known: clients retry there."""
    where = exc.leader_address or "not known yet (an election may be running)"
    reason = f"this node is not the primary; the primary is {where}"
    if exc.why:
        reason += f"; {exc.why}"
    return None, reason, {"leader_address": exc.leader_address}


def _history_not_held(exc: HistoryNotHeldError) -> Details:
    return "txid", str(exc), {"held_from": exc.held_from}


def _commit_timeout(exc: CommitTimeoutError) -> Details:
    return None, str(exc), {"txids": [str(t) for t in exc.txids]}


@dataclass(frozen=True)
class HttpError:
    """One row of the table: the status, the body's ``code``, and how to read the rest."""

    status: int
    code: str
    details: Callable[[Any], Details] = _request


HTTP_ERRORS: dict[type[Exception], HttpError] = {
    BadRequestError: HttpError(400, "BadRequest"),
    GovernanceError: HttpError(400, "BadRequest", _governance),  # a malformed document
    UnauthenticatedError: HttpError(401, "Unauthenticated"),
    ForbiddenError: HttpError(403, "Forbidden"),
    PeerRejectedError: HttpError(403, "PeerRejected", _peer_rejected),
    JoinRefusedError: HttpError(403, "JoinRefused", _join_refused),
    RefreshRefusedError: HttpError(403, "RefreshRefused"),
    SignatureRefusedError: HttpError(403, "SignatureRefused", _governance),
    NotFoundError: HttpError(404, "NotFound"),
    NotCommittedYetError: HttpError(404, "NotCommittedYet"),
    HistoryNotHeldError: HttpError(404, "HistoryNotHeld", _history_not_held),
    ConflictError: HttpError(409, "Conflict"),
    ShareRefusedError: HttpError(422, "ShareRefused"),
    DocumentTooLargeError: HttpError(413, "TooLarge"),
    MisdirectedError: HttpError(421, "Misdirected", _misdirected),
    NoLedgerSecretError: HttpError(503, "SecretUnavailable"),
    StoredEntryDamagedError: HttpError(503, "LedgerDamaged", _stored_damage),
    RetryLaterError: HttpError(503, "RetryLater"),
    ServiceNotOpenError: HttpError(503, "ServiceNotOpen"),
    UnavailableError: HttpError(503, "Unavailable"),
    NotReadyError: HttpError(503, "NotReady"),
    NotLeaderError: HttpError(503, "NotLeader", _not_leader),
    CommitTimeoutError: HttpError(503, "CommitTimeout", _commit_timeout),
}
ANSWERED = tuple(HTTP_ERRORS)  # the exception types the API answers with a JSON error


def api_error(exc: Exception) -> ApiError:
    """The HTTP answer to ``exc``, one of ``ANSWERED`` (the most specific row wins)."""
    for cls in type(exc).__mro__:
        row = HTTP_ERRORS.get(cls)
        if row is not None:
            field, reason, extra = row.details(exc)
            return ApiError(row.status, row.code, field, reason, **extra)
    raise TypeError(f"no HTTP answer for {type(exc).__name__}") from exc
