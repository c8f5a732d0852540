"""The node's own exceptions: what went wrong, said in the node's terms, never in HTTP's.

Why a module of its own: the primary, governance, request validation and the other services
decide *what* is wrong (a bad request, a refusal, something not found, a conflict, retry
later); how that looks to an HTTP client (status code, JSON error body) is decided in one
table, ``http_errors.py``, and nowhere else. Each request error carries what the answer must
name: ``field``, the part of the request at fault (a JSON-path-like string) or None, and
``reason``; a few carry details a client acts on (``commit``, the node's commit, when a
transaction is not committed here yet).
"""

from __future__ import annotations

from typing import Any


class NodeStartError(RuntimeError):
    """The node cannot start; the message says what to fix."""


class RequestError(Exception):
    """A request this node cannot carry out as asked: ``field`` at fault, and why."""

    def __init__(self, field: str | None, reason: str, **extra: Any) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field, self.reason, self.extra = field, reason, extra


class BadRequestError(RequestError):
    """The request is malformed or invalid; nothing was changed."""


class UnauthenticatedError(RequestError):
    """The caller presented no client certificate where one is needed."""


class ForbiddenError(RequestError):
    """The caller is known but may not do this (not Active, or not in a role that may)."""


class RefreshRefusedError(RequestError):
    """A node's announcement of a new address was refused (not Trusted, a used nonce, or its
    fresh quote failed the policy: then ``field`` is the verifier's named reason)."""


class NotFoundError(RequestError):
    """What the request names does not exist (final: asking again will not help)."""


class NotCommittedYetError(RequestError):
    """The transaction may still commit here (a backup learns commits a heartbeat later)."""


class ConflictError(RequestError):
    """The request contradicts the current state (already done, or would break an invariant)."""


class DocumentTooLargeError(RequestError):
    """A signed governance document is larger than a node accepts."""


class NoLedgerSecretError(RequestError):
    """This node does not hold the ledger secret the request needs (left out of a rotation)."""


class ServiceNotOpenError(RequestError):
    """The service is recovering from a disaster (``service_state``): writes and joins wait
    until the members open it."""


class ShareRefusedError(RequestError):
    """A recovery share that does not count; ``field`` is the named reason
    (``recovery.ceremony``), ``reason`` the detail."""


class RetryLaterError(RequestError):
    """A previous trust change is not committed yet; the caller should retry shortly."""

    def __init__(self, reason: str) -> None:
        super().__init__(None, reason)


class UnavailableError(RequestError):
    """This node cannot serve the request now (the primary is unreachable, no list yet)."""

    def __init__(self, reason: str) -> None:
        super().__init__(None, reason)


class NotReadyError(RequestError):
    """This node is not ready to serve (``/readyz``); the reason lists what is missing."""

    def __init__(self, reason: str) -> None:
        super().__init__(None, reason)


class JoinRefusedError(RuntimeError):
    """The primary refuses a joining node; ``reason`` is the verifier's named reason.

    One exception for both ends of a join: the primary raises it (the HTTP layer answers 403
    ``JoinRefused`` naming the reason in ``field``), and the joiner raises it again from that
    answer, which stops the node.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"join refused: {reason}: {detail}")
        self.reason, self.detail = reason, detail
