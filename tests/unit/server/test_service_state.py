"""Whether the service is open or recovering (``server.service_state``): the ledger row, the
phase a node reports from it, and what a refused write is told."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from consortium_node.server.service_state import (
    OPEN,
    PHASES,
    RECOVERING,
    WAITING_FOR_OPEN,
    WAITING_FOR_SHARES,
    not_open_reason,
    opened_row,
    phase_of,
    recovering_row,
    status_of,
)

NEW, PREVIOUS = "aa" * 32, "bb" * 32
OPEN_VOTE = "transition_service_to_open"
ROW = recovering_row(
    NEW, PREVIOUS, "3.120", "s3://backups/demo/ manifests/1", "2026-01-02T03:04:05Z"
)


def test_the_constants_are_the_documented_names() -> None:
    assert (OPEN, RECOVERING) == ("Open", "Recovering")
    assert PHASES == ("Open", "WaitingForRecoveryShares", "WaitingForOpen")


@pytest.mark.parametrize(
    ("row", "status"),
    [
        pytest.param(None, OPEN, id="no-row"),
        pytest.param({}, RECOVERING, id="empty"),
        pytest.param({"status": "Open"}, OPEN, id="open"),
        pytest.param({"status": "Recovering"}, RECOVERING, id="recovering"),
        pytest.param(ROW, RECOVERING, id="recovering-row"),
        pytest.param(opened_row(ROW), OPEN, id="opened-row"),
        # a row that does not say Open fails closed: writes are refused, never silently taken
        pytest.param({"status": "open"}, RECOVERING, id="other-case"),
        pytest.param(["status", "Open"], RECOVERING, id="list"),
        pytest.param("Open", RECOVERING, id="string"),
        pytest.param(42, RECOVERING, id="int"),
    ],
)
def test_status_of(row: object, status: str) -> None:
    assert status_of(row) == status


@pytest.mark.parametrize(
    ("row", "secrets_held", "phase"),
    [
        (None, False, OPEN),
        (None, True, OPEN),
        ({"status": "Open"}, False, OPEN),
        ({"status": "Open"}, True, OPEN),
        ("garbage", False, WAITING_FOR_SHARES),
        (ROW, False, WAITING_FOR_SHARES),
        (ROW, True, WAITING_FOR_OPEN),
        ({"status": "Recovering"}, False, WAITING_FOR_SHARES),
        ({"status": "Recovering"}, True, WAITING_FOR_OPEN),
        (opened_row(ROW), False, OPEN),
    ],
)
def test_phase_of(row: object, secrets_held: bool, phase: str) -> None:
    assert phase_of(row, secrets_held) == phase
    assert phase in PHASES


def test_recovering_row_shape() -> None:
    assert ROW == {
        "status": "Recovering",
        "service_certificate_sha256": NEW,
        "recovery": {
            "previous_service_certificate_sha256": PREVIOUS,
            "last_recovered_txid": "3.120",
            "source": "s3://backups/demo/ manifests/1",
            "started_at": "2026-01-02T03:04:05Z",
        },
    }


def test_opened_row_keeps_the_recovery_details_and_leaves_its_input_alone() -> None:
    before = copy.deepcopy(ROW)
    opened: dict[str, Any] = opened_row(ROW)
    assert opened["status"] == OPEN
    assert {k: v for k, v in opened.items() if k != "status"} == {
        k: v for k, v in ROW.items() if k != "status"
    }
    assert before == ROW  # the recovering row it was made from is unchanged


@pytest.mark.parametrize(
    ("phase", "mentions"),
    [
        (WAITING_FOR_SHARES, ["WaitingForRecoveryShares", "submit-share", OPEN_VOTE]),
        (WAITING_FOR_OPEN, ["WaitingForOpen", OPEN_VOTE]),
    ],
)
def test_not_open_reason_names_the_phase_and_what_to_do(phase: str, mentions: list[str]) -> None:
    reason = not_open_reason(phase)
    for word in mentions:
        assert word in reason
    other = WAITING_FOR_OPEN if phase == WAITING_FOR_SHARES else WAITING_FOR_SHARES
    assert other not in reason
