"""What happens when a Consortium or a Member is deleted (the kopf finalizers call these).

A Consortium: honour ``spec.storage.retainOnDelete`` (keep the ledger volumes and the
platform's endorsements Secret, released from the Consortium so garbage collection leaves
them) or delete the volumes; everything else goes by garbage collection. A Member deleted
after bootstrap: its removal becomes a Proposal for the members (the ledger changes only if
the governors accept it).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import Any

from consortium_node.common.timeutil import rfc3339, utcnow
from consortium_operator.api.names import Names
from consortium_operator.api.spec import SpecError, parse_consortium
from consortium_operator.kube import builders
from consortium_operator.kube.k8s import Kube
from consortium_operator.members.reconcile import MemberView
from consortium_operator.proposals.relay import operator_signer, propose_removal

log = logging.getLogger("consortium_operator")


class NotYetError(Exception):
    """The removal cannot be proposed yet (the operator's member identity is not created)."""


def propose_member_removal(
    k: Kube, body: Mapping[str, Any], ledger_members: frozenset[str] | None
) -> str | None:
    """Propose the removal of a deleted Member; returns the Proposal's name, or None when
    there is nothing to propose (never bootstrapped, never in the ledger, or going away with
    its Consortium); ``NotYetError`` when it cannot be proposed yet.
    ``ledger_members``: the member ids the ledger held when last read (None: unknown)."""
    namespace = body["metadata"].get("namespace") or ""
    view = MemberView.of(body)
    consortium = view.bound  # the ledger that holds it, even if spec.consortium was changed
    if view.spec is None or consortium is None:
        return None
    if k.namespace_terminating(namespace):
        return None  # its Consortium and ledger go with the namespace: nobody to propose to
    target = k.get("Consortium", namespace, consortium)
    if (
        target is None
        or target["metadata"].get("deletionTimestamp")
        or not (target.get("status") or {}).get("serviceCertificate")
    ):
        return None  # not bootstrapped, or going away with its ledger
    if ledger_members is not None and view.spec.member_id not in ledger_members:
        return None  # never reached the ledger: its add-member proposal is withdrawn instead
    signer = operator_signer(k, namespace, Names(consortium).operator_secret)
    name = propose_removal(
        k, target, view.spec, signer, utcnow(), uid=body["metadata"].get("uid") or ""
    )
    if name is None:
        raise NotYetError("the operator's member identity is not created yet")
    k.event(
        target,
        "Normal",
        "MemberRemovalProposed",
        f"Member {view.spec.name} ({view.spec.member_id[:16]}) was deleted; Proposal {name} "
        "asks the members to remove it from the ledger",
        rfc3339(utcnow()),
    )
    return name


def release_consortium(k: Kube, body: Mapping[str, Any]) -> None:
    """Honour ``spec.storage.retainOnDelete``; everything else goes by garbage collection."""
    meta = body["metadata"]
    namespace, name = meta.get("namespace") or "", meta.get("name") or ""
    if k.namespace_terminating(namespace):
        # The namespace takes the volumes and Secrets with it (retainOnDelete cannot keep
        # objects in a deleted namespace; a PersistentVolume with reclaimPolicy Retain keeps
        # the data). The operator's Role there may already be gone: touch nothing, release.
        log.info("%s/%s deleted with its namespace; releasing it", namespace, name)
        return
    names = Names(name)
    try:
        spec = parse_consortium(name, body.get("spec") or {})
        retain = spec.storage.retain_on_delete
    except SpecError:
        spec, retain = None, False
    selector = names.selector().items()
    claims = [
        c
        for c in k.list("PersistentVolumeClaim", namespace)
        if names.claim_ordinal(c["metadata"]["name"]) is not None
        or selector <= (c["metadata"].get("labels") or {}).items()
    ]
    if retain and spec is not None:
        # Sealed ledger data is useless without the platform root (chips derive from it):
        # keep the Secret too, released from the Consortium so GC leaves it.
        live = k.get("Secret", namespace, names.platform_secret)
        if live is not None:
            data = {key: base64.b64decode(value) for key, value in live["data"].items()}
            k.apply(builders.platform_secret(spec, namespace, None, data))
        log.info("%s/%s deleted; keeping %d ledger volume(s)", namespace, name, len(claims))
        return
    for claim in claims:
        k.delete("PersistentVolumeClaim", namespace, claim["metadata"]["name"])
    log.info("%s/%s deleted; removed %d ledger volume(s)", namespace, name, len(claims))
