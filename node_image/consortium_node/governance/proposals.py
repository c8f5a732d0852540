"""The proposal state machine, as pure functions of (proposal, document, constitution, now).

States (``ProposalState``: CCF's, minus "Dropped", which is Rejected with an ``Invalidated``
reason here, and "Failed", which is Rejected with a ``Failed`` reason)::

    Open ──approvals ≥ needed──────────────▶ Accepted   (then applied, atomically)
      │ ──rejections make it unreachable───▶ Rejected
      │ ──another applied proposal touched─▶ Rejected   (reason "Invalidated: …")
      │   the same state
      │ ──its proposer withdrew it─────────▶ Withdrawn
      └ ──proposal_expiry_seconds passed───▶ Expired

Only ballots of governors who are Active *when the tally is taken* count: a member removed
after voting no longer counts, and a removed member's later ballot is refused at signature
check (documents.py). One ballot per governor; a second one is refused.

Ledger value of ``public:consortium.proposals[<proposal_id>]`` (``Proposal.to_json``)::

    {"proposal_id", "proposer", "actions", "created_at", "expires_at", "state", "reason",
     "ballots": {member_id: "approve" | "reject"}, "subjects": [...]}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from consortium_node.common.timeutil import parse_rfc3339, rfc3339
from consortium_node.governance.actions import Action, parse_actions, subjects_of
from consortium_node.governance.constitution import Constitution
from consortium_node.governance.documents import SignedDocument
from consortium_node.governance.errors import GovernanceError

CLOCK_SKEW = timedelta(minutes=5)


class ProposalState(StrEnum):
    """A proposal's state; the value is the string on the wire, in the ledger and in a
    Proposal resource's ``status.state``. One enum for the node, ``consortiumctl`` and the
    operator's relay, mirror and upgrade logic.

    The first five are the ledger's (``LEDGER_STATES``). The last three exist only on a
    Proposal resource, before (or instead of) a ledger state: the operator has not relayed
    it yet (Pending), every node refused it (Refused), or the document itself is unusable
    (Invalid). A ledger value never holds them (``Proposal`` refuses them).
    """

    OPEN = "Open"
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    WITHDRAWN = "Withdrawn"
    EXPIRED = "Expired"
    PENDING = "Pending"
    REFUSED = "Refused"
    INVALID = "Invalid"


FINAL_STATES = frozenset(
    {ProposalState.ACCEPTED, ProposalState.REJECTED, ProposalState.WITHDRAWN, ProposalState.EXPIRED}
)
"""Ledger states a proposal never leaves."""
LEDGER_STATES = frozenset({ProposalState.OPEN, *FINAL_STATES})
"""The states a proposal can have in the ledger."""


@dataclass(frozen=True)
class Tally:
    approve: int
    reject: int
    needed: int
    governors: int

    def to_json(self) -> dict[str, int]:
        return {
            "approve": self.approve,
            "reject": self.reject,
            "needed": self.needed,
            "governors": self.governors,
        }


@dataclass(frozen=True)
class Proposal:
    proposal_id: str
    proposer: str
    actions: tuple[Action, ...]
    created_at: datetime
    expires_at: datetime
    state: ProposalState = ProposalState.OPEN
    reason: str = ""
    ballots: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        state = ProposalState(self.state)  # "Open" → OPEN
        if state not in LEDGER_STATES:
            raise ValueError(f"state {state!r} is not a ledger state of a proposal")
        object.__setattr__(self, "state", state)

    @property
    def subjects(self) -> frozenset[str]:
        return subjects_of(self.actions)

    def to_json(self) -> dict[str, Any]:
        return {
            "proposal_id": self.proposal_id,
            "proposer": self.proposer,
            "actions": [a.to_json() for a in self.actions],
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.expires_at),
            "state": self.state.value,
            "reason": self.reason,
            "ballots": dict(sorted(self.ballots.items())),
            "subjects": sorted(self.subjects),
        }

    @staticmethod
    def from_json(value: Mapping[str, Any]) -> Proposal:
        """Read back what ``to_json`` wrote (a ledger value: trusted, but re-validated)."""
        return Proposal(
            proposal_id=value["proposal_id"],
            proposer=value["proposer"],
            actions=parse_actions(value["actions"]),
            created_at=parse_rfc3339(value["created_at"]),
            expires_at=parse_rfc3339(value["expires_at"]),
            state=ProposalState(value["state"]),
            reason=value["reason"],
            ballots=dict(value["ballots"]),
        )


def open_proposal(doc: SignedDocument, constitution: Constitution, now: datetime) -> Proposal:
    """A new Open proposal from a verified proposal document (actions validated here)."""
    if doc.kind != "proposal":
        raise ValueError("open_proposal needs a proposal document")
    actions = parse_actions(doc.payload["actions"], "payload.actions")
    try:
        created = parse_rfc3339(doc.payload["created_at"])
    except (ValueError, TypeError) as exc:
        raise GovernanceError("payload.created_at", f"expected an RFC 3339 time: {exc}") from exc
    # Whole seconds: the ledger stores RFC 3339 at second precision, and every node must
    # compute the same expiry from what it stored.
    created = created.replace(microsecond=0)
    if created > now + CLOCK_SKEW:
        raise GovernanceError("payload.created_at", f"{rfc3339(created)} is in the future")
    expires = created + timedelta(seconds=constitution.proposal_expiry_seconds)
    if expires <= now:
        raise GovernanceError(
            "payload.created_at", f"too old: it would have expired at {rfc3339(expires)}"
        )
    return Proposal(doc.document_id, doc.signer, actions, created, expires)


def tally(p: Proposal, constitution: Constitution, governors: Iterable[str]) -> Tally:
    """Count the ballots of the governors Active now."""
    active = set(governors)
    votes = [v for member, v in p.ballots.items() if member in active]
    return Tally(
        approve=votes.count("approve"),
        reject=votes.count("reject"),
        needed=constitution.votes_needed(len(active)),
        governors=len(active),
    )


def decide(
    p: Proposal, constitution: Constitution, governors: Iterable[str], now: datetime
) -> Proposal:
    """Move an Open proposal to the state its ballots, the constitution and the clock give."""
    if p.state is not ProposalState.OPEN:
        return p
    if now >= p.expires_at:
        reason = f"no decision by {rfc3339(p.expires_at)}"
        return replace(p, state=ProposalState.EXPIRED, reason=reason)
    if constitution.auto_approves([a.name for a in p.actions]):
        return replace(p, state=ProposalState.ACCEPTED, reason="auto-approved by the constitution")
    t = tally(p, constitution, governors)
    if t.needed <= t.governors and t.approve >= t.needed:
        reason = f"{t.approve} of {t.governors} approved"
        return replace(p, state=ProposalState.ACCEPTED, reason=reason)
    # An integer threshold above the number of governors cannot be met: such a proposal
    # stays Open (until it expires) rather than being rejected by nobody's vote.
    if t.needed <= t.governors and t.reject > t.governors - t.needed:
        reason = f"{t.reject} of {t.governors} rejected; {t.needed} needed"
        return replace(p, state=ProposalState.REJECTED, reason=reason)
    return p


def cast_ballot(
    p: Proposal,
    ballot: SignedDocument,
    constitution: Constitution,
    governors: Iterable[str],
    now: datetime,
) -> Proposal:
    """Record a verified ballot and decide; refuse it when the proposal is not Open."""
    if ballot.kind != "ballot" or ballot.payload["proposal_id"] != p.proposal_id:
        raise GovernanceError("payload.proposal_id", f"not a ballot on {p.proposal_id}")
    current = decide(p, constitution, governors, now)
    if current.state is not ProposalState.OPEN:
        raise GovernanceError("proposal", f"is {current.state} ({current.reason}): no more ballots")
    if ballot.signer not in set(governors):
        raise GovernanceError("document.kid", "only an Active governor's ballot counts")
    if ballot.signer in current.ballots:
        raise GovernanceError("ballot", f"member {ballot.signer[:16]}… has already voted")
    ballots = {**current.ballots, ballot.signer: ballot.payload["vote"]}
    return decide(replace(current, ballots=ballots), constitution, governors, now)


def withdraw(p: Proposal, withdrawal: SignedDocument, now: datetime) -> Proposal:
    if withdrawal.kind != "withdrawal" or withdrawal.payload["proposal_id"] != p.proposal_id:
        raise GovernanceError("payload.proposal_id", f"not a withdrawal of {p.proposal_id}")
    if withdrawal.signer != p.proposer:
        raise GovernanceError("document.kid", "only the proposer can withdraw a proposal")
    if p.state is not ProposalState.OPEN or now >= p.expires_at:
        state = p.state if p.state is not ProposalState.OPEN else ProposalState.EXPIRED
        raise GovernanceError("proposal", f"is {state}: only an Open proposal can be withdrawn")
    return replace(p, state=ProposalState.WITHDRAWN, reason="withdrawn by its proposer")


def invalidated_by(applied: Proposal, others: Iterable[Proposal]) -> list[Proposal]:
    """The Open proposals that touch state ``applied`` changed, now Rejected (Invalidated)."""
    out = []
    for other in others:
        if other.state is not ProposalState.OPEN or other.proposal_id == applied.proposal_id:
            continue
        common = sorted(other.subjects & applied.subjects)
        if common:
            reason = f"Invalidated: {applied.proposal_id[:16]}… changed {', '.join(common)} first"
            out.append(replace(other, state=ProposalState.REJECTED, reason=reason))
    return out
