"""Governance errors: every one names the field at fault and says why."""

from __future__ import annotations


class GovernanceError(Exception):
    """A proposal, ballot or constitution that cannot be accepted as given.

    ``field`` is a dotted path into the document (``actions[1].args.measurement``) so the
    caller can point at it; the HTTP layer turns it into ``{"error": {"field": …}}``.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class SignatureRefusedError(GovernanceError):
    """The document is not validly signed by an Active member allowed to sign it."""
