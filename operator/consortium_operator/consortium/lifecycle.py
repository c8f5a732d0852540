"""Pass step: the nodes' lifecycle the operator drives through the primary — retire the
nodes of ordinals a scale-down removes (one configuration change at a time), ask for
re-attestation of nodes in their renewal window, and replace the pod of a node that was
Retired (a fresh pod gets a fresh identity).
"""

from __future__ import annotations

from consortium_node.identity.trusted_list import NodeStatus
from consortium_operator.consortium.context import Pass, ask_primary, retire
from consortium_operator.consortium.observation import Observation


def retire_scaled_away(p: Pass, obs: Observation) -> None:
    """Scale-down: retire the highest ordinal above ``spec.nodes`` that is not Retired yet
    (one configuration change at a time); the StatefulSet shrinks once all are Retired."""
    sts = p.live("StatefulSet", p.names.statefulset)
    current = int((sts or {}).get("spec", {}).get("replicas") or 1)
    if obs.service_certificate_pem is None or obs.trusted_list is None or p.spec.nodes >= current:
        return
    pending = obs.not_retired_above(current)
    if pending:
        retire(p, obs, pending[0])


def reattest_due(p: Pass, obs: Observation) -> None:
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


def replace_retired(p: Pass, obs: Observation) -> None:
    """A pod whose node was Retired (failed attestation) gets a new pod: fresh identity.

    The new pod sees itself Retired in the published list and starts afresh (its old data
    is kept aside on the volume, see the node's ``server/startup.py``)."""
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
