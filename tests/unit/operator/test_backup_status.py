"""The primary's ``GET /node/backup`` as the operator reads it, and what the Consortium's status
makes of it: each link of the BackupHealthy chain in order, ``status.backup``, when a change is
worth a status write, and the Events of its transitions. Backups never touch Ready, Degraded
or the phase."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any, cast

import pytest

from consortium_node.common.timeutil import rfc3339
from consortium_operator.api import conditions as c
from consortium_operator.api.spec import SpecError
from consortium_operator.consortium import report as step
from consortium_operator.consortium.observation import BackupFacts, Observation
from consortium_operator.consortium.status import (
    BACKUP_CHAIN,
    backup_event,
    backup_healthy,
    comparable,
    decide,
    status_body,
)
from consortium_operator.kube.k8s import Kube
from consortium_operator.nodes.client import (
    BackupError,
    BackupReport,
    BackupSuccess,
    MalformedReplyError,
)

from .test_status import NOW, healthy

T_OK = rfc3339(NOW - timedelta(minutes=2))
T_ERR = rfc3339(NOW - timedelta(minutes=1))
SUCCESS = {
    "time": T_OK,
    "txid": "3.1234",
    "manifest": f"manifests/{1234:020d}-0123456789abcdef.cose",
    "manifest_sha256": "ab" * 32,
    "objects": 12,
    "bytes": 456789,
}
ANSWER: dict[str, Any] = {
    "configured": True,
    "mode": "continuous",
    "shipper": True,
    "shipped_through": 1234,
    "last_success": SUCCESS,
    "last_error": None,
    "lag_entries": 17,
    "lag_seconds": 4.2,
    "max_lag_seconds": 60,
    "requested_through": None,
}


def report(**changes: Any) -> BackupReport:
    return BackupReport.from_json({**ANSWER, **changes})


def facts(**changes: Any) -> BackupFacts:
    base = BackupFacts(
        secret="demo-backup",
        max_lag_seconds=60.0,
        secret_found=True,
        report=report(),
        reporter="demo-0",
    )
    return replace(base, **changes)


def backed(**changes: Any) -> Observation:
    return healthy(backup=facts(**changes))


# ---------------------------------------------------------------------------- the reply


def test_the_contract_answer_parses() -> None:
    found = report()
    assert found == BackupReport(
        configured=True,
        mode="continuous",
        shipper=True,
        shipped_through=1234,
        last_success=BackupSuccess(
            SUCCESS["time"], "3.1234", SUCCESS["manifest"], "ab" * 32, 12, 456789
        ),
        last_error=None,
        lag_entries=17,
        lag_seconds=4.2,
        max_lag_seconds=60.0,
        requested_through=None,
    )
    assert BackupReport.from_json({"configured": False}) == BackupReport(configured=False)
    error = report(last_error={"reason": "BucketNotFound", "message": "no", "time": T_ERR})
    assert error.last_error == BackupError("BucketNotFound", "no", T_ERR)
    assert report(requested_through=1300, lag_seconds=0).requested_through == 1300


@pytest.mark.parametrize(
    ("answer", "field"),
    [
        ([], "/node/backup"),
        ({}, "configured"),
        ({"configured": "yes"}, "configured"),
        ({**ANSWER, "shipped_through": "12"}, "shipped_through"),
        ({**ANSWER, "shipped_through": True}, "shipped_through"),
        ({**ANSWER, "lag_seconds": None}, "lag_seconds"),
        ({**ANSWER, "lag_entries": 1.5}, "lag_entries"),
        ({**ANSWER, "last_success": "yesterday"}, "last_success"),
        ({**ANSWER, "last_success": {**SUCCESS, "objects": "12"}}, "last_success.objects"),
        ({**ANSWER, "last_error": {"message": "x"}}, "last_error.reason"),
        ({**ANSWER, "requested_through": "1300"}, "requested_through"),
    ],
)
def test_a_malformed_answer_names_the_field(answer: Any, field: str) -> None:
    with pytest.raises(MalformedReplyError, match=field.replace(".", r"\.")):
        BackupReport.from_json(answer)


@pytest.mark.parametrize(
    ("error_time", "success_time", "current"),
    [
        (T_ERR, T_OK, True),  # failed after the last success
        (T_OK, T_ERR, False),  # a success since: history
        ("", T_OK, True),  # no time: taken as current
        (T_ERR, None, True),  # never succeeded
    ],
)
def test_current_error(error_time: str, success_time: str | None, current: bool) -> None:
    success = None if success_time is None else {**SUCCESS, "time": success_time}
    found = report(
        last_success=success, last_error={"reason": "AccessDenied", "time": error_time}
    ).current_error()
    assert (found is not None) is current


# ---------------------------------------------------------------------------- BackupHealthy

Fault = Callable[[BackupFacts], BackupFacts]

# One fault per link of BACKUP_CHAIN, in order: (id, fault, status, reason).
FAULTS: list[tuple[str, Fault, bool | None, str]] = [
    (
        "secret",
        lambda b: replace(b, secret_found=False),
        False,
        c.CREDENTIALS_SECRET_NOT_FOUND,
    ),
    (
        "unread",
        lambda b: replace(b, report=None, error="demo-0: timed out"),
        None,
        c.BACKUP_STATUS_UNKNOWN,
    ),
    (
        "not-configured",
        lambda b: replace(b, report=BackupReport(configured=False)) if b.report else b,
        None,
        c.BACKUP_CONFIG_PENDING,
    ),
    (
        "not-shipper",
        lambda b: replace(b, report=replace(b.report, shipper=False) if b.report else None),
        None,
        c.BACKUP_STATUS_UNKNOWN,
    ),
    (
        "failing",
        lambda b: replace(
            b,
            report=replace(b.report, last_error=BackupError("BucketNotFound", "gone", T_ERR))
            if b.report
            else None,
        ),
        False,
        "BucketNotFound",
    ),
    (
        "lagging",
        lambda b: replace(
            b, report=replace(b.report, lag_seconds=61.0, lag_entries=900) if b.report else None
        ),
        False,
        c.BACKUP_LAGGING,
    ),
]


def test_healthy_backups() -> None:
    cond = backup_healthy(backed())
    assert cond == c.Condition(
        c.BACKUP_HEALTHY,
        True,
        c.BACKUP_HEALTHY_REASON,
        f"last backup at {T_OK}, through txid 3.1234 ({SUCCESS['manifest']}); backed up "
        "within 60s of commit",
    )
    assert all(check(facts()) is None for check in BACKUP_CHAIN)
    assert len(FAULTS) == len(BACKUP_CHAIN)


def test_no_backup_no_condition() -> None:
    assert backup_healthy(healthy()) is None
    assert c.BACKUP_HEALTHY not in [x.type for x in decide(healthy())]


@pytest.mark.parametrize("first", range(len(FAULTS)), ids=[f[0] for f in FAULTS])
def test_backup_chain_first_failure_wins(first: int) -> None:
    b = facts()
    for _, fault, _, _ in FAULTS[first:]:
        b = fault(b)
    cond = backup_healthy(healthy(backup=b))
    assert cond is not None
    _, _, status, reason = FAULTS[first]
    assert (cond.type, cond.status, cond.reason) == (c.BACKUP_HEALTHY, status, reason)


@pytest.mark.parametrize("index", range(len(FAULTS)), ids=[f[0] for f in FAULTS])
def test_each_backup_fault_alone_leaves_ready_and_degraded_alone(index: int) -> None:
    _, fault, status, reason = FAULTS[index]
    obs = healthy(backup=fault(facts()))
    conds = decide(obs)
    found = {x.type: x for x in conds}
    assert (found[c.BACKUP_HEALTHY].status, found[c.BACKUP_HEALTHY].reason) == (status, reason)
    assert found[c.READY].status is True and found[c.DEGRADED].status is False
    assert c.phase(conds) == c.PHASE_READY


@pytest.mark.parametrize(
    ("node_reason", "reason"),
    [(r, r) for r in c.NODE_BACKUP_REASONS]
    + [("DiskOnFire", c.UPLOAD_FAILED), ("", "UploadFailed")],
)
def test_the_nodes_reasons_pass_through_others_are_upload_failed(
    node_reason: str, reason: str
) -> None:
    error = {"reason": node_reason, "message": "details", "time": T_ERR}
    cond = backup_healthy(backed(report=report(last_error=error)))
    assert cond is not None and (cond.status, cond.reason) == (False, reason)
    assert "details" in cond.message
    if reason != node_reason:
        assert node_reason in cond.message  # what the node said is not lost


def test_an_error_before_the_last_success_is_history() -> None:
    error = {
        "reason": "EndpointUnreachable",
        "message": "x",
        "time": rfc3339(NOW - timedelta(hours=1)),
    }
    cond = backup_healthy(backed(report=report(last_error=error)))
    assert cond is not None and cond.status is True


def test_secret_not_found_names_the_field_and_the_keys() -> None:
    cond = backup_healthy(backed(secret_found=False))
    assert cond is not None
    assert cond.message.startswith("spec.backup.s3.credentialsSecret: no Secret 'demo-backup'")
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in cond.message


def test_an_unknown_secret_is_not_reported_missing() -> None:
    cond = backup_healthy(backed(secret_found=None))  # the read failed (e.g. 403)
    assert cond is not None and cond.status is True


@pytest.mark.parametrize(
    ("lag", "node_limit", "spec_limit", "lagging"),
    [
        (60.0, 60.0, 60.0, False),  # at the limit: not over it
        (60.5, 60.0, 60.0, True),
        (3000.0, 21660.0, None, False),  # mode Scheduled: the node's period + 60 s
        (90.0, None, 60.0, True),  # no max_lag_seconds in the answer: the spec's
        (90.0, None, None, False),  # nothing to compare with
    ],
)
def test_lagging_against_the_allowed_lag(
    lag: float, node_limit: float | None, spec_limit: float | None, lagging: bool
) -> None:
    obs = backed(
        max_lag_seconds=spec_limit,
        report=report(lag_seconds=lag, max_lag_seconds=node_limit),
    )
    cond = backup_healthy(obs)
    assert cond is not None and (cond.reason == c.BACKUP_LAGGING) is lagging


def test_nothing_backed_up_yet_is_healthy() -> None:
    cond = backup_healthy(backed(report=report(last_success=None, lag_entries=0, lag_seconds=0)))
    assert cond is not None and cond.status is True
    assert cond.message.startswith("nothing committed needs a backup yet")


# ---------------------------------------------------------------------------- status.backup


def body(obs: Observation, existing: dict[str, Any] | None = None) -> dict[str, Any]:
    return status_body(obs, decide(obs), existing or {}, NOW)


def test_status_backup() -> None:
    error = {"reason": "AccessDenied", "message": "m" * 2000, "time": T_ERR}
    found = body(backed(report=report(last_error=error)))
    assert found["backup"] == {
        "lastSuccessfulTime": T_OK,
        "lastTxid": "3.1234",
        "manifest": SUCCESS["manifest"],
        "lagSeconds": 4.2,
        "lagEntries": 17,
        "lastError": {"reason": "AccessDenied", "message": "m" * 1000, "time": T_ERR},
    }
    assert [x["type"] for x in found["conditions"]][-1] == c.BACKUP_HEALTHY


def test_status_backup_times_are_normalised() -> None:
    odd = {**SUCCESS, "time": "2026-03-01T12:58:00.000+00:00"}
    found = body(backed(report=report(last_success=odd)))
    assert found["backup"]["lastSuccessfulTime"] == "2026-03-01T12:58:00Z"


def test_status_backup_is_kept_while_not_read_and_a_success_is_never_forgotten() -> None:
    before = {"lastSuccessfulTime": T_OK, "lastTxid": "3.1", "manifest": "m", "lagSeconds": 1}
    assert body(backed(report=None, error="x"), {"backup": before})["backup"] == before
    not_yet = body(backed(report=BackupReport(configured=False)), {"backup": before})
    assert not_yet["backup"] == before
    new_primary = body(backed(report=report(last_success=None)), {"backup": before})["backup"]
    assert (new_primary["lastTxid"], new_primary["lagEntries"]) == ("3.1", 17)


def test_removing_spec_backup_removes_its_status_and_condition() -> None:
    first = body(backed())
    existing = {"backup": first["backup"], "conditions": first["conditions"]}
    after = body(healthy(), existing)
    assert after["backup"] is None  # a merge patch deletes it
    assert c.BACKUP_HEALTHY not in [x["type"] for x in after["conditions"]]
    assert "backup" not in body(healthy(), {})  # and nothing to delete: no key at all


def test_an_invalid_spec_keeps_the_backup_condition() -> None:
    first = body(backed())
    obs = Observation("demo", 8, NOW, 0, spec_error=SpecError("spec.backup.maxLag", "bad"))
    after = status_body(obs, decide(obs), {"conditions": first["conditions"]}, NOW)
    assert c.BACKUP_HEALTHY in [x["type"] for x in after["conditions"]]


# ---------------------------------------------------------------------------- writes, Events


def test_a_change_of_lag_alone_writes_nothing() -> None:
    first = body(backed())
    later = body(backed(report=report(lag_seconds=9.9, lag_entries=40)), first)
    assert later != first
    assert comparable(later) == comparable(first)
    error = {"reason": "AccessDenied", "message": "no", "time": T_ERR}
    failing = body(backed(report=report(last_error=error)), first)
    retried = body(backed(report=report(last_error={**error, "time": rfc3339(NOW)})), failing)
    assert comparable(failing) != comparable(first)  # the condition and lastError changed
    assert comparable(retried) == comparable(failing)  # only the round's time


def _conds(obs: Observation) -> list[c.Condition]:
    return decide(obs)


BUCKET = {"reason": "BucketNotFound", "message": "gone", "time": T_ERR}
DENIED = {"reason": "AccessDenied", "message": "no", "time": T_ERR}


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (None, backed(), None),  # first True: no news
        (None, backed(report=report(last_error=BUCKET)), ("Warning", "BucketNotFound")),
        (backed(), backed(report=report(last_error=BUCKET)), ("Warning", "BucketNotFound")),
        (
            backed(report=report(last_error=BUCKET)),
            backed(report=report(last_error=DENIED)),
            ("Warning", "AccessDenied"),
        ),
        (backed(report=report(last_error=BUCKET)), backed(report=report(last_error=BUCKET)), None),
        (
            backed(report=report(last_error=BUCKET)),
            backed(),
            ("Normal", c.BACKUP_HEALTHY_REASON),
        ),
        (backed(), backed(report=None, error="x"), None),  # Unknown: no Event
        (backed(), backed(secret_found=False), ("Warning", c.CREDENTIALS_SECRET_NOT_FOUND)),
        (backed(), healthy(), None),  # spec.backup removed
    ],
)
def test_backup_events(
    before: Observation | None, after: Observation, expected: tuple[str, str] | None
) -> None:
    existing = body(before)["conditions"] if before is not None else None
    found = backup_event(existing, _conds(after))
    assert (found[:2] if found else None) == expected


class RecordingKube:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.patched: list[dict[str, Any]] = []

    def event(self, involved: Any, type_: str, reason: str, message: str, now: str) -> None:
        self.events.append((type_, reason))

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.patched.append(status)


def test_write_status_writes_on_transitions_only_with_their_events() -> None:
    """report.write_status: a lag change alone writes nothing; a failure writes the status
    once, with a Warning; the recovery with a Normal Event."""
    meta = {"name": "demo", "namespace": "ledger", "uid": "u"}
    kube = RecordingKube()
    status: dict[str, Any] = body(backed())
    step.write_status(cast(Kube, kube), {"metadata": meta, "status": status}, backed(), NOW)
    assert kube.patched == [] and kube.events == []
    lag = backed(report=report(lag_seconds=30.0, lag_entries=500))
    step.write_status(cast(Kube, kube), {"metadata": meta, "status": status}, lag, NOW)
    assert kube.patched == []
    failing = backed(report=report(last_error=BUCKET))
    step.write_status(cast(Kube, kube), {"metadata": meta, "status": status}, failing, NOW)
    assert kube.events == [("Warning", "BucketNotFound")] and len(kube.patched) == 1
    status = kube.patched[-1]
    step.write_status(cast(Kube, kube), {"metadata": meta, "status": status}, backed(), NOW)
    assert kube.events[-1] == ("Normal", c.BACKUP_HEALTHY_REASON) and len(kube.patched) == 2


def test_a_node_that_does_not_ship_does_not_overwrite_status_backup() -> None:
    before = {"lastTxid": "3.1", "lagSeconds": 40.0, "lagEntries": 9}
    follower = report(shipper=False, lag_seconds=0, lag_entries=0, last_success=None)
    assert body(backed(report=follower), {"backup": before})["backup"] == before
