"""A ConsortiumBackup: one backup of a Consortium's ledger, asked of its primary now.

``status.phase``: Pending → Running → Completed | Failed. The last two are final: a finished
request is never run again (create another one for another backup).

* **Pending**: the primary is asked (``POST /node/backup`` with the operator's client
  certificate, as for retire and re-attest); its ``202 {"requested_through": N}`` makes the
  request Running with ``requestedThrough`` N (the primary's commit index then) and
  ``startedAt``. No primary, no answer, ``503`` (not the primary) or ``409`` (the nodes do not
  run the backup configuration yet, e.g. while they are rolled to a new ``spec.backup``): asked
  again in the next pass. Any other refusal fails the request.
* **Running**: each pass reads the primary's ``GET /node/backup`` (the Consortium's pass reads
  it anyway). Once ``shipped_through >= requestedThrough``, the request is Completed with the
  primary's ``last_success`` (manifest, its SHA-256, txid, objects, bytes). A ``last_error``
  meanwhile keeps it Running with the node's reason on the Complete condition. If the primary
  no longer holds the request (a new primary after an election: ``requested_through`` null or
  lower, nothing shipped that far), it is asked again; ``requestedThrough`` stays the first.
* **Failed**: its Consortium does not exist (ConsortiumNotFound) or has no ``spec.backup``
  (BackupNotConfigured), the primary refused the request (BackupRequestRefused), its spec
  changed while Running (SpecChanged), or it was not completed within ``DEADLINE`` of its
  creation (still Pending) or of ``startedAt`` (DeadlineExceeded, with the last reason).

Pure decisions (``decide``, ``posted``, ``status_body``, ``transition_event``) and one
``reconcile`` that applies them through the Kubernetes client and a ``post`` callable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from consortium_node.common.timeutil import parse_rfc3339, rfc3339
from consortium_operator.api import conditions as c
from consortium_operator.kube.k8s import Kube
from consortium_operator.nodes.client import BackupReport, BackupSuccess, Reply

log = logging.getLogger("consortium_operator")

KIND = "ConsortiumBackup"
DEADLINE = timedelta(minutes=10)
FINAL = (c.PHASE_COMPLETED, c.PHASE_FAILED)
REFUSED = (400, 401, 403, 404, 413)  # the primary's verdict: asking again changes nothing


def _time(value: Any) -> datetime | None:
    try:
        return parse_rfc3339(value) if isinstance(value, str) and value else None
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True)
class Request:
    """A ConsortiumBackup body, read."""

    body: Mapping[str, Any]

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Request:
        return cls(body)

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"].get("namespace") or "")

    @property
    def consortium(self) -> str:
        found = (self.body.get("spec") or {}).get("consortium")
        return found if isinstance(found, str) else ""

    @property
    def generation(self) -> int:
        return int(self.body["metadata"].get("generation") or 0)

    @property
    def status(self) -> Mapping[str, Any]:
        return self.body.get("status") or {}

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or c.PHASE_PENDING)

    @property
    def finished(self) -> bool:
        return self.phase in FINAL

    @property
    def requested_through(self) -> int | None:
        found = self.status.get("requestedThrough")
        return found if isinstance(found, int) and not isinstance(found, bool) else None

    @property
    def observed_generation(self) -> int | None:
        found = self.status.get("observedGeneration")
        return found if isinstance(found, int) else None

    @property
    def started_at(self) -> datetime | None:
        return _time(self.status.get("startedAt"))

    @property
    def created(self) -> datetime | None:
        return _time(self.body["metadata"].get("creationTimestamp"))


@dataclass(frozen=True)
class Target:
    """The request's Consortium, as this pass found it."""

    consortium: str
    exists: bool = True
    configured: bool = True  # it has spec.backup
    report: BackupReport | None = None  # its primary's GET /node/backup, this pass
    unavailable: str | None = None  # why the primary cannot be asked or read now


@dataclass(frozen=True)
class Verdict:
    """What a request becomes in this pass."""

    phase: str
    reason: str
    message: str
    post: bool = False  # ask the primary first (POST /node/backup), then apply ``posted``
    requested_through: int | None = None
    started_at: datetime | None = None
    result: BackupSuccess | None = None  # Completed: the manifest that covers the request


def _current_error(report: BackupReport) -> tuple[str, str] | None:
    """The primary's current failure as (condition reason, message), or None."""
    error = report.current_error()
    if error is None:
        return None
    said = f"{error.reason}: {error.message.strip()[:300]}" if error.message.strip() else ""
    return c.backup_reason(error.reason), said or error.reason


def decide(req: Request, target: Target, now: datetime) -> Verdict | None:
    """The request's verdict in this pass (None: finished, nothing to do)."""
    if req.finished:
        return None
    if not target.exists:
        return Verdict(
            c.PHASE_FAILED,
            c.CONSORTIUM_NOT_FOUND,
            f"spec.consortium: no Consortium {req.consortium!r} in this namespace",
        )
    if not target.configured:
        return Verdict(
            c.PHASE_FAILED,
            c.BACKUP_NOT_CONFIGURED,
            f"Consortium {req.consortium} has no spec.backup: configure its bucket first "
            "(spec.backup.s3), then create a new ConsortiumBackup",
        )
    through, started = req.requested_through, req.started_at
    running = through is not None
    if running and req.observed_generation not in (None, req.generation):
        return Verdict(
            c.PHASE_FAILED,
            c.SPEC_CHANGED,
            "spec changed after the backup was requested: create a new ConsortiumBackup",
            requested_through=through,
            started_at=started,
        )
    report = target.report
    if (
        through is not None
        and report is not None
        and report.configured
        and report.last_success is not None
        and report.shipped_through >= through
    ):
        last = report.last_success
        return Verdict(
            c.PHASE_COMPLETED,
            c.BACKUP_COMPLETED,
            f"manifest {last.manifest} covers the ledger through txid {last.txid} "
            f"({last.objects} objects, {last.bytes} bytes)",
            result=last,
            requested_through=through,
            started_at=started,
        )
    waiting = _waiting(through, target)
    since = started if running else req.created
    if since is not None and now - since >= DEADLINE:
        return Verdict(
            c.PHASE_FAILED,
            c.DEADLINE_EXCEEDED,
            f"not completed within {DEADLINE.total_seconds() / 60:g} minutes of "
            f"{'the request' if running else 'its creation'}: {waiting.message}",
            requested_through=through,
            started_at=started,
        )
    return replace(waiting, started_at=started)


def _waiting(through: int | None, target: Target) -> Verdict:
    """Not done yet: what it waits for, and whether to ask the primary (again)."""
    report = target.report
    if through is None:
        if target.unavailable is not None:
            return Verdict(c.PHASE_PENDING, c.BACKUP_PENDING, target.unavailable)
        return Verdict(c.PHASE_PENDING, c.BACKUP_PENDING, "asking the primary", post=True)
    if report is None:
        why = target.unavailable or "the primary's backup state was not read"
        return Verdict(
            c.PHASE_RUNNING, c.BACKUP_RUNNING, f"waiting: {why}", requested_through=through
        )
    if not report.configured:
        return Verdict(
            c.PHASE_RUNNING,
            c.BACKUP_RUNNING,
            "waiting: the primary runs without the backup configuration",
            requested_through=through,
        )
    failing = _current_error(report)
    if failing is not None:
        return Verdict(
            c.PHASE_RUNNING,
            failing[0],
            f"the primary's last backup round failed ({failing[1]}); it keeps trying",
            requested_through=through,
        )
    if report.requested_through is None or report.requested_through < through:
        return Verdict(
            c.PHASE_RUNNING,
            c.BACKUP_RUNNING,
            f"the primary does not hold the request (a new primary?): asking again; shipped "
            f"through index {report.shipped_through} of {through}",
            post=True,
            requested_through=through,
        )
    return Verdict(
        c.PHASE_RUNNING,
        c.BACKUP_RUNNING,
        f"shipped through index {report.shipped_through} of {through}",
        requested_through=through,
    )


def posted(req: Request, verdict: Verdict, reply: Reply | None, now: datetime) -> Verdict:
    """The verdict once the primary answered ``POST /node/backup`` (None: no answer)."""
    verdict = replace(verdict, post=False)
    if reply is None:
        return replace(verdict, message="the primary did not answer: asking again next pass")
    if reply.status in (200, 202):
        answer = reply.json()
        through = answer.get("requested_through") if isinstance(answer, dict) else None
        if not isinstance(through, int) or isinstance(through, bool) or through < 0:
            return replace(
                verdict, message=f"the primary answered without requested_through: {answer!r}"
            )
        first = req.requested_through if req.requested_through is not None else through
        return Verdict(
            c.PHASE_RUNNING,
            c.BACKUP_RUNNING,
            f"the primary backs up the ledger through index {first}",
            requested_through=first,
            started_at=req.started_at or now,
        )
    if reply.status in REFUSED:
        return replace(
            verdict,
            phase=c.PHASE_FAILED,
            reason=c.BACKUP_REQUEST_REFUSED,
            message=f"the primary refused the backup: HTTP {reply.status} {reply.error()}",
        )
    if reply.status == 409:  # BackupNotConfigured: the pods do not run spec.backup yet
        return replace(
            verdict,
            message=f"the nodes do not run the backup configuration yet ({reply.error()}): "
            "asking again next pass",
        )
    return replace(verdict, message=f"not accepted yet: HTTP {reply.status} {reply.error()}")


def status_body(req: Request, verdict: Verdict, now: datetime) -> dict[str, Any]:
    """The whole status to write (compared with the current one before writing)."""
    cond = c.Condition(
        c.COMPLETE, verdict.phase == c.PHASE_COMPLETED, verdict.reason, verdict.message
    )
    body: dict[str, Any] = {
        "observedGeneration": req.generation,
        "phase": verdict.phase,
        "message": verdict.message,
        "conditions": c.merge(
            req.status.get("conditions"), [cond], now=rfc3339(now), generation=req.generation
        ),
    }
    if verdict.requested_through is not None:
        body["requestedThrough"] = verdict.requested_through
    if verdict.started_at is not None:
        body["startedAt"] = rfc3339(verdict.started_at)
    if verdict.result is not None:
        last = verdict.result
        body.update(
            lastTxid=last.txid,
            objects=last.objects,
            bytes=last.bytes,
            manifest=last.manifest,
        )
        if last.manifest_sha256:
            body["manifestSha256"] = last.manifest_sha256
    if verdict.phase in FINAL:
        done = _time(verdict.result.time) if verdict.result is not None else None
        body["completedAt"] = rfc3339(done or now)
    return body


def transition_event(req: Request, verdict: Verdict) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event for a change of phase, or for a new failure
    reason the primary reports while Running; None otherwise."""
    if verdict.phase != req.phase:
        if verdict.phase == c.PHASE_FAILED:
            return ("Warning", verdict.reason, verdict.message)
        if verdict.phase in (c.PHASE_RUNNING, c.PHASE_COMPLETED):
            reason = "BackupRequested" if verdict.phase == c.PHASE_RUNNING else verdict.reason
            return ("Normal", reason, verdict.message)
        return None
    conditions = req.status.get("conditions") or ()
    old: Mapping[str, Any] = next((x for x in conditions if x.get("type") == c.COMPLETE), {})
    if verdict.reason in c.NODE_BACKUP_REASONS and old.get("reason") != verdict.reason:
        return ("Warning", verdict.reason, verdict.message)
    return None


Post = Callable[[], Reply | None]  # POST /node/backup to the primary; None: no answer


def reconcile(
    kube: Kube,
    bodies: Sequence[Mapping[str, Any]],
    target: Target,
    post: Post | None,
    now: datetime,
) -> bool:
    """Advance each request of ``target`` and write its status if it changed; True while one
    is unfinished (the caller comes back soon). ``post`` None: the primary cannot be asked."""
    unfinished = False
    for body in bodies:
        req = Request.of(body)
        verdict = decide(req, target, now)
        if verdict is None:
            continue
        if verdict.post:
            verdict = posted(req, verdict, post() if post is not None else None, now)
        unfinished |= verdict.phase not in FINAL
        new = status_body(req, verdict, now)
        if c.without_transition_times(new) == c.without_transition_times(req.status):
            continue
        event = transition_event(req, verdict)
        if event is not None:
            level = logging.WARNING if event[0] == "Warning" else logging.INFO
            log.log(level, "%s/%s %s %s: %s", req.namespace, req.name, KIND, event[1], event[2])
            kube.event(body, *event, rfc3339(now))
        kube.patch_status("ConsortiumBackup", req.namespace, req.name, new)
    return unfinished
