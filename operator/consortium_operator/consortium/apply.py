"""Pass step: write what differs — the ConfigMaps (node configuration, peers, service
identity, the verified trusted-node list), Services, PodDisruptionBudget, NetworkPolicy and
the StatefulSet — then heal what a corrected spec would heal (``_unstick``) and remove the
volumes of ordinals scaled away. Building is pure (``kube.builders``); this step only
compares and applies. Retiring nodes before a scale-down is ``lifecycle``'s, not this step's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from consortium_operator.consortium import status
from consortium_operator.consortium.context import Pass
from consortium_operator.consortium.observation import Observation, PodView
from consortium_operator.kube import builders
from consortium_operator.members.reconcile import MemberView


def replicas(p: Pass, obs: Observation) -> int:
    """1 until bootstrapped, and while a recovered service is not open yet; a scale-down
    waits until the extra nodes are Retired (``lifecycle.retire_scaled_away`` retires them,
    one at a time)."""
    sts = p.live("StatefulSet", p.names.statefulset)
    current = int((sts or {}).get("spec", {}).get("replicas") or 1)
    if obs.service_certificate_pem is None:
        return 1
    if obs.service_phase not in (None, "Open"):  # a recovery: one node until it is opened
        return 1
    if p.spec.nodes >= current:
        return p.spec.nodes
    if obs.trusted_list is None:
        return current
    return current if obs.not_retired_above(current) else p.spec.nodes


def apply(p: Pass, obs: Observation, members: list[MemberView]) -> Observation:
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
        replace(spec, image=image), ns, uid, replicas(p, obs), p.settings.cluster_domain
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
        view = PodView.of(pod, p.names)
        revision = pod["metadata"].get("labels", {}).get("controller-revision-hash")
        if view is None or view.ready or view.deleting:
            continue
        outdated = (update is not None and revision != update) or config_changed
        if outdated and view.waiting_reason in (*status.IMAGE_FAILURES, "CrashLoopBackOff"):
            p.kube.delete("Pod", p.namespace, view.name, uid=pod["metadata"]["uid"])


def _cleanup_claims(p: Pass, obs: Observation) -> None:
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
