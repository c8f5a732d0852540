"""The proposal state machine: ballots, tally, expiry, withdrawal and invalidation.

Every time is fixed (T0 and offsets from it); nothing reads the clock.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from consortium_node import governance
from consortium_node.common.timeutil import rfc3339
from consortium_node.governance.constitution import Constitution
from consortium_node.governance.documents import SignedDocument
from consortium_node.governance.errors import GovernanceError
from consortium_node.governance.proposals import (
    CLOCK_SKEW,
    Proposal,
    ProposalState,
    Tally,
    cast_ballot,
    decide,
    invalidated_by,
    open_proposal,
    tally,
    withdraw,
)
from tests.unit.governance.support import (
    MEASUREMENT,
    NODE_ID,
    OTHER_MEASUREMENT,
    T0,
    action,
    add_measurement,
    at,
    ballot_payload,
    governors,
    member,
    proposal_payload,
    signed,
    signers_of,
    withdrawal_payload,
)

GOVS = governors(3)
IDS = [g.member_id for g in GOVS]
MEMBERS = signers_of(GOVS)
HOUR = 3600
MAJORITY = Constitution(proposal_expiry_seconds=HOUR)
ALL_OF_3 = Constitution(threshold=3, proposal_expiry_seconds=HOUR)
ONE = Constitution(threshold=1, proposal_expiry_seconds=HOUR)
FIVE_OF_3 = Constitution(threshold=5, proposal_expiry_seconds=HOUR)
AUTO = Constitution(auto_approve=("add_measurement", "trust_node"), proposal_expiry_seconds=HOUR)
A, R = "approve", "reject"


def proposal_doc(
    actions: list[dict[str, Any]] | None = None, *, by: int = 0, payload: Any = None
) -> SignedDocument:
    body = payload or proposal_payload(actions or [add_measurement()])
    return signed(GOVS[by], body, MEMBERS)


def propose(
    actions: list[dict[str, Any]] | None = None,
    *,
    by: int = 0,
    constitution: Constitution = MAJORITY,
) -> Proposal:
    """A fresh Open proposal made at T0 by governor ``by``."""
    return open_proposal(proposal_doc(actions, by=by), constitution, T0)


def ballot(p: Proposal, voter: int, vote: str) -> SignedDocument:
    return signed(GOVS[voter], ballot_payload(p.proposal_id, vote), MEMBERS)


def vote(
    p: Proposal,
    votes: list[tuple[int, str]],
    constitution: Constitution,
    governor_ids: list[str] = IDS,
    now_seconds: int = 60,
) -> list[Proposal]:
    """Cast ``votes`` in order; return the proposal after each ballot."""
    states = []
    for voter, choice in votes:
        p = cast_ballot(p, ballot(p, voter, choice), constitution, governor_ids, at(now_seconds))
        states.append(p)
    return states


# -- opening ----------------------------------------------------------------------------------


def test_open_proposal() -> None:
    doc = proposal_doc([add_measurement(), action("trust_node", node_id=NODE_ID)], by=1)
    p = open_proposal(doc, MAJORITY, at(10))
    assert p == Proposal(
        proposal_id=doc.document_id,
        proposer=IDS[1],
        actions=p.actions,
        created_at=T0,
        expires_at=at(HOUR),
        state="Open",
        reason="",
        ballots={},
    )
    assert [a.name for a in p.actions] == ["add_measurement", "trust_node"]
    assert p.subjects == {f"measurement:{MEASUREMENT}", f"node:{NODE_ID}"}


@pytest.mark.parametrize(
    ("created_offset", "ok"),
    [
        pytest.param(0, True, id="now"),
        pytest.param(CLOCK_SKEW.total_seconds(), True, id="skew-limit"),
        pytest.param(CLOCK_SKEW.total_seconds() + 1, False, id="beyond-skew"),
        pytest.param(86400, False, id="tomorrow"),
        pytest.param(-(HOUR - 1), True, id="one-second-left"),
        pytest.param(-HOUR, False, id="already-expired"),
        pytest.param(-86400, False, id="yesterday"),
    ],
)
def test_created_at_window(created_offset: float, ok: bool) -> None:
    now = at(86400 * 30)
    created = now + timedelta(seconds=created_offset)
    doc = signed(GOVS[0], proposal_payload([add_measurement()], created), MEMBERS)
    if ok:
        p = open_proposal(doc, MAJORITY, now)
        assert (p.created_at, p.expires_at) == (created, created + timedelta(seconds=HOUR))
    else:
        with pytest.raises(GovernanceError) as caught:
            open_proposal(doc, MAJORITY, now)
        assert caught.value.field == "payload.created_at"


@pytest.mark.parametrize(
    ("created_at", "expected"),
    [
        pytest.param("2026-01-01T01:00:00+01:00", T0, id="offset-normalised"),
        # Whole seconds, as the ledger stores them: every node computes the same expiry.
        pytest.param("2026-01-01T00:00:00.5Z", at(0), id="fraction"),
        pytest.param("2026-01-01", None, id="date-only"),
        pytest.param("2026-01-01T00:00:00", None, id="no-zone"),
        pytest.param(1767225600, None, id="epoch-number"),
        pytest.param(None, None, id="null"),
    ],
)
def test_created_at_format(created_at: object, expected: object) -> None:
    payload = {**proposal_payload([add_measurement()]), "created_at": created_at}
    doc = proposal_doc(payload=payload)
    if expected is not None:
        assert open_proposal(doc, MAJORITY, T0).created_at == expected
    else:
        with pytest.raises(GovernanceError) as caught:
            open_proposal(doc, MAJORITY, T0)
        assert caught.value.field == "payload.created_at"


@pytest.mark.parametrize(
    ("actions", "field"),
    [
        pytest.param([], "payload.actions", id="no-actions"),
        pytest.param([action("grant_all")], "payload.actions[0].name", id="unknown-action"),
        pytest.param(
            [add_measurement(), add_measurement()], "payload.actions[1]", id="same-subject-twice"
        ),
    ],
)
def test_open_proposal_validates_actions(actions: list[dict[str, Any]], field: str) -> None:
    doc = proposal_doc(payload=proposal_payload(actions))
    with pytest.raises(GovernanceError) as caught:
        open_proposal(doc, MAJORITY, T0)
    assert caught.value.field == field


def test_open_proposal_needs_a_proposal_document() -> None:
    p = propose()
    with pytest.raises(ValueError, match="proposal document"):
        open_proposal(ballot(p, 0, A), MAJORITY, T0)


# -- ballots and the tally --------------------------------------------------------------------

SCENARIOS = [
    # constitution, votes, final state, (approve, reject, needed)
    pytest.param(MAJORITY, [(0, A)], "Open", (1, 0, 2), id="majority-1-approve"),
    pytest.param(MAJORITY, [(0, A), (1, A)], "Accepted", (2, 0, 2), id="majority-2-approve"),
    pytest.param(MAJORITY, [(0, R), (1, R)], "Rejected", (0, 2, 2), id="majority-2-reject"),
    pytest.param(MAJORITY, [(0, A), (1, R)], "Open", (1, 1, 2), id="majority-split"),
    pytest.param(
        MAJORITY, [(0, A), (1, R), (2, A)], "Accepted", (2, 1, 2), id="majority-split-approve"
    ),
    pytest.param(
        MAJORITY, [(0, R), (1, A), (2, R)], "Rejected", (1, 2, 2), id="majority-split-reject"
    ),
    pytest.param(ALL_OF_3, [(0, A), (1, A)], "Open", (2, 0, 3), id="3of3-two-approve"),
    pytest.param(ALL_OF_3, [(0, A), (1, A), (2, A)], "Accepted", (3, 0, 3), id="3of3-unanimous"),
    pytest.param(ALL_OF_3, [(2, R)], "Rejected", (0, 1, 3), id="3of3-one-reject"),
    pytest.param(ALL_OF_3, [(0, A), (1, R)], "Rejected", (1, 1, 3), id="3of3-approve-reject"),
    pytest.param(ONE, [(1, A)], "Accepted", (1, 0, 1), id="1of3-one-approve"),
    pytest.param(ONE, [(0, R), (1, R)], "Open", (0, 2, 1), id="1of3-two-reject"),
    pytest.param(ONE, [(0, R), (1, R), (2, R)], "Rejected", (0, 3, 1), id="1of3-all-reject"),
    pytest.param(FIVE_OF_3, [(0, A), (1, A), (2, A)], "Open", (3, 0, 5), id="5of3-all-approve"),
    pytest.param(FIVE_OF_3, [(0, R), (1, R), (2, R)], "Open", (0, 3, 5), id="5of3-all-reject"),
]


@pytest.mark.parametrize(("constitution", "votes", "state", "counts"), SCENARIOS)
def test_ballots(
    constitution: Constitution,
    votes: list[tuple[int, str]],
    state: str,
    counts: tuple[int, int, int],
) -> None:
    states = vote(propose(constitution=constitution), votes, constitution)
    assert [p.state for p in states[:-1]] == ["Open"] * (len(votes) - 1)
    final = states[-1]
    assert final.state == state
    assert final.ballots == {IDS[voter]: choice for voter, choice in votes}
    assert tally(final, constitution, IDS) == Tally(*counts, governors=3)
    if state == "Open":
        assert final.reason == ""
        assert decide(final, constitution, IDS, at(120)) == final


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        pytest.param("Accepted", "2 of 3 approved", id="accepted"),
        pytest.param("Rejected", "2 of 3 rejected; 2 needed", id="rejected"),
    ],
)
def test_decision_reasons(state: str, reason: str) -> None:
    choice = A if state == "Accepted" else R
    (_, final) = vote(propose(), [(0, choice), (1, choice)], MAJORITY)
    assert (final.state, final.reason) == (state, reason)


def test_no_ballots_no_governors() -> None:
    """With nobody to vote, a proposal stays Open: not Accepted, not Rejected by nobody."""
    p = propose()
    assert decide(p, MAJORITY, [], at(60)) == p
    assert tally(p, MAJORITY, []) == Tally(0, 0, 1, 0)


def test_unreachable_threshold_stays_open_until_it_expires() -> None:
    p = propose(constitution=FIVE_OF_3)
    assert decide(p, FIVE_OF_3, IDS, at(60)).state == "Open"
    assert decide(p, FIVE_OF_3, IDS, at(HOUR - 1)).state == "Open"
    expired = decide(p, FIVE_OF_3, IDS, at(HOUR))
    assert (expired.state, expired.reason) == ("Expired", f"no decision by {rfc3339(at(HOUR))}")


@pytest.mark.parametrize(
    ("seconds", "state"),
    [
        pytest.param(HOUR - 1, "Open", id="one-second-before"),
        pytest.param(HOUR, "Expired", id="exactly-at-expiry"),
        pytest.param(HOUR + 1, "Expired", id="after"),
    ],
)
def test_expiry_boundary(seconds: int, state: str) -> None:
    (p,) = vote(propose(), [(0, A)], MAJORITY)
    assert decide(p, MAJORITY, IDS, at(seconds)).state == state


def test_expiry_comes_before_a_late_ballot() -> None:
    (p,) = vote(propose(), [(0, A)], MAJORITY)
    with pytest.raises(GovernanceError) as caught:
        cast_ballot(p, ballot(p, 1, A), MAJORITY, IDS, at(HOUR))
    assert caught.value.field == "proposal"
    assert "Expired" in caught.value.reason


@pytest.mark.parametrize(
    ("actions", "state"),
    [
        pytest.param([add_measurement()], "Accepted", id="one-auto-action"),
        pytest.param(
            [add_measurement(), action("trust_node", node_id=NODE_ID)],
            "Accepted",
            id="every-action-auto",
        ),
        pytest.param(
            [add_measurement(), action("remove_measurement", measurement=OTHER_MEASUREMENT)],
            "Open",
            id="one-action-not-auto",
        ),
        pytest.param([action("rotate_ledger_secret")], "Open", id="no-action-auto"),
    ],
)
def test_auto_approve(actions: list[dict[str, Any]], state: str) -> None:
    p = propose(actions, constitution=AUTO)
    decided = decide(p, AUTO, IDS, at(1))
    assert decided.state == state
    assert decided.ballots == {}
    if state == "Accepted":
        assert decided.reason == "auto-approved by the constitution"
        assert decide(p, AUTO, [], at(1)).state == "Accepted"  # no governor needed
    else:
        (_, voted) = vote(p, [(0, A), (1, A)], AUTO)
        assert voted.state == "Accepted"


def test_auto_approve_does_not_revive_an_expired_proposal() -> None:
    p = propose(constitution=AUTO)
    assert decide(p, AUTO, IDS, at(HOUR)).state == "Expired"


@pytest.mark.parametrize("second", [A, R], ids=["same-vote", "changed-vote"])
def test_second_ballot_from_the_same_member_is_refused(second: str) -> None:
    (p,) = vote(propose(), [(0, A)], MAJORITY)
    with pytest.raises(GovernanceError) as caught:
        cast_ballot(p, ballot(p, 0, second), MAJORITY, IDS, at(120))
    assert caught.value.field == "ballot"


@pytest.mark.parametrize(
    ("votes", "state"),
    [
        pytest.param([(0, A), (1, A)], "Accepted", id="after-accepted"),
        pytest.param([(0, R), (1, R)], "Rejected", id="after-rejected"),
    ],
)
def test_ballot_on_a_decided_proposal_is_refused(votes: list[tuple[int, str]], state: str) -> None:
    decided = vote(propose(), votes, MAJORITY)[-1]
    assert decided.state == state
    with pytest.raises(GovernanceError) as caught:
        cast_ballot(decided, ballot(decided, 2, A), MAJORITY, IDS, at(120))
    assert caught.value.field == "proposal"
    assert state in caught.value.reason


@pytest.mark.parametrize("wrong", ["other-proposal", "withdrawal"])
def test_ballot_must_be_a_ballot_on_this_proposal(wrong: str) -> None:
    p = propose()
    other = propose([add_measurement(OTHER_MEASUREMENT)])
    doc = (
        ballot(other, 1, A)
        if wrong == "other-proposal"
        else signed(GOVS[0], withdrawal_payload(p.proposal_id), MEMBERS)
    )
    with pytest.raises(GovernanceError) as caught:
        cast_ballot(p, doc, MAJORITY, IDS, at(60))
    assert caught.value.field == "payload.proposal_id"


def test_removed_governors_earlier_ballot_no_longer_counts() -> None:
    (p,) = vote(propose(), [(0, A)], MAJORITY)
    remaining = IDS[1:]
    assert tally(p, MAJORITY, IDS) == Tally(1, 0, 2, 3)
    assert tally(p, MAJORITY, remaining) == Tally(0, 0, 2, 2)
    (after,) = vote(p, [(1, A)], MAJORITY, remaining)
    assert after.state == "Open"  # would be Accepted if governor 0 still counted
    assert after.ballots == {IDS[0]: A, IDS[1]: A}  # the record is kept, only the count changes
    (accepted,) = vote(after, [(2, A)], MAJORITY, remaining)
    assert (accepted.state, accepted.reason) == ("Accepted", "2 of 2 approved")


def test_ballot_of_a_non_governor_is_refused() -> None:
    with pytest.raises(GovernanceError) as caught:
        vote(propose(), [(2, A)], MAJORITY, IDS[:2])
    assert caught.value.field == "document.kid"


def test_fewer_governors_can_accept_on_the_next_decision() -> None:
    (p,) = vote(propose(), [(0, A)], MAJORITY)
    decided = decide(p, MAJORITY, IDS[:1], at(120))
    assert (decided.state, decided.reason) == ("Accepted", "1 of 1 approved")


def test_tally_to_json() -> None:
    assert Tally(1, 2, 3, 4).to_json() == {"approve": 1, "reject": 2, "needed": 3, "governors": 4}


# -- withdrawal -------------------------------------------------------------------------------


def _withdrawal(p: Proposal, by: int) -> SignedDocument:
    return signed(GOVS[by], withdrawal_payload(p.proposal_id), MEMBERS)


def test_withdraw_by_the_proposer() -> None:
    (p,) = vote(propose(by=1), [(0, A)], MAJORITY)
    out = withdraw(p, _withdrawal(p, 1), at(60))
    assert out == replace(p, state="Withdrawn", reason="withdrawn by its proposer")


@pytest.mark.parametrize(
    ("setup", "by", "now", "field"),
    [
        pytest.param("open", 0, 60, "document.kid", id="another-member"),
        pytest.param("accepted", 1, 60, "proposal", id="after-accepted"),
        pytest.param("rejected", 1, 60, "proposal", id="after-rejected"),
        pytest.param("withdrawn", 1, 60, "proposal", id="twice"),
        pytest.param("open", 1, HOUR, "proposal", id="at-expiry"),
        pytest.param("other", 1, 60, "payload.proposal_id", id="other-proposal"),
    ],
)
def test_withdraw_refused(setup: str, by: int, now: int, field: str) -> None:
    p = propose(by=1)
    target = p
    if setup == "accepted":
        p = vote(p, [(0, A), (2, A)], MAJORITY)[-1]
    elif setup == "rejected":
        p = vote(p, [(0, R), (2, R)], MAJORITY)[-1]
    elif setup == "withdrawn":
        p = withdraw(p, _withdrawal(p, 1), at(30))
    elif setup == "other":
        target = propose([add_measurement(OTHER_MEASUREMENT)], by=1)
    with pytest.raises(GovernanceError) as caught:
        withdraw(p, _withdrawal(target, by), at(now))
    assert caught.value.field == field


# -- invalidation -----------------------------------------------------------------------------


def test_applying_a_proposal_invalidates_open_ones_touching_the_same_state() -> None:
    applied = vote(propose([add_measurement()]), [(0, A), (1, A)], MAJORITY)[-1]
    conflicting = propose([action("remove_measurement", measurement=MEASUREMENT)], by=1)
    unrelated = propose([add_measurement(OTHER_MEASUREMENT)], by=2)
    withdrawn = propose([add_measurement(), action("trust_node", node_id=NODE_ID)], by=2)
    withdrawn = withdraw(withdrawn, _withdrawal(withdrawn, 2), at(60))
    assert applied.state == "Accepted"

    out = invalidated_by(applied, [applied, conflicting, unrelated, withdrawn])

    assert [p.proposal_id for p in out] == [conflicting.proposal_id]
    (rejected,) = out
    assert rejected.state == "Rejected"
    assert rejected.reason.startswith("Invalidated")
    assert f"measurement:{MEASUREMENT}" in rejected.reason
    assert replace(rejected, state="Open", reason="") == conflicting


def test_invalidation_of_several_proposals_keeps_their_order() -> None:
    applied = propose([add_measurement(), action("trust_node", node_id=NODE_ID)])
    first = propose([action("retire_node", node_id=NODE_ID)], by=1)
    second = propose([action("remove_measurement", measurement=MEASUREMENT)], by=2)
    out = invalidated_by(applied, [second, first])
    assert [p.proposal_id for p in out] == [second.proposal_id, first.proposal_id]
    assert all(p.state == "Rejected" for p in out)


# -- ledger form ------------------------------------------------------------------------------


def _round_trip_case(name: str) -> Proposal:
    if name == "open-measurement":
        return propose()
    if name == "accepted-with-ballots":
        return vote(propose(), [(2, A), (0, R), (1, A)], MAJORITY)[-1]
    if name == "set-constitution":
        return propose([action("set_constitution", constitution={"threshold": "2"})])
    if name == "several-actions":
        return propose(
            [
                action("rotate_ledger_secret"),
                action(
                    "set_attestation_validity", validity_seconds=86400, renew_before_seconds=3600
                ),
                action("add_host_data", host_data=OTHER_MEASUREMENT),
            ]
        )
    if name == "fractional-created_at":
        payload = {**proposal_payload([add_measurement()]), "created_at": "2026-01-01T00:00:00.5Z"}
        return open_proposal(proposal_doc(payload=payload), MAJORITY, T0)
    assert name == "add-member"
    newcomer = member("round-trip-newcomer", "ed25519")
    return propose([action("add_member", certificate=newcomer.certificate_pem, role="user")])


@pytest.mark.parametrize(
    "name",
    [
        "open-measurement",
        "accepted-with-ballots",
        "set-constitution",
        "several-actions",
        pytest.param("add-member"),
        pytest.param("fractional-created_at"),
    ],
)
def test_ledger_round_trip(name: str) -> None:
    p = _round_trip_case(name)
    assert Proposal.from_json(p.to_json()) == p


def test_ledger_form() -> None:
    p = vote(propose(), [(2, A), (0, R)], MAJORITY)[-1]
    assert p.to_json() == {
        "proposal_id": p.proposal_id,
        "proposer": IDS[0],
        "actions": [{"name": "add_measurement", "args": {"measurement": MEASUREMENT}}],
        "created_at": "2026-01-01T00:00:00Z",
        "expires_at": "2026-01-01T01:00:00Z",
        "state": "Open",
        "reason": "",
        "ballots": dict(sorted({IDS[2]: A, IDS[0]: R}.items())),
        "subjects": [f"measurement:{MEASUREMENT}"],
    }
    assert list(p.to_json()["ballots"]) == sorted(p.ballots)


def test_states_are_spelled_as_on_the_wire() -> None:
    """``ProposalState`` (exported for the operator) is the ledger's and the API's spelling."""
    assert governance.ProposalState is ProposalState
    assert sorted(governance.LEDGER_STATES) == [
        "Accepted",
        "Expired",
        "Open",
        "Rejected",
        "Withdrawn",
    ]
    assert sorted(governance.FINAL_STATES) == ["Accepted", "Expired", "Rejected", "Withdrawn"]
    assert sorted(set(ProposalState) - governance.LEDGER_STATES) == [
        "Invalid",
        "Pending",
        "Refused",
    ]
    written = propose().to_json()
    assert type(written["state"]) is str and written["state"] == "Open"
    withdrawn = Proposal.from_json({**written, "state": "Withdrawn"})
    assert withdrawn.state is ProposalState.WITHDRAWN
    with pytest.raises(ValueError, match="Dropped"):
        Proposal.from_json({**written, "state": "Dropped"})
    for resource_only in (
        "Pending",
        "Refused",
        "Invalid",
    ):  # a Proposal resource's, never a ledger value's
        with pytest.raises(ValueError, match="not a ledger state"):
            Proposal.from_json({**written, "state": resource_only})
