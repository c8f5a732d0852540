"""upgrade.py: which image the StatefulSet may run, the next rolling step, UpToDate."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from consortium_operator.api import conditions as c
from consortium_operator.consortium.upgrade import (
    Asked,
    PodFacts,
    Step,
    asked_for,
    next_step,
    node_image,
    up_to_date,
)

OLD, NEW = "registry.example/node:1.0.0", "registry.example/node:1.1.0"
REV_OLD, REV_NEW = "demo-5d8f", "demo-7c9a"


def pod(ordinal: int, image: str = OLD, revision: str | None = REV_NEW, **kw: Any) -> PodFacts:
    defaults: dict[str, Any] = {
        "ready": True,
        "deleting": False,
        "node_id": f"{ordinal:064x}",
        "trusted": True,
    }
    return PodFacts(f"demo-{ordinal}", ordinal, image, revision, **{**defaults, **kw})


def asked(category: str, state: str, votes: str = "", name: str = "") -> Asked:
    return Asked(name or f"demo-{category}-0123456789", category, state, f"why {state}", votes)


# --- node_image -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bootstrapped", "live", "waiting", "expected"),
    [
        pytest.param(False, OLD, [asked("measurements", "Open")], NEW, id="pre-bootstrap-spec"),
        pytest.param(True, OLD, [asked("measurements", "Open")], OLD, id="measurements-waiting"),
        pytest.param(
            True, OLD, [asked("measurements", "Accepted")], OLD, id="accepted-not-applied-yet"
        ),
        pytest.param(
            True, OLD, [asked("measurements", "Rejected")], OLD, id="rejected-keeps-the-old"
        ),
        pytest.param(True, None, [asked("measurements", "Open")], NEW, id="no-statefulset-yet"),
        pytest.param(True, OLD, [], NEW, id="nothing-waiting"),
        pytest.param(True, OLD, [asked("host-data", "Open")], NEW, id="other-intents-dont-hold"),
    ],
)
def test_node_image(
    bootstrapped: bool, live: str | None, waiting: list[Asked], expected: str
) -> None:
    assert node_image(NEW, live, bootstrapped, waiting) == expected


# --- next_step --------------------------------------------------------------------------------

SETTLED = [pod(0, NEW), pod(1, NEW), pod(2, NEW)]

STEP_CASES = [
    pytest.param(SETTLED, {}, None, id="nothing-outdated"),
    pytest.param(
        [pod(0), pod(1), pod(2)],
        {},
        Step("retire", "demo-2", f"{2:064x}"),
        id="outdated-highest-ordinal-first",
    ),
    pytest.param(
        [pod(0), pod(1), pod(2)],
        {"primary": "demo-2"},
        Step("retire", "demo-1", f"{1:064x}"),
        id="backups-before-the-primary",
    ),
    pytest.param(
        [pod(0), pod(1, NEW), pod(2, NEW)],
        {"primary": "demo-0"},
        Step("retire", "demo-0", f"{0:064x}"),
        id="the-primary-last",
    ),
    pytest.param(
        [pod(0, NEW, REV_OLD), pod(1, NEW), pod(2, NEW)],
        {},
        Step("delete", "demo-0", f"{0:064x}"),
        id="template-only-change-deletes",
    ),
    pytest.param(
        [pod(0, NEW, REV_OLD), pod(1, OLD, REV_OLD), pod(2, NEW)],
        {},
        Step("retire", "demo-1", f"{1:064x}"),
        id="image-change-retires",
    ),
    pytest.param(
        [pod(0, NEW, None), pod(1, NEW), pod(2, NEW)],
        {},
        None,
        id="unknown-revision-is-not-outdated",
    ),
    pytest.param(
        [pod(0, NEW, REV_OLD), pod(1, NEW), pod(2, NEW)],
        {"update_revision": None},
        None,
        id="no-update-revision",
    ),
    pytest.param(
        [pod(0, NEW), pod(1, NEW), pod(2, NEW), pod(3), pod(4, NEW, REV_OLD)],
        {},
        None,
        id="pods-beyond-desired-ignored",
    ),
    pytest.param(
        [pod(0), pod(1, NEW), pod(2, NEW), pod(3, ready=False)],
        {},
        Step("retire", "demo-0", f"{0:064x}"),
        id="unsettled-pod-beyond-desired-ignored",
    ),
    pytest.param([pod(0), pod(1), pod(2, ready=False)], {}, None, id="not-settled-a-pod-not-ready"),
    pytest.param([pod(0), pod(1), pod(2, deleting=True)], {}, None, id="not-settled-deleting"),
    pytest.param([pod(0), pod(1), pod(2, trusted=False)], {}, None, id="not-settled-untrusted"),
    pytest.param([pod(0), pod(1)], {}, None, id="not-settled-a-pod-missing"),
    pytest.param([pod(0), pod(1), pod(2)], {"list_published": False}, None, id="not-settled-list"),
    pytest.param([pod(0)], {"desired": 1}, None, id="one-node-is-never-retired"),
    pytest.param(
        [pod(0, NEW, REV_OLD)],
        {"desired": 1},
        Step("delete", "demo-0", f"{0:064x}"),
        id="one-node-restart",
    ),
]


@pytest.mark.parametrize(("pods", "kw", "expected"), STEP_CASES)
def test_next_step(pods: list[PodFacts], kw: dict[str, Any], expected: Step | None) -> None:
    args: dict[str, Any] = {
        "template_image": NEW,
        "update_revision": REV_NEW,
        "desired": 3,
        "primary": None,
        "list_published": True,
        **kw,
    }
    assert next_step(pods, **args) == expected


def test_rolling_one_pod_at_a_time_ends() -> None:
    """Replacing what next_step picks, one pod per settled pass, reaches nothing to do."""
    pods = {p.name: p for p in (pod(0), pod(1), pod(2))}
    order = []
    for _ in range(5):
        step = next_step(
            list(pods.values()),
            template_image=NEW,
            update_revision=REV_NEW,
            desired=3,
            primary="demo-1",
            list_published=True,
        )
        if step is None:
            break
        order.append((step.action, step.pod))
        pods[step.pod] = replace(pods[step.pod], image=NEW, node_id="fresh")
    assert order == [("retire", "demo-2"), ("retire", "demo-0"), ("retire", "demo-1")]


# --- up_to_date -------------------------------------------------------------------------------


def test_a_rejected_upgrade_says_the_nodes_keep_running() -> None:
    cond = up_to_date(
        [
            asked("measurements", "Rejected", name="demo-measurements-aa"),
            asked("host-data", "Open"),
        ],
        SETTLED,
        NEW,
        3,
    )
    assert (cond.type, cond.status, cond.reason) == (c.UP_TO_DATE, False, c.PROPOSAL_REJECTED)
    assert "demo-measurements-aa" in cond.message
    assert "Rejected: why Rejected" in cond.message
    assert "keep running" in cond.message


@pytest.mark.parametrize("state", ["Rejected", "Refused", "Invalid"])
def test_other_refused_proposals_are_rejections_without_the_image_note(state: str) -> None:
    cond = up_to_date([asked("host-data", state, name="demo-host-data-bb")], SETTLED, NEW, 3)
    assert (cond.status, cond.reason) == (False, c.PROPOSAL_REJECTED)
    assert f"demo-host-data-bb is {state}" in cond.message
    assert "keep running" not in cond.message


@pytest.mark.parametrize(
    ("waiting", "expected"),
    [
        pytest.param(
            [asked("measurements", "Open", "1/2", name="demo-measurements-aa")],
            "Proposal demo-measurements-aa (measurements) is Open, 1/2 approvals",
            id="open-with-votes",
        ),
        pytest.param(
            [asked("trust-node", "Pending", name="demo-trust-node-demo-3-cc")],
            "Proposal demo-trust-node-demo-3-cc (trust-node) is Pending",
            id="pending-without-votes",
        ),
        pytest.param(
            [asked("constitution", "Accepted", "2/2", name="x")],
            "Proposal x (constitution) is Accepted, 2/2 approvals",
            id="accepted-not-applied-yet",
        ),
    ],
)
def test_waiting_for_approval(waiting: list[Asked], expected: str) -> None:
    cond = up_to_date(waiting, SETTLED, NEW, 3)
    assert (cond.status, cond.reason) == (False, c.WAITING_FOR_APPROVAL)
    assert cond.message == f"waiting for the members: {expected}"


@pytest.mark.parametrize(
    ("pods", "status", "reason", "message"),
    [
        pytest.param(
            [pod(0, NEW), pod(1), pod(2)],
            False,
            c.ROLLING_NODES,
            f"1/3 nodes run {NEW}",
            id="rolling",
        ),
        pytest.param(
            [pod(0, NEW), pod(1, NEW)], False, c.ROLLING_NODES, f"2/3 nodes run {NEW}", id="short"
        ),
        pytest.param(
            [pod(0, NEW), pod(1, NEW), pod(2, NEW), pod(3)],
            True,
            c.UP_TO_DATE_REASON,
            f"3 nodes run {NEW}",
            id="all-good-extra-pod-ignored",
        ),
        pytest.param(
            [pod(0, NEW, REV_OLD), pod(1, NEW), pod(2, NEW)],
            False,
            c.ROLLING_NODES,
            f"2/3 nodes run {NEW}",
            id="template-only-change-is-rolling",
        ),
    ],
)
def test_up_to_date_from_the_pods(
    pods: list[PodFacts], status: bool, reason: str, message: str
) -> None:
    cond = up_to_date([], pods, NEW, 3, REV_NEW)
    assert (cond.type, cond.status, cond.reason, cond.message) == (
        c.UP_TO_DATE,
        status,
        reason,
        message,
    )


def test_asked_for_reads_each_wanted_proposals_status() -> None:
    wanted = {
        "demo-measurements-aa": ("measurements", ""),
        "demo-add-member-alice-bb": ("add-member", "alice"),
    }
    statuses = {
        "demo-add-member-alice-bb": {"state": "Open", "reason": "", "votes": "1/2"},
        "demo-unrelated": {"state": "Rejected"},
    }
    assert asked_for(wanted, statuses) == [
        Asked("demo-add-member-alice-bb", "add-member", "Open", "", "1/2", "alice"),
        Asked("demo-measurements-aa", "measurements", "Pending", "", "", ""),
    ]


def test_one_node_is_not_rolled_and_says_how_to_upgrade() -> None:
    cond = up_to_date([], [pod(0)], NEW, 1, REV_NEW)
    assert (cond.status, cond.reason) == (False, c.SCALE_UP_TO_UPGRADE)
    assert "scale spec.nodes to 3" in cond.message
