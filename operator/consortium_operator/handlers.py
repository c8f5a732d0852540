"""kopf registration: when to reconcile, and the two finalizers. Nothing else lives here:
a pass is ``consortium.reconcile``, deletions are ``consortium.teardown``.

Reconciliation is level-based: a per-Consortium kopf timer ticks every second and runs a
pass when one is due; watch events (the Consortium's spec, its pods, its Members, its
Proposals, its ConsortiumBackups) only make a pass due now. Timers and event handlers persist
nothing, so a healthy Consortium costs reads only. The changing handlers are the two
``on.delete`` finalizers: a Consortium's (honours ``spec.storage.retainOnDelete``) and a
Member's (its removal becomes a Proposal for the members).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import kopf

from consortium_node.common.timeutil import utcnow
from consortium_operator.api import metrics
from consortium_operator.api.names import GROUP, LABEL_CONSORTIUM, VERSION
from consortium_operator.backups import request as backup_request
from consortium_operator.consortium import teardown
from consortium_operator.consortium.context import Memory, Settings
from consortium_operator.consortium.reconcile import reconcile_consortium
from consortium_operator.kube.k8s import Kube
from consortium_operator.members.reconcile import MemberView, reconcile_members

log = logging.getLogger("consortium_operator")

_lock = threading.Lock()
_memory: dict[tuple[str, str], Memory] = {}
_generations: dict[tuple[str, str], int] = {}
_state: dict[str, Any] = {}


def memory_of(namespace: str, name: str) -> Memory:
    with _lock:
        return _memory.setdefault((namespace, name), Memory())


def kube() -> Kube:
    found = _state.get("kube")
    if found is None:
        found = _state["kube"] = Kube()
    assert isinstance(found, Kube)
    return found


def settings() -> Settings:
    return Settings(
        cluster_domain=os.environ.get("CLUSTER_DOMAIN", "cluster.local"),
        insecure_test_faults=os.environ.get("CONSORTIUM_OPERATOR_INSECURE_TEST_FAULTS") == "1",
    )


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False  # Events are written by the reconciler, on transitions
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.execution.max_workers = int(os.environ.get("CONSORTIUM_OPERATOR_WORKERS", "16"))
    settings.watching.server_timeout = 300
    # A deleted Consortium keeps its finalizer until its timer has exited, and kopf checks
    # for that exit every ``cancellation_polling`` seconds (60 by default): a timer still in
    # a pass when the finalizer ran held the deletion a whole minute.
    settings.background.cancellation_polling = 1.0
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if _settings_cache().insecure_test_faults:
        log.warning("INSECURE TEST FAULTS: node pods may be made to fail attestation on purpose")


def _settings_cache() -> Settings:
    found = _state.get("settings")
    if found is None:
        found = _state["settings"] = settings()
    assert isinstance(found, Settings)
    return found


@kopf.timer(GROUP, VERSION, "consortia", interval=1.0, sharp=False)
def tick(body: kopf.Body, **_: Any) -> None:
    """Run a pass when one is due (sync: kopf runs it in its thread pool)."""
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    if body.metadata.get("deletionTimestamp"):
        return
    memory = memory_of(namespace, name)
    if time.monotonic() < memory.due:
        return
    started = time.monotonic()
    pokes = memory.pokes
    try:
        delay = reconcile_consortium(kube(), body, memory, _settings_cache())
        metrics.LAST_SUCCESS.labels(namespace, name).set(time.time())
    except Exception as exc:
        metrics.RECONCILE_ERRORS.labels(namespace, name, "Consortium", type(exc).__name__).inc()
        log.exception("reconciling %s/%s failed", namespace, name)
        delay = 5.0
    finally:
        metrics.RECONCILE_DURATION.labels("Consortium").observe(time.monotonic() - started)
    memory.schedule(time.monotonic(), delay, pokes)


@kopf.on.event(GROUP, VERSION, "consortia")
def consortium_changed(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    key = (namespace, name)
    if event.get("type") == "DELETED":
        with _lock:
            _memory.pop(key, None)
            _generations.pop(key, None)
        metrics.forget(namespace, name)
        return
    generation = int(body.metadata.get("generation") or 0)
    if _generations.get(key) != generation:  # spec changed (not our own status writes)
        _generations[key] = generation
        memory_of(namespace, name).poke()


@kopf.on.event("", "v1", "pods", labels={LABEL_CONSORTIUM: kopf.PRESENT})
def pod_changed(body: kopf.Body, **_: Any) -> None:
    consortium = body.metadata.labels.get(LABEL_CONSORTIUM)
    if consortium:
        memory_of(body.metadata.namespace or "", consortium).poke()


@kopf.on.event(GROUP, VERSION, "members")
def member_changed(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    namespace = body.metadata.namespace or ""
    view = MemberView.of(body)
    for consortium in {view.bound, view.requested} - {None}:
        assert consortium is not None
        memory_of(namespace, consortium).poke()
    if event.get("type") == "DELETED":
        return
    target = kube().get("Consortium", namespace, view.bound) if view.bound else None
    if target is None:  # nobody else will write this Member's status
        reconcile_members(kube(), [view], None, None)


@kopf.on.event(GROUP, VERSION, "proposals")
def proposal_changed(body: kopf.Body, **_: Any) -> None:
    """A new Proposal or an appended ballot: relay it in the Consortium's next pass."""
    consortium = (body.get("spec") or {}).get("consortium")
    if isinstance(consortium, str):
        memory_of(body.metadata.namespace or "", consortium).poke()


@kopf.on.event(GROUP, VERSION, "consortiumbackups")
def backup_requested(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    """A new (or changed) ConsortiumBackup: its Consortium's pass asks the primary and follows
    it. One whose Consortium does not exist (or is going away) fails here: no pass sees it."""
    if event.get("type") == "DELETED":
        return
    wanted = backup_request.Request.of(body)
    if wanted.finished:  # Completed and Failed are final: never run again
        return
    if event.get("type") != "ADDED" and wanted.observed_generation == wanted.generation:
        return  # the pass's own status writes: it comes back for unfinished requests anyway
    namespace = body.metadata.namespace or ""
    target = kube().get("Consortium", namespace, wanted.consortium) if wanted.consortium else None
    if target is not None and not target["metadata"].get("deletionTimestamp"):
        memory_of(namespace, wanted.consortium).poke()
        return
    gone = backup_request.Target(wanted.consortium, exists=False)
    backup_request.reconcile(kube(), [body], gone, None, utcnow())


@kopf.on.delete(GROUP, VERSION, "members")
def member_deleted(body: kopf.Body, **_: Any) -> None:
    """A Member deleted after bootstrap: put its removal to the members (a Proposal), then let
    the Member go. The ledger changes only if the governors accept it."""
    namespace = body.metadata.namespace or ""
    view = MemberView.of(body)
    known = memory_of(namespace, view.bound).ledger_members if view.bound else None
    try:
        proposed = teardown.propose_member_removal(kube(), body, known)
    except teardown.NotYetError as exc:
        raise kopf.TemporaryError(str(exc), delay=5) from exc
    if proposed is not None and view.bound:
        memory_of(namespace, view.bound).poke()


@kopf.on.delete(GROUP, VERSION, "consortia")
def finalize(body: kopf.Body, **_: Any) -> None:
    """Honour ``spec.storage.retainOnDelete``; everything else goes by garbage collection."""
    teardown.release_consortium(kube(), body)
