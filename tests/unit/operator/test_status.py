"""Status decisions from constructed observations: each link of the Ready chain in order, the
Degraded causes, which list entry a pod runs, and the status body written to the Consortium."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from consortium_node.common.timeutil import rfc3339
from consortium_node.identity.trusted_list import NodeEntry, NodeStatus, TrustedNodeList
from consortium_operator.api import conditions as c
from consortium_operator.api.spec import SpecError
from consortium_operator.consortium import report
from consortium_operator.consortium.observation import NodeCheck, Observation, PodView
from consortium_operator.consortium.observe import recovery_shown, snapshot_shown
from consortium_operator.consortium.status import (
    POLICY_REFUSAL,
    READY_CHAIN,
    decide,
    degraded,
    node_statuses,
    ready,
    recovery_status,
    status_body,
)
from consortium_operator.kube.k8s import Kube

from .support import merge_patch

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
MEASUREMENT = "ab" * 32
HOST_DATA = "cd" * 32
SERVICE_PEM = "-----BEGIN CERTIFICATE-----\nservice\n-----END CERTIFICATE-----\n"
SERVICE_SHA = "5e" * 32


def nid(n: int) -> str:
    """A fake node id (64 lowercase hex digits); NodeEntry does not check it against a key."""
    return f"{n:064x}"


def entry(
    name: str,
    node: int,
    status: NodeStatus = NodeStatus.TRUSTED,
    *,
    attested: datetime = T0,
    expires: datetime | None = None,
) -> NodeEntry:
    return NodeEntry(
        node_id=nid(node),
        name=name,
        address=f"{name}.demo-nodes.ns.svc.cluster.local:8443",
        public_key_pem="-----BEGIN PUBLIC KEY-----\nfake\n-----END PUBLIC KEY-----\n",
        measurement=MEASUREMENT,
        host_data=HOST_DATA,
        status=status,
        attested_at=rfc3339(attested),
        attestation_expires_at=rfc3339(expires or attested + timedelta(hours=24)),
    )


def tlist(*entries: NodeEntry, version: int = 4) -> TrustedNodeList:
    return TrustedNodeList(
        consortium="demo",
        version=version,
        issued_at=rfc3339(T0),
        service_certificate_sha256=SERVICE_SHA,
        allowed_measurements=(MEASUREMENT,),
        nodes=entries,
    )


def pod(ordinal: int, **kwargs: Any) -> PodView:
    defaults: dict[str, Any] = {"ip": f"10.0.0.{ordinal + 1}", "ready": True}
    return PodView(name=f"demo-{ordinal}", ordinal=ordinal, **{**defaults, **kwargs})


def check(ordinal: int, node: int | None, verified: bool = True, reason: str = "") -> NodeCheck:
    return NodeCheck(f"demo-{ordinal}", None if node is None else nid(node), verified, reason)


def healthy(desired: int = 3, **overrides: Any) -> Observation:
    """Every node Trusted, verified and published: Ready."""
    obs = Observation(
        consortium="demo",
        generation=7,
        now=NOW,
        desired=desired,
        image="localhost/consortium-node:1",
        pods=tuple(pod(i) for i in range(desired)),
        service_certificate_pem=SERVICE_PEM,
        service_certificate_sha256=SERVICE_SHA,
        trusted_list=tlist(*(entry(f"demo-{i}", i + 1) for i in range(desired))),
        list_sha256="11" * 32,
        published_version=4,
        checks={f"demo-{i}": check(i, i + 1) for i in range(desired)},
        primary="demo-0",
        term=2,
        commit_index=42,
        ledger_members={"m1": "Active", "m2": "Active", "op": "Active"},
        ledger_roles={"m1": "governor", "m2": "user", "op": "operator"},
        member_resources=2,
        allowed_measurements=(MEASUREMENT, "ab" * 32),
    )
    return replace(obs, **overrides)


# ---------------------------------------------------------------------------- Ready chain


def test_healthy_is_ready() -> None:
    cond = ready(healthy())
    assert (cond.type, cond.status, cond.reason) == (c.READY, True, c.READY_REASON)
    assert cond.message == "3/3 nodes trusted; trusted-node list version 4 published"
    assert all(check_(healthy()) is None for check_ in READY_CHAIN)
    assert len(FAULTS) == len(READY_CHAIN)  # one fault per link below


Fault = Callable[[Observation], Observation]


def _with_pod(obs: Observation, ordinal: int, **changes: Any) -> Observation:
    pods = tuple(replace(p, **changes) if p.ordinal == ordinal else p for p in obs.pods)
    return replace(obs, pods=pods)


def _untrust(obs: Observation) -> Observation:
    checks = {**obs.checks, "demo-2": check(2, 3, verified=False, reason="BadSignature: x")}
    return replace(obs, checks=checks)


def _scale_down(obs: Observation) -> Observation:
    return replace(obs, pods=(*obs.pods, pod(3)))


RECOVERING = {
    "state": "recovering",
    "damage": "corrupted at ledger_5.chunk byte 80 (from index 9): record CRC-32 mismatch",
    "kind": "corrupted",
    "known_committed": "3.57",
    "set_aside": ["/data/ledger/ledger_5.chunk.damaged-80"],
}

# In READY_CHAIN order: with faults i.. applied, fault i names the cause.
FAULTS: list[tuple[str, Fault, str]] = [
    (
        "spec",
        lambda o: replace(o, spec_error=SpecError("spec.attestation.validity", "bad")),
        c.INVALID_SPEC,
    ),
    (
        "image",
        lambda o: _with_pod(o, 0, ready=False, waiting_reason="ImagePullBackOff"),
        c.IMAGE_UNAVAILABLE,
    ),
    (
        "refused",
        lambda o: _with_pod(
            o,
            1,
            ready=False,
            waiting_reason="CrashLoopBackOff",
            last_termination_message=f"join failed: quote {POLICY_REFUSAL}: measurement\n",
        ),
        c.ATTESTATION_REFUSED,
    ),
    ("genesis", lambda o: replace(o, service_certificate_pem=None), c.WAITING_FOR_GENESIS),
    ("list", lambda o: replace(o, trusted_list=None), c.LIST_UNVERIFIED),
    (
        "service-open",
        lambda o: replace(o, service_phase=c.WAITING_FOR_RECOVERY_SHARES),
        c.WAITING_FOR_RECOVERY_SHARES,
    ),
    ("joining", _untrust, c.NODES_JOINING),
    (
        "recovering",
        lambda o: replace(o, primary=None, ledger_repairs={"demo-1": RECOVERING}),
        c.LEDGER_RECOVERING,
    ),
    ("published", lambda o: replace(o, published_version=None), c.LIST_NOT_PUBLISHED),
    ("scaling", _scale_down, c.SCALING),
]


@pytest.mark.parametrize("first", range(len(FAULTS)), ids=[f[0] for f in FAULTS])
def test_ready_chain_first_failure_wins(first: int) -> None:
    obs = healthy()
    for _, fault, _ in FAULTS[first:]:
        obs = fault(obs)
    cond = ready(obs)
    assert (cond.type, cond.status, cond.reason) == (c.READY, False, FAULTS[first][2])
    assert cond.message


@pytest.mark.parametrize("index", range(len(FAULTS)), ids=[f[0] for f in FAULTS])
def test_each_fault_alone(index: int) -> None:
    _, fault, reason = FAULTS[index]
    cond = ready(fault(healthy()))
    assert (cond.status, cond.reason) == (False, reason)


def test_spec_error_names_its_field() -> None:
    obs = healthy(spec_error=SpecError("spec.attestation.measurements[0]", "not hex"))
    assert ready(obs).message == "spec.attestation.measurements[0]: not hex"


@pytest.mark.parametrize(
    "reason", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"]
)
def test_image_failures(reason: str) -> None:
    obs = _with_pod(healthy(), 2, ready=False, waiting_reason=reason, waiting_message="no such")
    cond = ready(obs)
    assert cond.reason == c.IMAGE_UNAVAILABLE
    assert cond.message == (
        "spec.image: localhost/consortium-node:1 cannot be started on demo-2: no such"
    )


def test_image_failure_without_message_names_reason() -> None:
    obs = _with_pod(healthy(), 0, ready=False, waiting_reason="ErrImagePull")
    assert ready(obs).message.endswith("on demo-0: ErrImagePull")


@pytest.mark.parametrize("waiting", ["ContainerCreating", "CrashLoopBackOff", None])
def test_other_waiting_reasons_are_not_image_failures(waiting: str | None) -> None:
    obs = _with_pod(healthy(), 0, ready=False, waiting_reason=waiting)
    assert ready(obs).reason != c.IMAGE_UNAVAILABLE


MEASURES = "cd" * 32


@pytest.mark.parametrize(
    ("waiting", "message"),
    [
        (
            waiting,
            f"  this node's own attestation is {POLICY_REFUSAL}: MeasurementNotAllowed: "
            f"measurement {MEASURES} is not in the 2 allowed measurements{tail}\n",
        )
        for waiting in ("CrashLoopBackOff", None, "ContainerCreating")
        for tail in ("", f" (this node measures {MEASURES})")  # older nodes said it twice
    ],
)
def test_policy_refusal_is_attestation_refused(waiting: str | None, message: str) -> None:
    measures = MEASURES
    obs = _with_pod(
        healthy(), 1, ready=False, waiting_reason=waiting, last_termination_message=message
    )
    cond = ready(obs)
    assert cond.reason == c.ATTESTATION_REFUSED
    assert cond.message == (
        f"spec.attestation.measurements: demo-1 runs code measuring {measures}, which is not "
        f"in the allowed list [{MEASUREMENT}, {'ab' * 32}]: add it, or run the image that "
        "measures as allowed"
    )
    assert cond.message.count(measures) == 1  # the node's measurement once, the list in full


def test_policy_refusal_without_a_measurement_quotes_the_node_and_the_list() -> None:
    message = f"join: quote {POLICY_REFUSAL}: HostDataNotAllowed: host_data ff is not allowed"
    obs = _with_pod(healthy(), 2, ready=False, last_termination_message=message)
    cond = ready(obs)
    assert cond.reason == c.ATTESTATION_REFUSED
    assert cond.message.startswith("spec.attestation.measurements: demo-2 was refused: join:")
    assert cond.message.endswith(f"(allowed: {MEASUREMENT}, {'ab' * 32})")


@pytest.mark.parametrize("published", [3, 1])
def test_a_newer_list_not_yet_published_is_no_outage(published: int) -> None:
    """The nodes issue a new list every re-attestation round; the ConfigMap lagging a moment
    behind is told by TrustedListDistributed, never by Ready (no flapping)."""
    obs = healthy(published_version=published)
    assert ready(obs).status is True
    conds = {x.type: x for x in decide(obs)}
    assert conds[c.LIST_DISTRIBUTED].status is False
    assert conds[c.LIST_DISTRIBUTED].reason == c.LIST_NOT_PUBLISHED
    assert c.phase(decide(obs)) == c.PHASE_READY


def test_crash_loop_is_node_start_failed() -> None:
    obs = _with_pod(
        healthy(),
        2,
        ready=False,
        waiting_reason="CrashLoopBackOff",
        last_termination_message="config: members: a genesis node needs a governor\n" + "x" * 900,
    )
    cond = ready(obs)
    assert cond.reason == c.NODE_START_FAILED
    assert cond.message.startswith("demo-2: config: members")
    assert len(cond.message) == len("demo-2: ") + 500  # long logs are cut


def test_ready_pod_with_old_termination_message_is_ignored() -> None:
    obs = _with_pod(
        healthy(),
        1,
        ready=True,
        waiting_reason=None,
        last_termination_message=f"earlier: {POLICY_REFUSAL}",
    )
    assert ready(obs).status is True


def test_waiting_for_genesis_names_pod_0() -> None:
    cond = ready(healthy(service_certificate_pem=None))
    assert cond.message == "waiting for demo-0 to run genesis"


def test_waiting_for_a_recovery_names_its_source() -> None:
    """A Consortium with spec.recovery is not waiting for genesis: pod 0 recovers."""
    cond = ready(healthy(service_certificate_pem=None, recovery_source="s3://lost/demo/"))
    assert (cond.status, cond.reason) == (False, "WaitingForGenesis")
    assert cond.message.startswith(
        "waiting for demo-0 to recover the lost consortium from s3://lost/demo/"
    )
    assert "genesis" not in cond.message.replace("WaitingForGenesis", "")


@pytest.mark.parametrize(
    ("list_error", "message"),
    [
        (None, "no node answered with its trusted-node list"),
        (
            "the trusted-node list was rejected: Rollback",
            "the trusted-node list was rejected: Rollback",
        ),
    ],
)
def test_list_unverified(list_error: str | None, message: str) -> None:
    cond = ready(healthy(trusted_list=None, list_error=list_error))
    assert (cond.reason, cond.message) == (c.LIST_UNVERIFIED, message)


@pytest.mark.parametrize(
    ("desired", "trusted", "commit_index", "reason"),
    [
        (3, 2, None, c.NODES_JOINING),
        (3, 1, None, c.NO_QUORUM),
        (3, 1, 10, c.NODES_JOINING),
        (3, 0, None, c.NO_QUORUM),
        (4, 2, None, c.NO_QUORUM),
        (4, 3, None, c.NODES_JOINING),
        (1, 0, None, c.NO_QUORUM),
        (5, 2, 3, c.NODES_JOINING),
    ],
)
def test_nodes_joining_or_no_quorum(
    desired: int, trusted: int, commit_index: int | None, reason: str
) -> None:
    obs = healthy(desired, commit_index=commit_index)
    checks = dict(obs.checks)
    for i in range(trusted, desired):
        checks[f"demo-{i}"] = check(i, None, verified=False, reason="Unreachable")
    cond = ready(replace(obs, checks=checks))
    assert cond.reason == reason
    missing = ", ".join(f"demo-{i}" for i in range(trusted, desired))
    assert cond.message == (
        f"{trusted}/{desired} nodes trusted and verified; waiting for {missing}"
    )


def test_list_not_published() -> None:
    cond = ready(healthy(published_version=None))
    assert (cond.reason, cond.message) == (
        c.LIST_NOT_PUBLISHED,
        "trusted-node list version 4 not yet published",
    )


def test_scaling_names_extra_pods_sorted() -> None:
    obs = replace(healthy(), pods=(*healthy().pods, pod(4), pod(3)))
    cond = ready(obs)
    assert (cond.reason, cond.message) == (c.SCALING, "retiring and removing demo-3, demo-4")


# ---------------------------------------------------------------------------- a recovered service

MEMBER_A, MEMBER_B, MEMBER_C = "a1" * 32, "b2" * 32, "c3" * 32


def recovering(phase: str | None, ceremony: dict[str, Any] | None = None) -> Observation:
    """A Consortium started with spec.recovery: only pod 0 runs (the StatefulSet stays at one
    replica until the service is open), its node Trusted in the list, spec.nodes 3."""
    return healthy(
        pods=(pod(0),),
        checks={"demo-0": check(0, 1)},
        trusted_list=tlist(entry("demo-0", 1)),
        service_phase=phase,
        ceremony=ceremony,
    )


def shares(submitted: list[str], waiting: list[str], threshold: Any = 2) -> dict[str, Any]:
    return {
        "epoch": 3,
        "threshold": threshold,
        "submitted": submitted,
        "waiting_for": waiting,
        "complete": False,
    }


@pytest.mark.parametrize(
    ("ceremony", "counts"),
    [
        pytest.param(None, "0 of k", id="ceremony-not-read"),
        pytest.param({"phase": "WaitingForRecoveryShares"}, "0 of k", id="no-shares-shown"),
        pytest.param({"shares": shares([], [MEMBER_A, MEMBER_B])}, "0 of 2", id="none-yet"),
        pytest.param(
            {"shares": shares([MEMBER_A], [MEMBER_B, MEMBER_C], 3)}, "1 of 3", id="one-of-three"
        ),
        pytest.param(
            {"shares": shares([MEMBER_B, MEMBER_A], [MEMBER_C])}, "2 of 2", id="threshold-met"
        ),
    ],
)
def test_ready_waits_for_the_recovery_shares(ceremony: Any, counts: str) -> None:
    cond = ready(recovering(c.WAITING_FOR_RECOVERY_SHARES, ceremony))
    assert (cond.type, cond.status, cond.reason) == (
        c.READY,
        False,
        c.WAITING_FOR_RECOVERY_SHARES,
    )
    assert f"; {counts} recovery shares submitted" in cond.message
    assert "consortiumctl recovery submit-share --kube demo " in cond.message


def test_ready_names_the_consortium_in_the_submit_share_command() -> None:
    obs = replace(recovering(c.WAITING_FOR_RECOVERY_SHARES), consortium="ledger-b")
    assert "submit-share --kube ledger-b " in ready(obs).message


def test_ready_waits_for_the_governors_to_open_the_service() -> None:
    cond = ready(recovering(c.WAITING_FOR_OPEN, {"phase": c.WAITING_FOR_OPEN}))
    assert (cond.status, cond.reason) == (False, c.WAITING_FOR_OPEN)
    assert "transition_service_to_open" in cond.message
    assert "submit-share" not in cond.message


@pytest.mark.parametrize("phase", ["Open", None], ids=["open", "not-read"])
def test_an_open_service_is_judged_as_any_other(phase: str | None) -> None:
    """Once open the other nodes join: 1 of 3 is NodesJoining, not a recovery reason; a
    service that was never recovered is not affected either."""
    cond = ready(recovering(phase))
    assert (cond.status, cond.reason) == (False, c.NODES_JOINING)
    assert cond.message == "1/3 nodes trusted and verified; waiting for demo-1, demo-2"
    assert ready(healthy(service_phase=phase)).status is True


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        pytest.param(lambda o: replace(o, trusted_list=None), c.LIST_UNVERIFIED, id="list-first"),
        pytest.param(
            lambda o: replace(o, service_certificate_pem=None),
            c.WAITING_FOR_GENESIS,
            id="bootstrap-first",
        ),
        pytest.param(_untrust, None, id="before-the-nodes"),
        pytest.param(
            lambda o: replace(o, primary=None, ledger_repairs={"demo-0": RECOVERING}),
            None,
            id="before-a-storage-repair",
        ),
        pytest.param(lambda o: replace(o, published_version=None), None, id="before-publishing"),
        pytest.param(_scale_down, None, id="before-scaling"),
    ],
)
@pytest.mark.parametrize("phase", [c.WAITING_FOR_RECOVERY_SHARES, c.WAITING_FOR_OPEN])
def test_the_recovery_link_sits_after_the_list_and_before_the_nodes(
    fault: Fault, reason: str | None, phase: str
) -> None:
    """None: the recovery phase wins over that fault."""
    cond = ready(fault(healthy(service_phase=phase)))
    assert (cond.status, cond.reason) == (False, reason or phase)


# ---------------------------------------------------------------------------- decide


def test_decide_with_spec_error_only_judges_ready() -> None:
    conds = decide(healthy(spec_error=SpecError("spec.nodes", "bad")))
    assert [(x.type, x.status, x.reason) for x in conds] == [(c.READY, False, c.INVALID_SPEC)]
    assert c.phase(conds) == c.PHASE_FAILED


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {},
            [
                (c.READY, True, c.READY_REASON),
                (c.BOOTSTRAPPED, True, c.GENESIS_COMPLETE),
                (c.NODES_ATTESTED, True, c.ALL_NODES_ATTESTED),
                (c.LIST_DISTRIBUTED, True, c.LIST_PUBLISHED),
                (c.DEGRADED, False, c.AS_EXPECTED),
            ],
        ),
        (
            {"service_certificate_pem": None, "trusted_list": None, "checks": {}},
            [
                (c.READY, False, c.WAITING_FOR_GENESIS),
                (c.BOOTSTRAPPED, False, c.WAITING_FOR_GENESIS),
                (c.NODES_ATTESTED, False, c.NODES_JOINING),
                (c.LIST_DISTRIBUTED, False, c.LIST_UNVERIFIED),
                (c.DEGRADED, False, c.AS_EXPECTED),
            ],
        ),
        (
            {"published_version": 2},  # a newer list the nodes issued: no outage
            [
                (c.READY, True, c.READY_REASON),
                (c.BOOTSTRAPPED, True, c.GENESIS_COMPLETE),
                (c.NODES_ATTESTED, True, c.ALL_NODES_ATTESTED),
                (c.LIST_DISTRIBUTED, False, c.LIST_NOT_PUBLISHED),
                (c.DEGRADED, False, c.AS_EXPECTED),
            ],
        ),
        (
            {"published_version": None},  # no list published yet: joiners need the first
            [
                (c.READY, False, c.LIST_NOT_PUBLISHED),
                (c.BOOTSTRAPPED, True, c.GENESIS_COMPLETE),
                (c.NODES_ATTESTED, True, c.ALL_NODES_ATTESTED),
                (c.LIST_DISTRIBUTED, False, c.LIST_NOT_PUBLISHED),
                (c.DEGRADED, False, c.AS_EXPECTED),
            ],
        ),
    ],
)
def test_decide(overrides: dict[str, Any], expected: list[tuple[str, bool, str]]) -> None:
    conds = decide(healthy(**overrides))
    assert [(x.type, x.status, x.reason) for x in conds] == expected
    assert all(x.message for x in conds)


def test_decide_list_unverified_carries_list_error() -> None:
    conds = decide(healthy(trusted_list=None, list_error="rejected: BadSignature"))
    dist = c.find(conds, c.LIST_DISTRIBUTED)
    assert dist is not None
    assert dist.message == "rejected: BadSignature"


# ---------------------------------------------------------------------------- Degraded


def test_not_degraded_when_healthy() -> None:
    cond = degraded(healthy())
    assert (cond.type, cond.status, cond.reason) == (c.DEGRADED, False, c.AS_EXPECTED)


def test_renewal_failure_on_trusted_node() -> None:
    cond = degraded(healthy(renewal_failures={nid(2): "StaleTimestamp"}))
    expires = rfc3339(T0 + timedelta(hours=24))
    assert (cond.status, cond.reason) == (True, c.REATTESTATION_FAILING)
    assert cond.message == (
        f"demo-1 failed re-attestation (StaleTimestamp); its attestation expires at {expires}"
    )


@pytest.mark.parametrize(
    ("status", "failing_node"),
    [
        (NodeStatus.PENDING, 2),
        (NodeStatus.RETIRED, 2),
        (NodeStatus.TRUSTED, 99),  # not in the list
    ],
)
def test_renewal_failure_ignored_unless_trusted(status: NodeStatus, failing_node: int) -> None:
    lst = tlist(entry("demo-0", 1), entry("demo-1", 2, status), entry("demo-2", 3))
    obs = healthy(trusted_list=lst, renewal_failures={nid(failing_node): "Timeout"})
    assert degraded(obs).reason != c.REATTESTATION_FAILING


def test_pod_running_retired_node() -> None:
    lst = tlist(entry("demo-0", 1), entry("demo-1", 2, NodeStatus.RETIRED), entry("demo-2", 3))
    cond = degraded(healthy(trusted_list=lst))
    assert (cond.status, cond.reason) == (True, c.NODE_RETIRED)
    assert cond.message == "demo-1 was retired; replacing its pod"


def test_retired_node_on_pod_being_scaled_away_is_expected() -> None:
    obs = healthy(3)
    lst = tlist(*obs.trusted_list.nodes, entry("demo-3", 4, NodeStatus.RETIRED))  # type: ignore[union-attr]
    obs = replace(
        obs,
        trusted_list=lst,
        pods=(*obs.pods, pod(3)),
        checks={**obs.checks, "demo-3": check(3, 4)},
    )
    assert degraded(obs).status is False


def test_retired_entry_of_a_replaced_node_is_not_degraded() -> None:
    """The pod now runs a new node (the check saw it): the old Retired entry is history."""
    lst = tlist(
        entry("demo-0", 1),
        entry("demo-1", 2, NodeStatus.RETIRED),
        entry("demo-1", 12, attested=T0 + timedelta(minutes=5)),
        entry("demo-2", 3),
    )
    obs = healthy(trusted_list=lst, checks={**healthy().checks, "demo-1": check(1, 12)})
    assert degraded(obs).status is False
    assert ready(obs).status is True


@pytest.mark.parametrize(
    ("pod_ready", "reason", "expected"),
    [
        (True, "TlsKeyMismatch: other key", c.NODE_NOT_VERIFIED),
        (False, "TlsKeyMismatch: other key", c.AS_EXPECTED),
        (True, "", c.AS_EXPECTED),
    ],
)
def test_unverified_ready_pod(pod_ready: bool, reason: str, expected: str) -> None:
    obs = _with_pod(healthy(), 2, ready=pod_ready)
    obs = replace(obs, checks={**obs.checks, "demo-2": check(2, 3, verified=False, reason=reason)})
    cond = degraded(obs)
    assert cond.reason == expected
    if expected == c.NODE_NOT_VERIFIED:
        assert cond.message == f"demo-2: {reason}"


def test_several_problems_first_reason_all_messages() -> None:
    lst = tlist(entry("demo-0", 1), entry("demo-1", 2, NodeStatus.RETIRED), entry("demo-2", 3))
    cond = degraded(healthy(trusted_list=lst, renewal_failures={nid(3): "Timeout"}))
    assert cond.reason == c.REATTESTATION_FAILING
    expires = rfc3339(T0 + timedelta(hours=24))
    assert cond.message == (
        f"demo-2 failed re-attestation (Timeout); its attestation expires at {expires}; "
        "demo-1 was retired; replacing its pod"
    )


# ---------------------------------------------------------------------------- entries and pods


@pytest.mark.parametrize(
    ("entries", "seen", "expected"),
    [
        # the node the pod's check saw wins, whatever its status
        ([("demo-1", 5, NodeStatus.TRUSTED, 0), ("demo-1", 6, NodeStatus.PENDING, 10)], 5, 5),
        ([("demo-1", 5, NodeStatus.TRUSTED, 0), ("demo-1", 6, NodeStatus.PENDING, 10)], 6, 6),
        ([("demo-1", 5, NodeStatus.RETIRED, 0), ("demo-1", 6, NodeStatus.TRUSTED, 10)], 5, 5),
        # else a non-Retired entry
        ([("demo-1", 5, NodeStatus.RETIRED, 10), ("demo-1", 6, NodeStatus.PENDING, 0)], None, 6),
        ([("demo-1", 6, NodeStatus.RETIRED, 10), ("demo-1", 5, NodeStatus.TRUSTED, 0)], None, 5),
        ([("demo-1", 6, NodeStatus.RETIRED, 10), ("demo-1", 5, NodeStatus.TRUSTED, 0)], 99, 5),
        # else the most recently attested Retired entry (not the last by node id)
        ([("demo-1", 5, NodeStatus.RETIRED, 10), ("demo-1", 6, NodeStatus.RETIRED, 0)], None, 5),
        ([("demo-1", 5, NodeStatus.RETIRED, 0), ("demo-1", 6, NodeStatus.RETIRED, 10)], None, 6),
        ([("demo-1", 5, NodeStatus.RETIRED, 0)], 5, 5),
    ],
)
def test_current_entries(
    entries: list[tuple[str, int, NodeStatus, int]], seen: int | None, expected: int
) -> None:
    lst = tlist(*(entry(n, i, s, attested=T0 + timedelta(minutes=m)) for n, i, s, m in entries))
    checks = {} if seen is None else {"demo-1": check(1, seen)}
    obs = healthy(trusted_list=lst, checks=checks)
    current = obs.current_entries()
    assert set(current) == {"demo-1"}
    assert current["demo-1"].node_id == nid(expected)


def test_current_entries_without_list() -> None:
    assert healthy(trusted_list=None).current_entries() == {}


@pytest.mark.parametrize(
    ("change", "excluded"),
    [
        ({"entry_1": entry("demo-1", 2, expires=NOW)}, "demo-1"),  # expired at now
        ({"entry_1": entry("demo-1", 2, expires=NOW - timedelta(seconds=1))}, "demo-1"),
        ({"entry_1": entry("demo-1", 2, NodeStatus.PENDING)}, "demo-1"),
        ({"check_1": check(1, 2, verified=False, reason="StaleTimestamp")}, "demo-1"),
        ({"check_1": check(1, 7)}, "demo-1"),  # the pod answers as another node
        ({"check_1": check(1, None, verified=False)}, "demo-1"),
        ({"check_1": None}, "demo-1"),  # never checked
        ({"desired": 2}, "demo-2"),  # ordinal beyond the desired size
    ],
)
def test_trusted_pods_exclusions(change: dict[str, Any], excluded: str) -> None:
    obs = healthy()
    entries = {e.name: e for e in obs.trusted_list.nodes}  # type: ignore[union-attr]
    checks: dict[str, NodeCheck | None] = dict(obs.checks)
    if "entry_1" in change:
        entries["demo-1"] = change["entry_1"]
    if "check_1" in change:
        checks["demo-1"] = change["check_1"]
    obs = replace(
        obs,
        trusted_list=tlist(*entries.values()),
        checks={k: v for k, v in checks.items() if v is not None},
        desired=change.get("desired", obs.desired),
    )
    trusted = obs.trusted_pods()
    assert excluded not in trusted
    assert trusted == sorted({"demo-0", "demo-1", "demo-2"} - {excluded})


def test_trusted_pods_sorted_by_ordinal_and_ignores_foreign_names() -> None:
    names = ["demo-10", "demo-2", "demo-0", "other-1", "demo-x"]
    lst = tlist(*(entry(n, i + 1) for i, n in enumerate(names)))
    checks = {n: NodeCheck(n, nid(i + 1), True) for i, n in enumerate(names)}
    obs = healthy(11, trusted_list=lst, checks=checks)
    assert obs.trusted_pods() == ["demo-0", "demo-2", "demo-10"]


# ---------------------------------------------------------------------------- node_statuses


def test_node_statuses() -> None:
    lst = tlist(
        entry("demo-0", 1),
        entry("demo-1", 2, NodeStatus.PENDING),
        entry("demo-2", 3),  # no pod (yet): still shown
        entry("demo-5", 6, NodeStatus.RETIRED),  # no pod and retired: gone
        entry("other-0", 9),  # not ours
    )
    obs = healthy(
        trusted_list=lst,
        pods=(pod(1), pod(0, ip=None), pod(3)),
        renewal_failures={nid(1): "Timeout"},
    )
    items = node_statuses(obs)
    assert [i["name"] for i in items] == ["demo-0", "demo-1", "demo-2", "demo-3"]
    by_name = {i["name"]: i for i in items}
    assert by_name["demo-0"] == {
        "name": "demo-0",
        "ordinal": 0,
        "nodeId": nid(1),
        "status": "Trusted",
        "measurement": MEASUREMENT,
        "attestedAt": rfc3339(T0),
        "attestationExpiresAt": rfc3339(T0 + timedelta(hours=24)),
        "reattestationFailure": "Timeout",
    }
    assert by_name["demo-1"]["podIP"] == "10.0.0.2"
    assert by_name["demo-1"]["status"] == "Pending"
    assert "reattestationFailure" not in by_name["demo-1"]
    assert "podIP" not in by_name["demo-2"]
    assert by_name["demo-3"] == {
        "name": "demo-3",
        "ordinal": 3,
        "podIP": "10.0.0.4",
        "status": "Unknown",
    }


def test_node_statuses_numeric_order() -> None:
    obs = healthy(trusted_list=None, pods=(pod(10), pod(2), pod(1)))
    assert [i["ordinal"] for i in node_statuses(obs)] == [1, 2, 10]


# ---------------------------------------------------------------------------- status_body


def _body(obs: Observation, existing: dict[str, Any] | None = None) -> dict[str, Any]:
    return status_body(obs, decide(obs), existing or {}, NOW)


def test_status_body_ready() -> None:
    body = _body(healthy())
    assert body["observedGeneration"] == 7
    assert body["phase"] == c.PHASE_READY
    assert (body["desiredNodes"], body["trustedNodes"], body["nodesReady"]) == (3, 3, "3/3")
    assert body["serviceCertificate"] == SERVICE_PEM
    assert body["serviceCertificateSha256"] == SERVICE_SHA
    assert body["trustedNodeList"] == {
        "version": 4,
        "sha256": "11" * 32,
        "issuedAt": rfc3339(T0),
    }
    assert body["ledger"] == {"term": 2, "commitIndex": 42, "primary": "demo-0"}
    assert body["members"] == {"total": 2, "active": 2, "resources": 2}  # not the operator
    assert body["firstReadyTime"] == rfc3339(NOW)
    assert [x["type"] for x in body["conditions"]] == list(c.CONSORTIUM_TYPES)
    assert {x["lastTransitionTime"] for x in body["conditions"]} == {rfc3339(NOW)}
    assert [n["name"] for n in body["nodes"]] == ["demo-0", "demo-1", "demo-2"]


@pytest.mark.parametrize(
    ("trusted", "desired", "text"), [(0, 3, "0/3"), (2, 3, "2/3"), (1, 1, "1/1"), (4, 5, "4/5")]
)
def test_nodes_ready_text(trusted: int, desired: int, text: str) -> None:
    obs = healthy(desired)
    checks = {
        k: (v if int(k.rsplit("-", 1)[1]) < trusted else replace(v, verified=False))
        for k, v in obs.checks.items()
    }
    body = _body(replace(obs, checks=checks))
    assert body["nodesReady"] == text
    assert body["trustedNodes"] == trusted


@pytest.mark.parametrize(
    ("primary", "commit_index", "expected"),
    [
        ("demo-1", 5, {"term": 2, "commitIndex": 5, "primary": "demo-1"}),
        (None, 5, {"term": 2, "commitIndex": 5}),
        ("", 5, {"term": 2, "commitIndex": 5}),
        ("demo-1", None, None),
    ],
)
def test_status_body_ledger(primary: str | None, commit_index: int | None, expected: Any) -> None:
    body = _body(healthy(primary=primary, commit_index=commit_index))
    assert body.get("ledger") == expected


def test_status_body_shows_the_primarys_newest_snapshot() -> None:
    snapshot = {"index": 20000, "txid": "3.20000"}
    body = _body(replace(healthy(), snapshot=snapshot))
    assert body["ledger"] == {
        "term": 2,
        "commitIndex": 42,
        "primary": "demo-0",
        "lastSnapshot": snapshot,
    }
    assert "lastSnapshot" not in _body(healthy())["ledger"]  # none yet: not shown


@pytest.mark.parametrize(
    ("platform", "insecure"), [("sev-snp", False), ("sev-snp", True), ("insecure-virtual", True)]
)
def test_status_body_names_the_platform_and_whether_it_is_emulated(
    platform: str, insecure: bool
) -> None:
    body = _body(replace(healthy(), platform=platform, platform_insecure=insecure))
    assert body["platform"] == {"name": platform, "insecure": insecure}


def test_status_body_shows_recovery_readiness() -> None:
    shown = {"recordEpoch": 2, "threshold": 2, "members": 3, "current": False}
    assert _body(replace(healthy(), recovery=shown))["recovery"] == shown
    assert "recovery" not in _body(healthy())  # an older node said nothing: nothing shown


@pytest.mark.parametrize(
    ("reported", "shown"),
    [
        ({"epoch": 2, "threshold": 2, "members": 3, "stale": True},
         {"recordEpoch": 2, "threshold": 2, "members": 3, "current": False}),
        ({"epoch": 0, "threshold": 0, "members": 0, "stale": False},
         {"recordEpoch": 0, "threshold": 0, "members": 0, "current": True}),
        ({"epoch": 2, "threshold": 2, "members": 3}, None),
        ({"epoch": "2", "threshold": 2, "members": 3, "stale": False}, None),
        ({"epoch": -1, "threshold": 2, "members": 3, "stale": False}, None),
        ({"epoch": 2, "threshold": 2, "members": 3, "stale": 1}, None),
        (None, None),
    ],
)  # fmt: skip
def test_a_nodes_recovery_report_is_shown_only_in_the_shape_known(
    reported: Any, shown: Any
) -> None:
    assert recovery_shown(reported) == shown


@pytest.mark.parametrize(
    ("reported", "shown"),
    [
        ({"index": 20000, "txid": "3.20000"}, {"index": 20000, "txid": "3.20000"}),
        ({"index": 20000, "txid": "3.20000", "extra": 1}, {"index": 20000, "txid": "3.20000"}),
        (None, None),
        ("3.20000", None),
        ({"index": "20000", "txid": "3.20000"}, None),
        ({"index": True, "txid": "3.20000"}, None),
        ({"index": 20000, "txid": ""}, None),
        ({"index": 20000}, None),
    ],
)
def test_a_nodes_snapshot_report_is_shown_only_in_the_shape_known(
    reported: Any, shown: Any
) -> None:
    assert snapshot_shown(reported) == shown


def test_status_body_keeps_what_was_not_observed() -> None:
    existing = {
        "serviceCertificate": "OLD PEM",
        "serviceCertificateSha256": "00" * 32,
        "trustedNodeList": {"version": 3, "sha256": "22" * 32, "issuedAt": "x"},
        "members": {"total": 5, "active": 4},
    }
    obs = healthy(
        service_certificate_pem=None,
        service_certificate_sha256=None,
        trusted_list=None,
        ledger_members=None,
        ledger_roles=None,
    )
    body = _body(obs, existing)
    assert body["serviceCertificate"] == "OLD PEM"
    assert body["serviceCertificateSha256"] == "00" * 32
    assert body["trustedNodeList"] == existing["trustedNodeList"]
    assert body["members"] == {"total": 5, "active": 4, "resources": 2}


def test_status_body_observed_values_replace_existing() -> None:
    existing = {
        "serviceCertificate": "OLD PEM",
        "serviceCertificateSha256": "00" * 32,
        "trustedNodeList": {"version": 3},
    }
    body = _body(healthy(), existing)
    assert body["serviceCertificate"] == SERVICE_PEM
    assert body["serviceCertificateSha256"] == SERVICE_SHA
    assert body["trustedNodeList"]["version"] == 4


def test_status_body_without_anything_observed() -> None:
    obs = healthy(
        service_certificate_pem=None,
        trusted_list=None,
        ledger_members=None,
        ledger_roles=None,
        commit_index=None,
        checks={},
    )
    body = _body(obs)
    for key in (
        "serviceCertificate",
        "serviceCertificateSha256",
        "trustedNodeList",
        "ledger",
        "firstReadyTime",
    ):
        assert key not in body
    assert body["members"] == {"resources": 2}  # the ledger was never read: no counts
    assert body["phase"] == c.PHASE_BOOTSTRAPPING


@pytest.mark.parametrize(
    ("members", "roles", "expected"),
    [
        ({"a": "Active", "b": "Accepted"}, {"a": "governor", "b": "user"}, (2, 1)),
        ({"a": "Active", "o": "Active"}, {"a": "governor", "o": "operator"}, (1, 1)),
        ({}, {}, (0, 0)),
    ],
)
def test_members_are_counted_from_the_ledger(
    members: dict[str, str], roles: dict[str, str], expected: tuple[int, int]
) -> None:
    body = _body(healthy(ledger_members=members, ledger_roles=roles, member_resources=7))
    assert body["members"] == {"total": expected[0], "active": expected[1], "resources": 7}


def test_a_consortium_that_was_ready_never_goes_back_to_bootstrapping() -> None:
    first = _body(healthy())
    stamp = first["firstReadyTime"]
    for fault in (_untrust, lambda o: replace(o, trusted_list=None), _scale_down):
        broken = fault(healthy())
        later = status_body(broken, decide(broken), first, NOW + timedelta(minutes=5))
        assert later["phase"] == c.PHASE_DEGRADED
        assert later["firstReadyTime"] == stamp  # kept, not moved
    fresh = healthy(published_version=None)  # before the first Ready: still bootstrapping
    assert _body(fresh)["phase"] == c.PHASE_BOOTSTRAPPING
    assert "firstReadyTime" not in _body(fresh)


def test_status_body_keeps_transition_times() -> None:
    first = _body(healthy())
    later = status_body(healthy(), decide(healthy()), first, NOW + timedelta(minutes=5))
    assert later["conditions"] == first["conditions"]
    broken = healthy(published_version=None)
    flipped = status_body(broken, decide(broken), first, NOW + timedelta(minutes=5))
    times = {x["type"]: x["lastTransitionTime"] for x in flipped["conditions"]}
    assert times[c.READY] == rfc3339(NOW + timedelta(minutes=5))
    assert times[c.BOOTSTRAPPED] == rfc3339(NOW)


# ---------------------------------------------------------------------------- status.recovery

STARTED = rfc3339(T0)
PREVIOUS_SHA = "9f" * 32
ATTESTATION = {"nodeId": "0e" * 32, "publicKey": "PEM", "quote": "cXVvdGU=", "nonce": "00" * 32,
               "fetchedAt": STARTED}  # fmt: skip
RECORD = {"epoch": 3, "threshold": 2, "shares": {}}
DETAILS = {
    "previous_service_certificate_sha256": PREVIOUS_SHA,
    "last_recovered_txid": "4.1207",
    "started_at": STARTED,
}


@pytest.mark.parametrize(
    ("phase", "ceremony", "expected"),
    [
        pytest.param(c.WAITING_FOR_RECOVERY_SHARES, None, {}, id="not-read"),
        pytest.param("Open", {}, {}, id="empty-answer"),
        pytest.param(
            c.WAITING_FOR_RECOVERY_SHARES,
            {
                "phase": c.WAITING_FOR_RECOVERY_SHARES,
                "service_status": "Recovering",
                "recovery": DETAILS,
                "shares": shares([MEMBER_C, MEMBER_A], [MEMBER_B]),
                "attestation": ATTESTATION,
                "record": RECORD,
                "history": [{"some": "thing"}],
            },
            {
                "phase": c.WAITING_FOR_RECOVERY_SHARES,
                "previousServiceCertificateSha256": PREVIOUS_SHA,
                "lastRecoveredTxid": "4.1207",
                "startedAt": STARTED,
                "sharesSubmitted": [MEMBER_A, MEMBER_C],
                "sharesAwaited": [MEMBER_B],
                "sharesNeeded": 2,
                "attestation": ATTESTATION,
                "record": RECORD,
            },
            id="waiting-for-shares",
        ),
        pytest.param(
            c.WAITING_FOR_OPEN,
            {"phase": c.WAITING_FOR_OPEN, "recovery": DETAILS},
            {
                "phase": c.WAITING_FOR_OPEN,
                "previousServiceCertificateSha256": PREVIOUS_SHA,
                "lastRecoveredTxid": "4.1207",
                "startedAt": STARTED,
            },
            id="waiting-for-open-no-shares",
        ),
        pytest.param(
            c.WAITING_FOR_OPEN,
            {"recovery": DETAILS, "shares": {"submitted": [MEMBER_B]}},
            {
                "phase": c.WAITING_FOR_OPEN,  # the answer names none: the node state's
                "previousServiceCertificateSha256": PREVIOUS_SHA,
                "lastRecoveredTxid": "4.1207",
                "startedAt": STARTED,
                "sharesSubmitted": [MEMBER_B],
                "sharesAwaited": [],
                "sharesNeeded": 0,
            },
            id="phase-and-threshold-missing",
        ),
        pytest.param(
            None,
            {"recovery": None, "history": []},
            {"phase": "Open"},
            id="open-never-recovered",
        ),
        pytest.param(
            "Open",
            {
                "phase": "Open",
                "recovery": {**DETAILS, "started_at": 5, "last_recovered_txid": None},
                "shares": [MEMBER_A],
                "attestation": None,
            },
            {"phase": "Open", "previousServiceCertificateSha256": PREVIOUS_SHA},
            id="unknown-shapes-are-left-out",
        ),
    ],
)
def test_recovery_status_shows_the_ceremony(
    phase: str | None, ceremony: Any, expected: dict[str, Any]
) -> None:
    assert recovery_status(recovering(phase, ceremony)) == expected


def test_status_body_merges_the_record_summary_and_the_ceremony() -> None:
    summary = {"recordEpoch": 3, "threshold": 2, "members": 3, "current": True}
    ceremony = {
        "phase": c.WAITING_FOR_RECOVERY_SHARES,
        "recovery": DETAILS,
        "shares": shares([MEMBER_A], [MEMBER_B, MEMBER_C]),
        "attestation": ATTESTATION,
        "record": RECORD,
    }
    obs = replace(recovering(c.WAITING_FOR_RECOVERY_SHARES, ceremony), recovery=summary)
    body = _body(obs)
    assert body["recovery"] == {**summary, **recovery_status(obs)}
    assert body["recovery"]["recordEpoch"] == 3
    assert body["recovery"]["sharesSubmitted"] == [MEMBER_A]
    assert body["recovery"]["phase"] == c.WAITING_FOR_RECOVERY_SHARES
    ready_ = next(x for x in body["conditions"] if x["type"] == c.READY)
    assert (ready_["status"], ready_["reason"]) == ("False", c.WAITING_FOR_RECOVERY_SHARES)


@pytest.mark.parametrize(
    ("summary", "ceremony", "expected"),
    [
        pytest.param(None, {"phase": c.WAITING_FOR_OPEN}, {"phase": c.WAITING_FOR_OPEN},
                     id="ceremony-only"),
        pytest.param({"recordEpoch": 1, "threshold": 1, "members": 1, "current": True}, None,
                     {"recordEpoch": 1, "threshold": 1, "members": 1, "current": True},
                     id="summary-only"),
        pytest.param(None, None, None, id="neither"),
        pytest.param(None, {}, None, id="empty-ceremony"),
    ],
)  # fmt: skip
def test_status_recovery_is_shown_when_either_side_says_something(
    summary: Any, ceremony: Any, expected: Any
) -> None:
    obs = replace(recovering(c.WAITING_FOR_OPEN, ceremony), recovery=summary)
    assert _body(obs).get("recovery") == expected


@dataclass
class StoredStatus:
    """A Consortium whose status is written with merge patches, as the API server does."""

    status: dict[str, Any] = field(default_factory=dict)
    writes: int = 0

    def event(self, *args: Any) -> None:
        pass

    def patch_status(self, kind: str, namespace: str, name: str, status: Any) -> None:
        self.writes += 1
        self.status = merge_patch(self.status, status)


def test_status_recovery_drops_the_share_facts_once_the_shares_are_in() -> None:
    waiting = {
        "phase": c.WAITING_FOR_RECOVERY_SHARES,
        "recovery": DETAILS,
        "shares": shares([MEMBER_A, MEMBER_B], []),
        "attestation": ATTESTATION,
        "record": RECORD,
    }
    opening = {"phase": c.WAITING_FOR_OPEN, "recovery": DETAILS}
    kube = StoredStatus()
    for answer in (waiting, opening, opening, opening):
        body = {"metadata": {"name": "demo", "namespace": "ns"}, "status": kube.status}
        obs = recovering(answer["phase"], answer)
        report.write_status(cast(Kube, kube), body, obs, NOW)
    assert kube.status["recovery"] == {
        "phase": c.WAITING_FOR_OPEN,
        "previousServiceCertificateSha256": PREVIOUS_SHA,
        "lastRecoveredTxid": "4.1207",
        "startedAt": STARTED,
    }
    assert kube.writes == 2
