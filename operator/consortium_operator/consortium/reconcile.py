"""One reconcile pass over one Consortium, as a sequence of steps (one module each):

    ensure_secrets → observe → backups → governance → relay_acks → apply → lifecycle → roll
    → backup requests → report

Thin by design: each step reads the ``Pass`` and returns the ``Observation`` it extended; the
decisions are pure functions in ``status`` (conditions), ``upgrade`` (rolling),
``kube.builders`` (manifests) and ``nodes.verify`` (quotes, lists). Writes happen only when
something differs (``Kube.apply_if_changed``, status compared before patching), so a pass over
a healthy Consortium makes no API writes at all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from consortium_node.common.timeutil import utcnow
from consortium_operator.api import conditions
from consortium_operator.api.names import Names
from consortium_operator.api.spec import SpecError, parse_consortium
from consortium_operator.consortium import backups, lifecycle, recovering, report
from consortium_operator.consortium.acks import relay_acks
from consortium_operator.consortium.apply import apply
from consortium_operator.consortium.context import Memory, Pass, Settings
from consortium_operator.consortium.governing import governance, member_proposals, roll
from consortium_operator.consortium.observation import Observation
from consortium_operator.consortium.observe import observe
from consortium_operator.consortium.secrets import ensure_secrets
from consortium_operator.kube.k8s import Kube
from consortium_operator.members.reconcile import MemberView, reconcile_members

log = logging.getLogger("consortium_operator")

FAST = 2.0
SLOW = float(os.environ.get("CONSORTIUM_OPERATOR_RESYNC_SECONDS", "30"))
# Ready, but the members are expected to act where no watch event tells the operator (a ballot
# or an ack sent straight to a node): look again soon, so the Member and Proposal resources
# follow the ledger within seconds.
AWAITING_MEMBERS = min(5.0, SLOW)
# A ConsortiumBackup request is Pending or Running: its progress is read from the primary.
AWAITING_BACKUPS = min(5.0, SLOW)


def reconcile_consortium(
    kube: Kube, body: Mapping[str, Any], memory: Memory, settings: Settings
) -> float:
    """Reconcile once; returns seconds until the next pass is wanted."""
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    generation = int(meta.get("generation", 0))
    now = utcnow()
    bound = [m for m in MemberView.list(kube, namespace) if m.bound == name]
    members = [m for m in bound if m.spec is not None]  # invalid ones only get a status
    try:
        spec = parse_consortium(name, body.get("spec") or {})
    except SpecError as exc:
        obs = Observation(name, generation, now, 0, spec_error=exc)
        report.write_status(kube, body, obs, now, invalid=True)
        reconcile_members(kube, bound, body, None)
        configured = (body.get("spec") or {}).get("backup") is not None
        why = f"the Consortium's spec is invalid: {exc}"
        backups.hold_requests(kube, namespace, name, configured=configured, why=why, now=now)
        return SLOW
    bootstrapped = (body.get("status") or {}).get("serviceCertificate") is not None
    governors = [m for m in members if m.spec is not None and m.spec.role == "governor"]
    if not governors and not bootstrapped:
        obs = Observation(
            name,
            generation,
            now,
            spec.nodes,
            spec_error=SpecError(
                "Member",
                f"no valid Member with spec.consortium={name} and role governor in this "
                "namespace: genesis needs at least one",
            ),
            member_resources=len(bound),
        )
        report.write_status(kube, body, obs, now, invalid=True, reason=conditions.NO_GOVERNOR)
        reconcile_members(kube, bound, body, None)
        configured = spec.backup is not None
        why = "waiting for genesis"
        backups.hold_requests(kube, namespace, name, configured=configured, why=why, now=now)
        return FAST
    p = Pass(kube, body, spec, memory, settings, now, namespace, uid, Names(name))
    ensure_secrets(p)
    p.pods = kube.list("Pod", namespace, p.names.selector())
    obs = replace(observe(p, generation), member_resources=len(bound))
    obs = backups.observe_backup(p, obs)
    obs, asked = governance(p, obs, members)
    obs = relay_acks(p, obs, members)  # before status: a relayed ack shows at once
    obs = recovering.observe_recovery(p, obs)
    obs = recovering.relay_shares(p, obs, members)  # before status, as acks
    obs = apply(p, obs, members)
    lifecycle.retire_scaled_away(p, obs)
    lifecycle.reattest_due(p, obs)
    lifecycle.replace_retired(p, obs)
    obs = roll(p, obs, asked)
    backing_up = backups.run_requests(p, obs)
    report.events(p, obs)
    recovering.events(p, obs)
    report.repair_events(p, obs)
    report.publish_metrics(p, obs)
    conds = report.write_status(kube, body, obs, now)
    reconcile_members(
        kube, bound, body, obs.ledger_members, member_proposals(asked),
        recovery_shares=recovering.share_states(obs),
    )  # fmt: skip
    ready = conditions.find(conds, conditions.READY)
    if ready is None or not ready.status:
        return FAST
    if backing_up:
        return AWAITING_BACKUPS
    return AWAITING_MEMBERS if _awaits_members(obs, members) else SLOW


def _awaits_members(obs: Observation, members: list[MemberView]) -> bool:
    """An operator proposal is open, or a Member was accepted and has not acknowledged."""
    ledger = obs.ledger_members or {}
    return bool(obs.waiting_proposals) or any(
        m.spec is not None and ledger.get(m.spec.member_id) == "Accepted" for m in members
    )
