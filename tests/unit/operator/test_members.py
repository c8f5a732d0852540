"""members.py: a Member's Accepted/Active conditions from its spec, its Consortium and the
ledger — GovernancePending naming its add-member proposal, AcknowledgementNeeded once the
members accepted it — and the status writes that follow."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from consortium_operator.api import conditions as c
from consortium_operator.members.reconcile import (
    MemberView,
    member_conditions,
    member_status,
    reconcile_members,
    share_condition,
)

from .support import cached_certificate, merge_patch

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
        (
            False,
            c.ACK_NEEDED,
            "consortiumctl ack --consortium demo --cert CERT.pem --key KEY.pem --kube",
        ),
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


# ------------------------------------------------------------------ nothing is ignored silently
GARBAGE_PEM = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    "certificate", [pytest.param(GARBAGE_PEM, id="garbage"), pytest.param("rsa", id="rsa")]
)
def test_an_unusable_certificate_gets_a_status_an_event_and_names_the_field(
    certificate: str,
) -> None:
    pem = cached_certificate("rsa", "rsa-member")[0] if certificate == "rsa" else certificate
    view = MemberView.of(body({"consortium": "demo", "role": "governor", "certificate": pem}))
    assert view.spec is None and view.bound == "demo"  # still bound: its Consortium writes it
    recorder = Recorder()
    kube: Any = recorder
    reconcile_members(kube, [view], BOOTSTRAPPED, {ALICE_ID: "Active"})
    ((_, status),) = recorder.writes
    accepted = next(x for x in status["conditions"] if x["type"] == c.ACCEPTED)
    assert (accepted["status"], accepted["reason"]) == ("False", c.CERTIFICATE_INVALID)
    assert accepted["message"].startswith("spec.certificate: ")
    assert status["phase"] == "Invalid" and "consortium" not in status  # never admitted
    assert ("Warning", c.CERTIFICATE_INVALID) in [(t, r) for t, r, _ in recorder.events]


def test_spec_consortium_is_immutable_once_admitted() -> None:
    admitted = member_status(ALICE, BOOTSTRAPPED, {ALICE_ID: "Active"})
    assert admitted["consortium"] == {"name": "demo", "uid": "uid-demo"}
    moved_spec = {"consortium": "other", "role": "governor", "certificate": PEM}
    moved = MemberView.of(body(moved_spec, status=admitted))
    assert (moved.requested, moved.bound, moved.moved) == ("other", "demo", True)
    accepted, active = member_conditions(moved, BOOTSTRAPPED, {ALICE_ID: "Active"})
    assert (accepted.status, accepted.reason) == (False, c.CONSORTIUM_IMMUTABLE)
    assert accepted.message.startswith("spec.consortium is immutable: ")
    assert "'demo'" in accepted.message and "delete this Member" in accepted.message
    assert (active.status, active.reason) == (False, c.CONSORTIUM_IMMUTABLE)
    status = member_status(moved, BOOTSTRAPPED, {ALICE_ID: "Active"})
    assert status["consortium"] == admitted["consortium"]  # the admission is not rewritten
    # Set back: accepted again, Active as the ledger says.
    back = MemberView.of(body(status=status))
    assert not back.moved
    assert [x.status for x in member_conditions(back, BOOTSTRAPPED, {ALICE_ID: "Active"})] == [
        True,
        True,
    ]


def test_a_member_not_yet_admitted_may_still_change_its_consortium() -> None:
    unbound = MemberView.of(body({"consortium": "other", "role": "governor", "certificate": PEM}))
    assert (unbound.bound, unbound.moved) == ("other", False)
    orphan = member_status(unbound, None, None)
    assert "consortium" not in orphan
    retargeted = MemberView.of(body(status=orphan))
    assert (retargeted.bound, retargeted.moved) == ("demo", False)


# ------------------------------------------------------------------ recovery shares
@pytest.mark.parametrize(
    ("share", "expected"),
    [
        pytest.param("Requested", (False, c.RECOVERY_SHARE_REQUESTED), id="requested"),
        pytest.param("Submitted", (True, c.RECOVERY_SHARE_SUBMITTED), id="submitted"),
        pytest.param(None, None, id="no-recovery"),
        pytest.param("Open", None, id="unknown"),
    ],
)
def test_share_condition(share: str | None, expected: tuple[bool, str] | None) -> None:
    cond = share_condition(share)
    if expected is None:
        assert cond is None
        return
    assert cond is not None
    assert (cond.type, cond.status, cond.reason) == (c.RECOVERY_SHARE, *expected)
    assert ("consortiumctl recovery submit-share --kube" in cond.message) is (not expected[0])


def _conditions(status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {x["type"]: x for x in status["conditions"]}


@pytest.mark.parametrize(
    ("share", "shown"),
    [
        pytest.param("Requested", ("False", c.RECOVERY_SHARE_REQUESTED), id="requested"),
        pytest.param("Submitted", ("True", c.RECOVERY_SHARE_SUBMITTED), id="submitted"),
    ],
)
def test_member_status_shows_the_recovery_share(share: str, shown: tuple[str, str]) -> None:
    status = member_status(ALICE, BOOTSTRAPPED, {ALICE_ID: "Active"}, None, share)
    conds = _conditions(status)
    assert list(conds) == [c.ACCEPTED, c.ACTIVE, c.RECOVERY_SHARE]
    assert (conds[c.RECOVERY_SHARE]["status"], conds[c.RECOVERY_SHARE]["reason"]) == shown
    assert status["recoveryShare"] == share
    assert status["phase"] == "Active"  # the share says nothing of membership
    without = member_status(ALICE, BOOTSTRAPPED, {ALICE_ID: "Active"})
    assert {k: v for k, v in status.items() if k not in ("conditions", "recoveryShare")} == {
        k: v for k, v in without.items() if k != "conditions"
    }


@pytest.mark.parametrize("before", ["Requested", "Submitted"])
def test_no_share_asked_removes_the_condition_and_the_field(before: str) -> None:
    earlier = member_status(ALICE, BOOTSTRAPPED, {ALICE_ID: "Active"}, None, before)
    view = MemberView.of(body(status=earlier))
    status = member_status(view, BOOTSTRAPPED, {ALICE_ID: "Active"})
    assert c.RECOVERY_SHARE not in _conditions(status)
    assert status["recoveryShare"] is None  # a merge patch deletes it
    assert list(_conditions(status)) == [c.ACCEPTED, c.ACTIVE]


def test_a_submitted_share_moves_the_condition_and_keeps_the_others() -> None:
    earlier = member_status(ALICE, BOOTSTRAPPED, {ALICE_ID: "Active"}, None, "Requested")
    stamp = "2000-01-01T00:00:00Z"
    for cond in earlier["conditions"]:
        cond["lastTransitionTime"] = stamp
    view = MemberView.of(body(status=earlier))
    same = member_status(view, BOOTSTRAPPED, {ALICE_ID: "Active"}, None, "Requested")
    assert {x["lastTransitionTime"] for x in same["conditions"]} == {stamp}
    later = member_status(view, BOOTSTRAPPED, {ALICE_ID: "Active"}, None, "Submitted")
    times = {x["type"]: x["lastTransitionTime"] for x in later["conditions"]}
    assert times[c.ACCEPTED] == times[c.ACTIVE] == stamp
    assert times[c.RECOVERY_SHARE] != stamp


def test_reconcile_members_asks_for_the_share_then_announces_it() -> None:
    recorder = Recorder()
    kube: Any = recorder
    other = "ff" * 32
    reconcile_members(
        kube, [ALICE], BOOTSTRAPPED, {ALICE_ID: "Active"},
        recovery_shares={ALICE_ID: "Requested", other: "Submitted"},
    )  # fmt: skip
    ((_, status),) = recorder.writes
    assert status["recoveryShare"] == "Requested"
    assert ("Warning", c.RECOVERY_SHARE_REQUESTED) in [(t, r) for t, r, _ in recorder.events]

    settled = MemberView.of(body(status=status))
    recorder.events.clear()
    reconcile_members(
        kube, [settled], BOOTSTRAPPED, {ALICE_ID: "Active"},
        recovery_shares={ALICE_ID: "Requested"},
    )  # fmt: skip
    assert len(recorder.writes) == 1 and recorder.events == []  # unchanged: nothing written

    reconcile_members(
        kube, [settled], BOOTSTRAPPED, {ALICE_ID: "Active"},
        recovery_shares={ALICE_ID: "Submitted"},
    )  # fmt: skip
    _, status = recorder.writes[-1]
    assert status["recoveryShare"] == "Submitted"
    assert [(t, r) for t, r, _ in recorder.events] == [("Normal", c.RECOVERY_SHARE_SUBMITTED)]


def test_a_member_no_share_is_asked_of_gets_no_recovery_condition() -> None:
    recorder = Recorder()
    kube: Any = recorder
    reconcile_members(
        kube, [ALICE], BOOTSTRAPPED, {ALICE_ID: "Active"}, recovery_shares={"ff" * 32: "Requested"}
    )
    ((_, status),) = recorder.writes
    assert c.RECOVERY_SHARE not in _conditions(status) and "recoveryShare" not in status
    assert c.RECOVERY_SHARE not in [r for _, r, _ in recorder.events]


@dataclass
class Stored(Recorder):
    """A Member whose status is written with merge patches, as the API server does."""

    status: dict[str, Any] = field(default_factory=dict)

    def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        super().patch_status(kind, namespace, name, status)
        self.status = merge_patch(self.status, status)


def test_after_the_recovery_the_share_field_goes_and_writes_stop() -> None:
    kube = Stored()
    shares: list[dict[str, str] | None] = [{ALICE_ID: "Requested"}, {ALICE_ID: "Submitted"}, None]
    for recovery_shares in [*shares, None, None]:
        view = MemberView.of(body(status=kube.status or None))
        reconcile_members(
            cast(Any, kube), [view], BOOTSTRAPPED, {ALICE_ID: "Active"},
            recovery_shares=recovery_shares,
        )  # fmt: skip
    assert "recoveryShare" not in kube.status
    assert c.RECOVERY_SHARE not in _conditions(kube.status)
    assert len(kube.writes) == 3  # Requested, Submitted, gone: then nothing changes
