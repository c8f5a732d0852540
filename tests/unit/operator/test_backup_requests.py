"""ConsortiumBackup requests, table-driven: what each phase becomes given the Consortium and the
primary's answers (``decide``, ``posted``), the status and Events written (``reconcile``), and
the pass step that feeds them (``consortium/backups.py``) with the Kubernetes client and the
primary replaced by recorders."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, cast

import pytest

from consortium_node.common.timeutil import rfc3339
from consortium_operator.api import conditions as c
from consortium_operator.api.names import Names
from consortium_operator.api.spec import parse_consortium
from consortium_operator.backups import request as r
from consortium_operator.consortium import backups as step
from consortium_operator.consortium.context import Memory, Pass, Settings
from consortium_operator.consortium.observation import Observation
from consortium_operator.kube.k8s import ApiError, Kube
from consortium_operator.nodes.client import (
    BackupError,
    BackupReport,
    BackupSuccess,
    NodeUnreachableError,
    Reply,
)

from .support import T0, spec_with
from .test_backup_builders import S3

NOW = T0 + timedelta(minutes=3)
SUCCESS = BackupSuccess(
    rfc3339(NOW - timedelta(seconds=5)), "2.1300", "manifests/m.cose", "ab" * 32, 4, 999
)
CREATED = rfc3339(T0)


def body(
    phase: str | None = None,
    *,
    through: int | None = None,
    started: str | None = None,
    generation: int = 1,
    observed: int | None = 1,
    consortium_name: str = "demo",
    conditions: list[dict[str, Any]] | None = None,
    created: str = CREATED,
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if phase is not None:
        status["phase"] = phase
        if observed is not None:
            status["observedGeneration"] = observed
    if through is not None:
        status["requestedThrough"] = through
    if started is not None:
        status["startedAt"] = started
    if conditions is not None:
        status["conditions"] = conditions
    return {
        "apiVersion": "consortium.tee.dev/v1alpha1",
        "kind": "ConsortiumBackup",
        "metadata": {
            "name": "now",
            "namespace": "ledger",
            "uid": "uid-now",
            "generation": generation,
            "creationTimestamp": created,
        },
        "spec": {"consortium": consortium_name},
        "status": status,
    }


def report(**changes: Any) -> BackupReport:
    base = BackupReport(
        configured=True,
        mode="continuous",
        shipper=True,
        shipped_through=1200,
        last_success=replace(SUCCESS, txid="2.1200"),
        lag_entries=3,
        lag_seconds=1.0,
        max_lag_seconds=60.0,
        requested_through=1300,
    )
    return replace(base, **changes)


RUNNING = {"through": 1300, "started": rfc3339(NOW - timedelta(minutes=1))}
TARGET = r.Target("demo", report=report())


# ---------------------------------------------------------------------------- decide

CASES = [
    # (id, body, target, phase, reason, post)
    ("final-completed", body(c.PHASE_COMPLETED), TARGET, None, None, False),
    ("final-failed", body(c.PHASE_FAILED), r.Target("demo", exists=False), None, None, False),
    (
        "no-consortium",
        body(),
        r.Target("demo", exists=False),
        c.PHASE_FAILED,
        c.CONSORTIUM_NOT_FOUND,
        False,
    ),
    (
        "no-spec-backup",
        body(),
        r.Target("demo", configured=False),
        c.PHASE_FAILED,
        c.BACKUP_NOT_CONFIGURED,
        False,
    ),
    ("new-asks", body(), TARGET, c.PHASE_PENDING, c.BACKUP_PENDING, True),
    (
        "new-no-primary-waits",
        body(),
        r.Target("demo", unavailable="no primary known"),
        c.PHASE_PENDING,
        c.BACKUP_PENDING,
        False,
    ),
    (
        "pending-past-deadline",
        body(c.PHASE_PENDING, created=rfc3339(NOW - r.DEADLINE)),
        r.Target("demo", unavailable="no primary known"),
        c.PHASE_FAILED,
        c.DEADLINE_EXCEEDED,
        False,
    ),
    (
        "running-waits",
        body(c.PHASE_RUNNING, **RUNNING),
        TARGET,
        c.PHASE_RUNNING,
        c.BACKUP_RUNNING,
        False,
    ),
    (
        "running-covered",
        body(c.PHASE_RUNNING, **RUNNING),
        replace(
            TARGET,
            report=report(shipped_through=1310, last_success=SUCCESS, requested_through=None),
        ),
        c.PHASE_COMPLETED,
        c.BACKUP_COMPLETED,
        False,
    ),
    (
        "running-exactly-covered",
        body(c.PHASE_RUNNING, **RUNNING),
        replace(TARGET, report=report(shipped_through=1300, last_success=SUCCESS)),
        c.PHASE_COMPLETED,
        c.BACKUP_COMPLETED,
        False,
    ),
    (
        "running-node-error",
        body(c.PHASE_RUNNING, **RUNNING),
        replace(
            TARGET,
            report=report(last_error=BackupError("BucketNotFound", "gone", rfc3339(NOW))),
        ),
        c.PHASE_RUNNING,
        "BucketNotFound",
        False,
    ),
    (
        "running-lost-request-asks-again",
        body(c.PHASE_RUNNING, **RUNNING),
        replace(TARGET, report=report(requested_through=None)),
        c.PHASE_RUNNING,
        c.BACKUP_RUNNING,
        True,
    ),
    (
        "running-unread",
        body(c.PHASE_RUNNING, **RUNNING),
        r.Target("demo", unavailable="demo-0: timed out"),
        c.PHASE_RUNNING,
        c.BACKUP_RUNNING,
        False,
    ),
    (
        "running-unconfigured-primary",
        body(c.PHASE_RUNNING, **RUNNING),
        replace(TARGET, report=BackupReport(configured=False)),
        c.PHASE_RUNNING,
        c.BACKUP_RUNNING,
        False,
    ),
    (
        "running-past-deadline",
        body(c.PHASE_RUNNING, through=1300, started=rfc3339(NOW - timedelta(minutes=10))),
        replace(TARGET, report=report(last_error=BackupError("AccessDenied", "no", ""))),
        c.PHASE_FAILED,
        c.DEADLINE_EXCEEDED,
        False,
    ),
    (
        "running-spec-changed",
        body(c.PHASE_RUNNING, **RUNNING, generation=2, observed=1),
        TARGET,
        c.PHASE_FAILED,
        c.SPEC_CHANGED,
        False,
    ),
    (
        "pending-spec-changed-is-fine",
        body(c.PHASE_PENDING, generation=2, observed=1),
        r.Target("demo", unavailable="no primary known"),
        c.PHASE_PENDING,
        c.BACKUP_PENDING,
        False,
    ),
]


@pytest.mark.parametrize(
    ("req", "target", "phase", "reason", "post"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide(
    req: dict[str, Any], target: r.Target, phase: str | None, reason: str | None, post: bool
) -> None:
    verdict = r.decide(r.Request.of(req), target, NOW)
    if phase is None:
        assert verdict is None
        return
    assert verdict is not None
    assert (verdict.phase, verdict.reason, verdict.post) == (phase, reason, post)
    assert verdict.message


def test_completed_carries_the_manifest_and_keeps_the_request() -> None:
    req = r.Request.of(body(c.PHASE_RUNNING, **RUNNING))
    target = replace(TARGET, report=report(shipped_through=1310, last_success=SUCCESS))
    verdict = r.decide(req, target, NOW)
    assert verdict is not None and verdict.result == SUCCESS
    assert (verdict.requested_through, verdict.started_at) == (1300, req.started_at)
    status = r.status_body(req, verdict, NOW)
    assert {
        k: status[k] for k in ("lastTxid", "objects", "bytes", "manifest", "manifestSha256")
    } == {
        "lastTxid": "2.1300",
        "objects": 4,
        "bytes": 999,
        "manifest": "manifests/m.cose",
        "manifestSha256": "ab" * 32,
    }
    assert status["completedAt"] == SUCCESS.time and status["requestedThrough"] == 1300
    [cond] = status["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == (
        c.COMPLETE,
        "True",
        c.BACKUP_COMPLETED,
    )


def test_an_older_success_does_not_complete() -> None:
    """A manifest that does not reach requestedThrough (written before the request)."""
    req = r.Request.of(body(c.PHASE_RUNNING, **RUNNING))
    verdict = r.decide(req, replace(TARGET, report=report(shipped_through=1299)), NOW)
    assert verdict is not None and verdict.phase == c.PHASE_RUNNING


# ---------------------------------------------------------------------------- posted


def reply(status: int, answer: Any) -> Reply:
    return Reply(status, json.dumps(answer).encode(), None)


NOT_CONFIGURED = {"error": {"field": "backup", "reason": "BackupNotConfigured"}}
POSTED = [
    ("accepted", reply(202, {"requested_through": 1300}), c.PHASE_RUNNING, 1300),
    ("accepted-200", reply(200, {"requested_through": 7}), c.PHASE_RUNNING, 7),
    ("no-answer", None, c.PHASE_PENDING, None),
    ("not-configured-yet", reply(409, NOT_CONFIGURED), c.PHASE_PENDING, None),
    (
        "not-primary",
        reply(503, {"error": {"code": "NotLeader", "reason": "x"}}),
        c.PHASE_PENDING,
        None,
    ),
    ("forbidden", reply(403, {"error": {"reason": "not a governor"}}), c.PHASE_FAILED, None),
    ("bad-request", reply(400, {"error": {"reason": "x"}}), c.PHASE_FAILED, None),
    ("malformed", reply(202, {"through": 1}), c.PHASE_PENDING, None),
    ("negative", reply(202, {"requested_through": -1}), c.PHASE_PENDING, None),
]


@pytest.mark.parametrize(
    ("answer", "phase", "through"), [p[1:] for p in POSTED], ids=[p[0] for p in POSTED]
)
def test_posted(answer: Reply | None, phase: str, through: int | None) -> None:
    req = r.Request.of(body())
    asked = r.decide(req, TARGET, NOW)
    assert asked is not None and asked.post
    verdict = r.posted(req, asked, answer, NOW)
    assert (verdict.phase, verdict.requested_through, verdict.post) == (phase, through, False)
    if phase == c.PHASE_RUNNING:
        assert verdict.started_at == NOW
    if phase == c.PHASE_FAILED:
        assert verdict.reason == c.BACKUP_REQUEST_REFUSED


def test_asking_again_keeps_the_first_request() -> None:
    req = r.Request.of(body(c.PHASE_RUNNING, **RUNNING))
    asked = r.decide(req, replace(TARGET, report=report(requested_through=None)), NOW)
    assert asked is not None and asked.post
    verdict = r.posted(req, asked, reply(202, {"requested_through": 1500}), NOW)
    assert (verdict.requested_through, verdict.started_at) == (1300, req.started_at)


# ---------------------------------------------------------------------------- reconcile


@dataclass
class FakeKube:
    """Records status patches and Events; serves ``listed`` and Secrets by name."""

    listed: list[dict[str, Any]] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)
    patched: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    list_error: int | None = None
    metadata_reads: list[str] = field(default_factory=list)

    def list(self, kind: str, namespace: str | None, selector: Any = None) -> list[Any]:
        assert kind == "ConsortiumBackup"
        if self.list_error is not None:
            raise ApiError(self.list_error, "boom")
        return self.listed

    def get(
        self, kind: str, namespace: str | None, name: str, *, metadata_only: bool = False
    ) -> dict[str, Any] | None:
        assert kind == "Secret" and metadata_only  # never the credentials themselves
        self.metadata_reads.append(name)
        return {"metadata": {"name": name}} if name in self.secrets else None

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.patched.append((kind, name, status))

    def event(self, involved: Any, type_: str, reason: str, message: str, now: str) -> None:
        self.events.append((type_, reason))


def test_reconcile_writes_status_and_events_once() -> None:
    kube = FakeKube()
    posts: list[int] = []

    def post() -> Reply:
        posts.append(1)
        return reply(202, {"requested_through": 1300})

    req = body()
    assert r.reconcile(cast(Kube, kube), [req], TARGET, post, NOW) is True
    assert posts == [1]
    [(kind, name, status)] = kube.patched
    assert (kind, name, status["phase"], status["requestedThrough"]) == (
        "ConsortiumBackup",
        "now",
        c.PHASE_RUNNING,
        1300,
    )
    assert status["startedAt"] == rfc3339(NOW) and status["observedGeneration"] == 1
    assert kube.events == [("Normal", "BackupRequested")]
    # The next pass: progress in the message, no POST, no Event; then the same facts: no write.
    written = {**req, "status": status}
    kube2 = FakeKube()
    assert r.reconcile(cast(Kube, kube2), [written], TARGET, post, NOW) is True
    assert posts == [1] and kube2.events == []
    [(_, _, progress)] = kube2.patched
    assert progress["message"] == "shipped through index 1200 of 1300"
    written = {**req, "status": progress}
    kube2 = FakeKube()
    assert r.reconcile(cast(Kube, kube2), [written], TARGET, post, NOW) is True
    assert kube2.patched == [] and kube2.events == []
    # Covered: Completed, an Event, and nothing more to do.
    done = replace(TARGET, report=report(shipped_through=1300, last_success=SUCCESS))
    assert r.reconcile(cast(Kube, kube2), [written], done, post, NOW) is False
    assert kube2.patched[0][2]["phase"] == c.PHASE_COMPLETED
    assert kube2.events == [("Normal", c.BACKUP_COMPLETED)]
    # Final: never run again, whatever the primary says.
    final = {**req, "status": kube2.patched[0][2]}
    assert r.reconcile(cast(Kube, kube2), [final], TARGET, post, NOW) is False
    assert len(kube2.patched) == 1 and posts == [1]


def test_reconcile_failure_event_and_node_reason_event() -> None:
    kube = FakeKube()
    r.reconcile(cast(Kube, kube), [body()], r.Target("demo", exists=False), None, NOW)
    assert kube.events == [("Warning", c.CONSORTIUM_NOT_FOUND)]
    assert kube.patched[0][2]["phase"] == c.PHASE_FAILED
    assert kube.patched[0][2]["completedAt"] == rfc3339(NOW)
    failing = replace(TARGET, report=report(last_error=BackupError("AccessDenied", "no", "")))
    kube = FakeKube()
    r.reconcile(cast(Kube, kube), [body(c.PHASE_RUNNING, **RUNNING)], failing, None, NOW)
    assert kube.events == [("Warning", "AccessDenied")]
    assert kube.patched[0][2]["phase"] == c.PHASE_RUNNING


# ---------------------------------------------------------------------------- the pass step


class FakeClient:
    def __init__(self, answer: BackupReport | Exception) -> None:
        self.answer = answer

    def backup(self, ip: str, server_name: str) -> BackupReport:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def make_pass(kube: FakeKube) -> Pass:
    spec = parse_consortium("demo", spec_with("backup", {"s3": dict(S3)}))
    meta = {"name": "demo", "namespace": "ledger", "uid": "uid-demo"}
    return Pass(
        cast(Kube, kube), {"metadata": meta}, spec, Memory(), Settings(), NOW, "ledger",
        "uid-demo", Names("demo"),
    )  # fmt: skip


def obs(**changes: Any) -> Observation:
    base = Observation("demo", 1, NOW, 3, service_certificate_pem="PEM", primary="demo-0")
    return replace(base, **changes)


@pytest.fixture
def primary_answers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What ``primary()`` gives the step: set ``[answer]`` (a report, an exception, or None for
    no primary)."""
    answers: list[Any] = [report()]

    def fake_primary(p: Pass, o: Observation, timeout: float | None = None) -> Any:
        if answers[0] is None:
            return None
        return type(
            "P", (), {"client": FakeClient(answers[0]), "ip": "10.0.0.1", "server_name": "x"}
        )

    monkeypatch.setattr(step, "primary", fake_primary)
    return answers


def test_observe_backup_reads_the_secret_metadata_and_the_primary(
    primary_answers: list[Any],
) -> None:
    kube = FakeKube(secrets={"demo-backup"})
    found = step.observe_backup(make_pass(kube), obs()).backup
    assert found is not None
    assert (found.secret, found.secret_found, found.max_lag_seconds) == ("demo-backup", True, 60.0)
    assert (found.report, found.reporter, found.error) == (report(), "demo-0", None)
    assert kube.metadata_reads == ["demo-backup"]


@pytest.mark.parametrize(
    ("answer", "bootstrapped", "error"),
    [
        (None, True, "no primary known"),
        (None, False, "waiting for genesis"),
    ],
)
def test_observe_backup_without_a_primary(
    primary_answers: list[Any], answer: Any, bootstrapped: bool, error: str
) -> None:
    primary_answers[0] = answer
    o = obs() if bootstrapped else obs(service_certificate_pem=None)
    found = step.observe_backup(make_pass(FakeKube()), o).backup
    assert found is not None and found.report is None and found.error == error
    assert found.secret_found is False


def test_observe_backup_unreachable(primary_answers: list[Any]) -> None:
    primary_answers[0] = NodeUnreachableError("demo-0 (10.0.0.1): timed out")
    found = step.observe_backup(make_pass(FakeKube()), obs()).backup
    assert found is not None and found.report is None and "timed out" in (found.error or "")


def test_no_spec_backup_observes_nothing(primary_answers: list[Any]) -> None:
    kube = FakeKube()
    p = make_pass(kube)
    p.spec = replace(p.spec, backup=None)
    assert step.observe_backup(p, obs()).backup is None
    assert kube.metadata_reads == []


def test_run_requests_only_this_consortiums(
    primary_answers: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    posted: list[str] = []

    def ask(p: Pass, o: Observation, path: str, payload: Any, timeout: float) -> Reply:
        posted.append(path)
        return reply(202, {"requested_through": 50})

    monkeypatch.setattr(step, "ask_primary", ask)
    kube = FakeKube(listed=[body(), body(consortium_name="other")])
    p = make_pass(kube)
    o = step.observe_backup(p, obs())
    assert step.run_requests(p, o) is True
    assert posted == ["/node/backup"]
    assert [name for _, name, _ in kube.patched] == ["now"]


def test_run_requests_without_spec_backup_fails_them(primary_answers: list[Any]) -> None:
    kube = FakeKube(listed=[body()])
    p = make_pass(kube)
    p.spec = replace(p.spec, backup=None)
    assert step.run_requests(p, obs()) is False
    assert kube.patched[0][2]["phase"] == c.PHASE_FAILED
    assert kube.events == [("Warning", c.BACKUP_NOT_CONFIGURED)]


def test_run_requests_without_the_crd(primary_answers: list[Any]) -> None:
    """A chart upgrade does not upgrade CRDs: no ConsortiumBackup kind must not stop the pass."""
    assert step.run_requests(make_pass(FakeKube(list_error=404)), obs()) is False
    with pytest.raises(ApiError):
        step.run_requests(make_pass(FakeKube(list_error=403)), obs())


def test_hold_requests_waits_or_fails() -> None:
    kube = FakeKube(listed=[body()])
    assert step.hold_requests(
        cast(Kube, kube), "ledger", "demo", configured=True, why="the spec is invalid", now=NOW
    )
    assert kube.patched[0][2]["phase"] == c.PHASE_PENDING
    assert kube.patched[0][2]["message"] == "the spec is invalid"
    kube = FakeKube(listed=[body()])
    step.hold_requests(cast(Kube, kube), "ledger", "demo", configured=False, why="x", now=NOW)
    assert kube.patched[0][2]["phase"] == c.PHASE_FAILED
