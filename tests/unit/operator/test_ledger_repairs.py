"""A node's storage fault as the operator reports it: Degraded (and Ready, when no primary
can be elected) from the nodes' ``ledger_repair``, and one Event per fault and state."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, cast

import pytest

from consortium_operator.api import conditions as c
from consortium_operator.consortium import report
from consortium_operator.consortium.context import Memory, Pass
from consortium_operator.consortium.status import degraded, ready

from .test_status import RECOVERING, healthy

DIVERGED = {**RECOVERING, "state": "diverged"}
REPAIRED = {**RECOVERING, "state": "repaired"}
RECOVERING_MESSAGE = (
    "demo-1: recovering committed entries up to 3.57 lost to a storage fault (corrupted at "
    "ledger_5.chunk byte 80 (from index 9): record CRC-32 mismatch)"
)


@pytest.mark.parametrize(
    ("repairs", "reason", "message"),
    [
        ({}, c.AS_EXPECTED, "no node needs attention"),
        ({"demo-1": REPAIRED}, c.AS_EXPECTED, "no node needs attention"),
        ({"demo-1": RECOVERING}, c.LEDGER_RECOVERING, RECOVERING_MESSAGE),
        (
            {"demo-1": RECOVERING, "demo-2": DIVERGED},
            c.LEDGER_DIVERGED,
            "demo-2: the entries replicated to it contradict the committed entry 3.57 it held "
            "before a storage fault (corrupted at ledger_5.chunk byte 80 (from index 9): record "
            f"CRC-32 mismatch); {RECOVERING_MESSAGE}",
        ),
    ],
)
def test_degraded_names_the_nodes_repairing_a_storage_fault(
    repairs: dict[str, Any], reason: str, message: str
) -> None:
    cond = degraded(healthy(ledger_repairs=repairs))
    assert (cond.status, cond.reason, cond.message) == (reason != c.AS_EXPECTED, reason, message)


def test_ready_only_while_no_primary_can_be_elected_without_the_lost_entries() -> None:
    repairing = healthy(ledger_repairs={"demo-1": RECOVERING})
    assert ready(repairing).status is True  # a primary repairs it: the service serves
    stuck = ready(replace(repairing, primary=None))
    assert (stuck.status, stuck.reason) == (False, c.LEDGER_RECOVERING)
    assert stuck.message.startswith("no primary: demo-1 lost committed entries")
    assert stuck.message.endswith("writes wait until a node that holds them is back")
    assert ready(healthy(primary=None)).status is True  # an election alone is not this


@dataclass
class Recorder:
    """What ``report.repair_events`` uses of a Pass: its memory and its Events."""

    memory: Memory = field(default_factory=Memory)
    events: list[tuple[str, str]] = field(default_factory=list)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason))


REPAIRED_ELSEWHERE = {**REPAIRED, "damage": "missing at ledger_9.chunk byte 0 (from index 90)"}


@pytest.mark.parametrize(
    ("passes", "expected"),
    [
        pytest.param(
            [{}, {"demo-1": RECOVERING}, {"demo-1": RECOVERING}, {"demo-1": REPAIRED}],
            [("Warning", "LedgerRecovering"), ("Normal", "LedgerRepaired")],
            id="recovering-then-repaired-once-each",
        ),
        pytest.param(
            [{}, {"demo-1": REPAIRED}],
            [("Normal", "LedgerRepaired")],
            id="repaired-between-two-passes",
        ),
        pytest.param([{"demo-1": REPAIRED}], [], id="repaired-before-the-operator-started"),
        pytest.param(
            [{"demo-1": RECOVERING}], [("Warning", "LedgerRecovering")], id="found-recovering"
        ),
        pytest.param(
            [{}, {"demo-1": DIVERGED}, {"demo-1": DIVERGED}],
            [("Warning", "LedgerDiverged")],
            id="diverged",
        ),
        pytest.param(
            [{}, {"demo-1": REPAIRED}, {"demo-1": REPAIRED_ELSEWHERE}],
            [("Normal", "LedgerRepaired"), ("Normal", "LedgerRepaired")],
            id="a-second-fault-on-the-same-node",
        ),
    ],
)
def test_one_event_per_fault_and_state(
    passes: list[dict[str, Any]], expected: list[tuple[str, str]]
) -> None:
    recorder = Recorder()
    for repairs in passes:
        report.repair_events(cast(Pass, recorder), healthy(ledger_repairs=repairs))
    assert recorder.events == expected
