"""The constitution: votes needed, auto-approval, parsing (legacy genesis form included)."""

from __future__ import annotations

from typing import Any

import pytest

from consortium_node.governance.actions import KNOWN
from consortium_node.governance.constitution import (
    DEFAULT_EXPIRY_SECONDS,
    MAX_EXPIRY_SECONDS,
    MIN_EXPIRY_SECONDS,
    Constitution,
    parse_constitution,
)
from consortium_node.governance.errors import GovernanceError

YEAR = 365 * 24 * 3600


@pytest.mark.parametrize(
    ("governors", "needed"),
    [
        pytest.param(governors, needed, id=f"{needed}-of-{governors}")
        for governors, needed in [(0, 1), (1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)]
    ],
)
def test_majority_is_more_than_half(governors: int, needed: int) -> None:
    assert Constitution().votes_needed(governors) == needed


@pytest.mark.parametrize("governors", range(8))
@pytest.mark.parametrize("threshold", [1, 3, 5])
def test_integer_threshold_is_not_lowered(threshold: int, governors: int) -> None:
    assert Constitution(threshold=threshold).votes_needed(governors) == threshold


def test_negative_governor_count_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="governors"):
        Constitution().votes_needed(-1)


@pytest.mark.parametrize(
    ("auto_approve", "names", "expected"),
    [
        pytest.param(("trust_node",), [], False, id="no-actions"),
        pytest.param((), [], False, id="nothing-auto-no-actions"),
        pytest.param((), ["trust_node"], False, id="nothing-auto"),
        pytest.param(("trust_node",), ["trust_node"], True, id="the-one-action"),
        pytest.param(("trust_node",), ["trust_node", "trust_node"], True, id="repeated"),
        pytest.param(
            ("retire_node", "trust_node"), ["trust_node", "retire_node"], True, id="all-in"
        ),
        pytest.param(("trust_node",), ["trust_node", "retire_node"], False, id="some-in"),
        pytest.param(("trust_node",), ["retire_node"], False, id="none-in"),
    ],
)
def test_auto_approves(auto_approve: tuple[str, ...], names: list[str], expected: bool) -> None:
    assert Constitution(auto_approve=auto_approve).auto_approves(names) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            {"threshold": "2", "auto_trust_nodes": True},
            Constitution(threshold=2),
            id="genesis-digit-string",
        ),
        pytest.param(
            {"threshold": "2", "auto_trust_nodes": False},
            Constitution(threshold=2, auto_trust_nodes=False),
            id="genesis-no-auto-trust",
        ),
        pytest.param({"threshold": "majority"}, Constitution(), id="majority-only"),
        pytest.param({}, Constitution(), id="empty-takes-defaults"),
        pytest.param({"threshold": 1}, Constitution(threshold=1), id="threshold-1"),
        pytest.param(
            {
                "threshold": 3,
                "auto_approve": ["trust_node", "add_measurement", "trust_node"],
                "proposal_expiry_seconds": 3600,
                "auto_trust_nodes": False,
            },
            Constitution(3, ("add_measurement", "trust_node"), 3600, False),
            id="full-sorted-deduplicated",
        ),
        pytest.param(
            {"proposal_expiry_seconds": MIN_EXPIRY_SECONDS},
            Constitution(proposal_expiry_seconds=60),
            id="expiry-minimum",
        ),
        pytest.param(
            {"proposal_expiry_seconds": MAX_EXPIRY_SECONDS},
            Constitution(proposal_expiry_seconds=YEAR),
            id="expiry-one-year",
        ),
    ],
)
def test_parse_accepts(value: dict[str, Any], expected: Constitution) -> None:
    parsed = parse_constitution(value, KNOWN)
    assert parsed == expected
    assert type(parsed.threshold) is type(expected.threshold)


def test_defaults() -> None:
    assert Constitution().to_json() == {
        "threshold": "majority",
        "auto_approve": [],
        "proposal_expiry_seconds": DEFAULT_EXPIRY_SECONDS,
        "auto_trust_nodes": True,
        "recovery_threshold": "majority",
    }
    assert DEFAULT_EXPIRY_SECONDS == 7 * 24 * 3600


@pytest.mark.parametrize(
    ("recovery_threshold", "members", "needed"),
    [("majority", 1, 1), ("majority", 2, 2), ("majority", 3, 2), ("majority", 10, 6),
     (2, 3, 2), (1, 5, 1), (4, 3, 4)],
)  # fmt: skip
def test_recovery_shares_needed(recovery_threshold: str | int, members: int, needed: int) -> None:
    """A number above the recovery members is not lowered: no record can then be written."""
    constitution = Constitution(recovery_threshold=recovery_threshold)
    assert constitution.recovery_shares_needed(members) == needed
    parsed = parse_constitution({"recovery_threshold": recovery_threshold}, KNOWN)
    assert parsed.recovery_threshold == recovery_threshold


@pytest.mark.parametrize(
    ("value", "field"),
    [
        pytest.param({"quorum": 2}, "constitution.quorum", id="unknown-field"),
        pytest.param({"threshold": 0}, "constitution.threshold", id="threshold-0"),
        pytest.param({"threshold": -1}, "constitution.threshold", id="threshold-negative"),
        pytest.param({"threshold": True}, "constitution.threshold", id="threshold-bool"),
        pytest.param({"threshold": "most"}, "constitution.threshold", id="threshold-word"),
        pytest.param({"threshold": 1.5}, "constitution.threshold", id="threshold-float"),
        pytest.param({"recovery_threshold": 0}, "constitution.recovery_threshold", id="recovery-0"),
        pytest.param(
            {"recovery_threshold": "all"}, "constitution.recovery_threshold", id="recovery-word"
        ),
        pytest.param({"threshold": "0"}, "constitution.threshold", id="threshold-digit-0"),
        pytest.param({"threshold": "-1"}, "constitution.threshold", id="threshold-string-neg"),
        pytest.param({"threshold": None}, "constitution.threshold", id="threshold-null"),
        pytest.param(
            {"auto_approve": "trust_node"}, "constitution.auto_approve", id="auto-not-list"
        ),
        pytest.param({"auto_approve": [1]}, "constitution.auto_approve", id="auto-not-names"),
        pytest.param(
            {"auto_approve": ["trust_node", "grant_all"]},
            "constitution.auto_approve[1]",
            id="auto-unknown-action",
        ),
        pytest.param(
            {"auto_approve": ["set_constitution"]},
            "constitution.auto_approve",
            id="auto-set-constitution",
        ),
        pytest.param(
            {"proposal_expiry_seconds": MIN_EXPIRY_SECONDS - 1},
            "constitution.proposal_expiry_seconds",
            id="expiry-below-minute",
        ),
        pytest.param(
            {"proposal_expiry_seconds": MAX_EXPIRY_SECONDS + 1},
            "constitution.proposal_expiry_seconds",
            id="expiry-above-year",
        ),
        pytest.param(
            {"proposal_expiry_seconds": True},
            "constitution.proposal_expiry_seconds",
            id="expiry-bool",
        ),
        pytest.param(
            {"proposal_expiry_seconds": "3600"},
            "constitution.proposal_expiry_seconds",
            id="expiry-string",
        ),
        pytest.param(
            {"proposal_expiry_seconds": 3600.0},
            "constitution.proposal_expiry_seconds",
            id="expiry-float",
        ),
        pytest.param(
            {"auto_trust_nodes": "true"}, "constitution.auto_trust_nodes", id="auto-trust-string"
        ),
        pytest.param({"auto_trust_nodes": 1}, "constitution.auto_trust_nodes", id="auto-trust-1"),
        pytest.param([], "constitution", id="list"),
        pytest.param("majority", "constitution", id="string"),
        pytest.param(None, "constitution", id="null"),
    ],
)
def test_parse_rejects(value: object, field: str) -> None:
    with pytest.raises(GovernanceError) as caught:
        parse_constitution(value, KNOWN)
    assert caught.value.field == field


def test_field_prefix_is_the_callers() -> None:
    with pytest.raises(GovernanceError) as caught:
        parse_constitution({"threshold": 0}, KNOWN, "actions[0].args.constitution")
    assert caught.value.field == "actions[0].args.constitution.threshold"


@pytest.mark.parametrize("threshold", ["²", "٣"], ids=["superscript-two", "arabic-indic-three"])
def test_non_ascii_digit_threshold_is_refused(threshold: str) -> None:
    with pytest.raises(GovernanceError) as caught:
        parse_constitution({"threshold": threshold}, KNOWN)
    assert caught.value.field == "constitution.threshold"


@pytest.mark.parametrize(
    "constitution",
    [
        pytest.param(Constitution(), id="defaults"),
        pytest.param(Constitution(threshold=2), id="integer"),
        pytest.param(
            Constitution("majority", ("add_measurement", "trust_node"), 60, False), id="full"
        ),
        pytest.param(Constitution(5, (), MAX_EXPIRY_SECONDS, True), id="max-expiry"),
    ],
)
def test_round_trip(constitution: Constitution) -> None:
    assert parse_constitution(constitution.to_json(), KNOWN) == constitution
