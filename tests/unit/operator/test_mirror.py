"""mirror.py: a Proposal CR's status from its documents and the nodes' answers. Every status
produced here is also checked against the Proposal CRD's status schema."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

import pytest

from consortium_node.governance import FINAL_STATES
from consortium_node.governance.documents import document_id
from consortium_operator.api import conditions as c
from consortium_operator.proposals.mirror import Document, Relayed, proposal_status
from tests.unit.governance.support import (
    Member,
    action,
    add_measurement,
    ballot_payload,
    member,
    proposal_payload,
    withdrawal_payload,
)

from .test_crds import errors

NOW = "2026-01-01T00:10:00Z"
EARLIER = "2026-01-01T00:00:00Z"
ALICE, BOB, CAROL = member("mirror-alice"), member("mirror-bob"), member("mirror-carol")
MALLORY = member("mirror-mallory")  # has a key, is no member
NAMES = {ALICE.member_id: "alice", BOB.member_id: "bob", CAROL.member_id: "carol"}
ACTIONS = [add_measurement(), action("trust_node", node_id="0f" * 32)]
PROPOSAL = ALICE.sign(proposal_payload(ACTIONS))
PID = document_id(PROPOSAL)
RECEIPT = {"txid": "2.9", "leaf": "ab" * 32, "proof": [], "signature": "c2ln"}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def ballot(who: Member, vote: str = "approve", pid: str = PID) -> bytes:
    return who.sign(ballot_payload(pid, vote))


def withdrawal(who: Member = ALICE) -> bytes:
    return who.sign(withdrawal_payload(PID))


def tampered(raw: bytes) -> bytes:
    """The same COSE structure with one signature bit flipped: still decodes, never verifies."""
    return raw[:-1] + bytes([raw[-1] ^ 1])


BOB_YES, BOB_NO, CAROL_YES = ballot(BOB), ballot(BOB, "reject"), ballot(CAROL)
FORGED = ballot(MALLORY)
TAMPERED = tampered(ballot(CAROL))


def view(
    state: str = "Open",
    reason: str = "",
    *,
    ballots: Mapping[str, bytes] | None = None,
    withdrawn: bytes | None = None,
    tally: tuple[int, int, int, int] = (0, 0, 2, 3),
    txid: str = "2.7",
) -> dict[str, Any]:
    """What GET /gov/proposals/<id> answers (server/governance.py ``_show``)."""
    documents: dict[str, Any] = {
        "proposal": b64(PROPOSAL),
        "ballots": {m: b64(raw) for m, raw in (ballots or {}).items()},
    }
    if withdrawn is not None:
        documents["withdrawal"] = b64(withdrawn)
    approve, reject, needed, governors = tally
    return {
        "proposal_id": PID,
        "proposer": ALICE.member_id,
        "actions": ACTIONS,
        "created_at": "2026-01-01T00:00:00Z",
        "expires_at": "2026-01-08T00:00:00Z",
        "state": state,
        "reason": reason,
        "ballots": {m: "approve" for m in (ballots or {})},
        "subjects": [],
        "tally": {"approve": approve, "reject": reject, "needed": needed, "governors": governors},
        "documents": documents,
        "txid": txid,
    }


def body(
    proposal: str | None = None,
    *,
    ballots: list[bytes | str] | None = None,
    withdrawal: bytes | str | None = None,
    status: dict[str, Any] | None = None,
    generation: int = 3,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"consortium": "demo", "proposal": proposal or b64(PROPOSAL)}
    if ballots is not None:
        spec["ballots"] = [b if isinstance(b, str) else b64(b) for b in ballots]
    if withdrawal is not None:
        spec["withdrawal"] = withdrawal if isinstance(withdrawal, str) else b64(withdrawal)
    out: dict[str, Any] = {
        "apiVersion": "consortium.tee.dev/v1alpha1",
        "kind": "Proposal",
        "metadata": {"name": "p", "namespace": "ns", "generation": generation, "uid": "u-1"},
        "spec": spec,
    }
    if status is not None:
        out["status"] = status
    return out


def mirrored(b: dict[str, Any], relayed: Relayed) -> dict[str, Any]:
    """proposal_status, checked against the CRD's status schema."""
    status = proposal_status(b, relayed, NAMES, NOW)
    found = errors("Proposal", {**b, "status": status})
    assert found == [], [f"{list(e.path)}: {e.message}" for e in found]
    assert not empty_strings(status), empty_strings(status)
    return status


def empty_strings(value: Any, path: str = "status") -> list[str]:
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in empty_strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in empty_strings(v, f"{path}[{i}]")]
    return [path] if value == "" else []


def conditions(status: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    return {x["type"]: (x["status"], x["reason"]) for x in status["conditions"]}


# --- state ------------------------------------------------------------------------------------


STATE_CASES = [
    pytest.param(
        "not base64!",
        Relayed(),
        "Invalid",
        "spec.proposal: not base64",
        ("False", c.DOCUMENT_INVALID),
        ("False", c.DOCUMENT_INVALID),
        id="invalid-not-base64",
    ),
    pytest.param(
        b64(b"hello, not COSE"),
        Relayed(view=view()),  # even a view cannot make it valid
        "Invalid",
        "spec.proposal: not a signed governance document",
        ("False", c.DOCUMENT_INVALID),
        ("False", c.DOCUMENT_INVALID),
        id="invalid-not-cose",
    ),
    pytest.param(
        None,
        Relayed(unreachable="demo-0 (10.0.0.1): timed out"),
        "Pending",
        "demo-0 (10.0.0.1): timed out",
        ("False", c.NOT_RELAYED),
        ("False", c.NOT_RELAYED),
        id="pending-unreachable",
    ),
    pytest.param(
        None,
        Relayed(),
        "Pending",
        "not relayed to the consortium yet",
        ("False", c.NOT_RELAYED),
        ("False", c.NOT_RELAYED),
        id="pending-not-relayed",
    ),
    pytest.param(
        None,
        Relayed(refused="document.kid: 00ab is not a member"),
        "Refused",
        "document.kid: 00ab is not a member",
        ("False", c.REFUSED_BY_NODES),
        ("False", c.REFUSED_BY_NODES),
        id="refused",
    ),
    pytest.param(
        None,
        Relayed(view=view(tally=(1, 0, 2, 3))),
        "Open",
        "",
        ("True", c.RECORDED),
        ("False", c.OPEN),
        id="open",
    ),
    *[
        pytest.param(
            None,
            Relayed(view=view(state, f"why {state}", tally=(2, 1, 2, 3))),
            state,
            f"why {state}",
            ("True", c.RECORDED),
            ("True", state),
            id=state.lower(),
        )
        for state in sorted(FINAL_STATES)
    ],
]


@pytest.mark.parametrize(
    ("proposal", "relayed", "state", "reason", "submitted", "decided"), STATE_CASES
)
def test_state_reason_and_conditions(
    proposal: str | None,
    relayed: Relayed,
    state: str,
    reason: str,
    submitted: tuple[str, str],
    decided: tuple[str, str],
) -> None:
    status = mirrored(body(proposal), relayed)
    assert status["state"] == state
    if reason:
        assert status["reason"].startswith(reason)
    else:
        assert "reason" not in status  # no empty strings in a custom resource
    found = conditions(status)
    assert found[c.SUBMITTED] == submitted
    assert found[c.DECIDED] == decided
    assert found[c.BALLOTS_ACCEPTED] == ("True", c.ALL_BALLOTS_RECORDED)
    assert status["observedGeneration"] == 3
    assert all(x["observedGeneration"] == 3 for x in status["conditions"])


def test_what_the_document_says_is_shown_before_the_ledger_has_it() -> None:
    status = mirrored(body(), Relayed(unreachable="no primary node known yet"))
    assert status["proposalId"] == PID
    assert (status["proposer"], status["proposerName"]) == (ALICE.member_id, "alice")
    assert status["actions"] == ACTIONS
    assert status["action"] == "add_measurement +1"
    assert status["createdAt"] == "2026-01-01T00:00:00Z"
    for key in ("tally", "votes", "txid", "expiresAt", "receipt"):
        assert key not in status


def test_an_undecodable_proposal_shows_no_document_fields() -> None:
    status = mirrored(body("%%%"), Relayed())
    for key in ("proposalId", "proposer", "actions", "action", "createdAt"):
        assert key not in status


def test_a_proposer_without_member_shows_only_the_id() -> None:
    raw = MALLORY.sign(proposal_payload([add_measurement()]))
    status = mirrored(body(b64(raw)), Relayed(refused="document.kid: not a member"))
    assert status["proposer"] == MALLORY.member_id
    assert "proposerName" not in status
    assert status["action"] == "add_measurement"


def test_open_shows_the_ledgers_tally_and_votes() -> None:
    status = mirrored(body(), Relayed(view=view(tally=(1, 1, 2, 3), txid="3.12")))
    assert status["tally"] == {"approve": 1, "reject": 1, "needed": 2, "governors": 3}
    assert status["votes"] == "1/2"
    assert (status["txid"], status["expiresAt"]) == ("3.12", "2026-01-08T00:00:00Z")


# --- receipt ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "relayed_receipt", "existing", "kept"),
    [
        pytest.param("Accepted", RECEIPT, None, True, id="final-fetched"),
        pytest.param("Open", RECEIPT, None, False, id="open-never"),
        pytest.param(
            "Accepted", None, {"txid": "2.7", "receipt": RECEIPT}, True, id="same-txid-kept"
        ),
        pytest.param(
            "Accepted", None, {"txid": "2.5", "receipt": RECEIPT}, False, id="other-txid-dropped"
        ),
        pytest.param(
            "Open", None, {"txid": "2.7", "receipt": RECEIPT}, False, id="kept-only-when-final"
        ),
        pytest.param("Rejected", None, None, False, id="final-not-fetched-yet"),
    ],
)
def test_receipt_only_for_a_final_state_and_its_transaction(
    state: str,
    relayed_receipt: dict[str, Any] | None,
    existing: dict[str, Any] | None,
    kept: bool,
) -> None:
    relayed = Relayed(view=view(state, txid="2.7"), receipt=relayed_receipt)
    status = mirrored(body(status=existing), relayed)
    assert status.get("receipt") == (RECEIPT if kept else None)


# --- ballots ----------------------------------------------------------------------------------


def item(
    i: int, who: Member | None, vote: str | None, accepted: bool, reason: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"index": i, "accepted": accepted}
    if who is not None:
        out["memberId"] = who.member_id
        if who.member_id in NAMES:
            out["member"] = NAMES[who.member_id]
    if vote is not None:
        out["vote"] = vote
    if reason is not None:
        out["reason"] = reason
    return out


ONE_EACH = "this member's other ballot is the one recorded (one ballot each)"
NOT_A_MEMBER = f"document.kid: {MALLORY.member_id} is not a member"
BAD_SIGNATURE = "document.signature: COSE_Sign1 signature does not verify"

BALLOT_CASES = [
    pytest.param(
        [BOB_YES, CAROL_YES],
        Relayed(view=view(ballots={BOB.member_id: BOB_YES, CAROL.member_id: CAROL_YES})),
        [item(0, BOB, "approve", True), item(1, CAROL, "approve", True)],
        id="recorded-bytes-equal",
    ),
    pytest.param(
        [BOB_YES, BOB_NO],
        Relayed(view=view(ballots={BOB.member_id: BOB_YES})),
        [item(0, BOB, "approve", True), item(1, BOB, "reject", False, ONE_EACH)],
        id="second-ballot-of-a-member",
    ),
    pytest.param(
        [BOB_NO],
        Relayed(view=view(ballots={BOB.member_id: BOB_YES}), ballot_refusals={0: "stale"}),
        [item(0, BOB, "reject", False, "stale")],
        id="refusal-wins-over-other-ballot",
    ),
    pytest.param(
        [FORGED, BOB_YES],
        Relayed(view=view(ballots={BOB.member_id: BOB_YES}), ballot_refusals={0: NOT_A_MEMBER}),
        [item(0, MALLORY, "approve", False, NOT_A_MEMBER), item(1, BOB, "approve", True)],
        id="forged-by-a-non-member",
    ),
    pytest.param(
        [TAMPERED],
        Relayed(view=view(), ballot_refusals={0: BAD_SIGNATURE}),
        [item(0, CAROL, "approve", False, BAD_SIGNATURE)],
        id="tampered-bytes",
    ),
    pytest.param(
        [TAMPERED],
        Relayed(view=view(ballots={CAROL.member_id: CAROL_YES})),
        [item(0, CAROL, "approve", False, ONE_EACH)],
        id="tampered-copy-of-a-recorded-ballot",
    ),
    pytest.param(
        [BOB_YES],
        Relayed(unreachable="timed out"),
        [item(0, BOB, "approve", False, "not relayed yet")],
        id="not-relayed-yet",
    ),
    pytest.param(
        ["%%%", b64(b"junk")],
        Relayed(view=view()),
        [
            item(0, None, None, False, "spec.ballots[0]: not base64 (Only base64 data is allowed)"),
            item(1, None, None, False, "spec.ballots[1]: not a signed governance document"),
        ],
        id="undecodable",
    ),
]


@pytest.mark.parametrize(("ballots", "relayed", "expected"), BALLOT_CASES)
def test_ballots(
    ballots: list[bytes | str], relayed: Relayed, expected: list[dict[str, Any]]
) -> None:
    status = mirrored(body(ballots=ballots), relayed)
    assert len(status["ballots"]) == len(expected)
    for got, want in zip(status["ballots"], expected, strict=True):
        reason = want.pop("reason", None)
        assert {k: v for k, v in got.items() if k != "reason"} == want
        if reason is None:
            assert "reason" not in got
        else:
            assert got["reason"].startswith(reason)
    refused = [b for b in status["ballots"] if not b["accepted"]]
    cond = next(x for x in status["conditions"] if x["type"] == c.BALLOTS_ACCEPTED)
    if refused:
        assert (cond["status"], cond["reason"]) == ("False", c.BALLOT_REFUSED)
        for b in refused:
            assert f"ballots[{b['index']}]: {b['reason']}" in cond["message"]
    else:
        assert (cond["status"], cond["reason"]) == ("True", c.ALL_BALLOTS_RECORDED)
        assert cond["message"] == f"{len(ballots)} ballot(s) recorded"


# --- withdrawal --------------------------------------------------------------------------------


WITHDRAWAL = withdrawal()

WITHDRAWAL_CASES = [
    pytest.param(
        WITHDRAWAL,
        Relayed(view=view("Withdrawn", "withdrawn by the proposer", withdrawn=WITHDRAWAL)),
        {"accepted": True},
        id="recorded",
    ),
    pytest.param(
        withdrawal(BOB),
        Relayed(
            view=view(),
            withdrawal_refusal="document.kid: only the proposer can withdraw a proposal",
        ),
        {"accepted": False, "reason": "document.kid: only the proposer can withdraw a proposal"},
        id="refused",
    ),
    pytest.param(
        WITHDRAWAL,
        Relayed(view=view("Withdrawn", withdrawn=withdrawal(CAROL))),
        {"accepted": False, "reason": "not relayed yet"},
        id="ledger-holds-another",
    ),
    pytest.param(
        WITHDRAWAL,
        Relayed(unreachable="timed out"),
        {"accepted": False, "reason": "not relayed yet"},
        id="not-relayed",
    ),
    pytest.param(
        "%%%",
        Relayed(view=view()),
        {"accepted": False, "reason": "spec.withdrawal: not base64 (Only base64 data is allowed)"},
        id="undecodable",
    ),
]


@pytest.mark.parametrize(("document", "relayed", "expected"), WITHDRAWAL_CASES)
def test_withdrawal(document: bytes | str, relayed: Relayed, expected: dict[str, Any]) -> None:
    status = mirrored(body(withdrawal=document), relayed)
    assert status["withdrawal"]["accepted"] is expected["accepted"]
    assert status["withdrawal"].get("reason", "").startswith(expected.get("reason", ""))
    assert ("reason" in status["withdrawal"]) is ("reason" in expected)


def test_no_withdrawal_no_withdrawal_status() -> None:
    assert "withdrawal" not in mirrored(body(), Relayed(view=view()))


# --- conditions over time -----------------------------------------------------------------------


def test_transition_times_change_only_when_a_condition_flips() -> None:
    first = proposal_status(body(), Relayed(view=view()), NAMES, EARLIER)
    again = proposal_status(
        body(status=first, generation=4), Relayed(view=view("Accepted")), NAMES, NOW
    )
    times = {x["type"]: x["lastTransitionTime"] for x in again["conditions"]}
    assert times == {c.SUBMITTED: EARLIER, c.DECIDED: NOW, c.BALLOTS_ACCEPTED: EARLIER}
    assert again["observedGeneration"] == 4
    assert {x["observedGeneration"] for x in again["conditions"]} == {4}
    assert [x["type"] for x in again["conditions"]] == list(c.PROPOSAL_TYPES)


def test_document_decode_reads_without_verifying() -> None:
    doc = Document.decode(b64(TAMPERED), "x")
    assert doc.error is None
    assert doc.signer == CAROL.member_id
    assert doc.payload["vote"] == "approve"
    assert doc.raw == TAMPERED
    assert hashlib.sha256(doc.raw).hexdigest() == document_id(TAMPERED)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param(None, "x: expected base64", id="missing"),
        pytest.param("", "x: expected base64", id="empty"),
        pytest.param(17, "x: expected base64", id="not-a-string"),
        pytest.param("a b", "x: not base64", id="not-base64"),
        pytest.param(b64(b"\x84\x40\xa0\x40\x40"), "x: not a signed governance", id="empty-cose"),
    ],
)
def test_document_decode_errors(text: object, error: str) -> None:
    doc = Document.decode(text, "x")
    assert doc.error is not None and doc.error.startswith(error)
    assert doc.signer is None
