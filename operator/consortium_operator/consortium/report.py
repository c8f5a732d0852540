"""Pass step, last: tell users what the pass found — Events for changes of a node's trust
and for its storage faults and their repair, the operator's metrics, and the Consortium's
status (conditions decided by ``status``), written only when it changed
(``status.comparable``), with an Event when Ready or BackupHealthy changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from consortium_node.common.timeutil import rfc3339
from consortium_node.identity.trusted_list import NodeStatus
from consortium_operator.api import conditions, metrics
from consortium_operator.consortium import status
from consortium_operator.consortium.context import Pass
from consortium_operator.consortium.observation import Observation
from consortium_operator.kube.k8s import Kube


def events(p: Pass, obs: Observation) -> None:
    lst = obs.trusted_list
    if lst is None:
        return
    now_trust = {e.node_id: (e.status.value, e.attested_at) for e in lst.nodes}
    before = p.memory.trust
    p.memory.trust = now_trust
    if before is None:
        return  # first pass after (re)start: nothing to compare with
    for node_id, (st, attested) in sorted(now_trust.items()):
        entry = lst.node(node_id)
        assert entry is not None
        old = before.get(node_id)
        who = f"{entry.name} ({node_id[:16]})"
        if old is None or old[0] != st:
            if st == "Trusted":
                p.event("Normal", "NodeTrusted", f"{who} is Trusted")
            elif st == "Retired" and node_id in p.memory.retired_by_us:
                p.memory.retired_by_us.discard(node_id)  # announced when it was asked for
            elif st == "Retired":
                why = obs.renewal_failures.get(node_id) or p.memory.failures.get(node_id) or ""
                p.event("Warning", "NodeRetired", f"{who} was retired {why}".strip())
            elif st == "Pending":
                p.event("Normal", "NodePending", f"{who} waits for members to trust it")
        elif st == "Trusted" and old[1] != attested:
            p.event(
                "Normal",
                "NodeReattested",
                f"{who} re-attested; expires {entry.attestation_expires_at}",
            )


def repair_events(p: Pass, obs: Observation) -> None:
    """Events for a node's storage fault: LedgerRecovering (Warning) when its node reports
    committed entries lost, LedgerRepaired once it holds them again, LedgerDiverged (Warning)
    if what it was sent contradicts what it had committed. One per fault and state."""
    now = {
        (pod, str(repair.get("damage"))): str(repair.get("state"))
        for pod, repair in obs.ledger_repairs.items()
    }
    before, p.memory.repairs = p.memory.repairs, now
    for (pod, damage), state in sorted(now.items()):
        if before is not None and before.get((pod, damage)) == state:
            continue
        repair = obs.ledger_repairs[pod]
        if state == "repaired":
            if before is None:
                continue  # repaired before this operator started: the node's metric counted it
            p.event(
                "Normal",
                "LedgerRepaired",
                f"{pod}: holds every committed entry again after a storage fault "
                f"({repair.get('damage')}); the damaged bytes are kept in "
                f"{', '.join(repair.get('set_aside') or []) or 'place'}",
            )
        elif state == "diverged":
            p.event("Warning", "LedgerDiverged", status.ledger_problem(pod, repair))
        elif state == "recovering":
            p.event("Warning", "LedgerRecovering", status.ledger_problem(pod, repair))


def publish_metrics(p: Pass, obs: Observation) -> None:
    ns, name = p.namespace, p.spec.name
    renew_before = p.spec.attestation.renew_before.total_seconds()
    metrics.RENEW_BEFORE.labels(ns, name).set(renew_before)  # the expiry alert's yardstick
    lst = obs.trusted_list
    if lst is None:
        return
    counts = {s.value: 0 for s in NodeStatus}
    trusted = set()
    for entry in lst.nodes:
        counts[entry.status.value] += 1
        if entry.status is NodeStatus.TRUSTED:
            trusted.add(entry.name)
            metrics.EXPIRY.labels(ns, name, entry.name).set(
                (entry.attestation_expires_at_datetime - p.now).total_seconds()
            )
    metrics.forget_nodes(ns, name, keep=trusted)  # a retired node's expiry is no longer news
    for st, n in counts.items():
        metrics.NODES.labels(ns, name, st).set(n)
    if obs.published_version is not None:
        metrics.LIST_VERSION.labels(ns, name).set(obs.published_version)


def write_status(
    kube: Kube,
    body: Mapping[str, Any],
    obs: Observation,
    now: datetime,
    *,
    invalid: bool = False,
    reason: str | None = None,
) -> list[conditions.Condition]:
    meta = body["metadata"]
    existing = body.get("status") or {}
    conds = status.decide(obs)
    if reason is not None:
        conds = [replace(c, reason=reason) if c.type == conditions.READY else c for c in conds]
    new = status.status_body(obs, conds, existing, now)
    if invalid:  # keep the last observed facts (nodes, list, members…): only the verdict changes
        verdict = ("observedGeneration", "phase", "conditions")
        new = {**existing, **{k: v for k, v in new.items() if k in verdict}}
        new.setdefault("nodesReady", "0/0")
        if "members" not in existing:
            new["members"] = {"resources": obs.member_resources}
    ready = conditions.find(conds, conditions.READY)
    metrics.READY.labels(meta["namespace"], meta["name"]).set(
        1 if ready is not None and ready.status else 0
    )
    if status.comparable(new) == status.comparable(existing):
        return conds
    old_ready: dict[str, Any] = next(
        (c for c in existing.get("conditions", []) if c.get("type") == conditions.READY), {}
    )
    if ready is not None and (
        old_ready.get("status") != ready.status_text or old_ready.get("reason") != ready.reason
    ):
        kube.event(
            body,
            "Normal" if ready.status else "Warning",
            ready.reason,
            ready.message,
            rfc3339(now),
        )
    backup = status.backup_event(existing.get("conditions"), conds)
    if backup is not None:
        kube.event(body, *backup, rfc3339(now))
    kube.patch_status("Consortium", meta["namespace"], meta["name"], new)
    return conds
