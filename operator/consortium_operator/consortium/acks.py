"""Member acknowledgements: a new member's signed ack, relayed from its own Member object.

A member the governors accepted is ``Accepted`` in the ledger and becomes ``Active`` only with
its own signed ack (``governance/documents.py``: ``{type: ack, consortium, member_id}``).
``consortiumctl ack --kube NAME`` puts that document, base64, into **``spec.acknowledgement``
of the Member NAME**, and this module relays it to the primary (``POST /gov/members/ack``).

Why there, and not in an annotation or an object of its own:

* it is the member's own statement, input the user writes and the operator only reads — as the
  ballots in a Proposal's spec are — so it belongs in ``spec``;
* the CRD schema types and documents it (``kubectl explain member.spec.acknowledgement``);
  an annotation is free text nobody validates;
* no new kind or RBAC rule: whoever may edit the Member may put its ack there, and it goes
  when the Member goes. Changing it changes the Member's generation, which is the watch event
  that makes the Consortium's next pass due at once (``handlers.member_changed``).

The operator cannot forge an ack: the nodes verify the signature against the certificate the
ledger holds for that member, and refuse anything else. Each pass, for every Member of the
Consortium that the ledger holds as ``Accepted`` and whose spec carries an ack:

* the document is sent unless it visibly belongs to another member (its ``kid`` names another
  member id: a Warning Event says so, nothing is sent);
* 200: the member is Active — the pass's view of the ledger says so at once, so the Member and
  the Consortium's member counts show it in this very pass;
* a refusal (4xx): a Warning Event on the Member with the nodes' reason; the same bytes are
  not sent again for a while (``RelayMemory.refused``, shared with Proposals);
* no primary, or no answer: nothing; the next pass tries again.

An ack put in before the members accepted the member waits in the spec until they do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from consortium_node.common.timeutil import rfc3339
from consortium_node.governance.documents import document_id
from consortium_operator.consortium.context import Pass, primary
from consortium_operator.consortium.observation import Observation
from consortium_operator.members.reconcile import MemberView
from consortium_operator.nodes.client import NodeUnreachableError, Reply
from consortium_operator.proposals.mirror import Document
from consortium_operator.proposals.relay import REFUSALS, RETRY_REFUSED_SECONDS, RelayMemory

log = logging.getLogger("consortium_operator")

FIELD = "spec.acknowledgement"
ACK_PATH = "/gov/members/ack"
ACKNOWLEDGED = "Acknowledged"
ACK_REFUSED = "AcknowledgementRefused"


@dataclass(frozen=True)
class Due:
    """A Member whose ack is to be relayed in this pass: its body, id and decoded document."""

    body: Mapping[str, Any]
    member_id: str
    document: Document
    field: str = FIELD  # where in the Member it was (an ack, or a recovery share)


def due(members: Sequence[MemberView], ledger: Mapping[str, str] | None) -> list[Due]:
    """Members that are Accepted in the ledger and carry an ack in their spec (pure)."""
    found = []
    for view in members:
        if view.spec is None or (ledger or {}).get(view.spec.member_id) != "Accepted":
            continue
        text = (view.body.get("spec") or {}).get("acknowledgement")
        if text is not None:
            found.append(Due(view.body, view.spec.member_id, Document.decode(text, FIELD)))
    return found


def local_refusal(item: Due) -> str | None:
    """Why the operator does not even send ``item``'s document (None: send it).

    Only what is certain without a key: no bytes at all, or a ``kid`` naming another member.
    Anything else — unreadable, unsigned, a forged signature — goes to the nodes, whose
    refusal is the one that counts."""
    doc = item.document
    if doc.raw is None:
        return doc.error or f"{item.field}: empty"
    if doc.signer is not None and doc.signer != item.member_id:
        return (
            f"{item.field} is signed by member {doc.signer[:16]}…, not by this Member "
            f"({item.member_id[:16]}…): each member signs its own with its own key"
        )
    return None


Post = Callable[[bytes], Reply]  # POST an ack document to the primary
Report = Callable[[Due, str, str, str], None]  # an Event on the Member: type, reason, message


def relay(
    items: Sequence[Due],
    post: Post,
    memory: RelayMemory,
    report: Report,
    *,
    ok: tuple[str, str] = (ACKNOWLEDGED, "the member's ack is recorded: Active"),
    refused: str = ACK_REFUSED,
) -> set[str]:
    """Relay ``items`` (see the module docstring); the member ids whose document the nodes
    took (``ok``: the Event's reason and message then; ``refused``: its reason otherwise).

    Raises ``NodeUnreachableError`` when the primary does not answer (what was relayed before
    stands; the rest waits for the next pass)."""
    active: set[str] = set()
    for item in items:
        digest = document_id(item.document.raw) if item.document.raw is not None else ""
        known = memory.refused.get(digest)
        if known is not None and time.monotonic() - known[1] < RETRY_REFUSED_SECONDS:
            continue
        refusal = local_refusal(item)
        if refusal is None:
            assert item.document.raw is not None
            reply = post(item.document.raw)
            if reply.status == 200:
                active.add(item.member_id)
                report(item, "Normal", *ok)
                continue
            if reply.status not in REFUSALS:  # 503 NotLeader, RetryLater: the next pass
                log.info("%s of %s… not relayed yet: %s", ok[0], item.member_id[:16], reply.error())
                continue
            refusal = f"the nodes refused it: {reply.error()}"
        memory.refused[digest] = (refusal, time.monotonic())
        report(item, "Warning", refused, refusal)
    return active


def member_events(p: Pass) -> Report:
    """``relay``'s report: an Event on the Member, and the same line in the operator's log."""

    def report(item: Due, type_: str, reason: str, message: str) -> None:
        name = item.body["metadata"]["name"]
        level = logging.WARNING if type_ == "Warning" else logging.INFO
        log.log(level, "%s/%s Member %s %s: %s", p.namespace, p.spec.name, name, reason, message)
        p.kube.event(item.body, type_, reason, message, rfc3339(p.now))

    return report


def relay_acks(p: Pass, obs: Observation, members: Sequence[MemberView]) -> Observation:
    """Relay every due ack to the primary; ``obs`` with the members that became Active."""
    items = due(members, obs.ledger_members)
    target = primary(p, obs) if items else None
    if target is None:
        return obs

    def post(document: bytes) -> Reply:
        return target.post(ACK_PATH, document)

    try:
        active = relay(items, post, p.memory.relay, member_events(p))
    except NodeUnreachableError as exc:
        log.warning("%s/%s: relaying acks: %s", p.namespace, p.spec.name, exc)
        return obs
    ledger = {**(obs.ledger_members or {}), **dict.fromkeys(active, "Active")}
    return replace(obs, ledger_members=ledger)
