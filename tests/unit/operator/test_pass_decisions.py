"""The reconcile pass's decisions, table-driven: how many replicas to run and which node to
retire on a scale-down, when to ask for re-attestation, which pod to replace, restart or
unstick, which volumes to remove, which pod an upgrade rolls next, when the pass waits for
the members, what a Member's proposal waits for and when a Proposal is settled.

Each step is run on a real ``Pass`` and ``Observation``; only the Kubernetes client and the
primary are replaced by recorders (what the step asked of them is the decision).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

import pytest

from consortium_node.common.timeutil import rfc3339
from consortium_node.identity.trusted_list import NodeEntry, NodeStatus, TrustedNodeList
from consortium_operator.api.names import Names
from consortium_operator.consortium import apply, governing, lifecycle, reconcile, upgrade
from consortium_operator.consortium.context import CachedCheck, Memory, Pass, Settings
from consortium_operator.consortium.observation import NodeCheck, Observation, PodView
from consortium_operator.kube.k8s import Kube
from consortium_operator.members.reconcile import MemberView
from consortium_operator.nodes.client import Reply
from tests.unit.operator.support import M1, T0, consortium, member

NS = "ledger"
OLD, NEW = "registry.example/node:1", "registry.example/node:2"
T, R, P = NodeStatus.TRUSTED, NodeStatus.RETIRED, NodeStatus.PENDING


@dataclass
class FakeKube:
    """Serves ``objects`` and ``claims``; records deletions and Event reasons."""

    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    claims: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    def list(self, kind: str, namespace: str | None, selector: Any = None) -> list[Any]:
        assert kind == "PersistentVolumeClaim"
        return self.claims

    def delete(self, kind: str, namespace: str | None, name: str, *, uid: Any = None) -> bool:
        self.deleted.append((kind, name))
        return True

    def event(self, involved: Any, type_: str, reason: str, message: str, now: str) -> None:
        self.events.append(reason)


def node_id(ordinal: int, generation: int = 0) -> str:
    return f"{ordinal:02x}{generation:02x}" * 16


def entry(
    ordinal: int, status: NodeStatus, *, generation: int = 0, expires_in_h: float = 10
) -> NodeEntry:
    return NodeEntry(
        node_id(ordinal, generation), f"demo-{ordinal}", f"demo-{ordinal}:8443", "PEM", M1,
        "cd" * 32, status, rfc3339(T0 - timedelta(hours=1 + generation)),
        rfc3339(T0 + timedelta(hours=expires_in_h)),
    )  # fmt: skip


def pod(ordinal: int, **status: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": f"demo-{ordinal}", "uid": f"uid-{ordinal}"}
    meta["labels"] = {"controller-revision-hash": status.pop("revision", "rev-1")}
    if status.pop("deleting", False):
        meta["deletionTimestamp"] = rfc3339(T0)
    image = status.pop("image", OLD)
    ready = status.pop("ready", True)
    waiting = status.pop("waiting", None)
    assert not status, status
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "node", "image": image}]},
        "status": {
            "podIP": f"10.0.0.{ordinal + 1}",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"state": {"waiting": {"reason": waiting}} if waiting else {}}],
        },
    }


def statefulset(replicas: int, update_revision: str = "rev-1") -> dict[str, Any]:
    return {"spec": {"replicas": replicas}, "status": {"updateRevision": update_revision}}


def make_pass(
    nodes: int, *, replicas: int | None = None, pods: Sequence[dict[str, Any]] = ()
) -> tuple[Pass, FakeKube]:
    kube = FakeKube()
    if replicas is not None:
        kube.objects[("StatefulSet", "demo")] = statefulset(replicas)
    body = {"metadata": {"name": "demo", "namespace": NS, "uid": "uid-demo"}}
    p = Pass(
        cast(Kube, kube), body, consortium(nodes=nodes), Memory(), Settings(), T0, NS,
        "uid-demo", Names("demo"), pods=[dict(x) for x in pods],
    )  # fmt: skip
    return p, kube


def observe(
    p: Pass,
    entries: Sequence[NodeEntry] | None,
    *,
    checks: Mapping[str, str | None] | None = None,
    bootstrapped: bool = True,
    published: bool = True,
    **more: Any,
) -> Observation:
    """The pass's observation: a list of ``entries`` (None: no list yet), and the operator's
    verified check per pod (default: the newest entry of that pod's name)."""
    lst = None
    if entries is not None:
        lst = TrustedNodeList("demo", 7, rfc3339(T0), "00" * 32, (M1,), tuple(entries))
    if checks is None:
        checks = {e.name: e.node_id for e in sorted(entries or (), key=lambda e: e.attested_at)}
    return Observation(
        consortium="demo",
        generation=1,
        now=T0,
        desired=p.spec.nodes,
        service_certificate_pem="SERVICE PEM" if bootstrapped else None,
        trusted_list=lst,
        published_version=(lst.version if published else 6) if lst else None,
        checks={name: NodeCheck(name, nid, nid is not None) for name, nid in checks.items()},
        **more,
    )


# ---------------------------------------------------------------------- scale-down
SCALING = [  # spec.nodes, StatefulSet replicas, list (None: none yet) → replicas, retired next
    pytest.param(3, None, [], False, 1, None, id="not-bootstrapped-runs-one"),
    pytest.param(3, None, [entry(0, T)], True, 3, None, id="bootstrapped-no-sts-yet"),
    pytest.param(5, 3, [entry(i, T) for i in range(3)], True, 5, None, id="scale-up-at-once"),
    pytest.param(3, 3, [entry(i, T) for i in range(3)], True, 3, None, id="steady"),
    pytest.param(
        3, 5, [entry(i, T) for i in range(5)], True, 5, "demo-4", id="down-retires-highest-first"
    ),
    pytest.param(
        3, 5, [*(entry(i, T) for i in range(4)), entry(4, R)], True, 5, "demo-3", id="then-next"
    ),
    pytest.param(
        3, 5, [*(entry(i, T) for i in range(3)), entry(3, R), entry(4, R)], True, 3, None,
        id="all-retired-shrinks",
    ),
    pytest.param(
        3, 5, [*(entry(i, T) for i in range(3)), entry(3, R)], True, 3, None,
        id="never-joined-ordinal-does-not-wait",
    ),
    pytest.param(3, 5, None, True, 5, None, id="no-list-keeps-current"),
    pytest.param(
        3, 5, [*(entry(i, T) for i in range(4)), entry(4, P)], True, 5, "demo-4",
        id="pending-is-retired-too",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("nodes", "replicas", "entries", "boot", "want", "retired"), SCALING)
def test_replicas_and_who_a_scale_down_retires(
    monkeypatch: pytest.MonkeyPatch,
    nodes: int,
    replicas: int | None,
    entries: list[NodeEntry] | None,
    boot: bool,
    want: int,
    retired: str | None,
) -> None:
    p, _ = make_pass(nodes, replicas=replicas)
    obs = observe(p, entries, bootstrapped=boot)
    asked: list[NodeEntry] = []
    monkeypatch.setattr(lifecycle, "retire", lambda _p, _o, e, why="": asked.append(e))
    assert apply.replicas(p, obs) == want
    lifecycle.retire_scaled_away(p, obs)
    assert [e.name for e in asked] == ([retired] if retired else [])


RECOVERY_SCALING = [  # the primary's service phase, StatefulSet replicas → replicas
    pytest.param("WaitingForRecoveryShares", None, 1, id="shares-awaited-no-sts-yet"),
    pytest.param("WaitingForRecoveryShares", 1, 1, id="shares-awaited"),
    pytest.param("WaitingForOpen", 1, 1, id="waiting-for-open"),
    pytest.param("WaitingForOpen", 3, 1, id="one-node-even-if-more-ran"),
    pytest.param("Open", 1, 3, id="opened-scales-to-spec"),
    pytest.param(None, 1, 3, id="phase-not-read"),
]


@pytest.mark.parametrize(("phase", "replicas", "want"), RECOVERY_SCALING)
def test_a_recovered_service_runs_one_node_until_it_is_open(
    phase: str | None, replicas: int | None, want: int
) -> None:
    p, _ = make_pass(3, replicas=replicas)
    obs = observe(p, [entry(0, T)], service_phase=phase)
    assert apply.replicas(p, obs) == want


@pytest.mark.parametrize(
    ("check", "want"),
    [
        pytest.param(node_id(4, 1), node_id(4, 1), id="the-node-seen-in-the-pod-wins"),
        pytest.param(None, node_id(4, 1), id="else-the-live-entry"),
    ],
)
def test_a_replaced_pod_retires_its_current_node_not_an_old_one(
    monkeypatch: pytest.MonkeyPatch, check: str | None, want: str
) -> None:
    p, _ = make_pass(3, replicas=5)
    old, new = entry(4, R, generation=0), entry(4, T, generation=1)
    entries = [*(entry(i, T) for i in range(4)), old, new]
    obs = observe(p, entries, checks={"demo-3": node_id(3), "demo-4": check})
    asked: list[NodeEntry] = []
    monkeypatch.setattr(lifecycle, "retire", lambda _p, _o, e, why="": asked.append(e))
    lifecycle.retire_scaled_away(p, obs)
    assert [e.node_id for e in asked] == [want]


# ---------------------------------------------------------------------- re-attestation
@pytest.mark.parametrize(
    ("entries", "due"),
    [
        pytest.param([entry(0, T, expires_in_h=5)], False, id="outside-window"),
        pytest.param([entry(0, T, expires_in_h=4)], True, id="window-edge-is-due"),
        pytest.param([entry(0, T, expires_in_h=5), entry(1, T, expires_in_h=1)], True, id="one"),
        pytest.param([entry(0, T, expires_in_h=-1)], True, id="expired-trusted-is-due"),
        pytest.param([entry(0, R, expires_in_h=1)], False, id="retired-never"),
        pytest.param([entry(0, P, expires_in_h=1)], False, id="pending-never"),
        pytest.param(None, False, id="no-list"),
    ],
)
def test_reattestation_is_asked_for_trusted_nodes_in_their_renewal_window(
    monkeypatch: pytest.MonkeyPatch, entries: list[NodeEntry] | None, due: bool
) -> None:
    p, _ = make_pass(3)  # renewBefore 4h
    asked: list[str] = []

    def ask(_p: Pass, _o: Observation, path: str, body: Any, timeout: float) -> Reply:
        asked.append(path)
        return Reply(200, b'{"failures": {"n1": "Stale: old quote"}}', None)

    monkeypatch.setattr(lifecycle, "ask_primary", ask)
    lifecycle.reattest_due(p, observe(p, entries))
    assert asked == (["/node/reattest"] if due else [])
    assert p.memory.failures == ({"n1": "Stale: old quote"} if due else {})


# ---------------------------------------------------------------------- pods
REPLACE = [  # pod, its node's status, list published, spec.nodes → pod deleted
    pytest.param(pod(1), R, True, 3, True, id="retired-node-gets-a-new-pod"),
    pytest.param(pod(1), T, True, 3, False, id="trusted-kept"),
    pytest.param(pod(1), R, False, 3, False, id="waits-until-the-pod-can-see-the-list"),
    pytest.param(pod(1, deleting=True), R, True, 3, False, id="already-going"),
    pytest.param(pod(1), R, True, 1, False, id="scaled-away-ordinal-is-not-replaced"),
]


@pytest.mark.parametrize(("the_pod", "status", "published", "nodes", "deleted"), REPLACE)
def test_the_pod_of_a_retired_node_is_replaced(
    the_pod: dict[str, Any], status: NodeStatus, published: bool, nodes: int, deleted: bool
) -> None:
    p, kube = make_pass(nodes, pods=[pod(0), the_pod])
    p.memory.checks["demo-1"] = CachedCheck("uid-1", 1.0, NodeCheck("demo-1", node_id(1), True))
    lifecycle.replace_retired(p, observe(p, [entry(0, T), entry(1, status)], published=published))
    assert kube.deleted == ([("Pod", "demo-1")] if deleted else [])
    assert kube.events == (["NodeReplaced"] if deleted else [])
    assert ("demo-1" in p.memory.checks) is not deleted


def test_a_pod_without_a_verified_node_is_not_replaced() -> None:
    p, kube = make_pass(3, pods=[pod(0), pod(1)])
    lifecycle.replace_retired(p, observe(p, [entry(0, T), entry(1, R)], checks={"demo-1": None}))
    assert kube.deleted == []


UNSTICK = [  # the pod, the StatefulSet's update revision, node config changed → deleted
    pytest.param(pod(1, ready=False, waiting="ImagePullBackOff"), "rev-2", False, True,
                 id="stuck-on-an-old-revision"),
    pytest.param(pod(1, ready=False, waiting="CrashLoopBackOff"), "rev-1", True, True,
                 id="crashlooping-when-the-config-changed"),
    pytest.param(pod(1, ready=False, waiting="CrashLoopBackOff"), "rev-1", False, False,
                 id="crashlooping-on-the-current-template-waits"),
    pytest.param(pod(1, ready=True), "rev-2", True, False, id="healthy-never-touched"),
    pytest.param(pod(1, ready=False, waiting="ImagePullBackOff", deleting=True), "rev-2", True,
                 False, id="already-going"),
    pytest.param(pod(1, ready=False, waiting="ContainerCreating"), "rev-2", True, False,
                 id="merely-starting"),
]  # fmt: skip


@pytest.mark.parametrize(("the_pod", "revision", "config_changed", "deleted"), UNSTICK)
def test_a_fixed_spec_unsticks_broken_pods_only(
    the_pod: dict[str, Any], revision: str, config_changed: bool, deleted: bool
) -> None:
    p, kube = make_pass(3, pods=[pod(0), the_pod])
    apply._unstick(p, statefulset(3, revision), config_changed)
    assert kube.deleted == ([("Pod", "demo-1")] if deleted else [])


def test_nothing_is_unstuck_before_the_statefulset_exists() -> None:
    p, kube = make_pass(3, pods=[pod(1, ready=False, waiting="ImagePullBackOff")])
    apply._unstick(p, None, True)
    assert kube.deleted == []


def claim(name: str, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = rfc3339(T0)
    return {"metadata": meta}


def test_only_volumes_of_ordinals_scaled_away_and_without_a_pod_are_removed() -> None:
    p, kube = make_pass(3, pods=[pod(i) for i in range(4)])  # demo-3 still shutting down
    kube.claims = [
        *(claim(f"ledger-demo-{i}") for i in range(5)),
        claim("ledger-demo-5", deleting=True),
        claim("ledger-other-7"),
        claim("scratch-demo-6"),
    ]
    apply._cleanup_claims(p, observe(p, []))
    assert kube.deleted == [("PersistentVolumeClaim", "ledger-demo-4")]


# ---------------------------------------------------------------------- upgrades
ROLL = [  # pods (the primary is demo-2), the image approved, the StatefulSet's revision →
    # what is retired or restarted, and whether UpToDate holds
    pytest.param([pod(i) for i in range(3)], OLD, "rev-1", [], [], True, id="up-to-date"),
    pytest.param([pod(i) for i in range(3)], NEW, "rev-1", ["demo-1"], [], False,
                 id="new-image-retires-highest-non-primary"),
    pytest.param([pod(0, image=NEW), pod(1, image=NEW), pod(2)], NEW, "rev-1", ["demo-2"], [],
                 False, id="primary-last"),
    pytest.param([pod(0, image=NEW), pod(1, image=NEW, revision="rev-0"), pod(2, image=NEW)],
                 NEW, "rev-1", [], ["demo-1"], False, id="template-change-restarts"),
    pytest.param([pod(0), pod(1, ready=False), pod(2)], NEW, "rev-1", [], [], False,
                 id="waits-while-one-is-not-ready"),
    pytest.param([pod(0), pod(1, deleting=True), pod(2)], NEW, "rev-1", [], [], False,
                 id="waits-while-one-is-going"),
]  # fmt: skip


@pytest.mark.parametrize(("pods", "image", "revision", "retired", "restarted", "up_to_date"), ROLL)
def test_an_upgrade_rolls_one_settled_pod_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
    pods: list[dict[str, Any]],
    image: str,
    revision: str,
    retired: list[str],
    restarted: list[str],
    up_to_date: bool,
) -> None:
    p, kube = make_pass(3, pods=pods)
    kube.objects[("StatefulSet", "demo")] = statefulset(3, revision)
    views = tuple(v for v in (PodView.of(x, p.names) for x in pods) if v is not None)
    obs = observe(
        p, [entry(i, T) for i in range(3)], pods=views, primary="demo-2", network={},
        running_image=image,
    )  # fmt: skip
    asked: list[str] = []
    monkeypatch.setattr(governing, "retire", lambda _p, _o, e, why="": asked.append(e.name))
    out = governing.roll(p, obs, [])
    assert asked == retired
    assert kube.deleted == [("Pod", name) for name in restarted]
    assert kube.events == ["NodeRestarted"] * len(restarted)
    assert out.up_to_date is not None
    assert out.up_to_date.status is up_to_date


def test_nothing_rolls_before_the_ledger_was_read() -> None:
    p, kube = make_pass(3, pods=[pod(i) for i in range(3)])
    obs = observe(p, [entry(i, T) for i in range(3)], running_image=NEW)  # network unknown
    assert governing.roll(p, obs, []) is obs
    assert kube.deleted == []


# ---------------------------------------------------------------------- members, proposals
def asked(category: str, state: str, votes: str = "", subject: str = "") -> upgrade.Asked:
    return upgrade.Asked(f"p-{category}-{subject}", category, state, "", votes, subject)


def test_a_member_waits_for_its_own_add_member_proposal() -> None:
    found = governing.member_proposals(
        [
            asked("add-member", "Open", "1/2", "alice"),
            asked("add-member", "Pending", subject="bob"),
            asked("measurements", "Open", "0/2"),
            asked("trust-node", "Open", subject="demo-1"),
        ]
    )
    assert found == {
        "alice": "Proposal p-add-member-alice is Open, 1/2 approvals",
        "bob": "Proposal p-add-member-bob is Pending",
    }


def proposal(state: str | None, receipt: bool = True, observed: int = 2) -> dict[str, Any]:
    status: dict[str, Any] = {"observedGeneration": observed}
    if state is not None:
        status["state"] = state
    if receipt:
        status["receipt"] = "r"
    return {"metadata": {"generation": 2}, "status": status}


@pytest.mark.parametrize(
    ("body", "settled"),
    [
        pytest.param(proposal("Accepted"), True, id="accepted-with-receipt"),
        pytest.param(proposal("Expired"), True, id="expired"),
        pytest.param(proposal("Open"), False, id="open"),
        pytest.param(proposal("Refused"), False, id="refused-may-be-retried"),
        pytest.param(proposal("Accepted", receipt=False), False, id="no-receipt-yet"),
        pytest.param(proposal("Accepted", observed=1), False, id="spec-changed-since"),
        pytest.param(proposal(None), False, id="no-status"),
    ],
)
def test_a_proposal_is_settled_once_final_with_a_receipt_for_its_spec(
    body: dict[str, Any], settled: bool
) -> None:
    assert governing._settled(body) is settled


def member_view(name: str) -> MemberView:
    return MemberView({"metadata": {"name": name}}, member(name), None)


@pytest.mark.parametrize(
    ("waiting", "ledger", "awaits"),
    [
        pytest.param((), {"alice": "Active"}, False, id="all-active"),
        pytest.param(("p-measurements",), {"alice": "Active"}, True, id="a-proposal-is-open"),
        pytest.param((), {"alice": "Accepted"}, True, id="accepted-member-must-ack"),
        pytest.param((), None, False, id="ledger-not-read"),
        pytest.param((), {"bob": "Accepted"}, False, id="not-one-of-ours"),
    ],
)
def test_a_pass_waits_for_the_members_only_when_they_have_something_to_do(
    waiting: tuple[str, ...], ledger: dict[str, str] | None, awaits: bool
) -> None:
    alice = member_view("alice")
    assert alice.spec is not None
    p, _ = make_pass(3)
    ids = {"alice": alice.spec.member_id, "bob": "b0" * 32}
    by_id = None if ledger is None else {ids[k]: v for k, v in ledger.items()}
    obs = observe(p, [], waiting_proposals=waiting, ledger_members=by_id)
    assert reconcile._awaits_members(obs, [alice, MemberView({}, None, None)]) is awaits
