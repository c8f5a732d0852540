"""When the next pass runs: a watch event during a pass is not lost (the pass that was running
had read the old state), and a Ready consortium waiting on its members is looked at soon."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consortium_operator.api.spec import MemberSpec
from consortium_operator.consortium.context import Memory
from consortium_operator.consortium.observation import Observation
from consortium_operator.consortium.reconcile import AWAITING_MEMBERS, SLOW, _awaits_members
from consortium_operator.members.reconcile import MemberView


@pytest.mark.parametrize(
    ("pokes_during_pass", "expected_due"),
    [(0, 130.0), (1, 0.0), (3, 0.0)],
)
def test_an_event_during_a_pass_makes_the_next_pass_due_at_once(
    pokes_during_pass: int, expected_due: float
) -> None:
    memory = Memory()
    memory.poke()  # the event that started this pass
    assert memory.due == 0.0
    at_start = memory.pokes
    for _ in range(pokes_during_pass):
        memory.poke()
    memory.schedule(now=100.0, delay=30.0, pokes_at_start=at_start)
    assert memory.due == expected_due


def test_a_quiet_pass_schedules_the_next_after_its_delay() -> None:
    memory = Memory()
    memory.schedule(now=50.0, delay=2.0, pokes_at_start=memory.pokes)
    assert memory.due == 52.0
    memory.poke()
    assert memory.due == 0.0


def _members(*ids: str) -> list[MemberView]:
    return [
        MemberView(body={}, spec=MemberSpec(i, "demo", "PEM", "governor", i), error=None)
        for i in ids
    ]


@pytest.mark.parametrize(
    ("ledger", "waiting", "awaits"),
    [
        ({"a": "Active", "b": "Active"}, (), False),
        ({"a": "Active", "b": "Accepted"}, (), True),  # b was accepted and must ack
        ({"a": "Active"}, (), False),  # b not in the ledger yet: its proposal is waited for…
        ({"a": "Active"}, ("demo-add-member-b-1",), True),  # …as an open operator proposal
        (None, (), False),  # the ledger was not read: nothing known to wait for
    ],
)
def test_a_ready_consortium_is_looked_at_soon_while_members_must_act(
    ledger: dict[str, str] | None, waiting: tuple[str, ...], awaits: bool
) -> None:
    obs = Observation(
        "demo",
        1,
        datetime(2026, 1, 1, tzinfo=UTC),
        1,
        ledger_members=ledger,
        waiting_proposals=waiting,
    )
    assert _awaits_members(obs, _members("a", "b")) is awaits
    assert AWAITING_MEMBERS <= SLOW
