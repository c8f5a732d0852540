"""One reconcile pass over one Consortium: observe → verify → build → apply → status.

Thin by design: the decisions live in ``builders`` (manifests), ``status`` (conditions) and
``verify`` (quotes, lists); this module sequences them and talks to the pods. Writes happen
only when something differs (``Kube.apply_if_changed``, status compared before patching), so a
pass over a healthy Consortium makes no API writes at all.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from consortium_node.attestation import VirtualPlatform
from consortium_node.common.timeutil import rfc3339, utcnow
from consortium_node.identity import keys
from consortium_node.identity.certs import (
    certificate_pem,
    self_signed_certificate,
)
from consortium_node.identity.trusted_list import NodeStatus
from consortium_operator import builders, conditions, metrics, status
from consortium_operator.acks import relay_acks
from consortium_operator.context import Memory, Pass, Settings, ask_primary, retire
from consortium_operator.governing import governance, member_proposals, roll
from consortium_operator.k8s import Kube
from consortium_operator.members import MemberView, reconcile_members
from consortium_operator.names import Names
from consortium_operator.observe import observe, pod_view
from consortium_operator.spec import SpecError, parse_consortium

log = logging.getLogger("consortium_operator")

FAST = 2.0
SLOW = float(os.environ.get("CONSORTIUM_OPERATOR_RESYNC_SECONDS", "30"))
# Ready, but the members are expected to act where no watch event tells the operator (a ballot
# or an ack sent straight to a node): look again soon, so the Member and Proposal resources
# follow the ledger within seconds.
AWAITING_MEMBERS = min(5.0, SLOW)


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
        obs = status.Observation(name, generation, now, 0, spec_error=exc)
        _write_status(kube, body, obs, now, invalid=True)
        reconcile_members(kube, bound, body, None)
        return SLOW
    bootstrapped = (body.get("status") or {}).get("serviceCertificate") is not None
    governors = [m for m in members if m.spec is not None and m.spec.role == "governor"]
    if not governors and not bootstrapped:
        obs = status.Observation(
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
        _write_status(kube, body, obs, now, invalid=True, reason=conditions.NO_GOVERNOR)
        reconcile_members(kube, bound, body, None)
        return FAST
    p = Pass(kube, body, spec, memory, settings, now, namespace, uid, Names(name))
    _secrets(p)
    p.pods = kube.list("Pod", namespace, p.names.selector())
    obs = replace(observe(p, generation), member_resources=len(bound))
    obs, asked = governance(p, obs, members)
    obs = relay_acks(p, obs, members)  # before status: a relayed ack shows at once
    obs = _apply(p, obs, members)
    _rotate(p, obs)
    _replace_retired(p, obs)
    obs = roll(p, obs, asked)
    _events(p, obs)
    _metrics(p, obs)
    conds = _write_status(kube, body, obs, now)
    reconcile_members(kube, bound, body, obs.ledger_members, member_proposals(asked))
    ready = conditions.find(conds, conditions.READY)
    if ready is None or not ready.status:
        return FAST
    return AWAITING_MEMBERS if _awaits_members(obs, members) else SLOW


def _awaits_members(obs: status.Observation, members: list[MemberView]) -> bool:
    """An operator proposal is open, or a Member was accepted and has not acknowledged."""
    ledger = obs.ledger_members or {}
    return bool(obs.waiting_proposals) or any(
        m.spec is not None and ledger.get(m.spec.member_id) == "Accepted" for m in members
    )


# ---------------------------------------------------------------------- secrets
def _secrets(p: Pass) -> None:
    """Create the platform root and the operator's identity once; never replace them."""
    live = p.kube.get("Secret", p.namespace, p.names.platform_secret)
    if live is None:
        platform = VirtualPlatform.generate()
        manifest = builders.platform_secret(
            p.spec, p.namespace, p.uid, platform.root_key_pem(), platform.root_certificate_pem
        )
        live = p.kube.apply(manifest)
        p.event("Normal", "PlatformRootCreated", "created the insecure-virtual platform root")
    p.platform_root = base64.b64decode(live["data"]["root.pem"])
    live = p.kube.get("Secret", p.namespace, p.names.operator_secret)
    if live is None:
        key = keys.generate_key("p256")
        cert = self_signed_certificate(key, f"consortium-operator {p.spec.name}")
        manifest = builders.operator_secret(
            p.spec,
            p.namespace,
            p.uid,
            keys.private_key_pem(key),
            certificate_pem(cert).encode(),
        )
        live = p.kube.apply(manifest)
    data = live["data"]
    p.operator_identity = (base64.b64decode(data["tls.key"]), base64.b64decode(data["tls.crt"]))


# ---------------------------------------------------------------------- apply
def _replicas(p: Pass, obs: status.Observation) -> int:
    """1 until bootstrapped; scale-down waits until the extra nodes are Retired."""
    sts = p.live("StatefulSet", p.names.statefulset)
    current = int((sts or {}).get("spec", {}).get("replicas") or 1)
    if obs.service_certificate_pem is None:
        return 1
    if p.spec.nodes >= current:
        return p.spec.nodes
    if obs.trusted_list is None:
        return current
    entries = obs.current_entries()
    pending = []
    for ordinal in range(current - 1, p.spec.nodes - 1, -1):
        entry = entries.get(p.names.pod(ordinal))
        if entry is not None and entry.status is not NodeStatus.RETIRED:
            pending.append(entry)
    if not pending:
        return p.spec.nodes
    retire(p, obs, pending[0])  # one configuration change at a time, highest ordinal first
    return current


def _apply(p: Pass, obs: status.Observation, members: list[MemberView]) -> status.Observation:
    """Write what differs; the observation comes back with the list version now published
    (the status of this pass must not report a lag this pass just ended)."""
    spec, ns, uid, k = p.spec, p.namespace, p.uid, p.kube
    operator_cert = p.operator_identity[1].decode() if p.operator_identity else ""
    node_yaml = builders.node_config(
        spec,
        [m.spec for m in members if m.spec is not None],
        operator_cert,
        test_faults=p.settings.insecure_test_faults,
    )
    desired = [
        builders.config_map(spec, ns, uid, node_yaml),
        builders.headless_service(spec, ns, uid),
        builders.pod_disruption_budget(spec, ns, uid, k.pdb_api_version()),
        builders.network_policy(spec, ns, uid),
        builders.peers_config_map(spec, ns, uid, p.pod_ips(), p.settings.cluster_domain),
    ]
    if obs.service_certificate_pem is not None:
        desired.append(
            builders.service_identity_config_map(
                spec, ns, uid, obs.service_certificate_pem, obs.service_certificate_sha256 or ""
            )
        )
    if obs.trusted_list is not None and obs.envelope is not None:
        desired.append(
            builders.trusted_nodes_config_map(
                spec, ns, uid, obs.envelope, obs.trusted_list.to_json()
            )
        )
    config_changed = False
    for manifest in desired:
        meta = manifest["metadata"]
        live = p.live(manifest["kind"], meta["name"])
        sent = k.apply_if_changed(manifest, live)
        config_changed |= sent and meta["name"] == p.names.config and live is not None
        if sent and meta["name"] == p.names.trusted_nodes and obs.trusted_list is not None:
            version = obs.trusted_list.version
            obs = replace(obs, published_version=version)
            p.event(
                "Normal",
                "TrustedListPublished",
                f"trusted-node list version {version} published in ConfigMap {meta['name']}",
            )
    image = obs.running_image or spec.image
    sts = builders.statefulset(
        replace(spec, image=image), ns, uid, _replicas(p, obs), p.settings.cluster_domain
    )
    live_sts = p.live("StatefulSet", p.names.statefulset)
    if live_sts is not None:  # claim templates are immutable: keep the ones in place
        sts["spec"]["volumeClaimTemplates"] = [
            {
                "metadata": {"name": t["metadata"]["name"], "labels": t["metadata"].get("labels")},
                "spec": t["spec"],
            }
            for t in live_sts["spec"].get("volumeClaimTemplates", [])
        ]
    k.apply_if_changed(sts, live_sts)
    _unstick(p, live_sts, config_changed)
    _cleanup_claims(p, obs)
    return obs


def _unstick(p: Pass, sts: Mapping[str, Any] | None, config_changed: bool) -> None:
    """Delete broken pods that a fixed spec would heal: a StatefulSet rolling update waits
    forever for a pod that never became Ready, and a crash-looping pod would only see a
    corrected configuration after its back-off (minutes). Healthy pods are never touched."""
    if sts is None:
        return
    update = (sts.get("status") or {}).get("updateRevision")
    for pod in p.pods:
        view = pod_view(pod, p.names)
        revision = pod["metadata"].get("labels", {}).get("controller-revision-hash")
        if view is None or view.ready or view.deleting:
            continue
        outdated = (update is not None and revision != update) or config_changed
        if outdated and view.waiting_reason in (*status.IMAGE_FAILURES, "CrashLoopBackOff"):
            p.kube.delete("Pod", p.namespace, view.name, uid=pod["metadata"]["uid"])


def _cleanup_claims(p: Pass, obs: status.Observation) -> None:
    """Remove ledger volumes of ordinals scaled away (their nodes are Retired)."""
    live = {x["metadata"]["name"] for x in p.pods}
    for claim in p.kube.list("PersistentVolumeClaim", p.namespace, p.names.selector()):
        name = claim["metadata"]["name"]
        ordinal = p.names.claim_ordinal(name)
        if ordinal is None:
            continue
        deleting = claim["metadata"].get("deletionTimestamp") is not None
        if ordinal >= p.spec.nodes and p.names.pod(ordinal) not in live and not deleting:
            p.kube.delete("PersistentVolumeClaim", p.namespace, name)


# ---------------------------------------------------------------------- rotation
def _rotate(p: Pass, obs: status.Observation) -> None:
    """Ask the primary to re-attest nodes that entered their renewal window."""
    lst = obs.trusted_list
    if lst is None:
        return
    renew = p.spec.attestation.renew_before
    due = [
        e
        for e in lst.nodes
        if e.status is NodeStatus.TRUSTED and e.attestation_expires_at_datetime - p.now <= renew
    ]
    if not due:
        return
    reply = ask_primary(p, obs, "/node/reattest", {}, timeout=20)
    if reply is not None and reply.status == 200:
        answer = reply.json()
        p.memory.failures = dict(answer.get("failures", {}))


def _replace_retired(p: Pass, obs: status.Observation) -> None:
    """A pod whose node was Retired (failed attestation) gets a new pod: fresh identity.

    The new pod sees itself Retired in the published list and starts afresh (its old data
    is kept aside on the volume, see ``Node._set_aside_retired_identity``)."""
    if obs.trusted_list is None or obs.published_version != obs.trusted_list.version:
        return  # the pod must see the list that retires it
    for pod in p.pods:
        name = pod["metadata"]["name"]
        ordinal = p.names.ordinal_of(name)
        check = obs.checks.get(name)
        if ordinal is None or ordinal >= p.spec.nodes or check is None or check.node_id is None:
            continue
        entry = obs.trusted_list.node(check.node_id)
        deleting = pod["metadata"].get("deletionTimestamp") is not None
        if entry is not None and entry.status is NodeStatus.RETIRED and not deleting:
            p.event("Normal", "NodeReplaced", f"{name}: node was retired; replacing its pod")
            p.kube.delete("Pod", p.namespace, name, uid=pod["metadata"]["uid"])
            p.memory.checks.pop(name, None)


# ---------------------------------------------------------------------- events, metrics
def _events(p: Pass, obs: status.Observation) -> None:
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


def _metrics(p: Pass, obs: status.Observation) -> None:
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


# ---------------------------------------------------------------------- status
def _write_status(
    kube: Kube,
    body: Mapping[str, Any],
    obs: status.Observation,
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
    if conditions.without_transition_times(new) == conditions.without_transition_times(existing):
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
    kube.patch_status("Consortium", meta["namespace"], meta["name"], new)
    return conds
