"""Governance and code upgrades in a pass: relay every Proposal, propose what the spec and the
Member CRs still need (``intents.py``), choose the image the nodes may run, and replace one
outdated node when the consortium is settled (``upgrade.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives import serialization

from consortium_node.governance import FINAL_STATES
from consortium_node.identity import keys
from consortium_node.identity.certs import load_certificate
from consortium_operator.api import metrics
from consortium_operator.consortium import upgrade
from consortium_operator.consortium.context import Pass, primary, retire
from consortium_operator.consortium.observation import Observation
from consortium_operator.members.reconcile import MemberView
from consortium_operator.proposals import intents as gov
from consortium_operator.proposals.relay import Relay, operator_signer

log = logging.getLogger("consortium_operator")


def _member_names(p: Pass, members: list[MemberView]) -> dict[str, str]:
    names = {m.spec.member_id: m.spec.name for m in members if m.spec is not None}
    if p.operator_identity is not None:
        cert = load_certificate(p.operator_identity[1])
        names[keys.member_id_of(cert.public_bytes(serialization.Encoding.DER))] = "operator"
    return names


def governance(
    p: Pass, obs: Observation, members: list[MemberView]
) -> tuple[Observation, list[upgrade.Asked]]:
    """Relay every Proposal CR, propose what the spec and Member CRs still need, and decide
    the image the nodes may run (``upgrade.node_image``); also what the spec still asks of
    the members, for ``roll`` and ``member_proposals`` later in the pass."""
    signer = operator_signer(p.kube, p.namespace, p.names.operator_secret)
    relay = Relay(p.kube, p.namespace, p.body, primary(p, obs), p.memory.relay, p.now, signer)
    bodies = relay.proposals()
    ledger = gov.LedgerGovernance.from_network(obs.network) if obs.network else None
    wanted: list[gov.Intent] = []
    if ledger is not None and obs.trusted_list is not None:
        verified = {c.node_id for c in obs.checks.values() if c.verified and c.node_id}
        specs = [m.spec for m in members if m.spec is not None]
        wanted = [
            *gov.member_intents(specs, ledger),
            *gov.policy_intents(p.spec, ledger, obs.trusted_list),
            *gov.trust_intents(obs.trusted_list, verified),
        ]
        relay.propose(wanted, {b["metadata"]["name"]: b for b in bodies})
    names = _member_names(p, members)
    statuses = {}
    for body in bodies:
        name = body["metadata"]["name"]
        if _settled(body):  # decided, receipt kept, spec unchanged since: nothing to ask
            statuses[name] = body["status"]
            continue
        try:
            statuses[name] = relay.mirror(body, relay.relay(body), names)
        except Exception as exc:  # one Proposal must not stop the Consortium's reconcile
            metrics.RECONCILE_ERRORS.labels(
                p.namespace, p.spec.name, "Proposal", type(exc).__name__
            ).inc()
            log.exception("%s/%s: relaying Proposal %s failed", p.namespace, p.spec.name, name)
            statuses[name] = body.get("status") or {}
    asked = upgrade.asked_for(
        {i.cr_name(p.spec.name): (i.category, i.subject) for i in wanted}, statuses
    )
    live = p.live("StatefulSet", p.names.statefulset)
    image = upgrade.node_image(
        p.spec.image, _container_image(live), obs.service_certificate_pem is not None, asked
    )
    obs = replace(obs, running_image=image, waiting_proposals=tuple(a.name for a in asked))
    return obs, asked


def _settled(proposal: Mapping[str, Any]) -> bool:
    st = proposal.get("status") or {}
    return (
        st.get("state") in FINAL_STATES
        and "receipt" in st
        and st.get("observedGeneration") == proposal["metadata"].get("generation")
    )


def _container_image(workload: Mapping[str, Any] | None) -> str | None:
    """The node container's image in a StatefulSet or Pod (None if there is none)."""
    if workload is None:
        return None
    spec = workload.get("spec") or {}
    pod_spec = spec.get("template", {}).get("spec") if "template" in spec else spec
    for container in (pod_spec or {}).get("containers", []):
        if container.get("name") == "node":
            return str(container.get("image"))
    return None


def member_proposals(asked: Sequence[upgrade.Asked]) -> dict[str, str]:
    """Member name → what its add-member proposal waits for (for its Active condition)."""
    out = {}
    for a in asked:
        if a.category == "add-member":
            votes = f", {a.votes} approvals" if a.votes else ""
            out[a.subject] = f"Proposal {a.name} is {a.state}{votes}"
    return out


def roll(p: Pass, obs: Observation, asked: Sequence[upgrade.Asked]) -> Observation:
    """Replace one outdated pod when the consortium is settled; decide UpToDate."""
    if obs.service_certificate_pem is None or obs.running_image is None or obs.network is None:
        return obs
    trusted = set(obs.trusted_pods())
    pods = {x["metadata"]["name"]: x for x in p.pods}
    facts = []
    for view in obs.pods:  # the views observe made of p.pods
        pod, check = pods[view.name], obs.checks.get(view.name)
        facts.append(
            upgrade.PodFacts(
                name=view.name,
                ordinal=view.ordinal,
                image=_container_image(pod) or "",
                revision=pod["metadata"].get("labels", {}).get("controller-revision-hash"),
                ready=view.ready,
                deleting=view.deleting,
                node_id=check.node_id if check is not None else None,
                trusted=view.name in trusted,
            )
        )
    sts = p.live("StatefulSet", p.names.statefulset) or {}
    revision = (sts.get("status") or {}).get("updateRevision")
    lst = obs.trusted_list
    step = upgrade.next_step(
        facts,
        template_image=obs.running_image,
        update_revision=revision,
        desired=p.spec.nodes,
        primary=obs.primary,
        list_published=lst is not None and obs.published_version == lst.version,
    )
    entry = obs.current_entries().get(step.pod) if step is not None else None
    if step is not None and step.action == "retire" and entry is not None:
        retire(p, obs, entry, why=f"replaced by a node running {obs.running_image}")
    elif step is not None and step.action == "delete":
        p.event("Normal", "NodeRestarted", f"{step.pod}: the pod template changed; restarting")
        p.kube.delete("Pod", p.namespace, step.pod, uid=pods[step.pod]["metadata"]["uid"])
    cond = upgrade.up_to_date(asked, facts, obs.running_image, p.spec.nodes, revision)
    return replace(obs, up_to_date=cond)
