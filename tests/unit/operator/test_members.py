"""members.py: a Member's Accepted/Active conditions from its spec, its Consortium and the
ledger — GovernancePending naming its add-member proposal, AcknowledgementNeeded once the
members accepted it — and the status writes that follow."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from consortium_operator import conditions as c
from consortium_operator.members import (
    MemberView,
    member_conditions,
    member_status,
    reconcile_members,
)

from .support import cached_certificate

PEM, _ = cached_certificate("p256", "alice")
BOOTSTRAPPED = {
    "metadata": {"name": "demo", "namespace": "ns", "uid": "uid-demo"},
    "status": {"serviceCertificate": "-----BEGIN CERTIFICATE-----\n…"},
}
GENESIS = {"metadata": {"name": "demo", "namespace": "ns", "uid": "uid-demo"}, "status": {}}
PROPOSAL = "Proposal demo-add-member-alice-0123456789 is Open, 1/2 approvals"


def body(
    spec: Mapping[str, Any] | None = None, status: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": "consortium.tee.dev/v1alpha1",
        "kind": "Member",
        "metadata": {"name": "alice", "namespace": "ns", "uid": "uid-alice", "generation": 2},
        "spec": dict(spec or {"consortium": "demo", "role": "governor", "certificate": PEM}),
    }
    if status is not None:
        out["status"] = dict(status)
    return out


ALICE = MemberView.of(body())
assert ALICE.spec is not None
ALICE_ID = ALICE.spec.member_id


CASES = [
    pytest.param(
        MemberView.of(body({"consortium": "demo", "certificate": "nope"})),
        BOOTSTRAPPED,
        {},
        None,
        (False, c.CERTIFICATE_INVALID),
        (False, c.INVALID_SPEC, "fix the spec first"),
        id="invalid-certificate",
    ),
    pytest.param(
        ALICE,
        None,
        {},
        None,
        (False, c.CONSORTIUM_NOT_FOUND),
        (False, c.CONSORTIUM_NOT_FOUND, "no such consortium"),
        id="no-consortium",
    ),
    pytest.param(
        ALICE,
        GENESIS,
        None,
        None,
        (True, c.MEMBER_OF_GENESIS),
        (None, c.LEDGER_UNKNOWN, "ledger not read yet"),
        id="genesis-ledger-unread",
    ),
    pytest.param(
        ALICE,
        BOOTSTRAPPED,
        {ALICE_ID: "Active"},
        PROPOSAL,
        (True, c.AS_EXPECTED),
        (True, c.LEDGER_ACTIVE, "Active in the ledger"),
        id="active",
    ),
    pytest.param(
        ALICE,
        BOOTSTRAPPED,
        {ALICE_ID: "Accepted"},
        PROPOSAL,
        (True, c.AS_EXPECTED),
        (False, c.ACK_NEEDED, "consortiumctl ack --identity"),
        id="accepted-needs-its-ack",
    ),
    pytest.param(
        ALICE,
        BOOTSTRAPPED,
        {},
        PROPOSAL,
        (True, c.AS_EXPECTED),
        (False, c.GOVERNANCE_PENDING, f"the members vote on adding it ({PROPOSAL})"),
        id="pending-names-its-proposal",
    ),
    pytest.param(
        ALICE,
        BOOTSTRAPPED,
        {"ff" * 32: "Active"},
        None,
        (True, c.AS_EXPECTED),
        (False, c.GOVERNANCE_PENDING, "the members vote on adding it"),
        id="pending-no-proposal-yet",
    ),
    pytest.param(
        ALICE,
        BOOTSTRAPPED,
        {ALICE_ID: "Removed"},
        PROPOSAL,
        (True, c.AS_EXPECTED),
        (False, c.GOVERNANCE_PENDING, "Removed in the ledger"),
        id="other-ledger-status",
    ),
]


@pytest.mark.parametrize(("view", "consortium", "ledger", "proposal", "accepted", "active"), CASES)
def test_member_conditions(
    view: MemberView,
    consortium: Mapping[str, Any] | None,
    ledger: Mapping[str, str] | None,
    proposal: str | None,
    accepted: tuple[bool, str],
    active: tuple[bool | None, str, str],
) -> None:
    acc, act = member_conditions(view, consortium, ledger, proposal)
    assert (acc.type, acc.status, acc.reason) == (c.ACCEPTED, *accepted)
    assert (act.type, act.status, act.reason) == (c.ACTIVE, *active[:2])
    assert active[2] in act.message


def test_pending_without_a_proposal_has_no_empty_parentheses() -> None:
    _, active = member_conditions(ALICE, BOOTSTRAPPED, {}, None)
    assert "(" not in active.message
    _, active = member_conditions(ALICE, BOOTSTRAPPED, {}, "")
    assert "(" not in active.message


def test_a_proposal_is_only_named_while_the_ledger_lacks_the_member() -> None:
    for state in ("Accepted", "Active", "Removed"):
        _, active = member_conditions(ALICE, BOOTSTRAPPED, {ALICE_ID: state}, PROPOSAL)
        assert PROPOSAL not in active.message


@pytest.mark.parametrize(
    ("ledger", "phase"),
    [
        pytest.param({ALICE_ID: "Active"}, "Active", id="active"),
        pytest.param({ALICE_ID: "Accepted"}, "Accepted", id="accepted-is-not-active"),
        pytest.param({}, "Accepted", id="pending"),
    ],
)
def test_member_status_phase(ledger: Mapping[str, str], phase: str) -> None:
    status = member_status(ALICE, BOOTSTRAPPED, ledger, PROPOSAL)
    assert status["phase"] == phase
    assert status["memberId"] == ALICE_ID
    assert status["consortium"] == {"name": "demo", "uid": "uid-demo"}
    assert status["observedGeneration"] == 2


@dataclass
class Recorder:
    writes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        assert (kind, namespace) == ("Member", "ns")
        self.writes.append((name, dict(status)))

    def event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str, now: str
    ) -> None:
        self.events.append((type_, reason, message))


def test_reconcile_members_names_the_proposal_then_asks_for_the_ack() -> None:
    recorder = Recorder()
    kube: Any = recorder  # what reconcile_members uses of a Kube
    proposals = {"alice": PROPOSAL, "bob": "Proposal demo-add-member-bob-1 is Open"}
    reconcile_members(kube, [ALICE], BOOTSTRAPPED, {}, proposals)
    ((name, status),) = recorder.writes
    assert name == "alice"
    active = next(x for x in status["conditions"] if x["type"] == c.ACTIVE)
    assert (active["reason"], active["status"]) == (c.GOVERNANCE_PENDING, "False")
    assert PROPOSAL in active["message"]
    assert any(r == c.GOVERNANCE_PENDING and PROPOSAL in m for _, r, m in recorder.events)

    # Unchanged: no write, no Event.
    settled = MemberView.of(body(status=status))
    reconcile_members(kube, [settled], BOOTSTRAPPED, {}, proposals)
    assert len(recorder.writes) == 1

    # The members accepted it: AcknowledgementNeeded, still not Active.
    reconcile_members(kube, [settled], BOOTSTRAPPED, {ALICE_ID: "Accepted"}, proposals)
    _, status = recorder.writes[-1]
    active = next(x for x in status["conditions"] if x["type"] == c.ACTIVE)
    assert (active["reason"], active["status"]) == (c.ACK_NEEDED, "False")
    assert status["phase"] == "Accepted"
