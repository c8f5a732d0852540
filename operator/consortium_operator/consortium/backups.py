"""Pass step: backups (``spec.backup``) — what the primary says of its backups, whether the
credentials Secret exists, and the Consortium's ConsortiumBackup requests.

The operator only configures (``kube.builders``: the node config's ``backup:`` section, the
Secret mount) and reports; the primary ships. ``observe_backup`` reads the primary's
``GET /node/backup`` and checks that ``spec.backup.s3.credentialsSecret`` exists (its metadata
only: the operator never reads the credentials); ``status`` decides BackupHealthy and
``status.backup`` from it. ``run_requests`` advances the ConsortiumBackup requests naming this
Consortium (``backups.request``) with the same reading, POSTing ``/node/backup`` to the primary
as the operator where one is to be made.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Any

from consortium_operator.backups import request
from consortium_operator.consortium.context import Pass, ask_primary, primary
from consortium_operator.consortium.observation import BackupFacts, Observation
from consortium_operator.kube.k8s import ApiError, Kube
from consortium_operator.nodes.client import BACKUP_PATH, NodeUnreachableError, Reply

log = logging.getLogger("consortium_operator")


def observe_backup(p: Pass, obs: Observation) -> Observation:
    """``obs`` with the backup facts of this pass (unchanged without ``spec.backup``)."""
    backup = p.spec.backup
    if backup is None:
        return obs
    facts = BackupFacts(
        secret=backup.s3.credentials_secret,
        max_lag_seconds=backup.max_lag.total_seconds() if backup.max_lag else None,
    )
    try:
        found = p.kube.get("Secret", p.namespace, facts.secret, metadata_only=True)
        facts = replace(facts, secret_found=found is not None)
    except ApiError as exc:  # e.g. 403: say nothing about the Secret rather than guess
        log.warning("%s/%s: reading Secret %s: %s", p.namespace, p.spec.name, facts.secret, exc)
    target = primary(p, obs)
    if target is None:
        why = "waiting for genesis" if obs.service_certificate_pem is None else "no primary known"
        return replace(obs, backup=replace(facts, error=why))
    try:
        report = target.client.backup(target.ip, target.server_name)
    except NodeUnreachableError as exc:
        return replace(obs, backup=replace(facts, error=str(exc)))
    return replace(obs, backup=replace(facts, report=report, reporter=obs.primary))


def _mine(kube: Kube, namespace: str, consortium: str) -> list[dict[str, Any]]:
    """The ConsortiumBackups naming ``consortium`` (none where the CRD is not installed: a
    chart upgrade does not upgrade CRDs, and a missing kind must not stop the pass)."""
    try:
        found = kube.list("ConsortiumBackup", namespace)
    except ApiError as exc:
        if exc.status == 404:
            return []
        raise
    return [b for b in found if (b.get("spec") or {}).get("consortium") == consortium]


def run_requests(p: Pass, obs: Observation) -> bool:
    """Advance this Consortium's ConsortiumBackup requests; True while one is unfinished."""
    bodies = _mine(p.kube, p.namespace, p.spec.name)
    if not bodies:
        return False
    facts = obs.backup
    unavailable = None
    if facts is not None and facts.report is None:
        unavailable = facts.error or "the primary's backup state was not read"
    elif obs.service_certificate_pem is None:
        unavailable = "waiting for genesis"
    target = request.Target(
        p.spec.name,
        configured=p.spec.backup is not None,
        report=facts.report if facts is not None else None,
        unavailable=unavailable,
    )

    def post() -> Reply | None:
        return ask_primary(p, obs, BACKUP_PATH, {}, timeout=15)

    return request.reconcile(p.kube, bodies, target, post, p.now)


def hold_requests(
    kube: Kube, namespace: str, consortium: str, *, configured: bool, why: str, now: datetime
) -> bool:
    """A pass that stops early (invalid spec, no governor for genesis): the requests cannot be
    made; they wait (and fail at their deadline), or fail at once without ``spec.backup``."""
    bodies = _mine(kube, namespace, consortium)
    target = request.Target(consortium, configured=configured, unavailable=why)
    return request.reconcile(kube, bodies, target, None, now) if bodies else False
