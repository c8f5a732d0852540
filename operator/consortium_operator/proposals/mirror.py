"""A Proposal CR's status: what the ledger recorded of its documents, shown in Kubernetes.

The operator relays documents it cannot sign (``relay.py``); this module only reads them —
decoding a COSE_Sign1 *without* verifying it, to show who claims to have signed what — and
turns the nodes' answers into status. The nodes' verdict is the only one that counts: a ballot
is ``accepted`` only when the ledger's copy of the proposal holds exactly its bytes.

Pure: documents and the nodes' answers in, a status dict out (compared before writing).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from consortium_node.governance import FINAL_STATES, ProposalState
from consortium_node.governance.documents import document_id
from consortium_node.identity.cose import decode_sign1
from consortium_node.identity.errors import CoseError
from consortium_operator.api import conditions as c

WILL_NOT_APPLY = frozenset({ProposalState.REJECTED, ProposalState.REFUSED, ProposalState.INVALID})
"""A Proposal in one of these will not take effect (a Warning Event, UpToDate False)."""


@dataclass(frozen=True)
class Document:
    """A spec document as the operator can read it: bytes, claimed signer, payload."""

    raw: bytes | None
    signer: str | None = None  # the kid (member id) it claims; unverified
    payload: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def decode(cls, text: object, where: str) -> Document:
        if not isinstance(text, str) or not text:
            return cls(None, error=f"{where}: expected base64 of a COSE_Sign1 document")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            return cls(None, error=f"{where}: not base64 ({exc})")
        try:
            message = decode_sign1(raw)
            payload = json.loads(message.payload)
        except (CoseError, ValueError, UnicodeDecodeError) as exc:
            return cls(raw, error=f"{where}: not a signed governance document ({exc})")
        kid = message.kid.hex() if message.kid else None
        return cls(raw, kid, payload if isinstance(payload, dict) else {})


@dataclass(frozen=True)
class Relayed:
    """What the relay learned about one Proposal CR in this pass."""

    view: Mapping[str, Any] | None = None  # the node's GET /gov/proposals/<id>
    refused: str | None = None  # the nodes refused the proposal document itself
    unreachable: str | None = None  # no primary to relay to / read from
    ballot_refusals: Mapping[int, str] = field(default_factory=dict)
    withdrawal_refusal: str | None = None
    receipt: Mapping[str, Any] | None = None


def ledger_copy(view: Mapping[str, Any] | None, signer: str | None) -> bytes | None:
    """The bytes of ``signer``'s ballot as the ledger holds them (None if it holds none)."""
    if view is None or signer is None:
        return None
    text = (view.get("documents") or {}).get("ballots", {}).get(signer)
    return base64.b64decode(text) if isinstance(text, str) else None


def withdrawal_recorded(view: Mapping[str, Any] | None, doc: Document) -> bool:
    text = ((view or {}).get("documents") or {}).get("withdrawal")
    return isinstance(text, str) and doc.raw is not None and base64.b64decode(text) == doc.raw


def action_summary(actions: Sequence[Mapping[str, Any]]) -> str:
    if not actions:
        return "(none)"
    first = str(actions[0].get("name", "?"))
    return first if len(actions) == 1 else f"{first} +{len(actions) - 1}"


def _ballots(
    docs: Sequence[Document], relayed: Relayed, names: Mapping[str, str]
) -> list[dict[str, Any]]:
    out = []
    for i, doc in enumerate(docs):
        item: dict[str, Any] = {"index": i, "accepted": False}
        if doc.signer:
            item["memberId"] = doc.signer
            if doc.signer in names:
                item["member"] = names[doc.signer]
        if isinstance(doc.payload.get("vote"), str):
            item["vote"] = doc.payload["vote"]
        copy = ledger_copy(relayed.view, doc.signer)
        if copy is not None and copy == doc.raw:
            item["accepted"] = True
        elif i in relayed.ballot_refusals:  # the nodes' verdict first
            item["reason"] = relayed.ballot_refusals[i]
        elif doc.error is not None:
            item["reason"] = doc.error
        elif copy is not None:
            item["reason"] = "this member's other ballot is the one recorded (one ballot each)"
        else:
            item["reason"] = "not relayed yet"
        out.append(item)
    return out


def state_of(proposal: Document, relayed: Relayed) -> tuple[str, str]:
    if proposal.error is not None:
        return ProposalState.INVALID, proposal.error
    if relayed.view is not None:
        return str(relayed.view.get("state")), str(relayed.view.get("reason") or "")
    if relayed.refused is not None:
        return ProposalState.REFUSED, relayed.refused
    return ProposalState.PENDING, relayed.unreachable or "not relayed to the consortium yet"


def proposal_conditions(
    state: str, reason: str, ballots: Sequence[Mapping[str, Any]]
) -> list[c.Condition]:
    not_submitted: dict[str, str] = {
        ProposalState.INVALID: c.DOCUMENT_INVALID,
        ProposalState.REFUSED: c.REFUSED_BY_NODES,
        ProposalState.PENDING: c.NOT_RELAYED,
    }
    if state in not_submitted:
        submitted = c.Condition(c.SUBMITTED, False, not_submitted[state], reason)
    else:
        submitted = c.Condition(c.SUBMITTED, True, c.RECORDED, "the ledger holds the proposal")
    decided = (
        c.Condition(c.DECIDED, True, state, reason)
        if state in FINAL_STATES
        else c.Condition(c.DECIDED, False, not_submitted.get(state, c.OPEN), reason)
    )
    refused = [b for b in ballots if not b["accepted"]]
    if refused:
        text = "; ".join(f"ballots[{b['index']}]: {b.get('reason', '')}" for b in refused)
        accepted = c.Condition(c.BALLOTS_ACCEPTED, False, c.BALLOT_REFUSED, text)
    else:
        accepted = c.Condition(
            c.BALLOTS_ACCEPTED, True, c.ALL_BALLOTS_RECORDED, f"{len(ballots)} ballot(s) recorded"
        )
    return [submitted, decided, accepted]


def proposal_status(
    body: Mapping[str, Any],
    relayed: Relayed,
    names: Mapping[str, str],
    now: str,
) -> dict[str, Any]:
    """The whole status for a Proposal CR. ``names``: member id → Member CR name (and the
    operator's id → ``operator``)."""
    spec = body.get("spec") or {}
    existing = body.get("status") or {}
    generation = int(body["metadata"].get("generation", 0))
    proposal = Document.decode(spec.get("proposal"), "spec.proposal")
    ballot_docs = [
        Document.decode(b, f"spec.ballots[{i}]") for i, b in enumerate(spec.get("ballots") or [])
    ]
    state, reason = state_of(proposal, relayed)
    ballots = _ballots(ballot_docs, relayed, names)
    out: dict[str, Any] = {
        "observedGeneration": generation,
        "state": state,
        "reason": reason,
        "ballots": ballots,
    }
    actions = proposal.payload.get("actions")
    if isinstance(actions, list):
        out["actions"] = [a for a in actions if isinstance(a, dict)]
        out["action"] = action_summary(out["actions"])
    if proposal.raw is not None:
        out["proposalId"] = (relayed.view or {}).get("proposal_id") or document_id(proposal.raw)
    if proposal.signer:
        out["proposer"] = proposal.signer
        if proposal.signer in names:
            out["proposerName"] = names[proposal.signer]
    if isinstance(proposal.payload.get("created_at"), str):
        out["createdAt"] = proposal.payload["created_at"]
    view = relayed.view
    if view is not None:
        tally = view.get("tally") or {}
        out["tally"] = {
            k: int(tally.get(k, 0)) for k in ("approve", "reject", "needed", "governors")
        }
        out["votes"] = f"{out['tally']['approve']}/{out['tally']['needed']}"
        out["expiresAt"] = str(view.get("expires_at"))
        out["txid"] = str(view.get("txid"))
    if "withdrawal" in spec:
        doc = Document.decode(spec["withdrawal"], "spec.withdrawal")
        recorded = withdrawal_recorded(view, doc)
        out["withdrawal"] = {"accepted": recorded}
        why = doc.error or relayed.withdrawal_refusal or ("" if recorded else "not relayed yet")
        if why:
            out["withdrawal"]["reason"] = why
    receipt = relayed.receipt
    if receipt is None and existing.get("txid") == out.get("txid"):
        receipt = existing.get("receipt")  # the same transaction: the receipt still holds
    if receipt is not None and state in FINAL_STATES:
        out["receipt"] = dict(receipt)
    out = without_empty_strings(out)
    out["conditions"] = c.merge(
        existing.get("conditions"),
        proposal_conditions(state, reason, ballots),
        now=now,
        generation=generation,
    )
    return out


def without_empty_strings(value: Any) -> Any:
    """Drop empty strings from mappings, recursively: custom resources never carry ``""`` (an
    API server built with a strict JSON decoder reads it as null and refuses the write)."""
    if isinstance(value, Mapping):
        return {k: without_empty_strings(v) for k, v in value.items() if v != ""}
    if isinstance(value, list):
        return [without_empty_strings(v) for v in value]
    return value
