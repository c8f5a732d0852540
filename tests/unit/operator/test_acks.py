"""acks.py: which Members' acks are relayed, and what the nodes' answers become — against a
tiny primary that verifies acks with the nodes' own ``verify_document``."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from consortium_node.governance.documents import Signer, verify_document
from consortium_node.governance.errors import GovernanceError
from consortium_operator.consortium.acks import (
    ACK_REFUSED,
    ACKNOWLEDGED,
    Due,
    due,
    local_refusal,
    relay,
)
from consortium_operator.members.reconcile import MemberView
from consortium_operator.nodes.client import NodeUnreachableError, Reply
from consortium_operator.proposals.relay import RelayMemory
from tests.unit.governance.support import Member, member

NEWBIE, OLDIE, OTHER = member("acks-newbie"), member("acks-oldie"), member("acks-other")


def ack(who: Member, consortium: str = "demo") -> bytes:
    return who.sign({"type": "ack", "consortium": consortium, "member_id": who.member_id})


def member_body(who: Member, acknowledgement: bytes | str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "consortium": "demo",
        "role": "user",
        "certificate": who.certificate_pem,
    }
    if isinstance(acknowledgement, bytes):
        spec["acknowledgement"] = base64.b64encode(acknowledgement).decode("ascii")
    elif acknowledgement is not None:
        spec["acknowledgement"] = acknowledgement
    return {"metadata": {"name": who.name, "namespace": "ns"}, "spec": spec}


@dataclass
class Primary:
    """``POST /gov/members/ack`` as ``server/governance.py`` answers it."""

    members: dict[str, Signer]
    posts: int = 0
    answer: int | None = None  # force a status (503: no primary, say)
    unreachable: bool = False

    def post(self, document: bytes) -> Reply:
        if self.unreachable:
            raise NodeUnreachableError("demo-0 (10.0.0.1): timed out")
        self.posts += 1
        if self.answer is not None:
            return _error(self.answer, "NotLeader", None, "this node is not the primary")
        try:
            doc = verify_document(document, "ack", "demo", self.members)
        except GovernanceError as exc:
            return _error(403, "SignatureRefused", exc.field, exc.reason)
        self.members[doc.signer] = Signer(doc.signer, NEWBIE.certificate_pem, "user", "Active")
        body = {"member_id": doc.signer, "status": "Active", "txid": "2.40"}
        return Reply(200, json.dumps(body).encode(), None)


def _error(status: int, code: str, fld: str | None, reason: str) -> Reply:
    return Reply(
        status, json.dumps({"error": {"code": code, "field": fld, "reason": reason}}).encode(), None
    )


@dataclass
class Events:
    seen: list[tuple[str, str, str, str]] = field(default_factory=list)

    def __call__(self, item: Due, type_: str, reason: str, message: str) -> None:
        self.seen.append((item.body["metadata"]["name"], type_, reason, message))


@pytest.fixture
def primary() -> Primary:
    return Primary(
        {
            NEWBIE.member_id: NEWBIE.signer("user", "Accepted"),
            OLDIE.member_id: OLDIE.signer("governor", "Active"),
        }
    )


def views(*bodies: dict[str, Any]) -> list[MemberView]:
    return [MemberView.of(b) for b in bodies]


def test_only_accepted_members_with_an_ack_are_due() -> None:
    ledger = {NEWBIE.member_id: "Accepted", OLDIE.member_id: "Active"}
    members = views(
        member_body(NEWBIE, ack(NEWBIE)),
        member_body(OLDIE, ack(OLDIE)),  # Active already: nothing to relay
        member_body(OTHER, ack(OTHER)),  # not in the ledger yet: its ack waits
    )
    (item,) = due(members, ledger)
    assert item.member_id == NEWBIE.member_id and item.document.signer == NEWBIE.member_id
    assert due(views(member_body(NEWBIE)), ledger) == []  # Accepted, no ack yet
    assert due(members, None) == []  # the ledger was not read this pass


def test_a_valid_ack_is_relayed_once_and_the_member_is_active(primary: Primary) -> None:
    events, memory = Events(), RelayMemory()
    items = due(views(member_body(NEWBIE, ack(NEWBIE))), {NEWBIE.member_id: "Accepted"})
    assert relay(items, primary.post, memory, events) == {NEWBIE.member_id}
    assert primary.posts == 1
    assert primary.members[NEWBIE.member_id].status == "Active"
    assert events.seen == [(NEWBIE.name, "Normal", ACKNOWLEDGED, events.seen[0][3])]


def test_a_forged_ack_is_refused_by_the_nodes_shown_and_not_resent(primary: Primary) -> None:
    raw = ack(NEWBIE)
    forged = raw[:-1] + bytes([raw[-1] ^ 1])
    events, memory = Events(), RelayMemory()
    items = due(views(member_body(NEWBIE, forged)), {NEWBIE.member_id: "Accepted"})
    assert relay(items, primary.post, memory, events) == set()
    ((name, kind, reason, message),) = events.seen
    assert (name, kind, reason) == (NEWBIE.name, "Warning", ACK_REFUSED)
    assert "the nodes refused it" in message
    assert primary.members[NEWBIE.member_id].status == "Accepted"
    assert relay(items, primary.post, memory, events) == set()
    assert primary.posts == 1 and len(events.seen) == 1  # remembered: not sent, not re-announced


def test_an_ack_signed_by_someone_else_is_not_sent(primary: Primary) -> None:
    events = Events()
    items = due(views(member_body(NEWBIE, ack(OLDIE))), {NEWBIE.member_id: "Accepted"})
    assert local_refusal(items[0]) is not None
    assert relay(items, primary.post, RelayMemory(), events) == set()
    assert primary.posts == 0
    assert "each member signs its own with its own key" in events.seen[0][3]


def test_garbage_is_refused_locally_and_unsigned_bytes_go_to_the_nodes(primary: Primary) -> None:
    ledger = {NEWBIE.member_id: "Accepted"}
    (garbage,) = due(views(member_body(NEWBIE, "not base64 !")), ledger)
    assert "not base64" in str(local_refusal(garbage))
    (unsigned,) = due(views(member_body(NEWBIE, b"just bytes")), ledger)
    assert local_refusal(unsigned) is None  # the nodes' refusal is the one that counts
    events = Events()
    assert relay([unsigned], primary.post, RelayMemory(), events) == set()
    assert primary.posts == 1 and events.seen[0][2] == ACK_REFUSED


def test_no_primary_is_neither_a_refusal_nor_remembered(primary: Primary) -> None:
    events, memory = Events(), RelayMemory()
    items = due(views(member_body(NEWBIE, ack(NEWBIE))), {NEWBIE.member_id: "Accepted"})
    primary.answer = 503
    assert relay(items, primary.post, memory, events) == set()
    assert events.seen == [] and memory.refused == {}
    primary.answer = None
    assert relay(items, primary.post, memory, events) == {NEWBIE.member_id}
    primary.unreachable = True
    with pytest.raises(NodeUnreachableError):
        relay(items, primary.post, memory, events)


OK = ("ShareTaken", "the node holds it")


def forged(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 1])


@pytest.mark.parametrize(
    ("document", "kind", "reason", "message"),
    [
        pytest.param(lambda: ack(NEWBIE), "Normal", "ShareTaken", "the node holds it",
                     id="taken"),
        pytest.param(lambda: forged(ack(NEWBIE)), "Warning", "Refusal", "the nodes refused it: ",
                     id="refused-by-the-nodes"),
        pytest.param(lambda: ack(OLDIE), "Warning", "Refusal", "spec.acknowledgement is signed",
                     id="refused-locally"),
    ],
)  # fmt: skip
def test_relay_reports_with_the_reasons_it_is_given(
    primary: Primary, document: Any, kind: str, reason: str, message: str
) -> None:
    """Recovery shares are relayed as acks are: only the Event reasons (and the taken
    document's message) differ."""
    events = Events()
    items = due(views(member_body(NEWBIE, document())), {NEWBIE.member_id: "Accepted"})
    taken = relay(items, primary.post, RelayMemory(), events, ok=OK, refused="Refusal")
    assert events.seen == [(NEWBIE.name, kind, reason, events.seen[0][3])]
    assert events.seen[0][3].startswith(message)
    assert taken == ({NEWBIE.member_id} if kind == "Normal" else set())


def test_relay_defaults_are_the_ack_reasons(primary: Primary) -> None:
    events = Events()
    items = due(views(member_body(NEWBIE, ack(NEWBIE))), {NEWBIE.member_id: "Accepted"})
    relay(items, primary.post, RelayMemory(), events)
    assert events.seen == [
        (NEWBIE.name, "Normal", ACKNOWLEDGED, "the member's ack is recorded: Active")
    ]
