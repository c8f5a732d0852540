"""Condition bookkeeping (lastTransitionTime moves only on a status flip) and the derived phase."""

from __future__ import annotations

from typing import Any

import pytest

from consortium_operator.api import conditions as c
from consortium_operator.api.conditions import Condition, merge, phase

T1 = "2026-01-01T00:00:00Z"
T2 = "2026-01-02T00:00:00Z"


def _old(type_: str, status: str, reason: str = "Old", **extra: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": "old message",
        "lastTransitionTime": T1,
        "observedGeneration": 1,
        **extra,
    }


def _by_type(conditions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {cond["type"]: cond for cond in conditions}


@pytest.mark.parametrize(("status", "text"), [(True, "True"), (False, "False"), (None, "Unknown")])
def test_status_text(status: bool | None, text: str) -> None:
    assert Condition(c.READY, status, "R", "m").status_text == text


@pytest.mark.parametrize(
    ("old_status", "new_status", "expected_time"),
    [
        ("True", True, T1),
        ("False", False, T1),
        ("Unknown", None, T1),
        ("False", True, T2),
        ("True", False, T2),
        ("Unknown", True, T2),
        ("True", None, T2),
    ],
)
def test_last_transition_time_moves_only_on_flip(
    old_status: str, new_status: bool | None, expected_time: str
) -> None:
    existing = [_old(c.READY, old_status)]
    [out] = merge(existing, [Condition(c.READY, new_status, "New", "new")], now=T2, generation=4)
    assert out["lastTransitionTime"] == expected_time
    assert out["reason"] == "New"  # reason and message change without a transition
    assert out["message"] == "new"
    assert out["observedGeneration"] == 4


def test_new_condition_gets_now() -> None:
    [out] = merge(None, [Condition(c.DEGRADED, False, c.AS_EXPECTED, "ok")], now=T2, generation=1)
    assert out == {
        "type": c.DEGRADED,
        "status": "False",
        "reason": c.AS_EXPECTED,
        "message": "ok",
        "lastTransitionTime": T2,
        "observedGeneration": 1,
    }


def test_unchanged_status_without_recorded_time_gets_now() -> None:
    existing = [{"type": c.READY, "status": "True"}]
    [out] = merge(existing, [Condition(c.READY, True, "R", "m")], now=T2, generation=1)
    assert out["lastTransitionTime"] == T2


def test_unknown_condition_types_are_kept() -> None:
    foreign = _old("ExternalCheck", "True", reason="SomebodyElse")
    out = merge(
        [foreign, _old(c.READY, "False")],
        [Condition(c.READY, True, c.READY_REASON, "ready")],
        now=T2,
        generation=9,
    )
    by_type = _by_type(out)
    assert by_type["ExternalCheck"] == foreign  # untouched, including its generation
    assert by_type[c.READY]["status"] == "True"


def test_existing_conditions_not_in_new_are_kept_unchanged() -> None:
    old = _old(c.BOOTSTRAPPED, "True")
    out = merge([old], [Condition(c.READY, False, c.NOT_READY, "x")], now=T2, generation=3)
    assert _by_type(out)[c.BOOTSTRAPPED] == old


@pytest.mark.parametrize("junk", [None, "Ready", 7, {"status": "True"}, {"type": 3}])
def test_malformed_existing_entries_are_dropped(junk: Any) -> None:
    out = merge([junk], [Condition(c.READY, True, "R", "m")], now=T2, generation=1)
    assert [cond["type"] for cond in out] == [c.READY]


@pytest.mark.parametrize("message", ["", None])
def test_never_an_empty_message(message: Any) -> None:
    [out] = merge(None, [Condition(c.READY, False, c.NO_QUORUM, message)], now=T2, generation=1)
    assert out["message"] == c.NO_QUORUM


def test_output_order_is_fixed() -> None:
    new = [
        Condition(t, True, "R", "m")
        for t in (c.DEGRADED, c.ACTIVE, c.READY, c.LIST_DISTRIBUTED, c.ACCEPTED)
    ]
    existing = [_old("Zeta", "True"), _old("Alpha", "True")]
    out = merge(existing, new, now=T2, generation=1)
    assert [cond["type"] for cond in out] == [
        c.READY,
        c.LIST_DISTRIBUTED,
        c.DEGRADED,
        c.ACCEPTED,
        c.ACTIVE,
        "Alpha",
        "Zeta",
    ]


def test_merge_does_not_mutate_existing() -> None:
    existing = [_old(c.READY, "False")]
    snapshot = [dict(cond) for cond in existing]
    merge(existing, [Condition(c.READY, True, "R", "m")], now=T2, generation=2)
    assert existing == snapshot


def test_find() -> None:
    ready = Condition(c.READY, True, "R", "m")
    assert c.find([Condition(c.DEGRADED, False, "D", "m"), ready], c.READY) is ready
    assert c.find([ready], c.DEGRADED) is None


def _conds(*specs: tuple[str, bool | None, str]) -> list[Condition]:
    return [Condition(t, s, r, "m") for t, s, r in specs]


READY_T = (c.READY, True, c.READY_REASON)
BOOT_T = (c.BOOTSTRAPPED, True, c.GENESIS_COMPLETE)
BOOT_F = (c.BOOTSTRAPPED, False, c.WAITING_FOR_GENESIS)
DEG_T = (c.DEGRADED, True, c.NODE_RETIRED)
DEG_F = (c.DEGRADED, False, c.AS_EXPECTED)


@pytest.mark.parametrize(
    ("conds", "deleting", "expected"),
    [
        ([], False, c.PHASE_PENDING),
        ([READY_T, BOOT_T, DEG_F], True, c.PHASE_DELETING),
        (_conds((c.READY, False, c.INVALID_SPEC)), True, c.PHASE_DELETING),
        (_conds((c.READY, False, c.INVALID_SPEC)), False, c.PHASE_FAILED),
        (_conds((c.READY, False, c.IMAGE_UNAVAILABLE), BOOT_T, DEG_T), False, c.PHASE_FAILED),
        (_conds((c.READY, False, c.ATTESTATION_REFUSED), BOOT_F), False, c.PHASE_FAILED),
        (_conds((c.READY, False, c.NODE_START_FAILED), BOOT_T), False, c.PHASE_FAILED),
        (_conds((c.READY, None, c.INVALID_SPEC)), False, c.PHASE_PENDING),
        (_conds(READY_T, BOOT_T, DEG_F), False, c.PHASE_READY),
        (_conds(READY_T), False, c.PHASE_READY),
        (_conds(READY_T, BOOT_T, DEG_T), False, c.PHASE_DEGRADED),
        (_conds((c.READY, False, c.WAITING_FOR_GENESIS)), False, c.PHASE_PENDING),
        (_conds((c.READY, False, c.WAITING_FOR_GENESIS), BOOT_F), False, c.PHASE_BOOTSTRAPPING),
        (_conds((c.READY, False, c.NODES_JOINING), BOOT_T, DEG_F), False, c.PHASE_BOOTSTRAPPING),
        (_conds((c.READY, False, c.NO_QUORUM), BOOT_T, DEG_T), False, c.PHASE_DEGRADED),
        (_conds((c.READY, False, c.SCALING), BOOT_T), False, c.PHASE_BOOTSTRAPPING),
        (_conds((c.READY, None, c.NOT_READY), (c.BOOTSTRAPPED, None, "X")), False, "Bootstrapping"),
    ],
)
def test_phase(conds: list[Any], deleting: bool, expected: str) -> None:
    conditions = [
        x if isinstance(x, Condition) else Condition(x[0], x[1], x[2], "m") for x in conds
    ]
    assert phase(conditions, deleting=deleting) == expected
