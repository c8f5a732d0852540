"""recovering.py: a Consortium born of a disaster recovery — which Members are asked for a
share and which have given one, whose share is relayed, and the Events of the ceremony."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, cast

import pytest

from consortium_operator.api.names import Names
from consortium_operator.consortium import recovering
from consortium_operator.consortium.context import Memory, Pass, Settings
from consortium_operator.consortium.observation import Observation
from consortium_operator.consortium.recovering import due_shares, events, share_states
from consortium_operator.consortium.status import recovery_status
from consortium_operator.kube.k8s import Kube
from consortium_operator.members.reconcile import MemberView
from consortium_operator.nodes.client import NodeUnreachableError, Reply
from tests.unit.governance.support import Member, member

from .support import T0, consortium

WAITING, OPENING, OPEN = "WaitingForRecoveryShares", "WaitingForOpen", "Open"
ALICE, BOB, CAROL = member("rec-alice"), member("rec-bob"), member("rec-carol")
TXID = "4.1207"


@cache
def share_document(who: Member) -> bytes:
    """``who``'s signed share document (signed once: ECDSA signatures differ every time)."""
    return who.sign({"type": "recovery_share", "consortium": "demo", "epoch": 3, "share": "x"})


def member_body(who: Member, share: bytes | str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "consortium": "demo",
        "role": "governor",
        "certificate": who.certificate_pem,
    }
    if isinstance(share, bytes):
        spec["recoveryShare"] = base64.b64encode(share).decode("ascii")
    elif share is not None:
        spec["recoveryShare"] = share
    return {"metadata": {"name": who.name, "namespace": "ns"}, "spec": spec}


def views(*bodies: dict[str, Any]) -> list[MemberView]:
    return [MemberView.of(b) for b in bodies]


def ceremony(
    phase: str | None,
    submitted: Sequence[Member] = (),
    waiting: Sequence[Member] = (),
    threshold: int = 2,
) -> dict[str, Any]:
    """A GET /recovery answer as a recovery node gives it (shares only while waiting)."""
    found: dict[str, Any] = {
        "recovery": {
            "previous_service_certificate_sha256": "9f" * 32,
            "last_recovered_txid": TXID,
            "started_at": "2026-01-02T03:04:05Z",
        }
    }
    if phase is not None:
        found["phase"] = phase
    if phase == WAITING:
        found["shares"] = {
            "epoch": 3,
            "threshold": threshold,
            "submitted": [m.member_id for m in submitted],
            "waiting_for": [m.member_id for m in waiting],
            "complete": False,
        }
    return found


def observed(answer: dict[str, Any] | None) -> Observation:
    """The pass's observation: the primary's phase and its GET /recovery ``answer``."""
    phase = (answer or {}).get("phase")
    return Observation(
        consortium="demo",
        generation=1,
        now=T0,
        desired=3,
        service_certificate_pem="SERVICE PEM",
        primary="demo-0",
        service_phase=phase,
        ceremony=answer,
    )


# ---------------------------------------------------------------------------- share_states


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param(None, {}, id="not-read"),
        pytest.param(ceremony(OPEN), {}, id="open"),
        pytest.param(ceremony(OPENING), {}, id="waiting-for-open"),
        pytest.param(
            {**ceremony(WAITING, [ALICE], [BOB]), "phase": OPENING}, {}, id="shares-of-the-past"
        ),
        pytest.param(
            ceremony(WAITING, [], [ALICE, BOB]),
            {ALICE.member_id: "Requested", BOB.member_id: "Requested"},
            id="none-submitted",
        ),
        pytest.param(
            ceremony(WAITING, [BOB], [ALICE, CAROL]),
            {
                ALICE.member_id: "Requested",
                BOB.member_id: "Submitted",
                CAROL.member_id: "Requested",
            },
            id="one-submitted",
        ),
        pytest.param(
            ceremony(WAITING, [ALICE], [ALICE]),
            {ALICE.member_id: "Submitted"},
            id="submitted-wins",
        ),
        pytest.param({"phase": WAITING}, {}, id="waiting-without-shares"),
    ],
)
def test_share_states(answer: dict[str, Any] | None, expected: dict[str, str]) -> None:
    assert share_states(observed(answer)) == expected


# ---------------------------------------------------------------------------- due_shares


def test_only_recovery_shares_the_node_does_not_hold_are_due() -> None:
    members = views(
        member_body(ALICE, share_document(ALICE)),  # awaited, share given: due
        member_body(BOB, share_document(BOB)),  # the node holds it already
        member_body(CAROL),  # awaited, no share yet
        {"metadata": {"name": "broken", "namespace": "ns"},
         "spec": {"consortium": "demo", "certificate": "nope", "recoveryShare": "eA=="}},
    )  # fmt: skip
    obs = observed(ceremony(WAITING, [BOB], [ALICE, CAROL]))
    (item,) = due_shares(members, obs)
    assert item.member_id == ALICE.member_id
    assert item.body is members[0].body
    assert item.document.raw == share_document(ALICE)
    assert item.document.signer == ALICE.member_id
    assert item.document.error is None


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(None, id="not-read"),
        pytest.param(ceremony(OPENING), id="waiting-for-open"),
        pytest.param(ceremony(OPEN), id="open"),
        pytest.param({**ceremony(WAITING, [], [ALICE]), "phase": OPENING}, id="phase-decides"),
    ],
)
def test_no_share_is_due_unless_the_node_waits_for_shares(answer: dict[str, Any] | None) -> None:
    members = views(member_body(ALICE, share_document(ALICE)))
    assert due_shares(members, observed(answer)) == []


def test_every_member_that_has_not_submitted_is_due_once_in_order() -> None:
    members = views(
        member_body(CAROL, share_document(CAROL)), member_body(ALICE, share_document(ALICE))
    )
    obs = observed(ceremony(WAITING, [], [ALICE, CAROL]))
    assert [d.member_id for d in due_shares(members, obs)] == [CAROL.member_id, ALICE.member_id]


def test_an_unreadable_share_is_due_and_names_its_field() -> None:
    (item,) = due_shares(views(member_body(ALICE, "not base64 !")), observed(ceremony(WAITING)))
    assert item.document.raw is None
    assert item.document.error is not None
    assert item.document.error.startswith("spec.recoveryShare: not base64")


# ---------------------------------------------------------------------------- events


@dataclass
class Recorder:
    """What ``recovering.events`` uses of a Pass: its body (the last status), spec and Events."""

    body: dict[str, Any] = field(default_factory=dict)
    spec: Any = field(default_factory=consortium)
    seen: list[tuple[str, str, str]] = field(default_factory=list)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.seen.append((type_, reason, message))


def shown(recovery: dict[str, Any] | None) -> dict[str, Any]:
    """A Consortium body whose status.recovery is ``recovery`` (None: no status at all)."""
    meta = {"name": "demo", "namespace": "ns"}
    return (
        {"metadata": meta}
        if recovery is None
        else {"metadata": meta, "status": {"recovery": recovery}}
    )


SUMMARY = {"recordEpoch": 3, "threshold": 2, "members": 3, "current": True}

EVENTS = [  # status.recovery before the pass, the GET /recovery answer → the Event reasons
    pytest.param(None, None, [], id="not-read"),
    pytest.param(None, ceremony(OPEN), [], id="open-never-recovered"),
    pytest.param(SUMMARY, {"phase": OPEN, "recovery": None}, [], id="open-with-a-record"),
    pytest.param(None, ceremony(WAITING, [], [ALICE, BOB]), ["RecoveryStarted"], id="started"),
    pytest.param(
        {"phase": WAITING, "sharesSubmitted": []},
        ceremony(WAITING, [], [ALICE, BOB]),
        [],
        id="still-waiting",
    ),
    pytest.param(
        {"phase": WAITING, "sharesSubmitted": []},
        ceremony(WAITING, [ALICE], [BOB]),
        ["RecoveryShareSubmitted"],
        id="one-share",
    ),
    pytest.param(
        {"phase": WAITING, "sharesSubmitted": [ALICE.member_id]},
        ceremony(WAITING, [ALICE], [BOB]),
        [],
        id="same-share-again",
    ),
    pytest.param(
        None,
        ceremony(WAITING, [ALICE, BOB], [CAROL], threshold=3),
        ["RecoveryStarted", "RecoveryShareSubmitted", "RecoveryShareSubmitted"],
        id="found-mid-ceremony",
    ),
    pytest.param(
        {"phase": WAITING, "sharesSubmitted": [ALICE.member_id]},
        ceremony(OPENING),
        ["LedgerSecretsRecovered"],
        id="secrets-recovered",
    ),
    pytest.param(None, ceremony(OPENING), ["LedgerSecretsRecovered"], id="found-waiting-to-open"),
    pytest.param({"phase": OPENING}, ceremony(OPENING), [], id="still-waiting-to-open"),
    pytest.param({"phase": OPENING}, ceremony(OPEN), ["ServiceOpened"], id="opened"),
    pytest.param({**SUMMARY, "phase": OPEN}, ceremony(OPEN), [], id="open-stays-quiet"),
    pytest.param({"phase": WAITING}, ceremony("Recovering"), [], id="unknown-phase"),
]


@pytest.mark.parametrize(("before", "answer", "reasons"), EVENTS)
def test_events_per_phase_change_and_new_share(
    before: dict[str, Any] | None, answer: dict[str, Any] | None, reasons: list[str]
) -> None:
    recorder = Recorder(body=shown(before))
    events(cast(Pass, recorder), observed(answer))
    assert [reason for _, reason, _ in recorder.seen] == reasons
    assert {kind for kind, _, _ in recorder.seen} <= {"Normal"}


def test_the_started_event_names_the_txid_the_count_and_the_command() -> None:
    recorder = Recorder(body=shown(None), spec=consortium("ledger-b"))
    events(cast(Pass, recorder), observed(ceremony(WAITING, [], [ALICE, BOB], threshold=2)))
    ((_, reason, message),) = recorder.seen
    assert reason == "RecoveryStarted"
    assert f"history up to {TXID}" in message
    assert "waiting for 2 recovery shares" in message
    assert "consortiumctl recovery submit-share --kube ledger-b" in message


def test_share_events_name_each_new_member_and_the_count() -> None:
    recorder = Recorder(body=shown({"phase": WAITING, "sharesSubmitted": [CAROL.member_id]}))
    obs = observed(ceremony(WAITING, [CAROL, BOB, ALICE], [], threshold=3))
    events(cast(Pass, recorder), obs)
    new = sorted([ALICE.member_id, BOB.member_id])
    assert [m for _, _, m in recorder.seen] == [
        f"member {member_id[:16]}… submitted its share (3 of 3)" for member_id in new
    ]


def test_a_whole_recovery_announces_each_step_once() -> None:
    """Pass after pass, the status written by one pass is what the next compares against."""
    answers = [
        ceremony(WAITING, [], [ALICE, BOB, CAROL]),
        ceremony(WAITING, [], [ALICE, BOB, CAROL]),
        ceremony(WAITING, [BOB], [ALICE, CAROL]),
        ceremony(WAITING, [BOB, ALICE], [CAROL]),
        ceremony(OPENING),
        ceremony(OPENING),
        ceremony(OPEN),
        ceremony(OPEN),
    ]
    recorder = Recorder()
    for answer in answers:
        obs = observed(answer)
        recorder.body = shown(recorder.body.get("status", {}).get("recovery"))
        events(cast(Pass, recorder), obs)
        recorder.body = shown(recovery_status(obs))
    assert [reason for _, reason, _ in recorder.seen] == [
        "RecoveryStarted",
        "RecoveryShareSubmitted",
        "RecoveryShareSubmitted",
        "LedgerSecretsRecovered",
        "ServiceOpened",
    ]


# ---------------------------------------------------------------------------- relay_shares


@dataclass
class FakeKube:
    events: list[tuple[str, str, str, str]] = field(default_factory=list)

    def event(self, involved: Any, type_: str, reason: str, message: str, now: str) -> None:
        self.events.append((involved["metadata"]["name"], type_, reason, message))


REFUSED = {  # what a recovery node answers for a share it does not take (recovery_api.py)
    403: ("SignatureRefused", "signature", "the signer is not an Active governor"),
    422: ("ShareRefused", "ShareDoesNotMatch", "the share does not match its commitment"),
}


@dataclass
class FakePrimary:
    """``POST /recovery/shares`` as a recovery node answers it: alice's share is taken, any
    other is refused with ``refusal``."""

    threshold: int = 2
    refusal: int = 403
    held: list[str] = field(default_factory=list)
    posted: list[str] = field(default_factory=list)
    unreachable: bool = False

    def post(self, path: str, document: bytes) -> Reply:
        assert path == "/recovery/shares"
        if self.unreachable:
            raise NodeUnreachableError("demo-0 (10.0.0.1): timed out")
        signer = next(m for m in (ALICE, BOB, CAROL) if share_document(m) == document)
        self.posted.append(signer.name)
        if signer is not ALICE:
            code, fld, reason = REFUSED[self.refusal]
            error = {"code": code, "field": fld, "reason": reason}
            return Reply(self.refusal, json.dumps({"error": error}).encode(), None)
        self.held.append(signer.member_id)
        progress = {
            "epoch": 3,
            "threshold": self.threshold,
            "submitted": list(self.held),
            "waiting_for": [BOB.member_id],
            "complete": False,
        }
        return Reply(200, json.dumps(progress).encode(), None)


def make_pass(monkeypatch: pytest.MonkeyPatch, target: FakePrimary | None) -> tuple[Pass, FakeKube]:
    kube = FakeKube()
    body = {"metadata": {"name": "demo", "namespace": "ns", "uid": "uid-demo"}}
    p = Pass(
        cast(Kube, kube), body, consortium(), Memory(), Settings(), T0, "ns", "uid-demo",
        Names("demo"),
    )  # fmt: skip
    monkeypatch.setattr(recovering, "primary", lambda _p, _o: target)
    return p, kube


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(403, id="signature-refused"),
        pytest.param(422, id="share-refused"),
    ],
)
def test_relayed_shares_update_the_ceremony_and_are_announced_on_the_member(
    monkeypatch: pytest.MonkeyPatch, refusal: int
) -> None:
    target = FakePrimary(refusal=refusal)
    p, kube = make_pass(monkeypatch, target)
    members = views(
        member_body(ALICE, share_document(ALICE)), member_body(BOB, share_document(BOB))
    )
    obs = observed(ceremony(WAITING, [], [ALICE, BOB]))
    out = recovering.relay_shares(p, obs, members)
    assert target.posted == ["rec-alice", "rec-bob"]
    assert out.ceremony is not None
    assert out.ceremony["shares"]["submitted"] == [ALICE.member_id]
    assert out.ceremony["shares"]["epoch"] == 3
    assert share_states(out) == {ALICE.member_id: "Submitted", BOB.member_id: "Requested"}
    assert [(name, kind, reason) for name, kind, reason, _ in kube.events] == [
        ("rec-alice", "Normal", "RecoveryShareSubmitted"),
        ("rec-bob", "Warning", "RecoveryShareRefused"),
    ]
    _code, fld, reason = REFUSED[refusal]
    assert kube.events[1][3] == f"the nodes refused it: {fld}: {reason}"
    assert obs.ceremony is not None and obs.ceremony["shares"]["submitted"] == []  # unchanged
    # The refused bytes are remembered: the next pass neither sends nor re-announces them.
    again = recovering.relay_shares(p, out, members)
    assert target.posted == ["rec-alice", "rec-bob"]
    assert len(kube.events) == 2
    assert again.ceremony == out.ceremony


@pytest.mark.parametrize(
    "answer",
    [pytest.param(ceremony(OPENING), id="nothing-due"), pytest.param(None, id="not-read")],
)
def test_nothing_is_relayed_when_nothing_is_due(
    monkeypatch: pytest.MonkeyPatch, answer: dict[str, Any] | None
) -> None:
    target = FakePrimary()
    p, kube = make_pass(monkeypatch, target)
    obs = observed(answer)
    assert recovering.relay_shares(p, obs, views(member_body(ALICE, share_document(ALICE)))) is obs
    assert target.posted == [] and kube.events == []


def test_an_unreachable_primary_leaves_the_ceremony_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = FakePrimary(unreachable=True)
    p, kube = make_pass(monkeypatch, target)
    obs = observed(ceremony(WAITING, [], [ALICE]))
    out = recovering.relay_shares(p, obs, views(member_body(ALICE, share_document(ALICE))))
    assert out.ceremony == obs.ceremony
    assert kube.events == []
