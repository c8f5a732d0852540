"""What the members should be asked: the Kubernetes side versus the ledger, as proposals.

Member CRs and the Consortium spec say what the cluster's users *want*; the ledger says what the
members *decided*. After bootstrap the operator never changes the ledger itself. It turns each
difference into an ``Intent`` (one proposal's actions), signs it with its own member identity
(role ``operator``: it may propose and withdraw its own proposals, never vote) and puts it in a
``Proposal`` CR for the governors to vote on. Proposing decides nothing: only governors'
ballots, or an ``auto_approve`` the members wrote into their constitution, do.

Pure: spec, Member specs and ledger facts in; intents and Proposal manifests out. One intent
per concern, so members vote on one thing at a time:

====================  ====================================================  ========================
category              when                                                  actions
====================  ====================================================  ========================
add-member            a valid Member CR whose member_id the ledger lacks    add_member
recovery-key          a Member's spec.recoveryKey ≠ the ledger's            set_recovery_key
remove-member         a Member CR was deleted (``removal``, by finalizer)   remove_member
measurements          spec measurements the ledger lacks (a code upgrade)   add_measurement
retire-measurements   ledger measurements not in the spec, run by no node   remove_measurement
host-data             spec host data (and the consortium's own) ≠ ledger's  add/remove_host_data
attestation-validity  spec validity/renewBefore ≠ ledger's                  set_attestation_validity
sev-snp-policy        spec.attestation.sevSnp policy ≠ the ledger's         set_sev_snp_policy
constitution          spec.governance (thresholds, autoTrustNodes) ≠ ledger  set_constitution
trust-node            a Pending node whose quote the operator verified      trust_node
====================  ====================================================  ========================

A Proposal CR's name is derived from its intent (category, subject, digest of the actions), so
the same difference never makes two proposals, and a changed one makes a new name (the old
proposal is then withdrawn, see ``relay.py``).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from consortium_node.common.canonical import canonical_json
from consortium_node.common.timeutil import rfc3339
from consortium_node.governance.constitution import parse_threshold
from consortium_node.governance.documents import sign_document
from consortium_node.governance.errors import GovernanceError
from consortium_node.identity.keys import PrivateKey
from consortium_node.identity.trusted_list import NodeStatus, TrustedNodeList
from consortium_node.recovery.record import pem_digest
from consortium_operator.api.names import API_VERSION, GROUP, LABEL_CONSORTIUM
from consortium_operator.api.spec import ConsortiumSpec, MemberSpec
from consortium_operator.kube.builders import owner_reference

LABEL_PROPOSED_BY = f"{GROUP}/proposed-by"
LABEL_INTENT = f"{GROUP}/intent"
ANNOTATION_WHY = f"{GROUP}/why"
# Intents the level-based pass owns (it may withdraw them when they no longer apply);
# removals come from the Member finalizer and stand until the members decide.
LEVEL_CATEGORIES = frozenset(
    {
        "add-member",
        "recovery-key",
        "measurements",
        "retire-measurements",
        "host-data",
        "attestation-validity",
        "sev-snp-policy",
        "constitution",
        "trust-node",
    }
)


@dataclass(frozen=True)
class LedgerGovernance:
    """What the ledger says the members decided (from a node's ``/node/network``)."""

    members: Mapping[str, tuple[str, str]]  # member_id → (role, status)
    policy: Mapping[str, Any]
    constitution: Mapping[str, Any]
    recovery_keys: Mapping[str, str] = field(default_factory=dict)  # member_id → key SHA-256

    @classmethod
    def from_network(cls, network: Mapping[str, Any]) -> LedgerGovernance | None:
        policy, constitution = network.get("attestation_policy"), network.get("constitution")
        if not isinstance(policy, Mapping) or not isinstance(constitution, Mapping):
            return None  # a node too old to say: propose nothing rather than guess
        members = {
            str(m["member_id"]): (str(m.get("role")), str(m.get("status")))
            for m in network.get("members", [])
            if isinstance(m, Mapping) and "member_id" in m
        }
        recovery = {
            str(m["member_id"]): str(m["recovery_key_sha256"])
            for m in network.get("members", [])
            if isinstance(m, Mapping) and "member_id" in m and m.get("recovery_key_sha256")
        }
        return cls(members, policy, constitution, recovery)

    def measurements(self) -> frozenset[str]:
        return frozenset(self.policy.get("measurements", ()))


@dataclass(frozen=True)
class Intent:
    category: str
    subject: str  # a Member or pod name; "" for consortium-wide concerns
    actions: tuple[Mapping[str, Any], ...]
    why: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(canonical_json(list(self.actions))).hexdigest()[:10]

    def cr_name(self, consortium: str) -> str:
        """``<consortium>-<category>[-<subject>]-<digest>``: a valid, stable object name."""
        head = "-".join(x for x in (consortium, self.category, self.subject) if x)
        # Cut where it fits; a cut that ends in "." or "-" would make "x.-digest" (invalid).
        return f"{head[: 253 - 11].rstrip('.-')}-{self.digest}"


def _action(name: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args}


def _key_sha256(pem: str | None) -> str:
    return pem_digest(pem) if pem else ""


def member_intents(members: Sequence[MemberSpec], ledger: LedgerGovernance) -> list[Intent]:
    out = []
    for m in sorted(members, key=lambda m: m.name):
        if m.member_id not in ledger.members:
            recovery = {"recovery_key": m.recovery_key_pem} if m.recovery_key_pem else {}
            out.append(
                Intent(
                    "add-member",
                    m.name,
                    (
                        _action(
                            "add_member", certificate=m.certificate_pem, role=m.role, **recovery
                        ),
                    ),
                    f"Member {m.name} ({m.role}) was created; the ledger does not know it yet",
                )
            )
        elif _key_sha256(m.recovery_key_pem) != ledger.recovery_keys.get(m.member_id, ""):
            said = "set" if m.recovery_key_pem else "removed"
            out.append(
                Intent(
                    "recovery-key",
                    m.name,
                    (
                        _action(
                            "set_recovery_key",
                            member_id=m.member_id,
                            recovery_key=m.recovery_key_pem,
                        ),
                    ),
                    f"Member {m.name}'s spec.recoveryKey was {said}; the ledger holds "
                    + ("another" if ledger.recovery_keys.get(m.member_id) else "none"),
                )
            )
    return out


def removal(member: MemberSpec, uid: str = "") -> Intent:
    """The proposal a deleted Member CR stands for (the finalizer creates it). ``uid`` (the
    deleted object's) keeps the name apart from an earlier Member of the same name."""
    return Intent(
        "remove-member",
        f"{member.name}-{uid[:8]}" if uid else member.name,
        (_action("remove_member", member_id=member.member_id),),
        f"Member {member.name} was deleted",
    )


def policy_intents(
    spec: ConsortiumSpec, ledger: LedgerGovernance, nodes: TrustedNodeList | None
) -> list[Intent]:
    out: list[Intent] = []
    allowed = ledger.measurements()
    missing = sorted(set(spec.attestation.measurements) - allowed)
    if missing:
        out.append(
            Intent(
                "measurements",
                "",
                tuple(_action("add_measurement", measurement=m) for m in missing),
                "spec.attestation.measurements lists code the ledger does not allow yet "
                "(a code upgrade): " + ", ".join(m[:12] for m in missing),
            )
        )
    running = (
        {e.measurement for e in nodes.nodes if e.status is not NodeStatus.RETIRED}
        if (nodes is not None)
        else set(allowed)
    )  # without a verified list nothing is known to be unused
    unused = sorted(allowed - set(spec.attestation.measurements) - running)
    if unused:
        out.append(
            Intent(
                "retire-measurements",
                "",
                tuple(_action("remove_measurement", measurement=m) for m in unused),
                "measurements no longer in spec.attestation.measurements, run by no node: "
                + ", ".join(m[:12] for m in unused),
            )
        )
    want, have = set(spec.allowed_host_data()), set(ledger.policy.get("host_data", ()))
    host = [_action("add_host_data", host_data=h) for h in sorted(want - have)]
    host += [_action("remove_host_data", host_data=h) for h in sorted(have - want)]
    if host:
        out.append(Intent("host-data", "", tuple(host), "spec.attestation.hostData changed"))
    validity = int(spec.attestation.validity.total_seconds())
    renew = int(spec.attestation.renew_before.total_seconds())
    if (validity, renew) != (
        int(ledger.policy.get("validity_seconds", validity)),
        int(ledger.policy.get("renew_before_seconds", renew)),
    ):
        out.append(
            Intent(
                "attestation-validity",
                "",
                (
                    _action(
                        "set_attestation_validity",
                        validity_seconds=validity,
                        renew_before_seconds=renew,
                    ),
                ),
                "spec.attestation.validity/renewBefore changed",
            )
        )
    snp = spec.attestation.sev_snp
    recorded = ledger.policy.get("platform", {}).get("sev-snp")
    if snp is not None and recorded is not None and dict(snp.policy) != recorded:
        out.append(
            Intent(
                "sev-snp-policy",
                "",
                (_action("set_sev_snp_policy", policy=dict(snp.policy)),),
                "spec.attestation.sevSnp changed (minimumTcb/allowDebug/vmpl/products)",
            )
        )
    current = dict(ledger.constitution)
    try:
        threshold = parse_threshold(current.get("threshold", "majority"))
    except (ValueError, GovernanceError):  # not a valid threshold: a difference to propose
        threshold = current.get("threshold", "majority")
    auto_trust = current.get("auto_trust_nodes", True)
    recovery = current.get("recovery_threshold", "majority")
    if (threshold, auto_trust, recovery) != (
        spec.threshold,
        spec.auto_trust_nodes,
        spec.recovery_threshold,
    ):
        wanted = {
            **current,
            "threshold": spec.threshold,
            "auto_trust_nodes": spec.auto_trust_nodes,
            "recovery_threshold": spec.recovery_threshold,
        }
        out.append(
            Intent(
                "constitution",
                "",
                (_action("set_constitution", constitution=wanted),),
                "spec.governance changed (threshold/autoTrustNodes/recoveryThreshold)",
            )
        )
    return out


def trust_intents(nodes: TrustedNodeList | None, verified: Iterable[str]) -> list[Intent]:
    """Pending nodes (automatic trust off) whose quote the operator itself verified."""
    ok = set(verified)
    return [
        Intent(
            "trust-node",
            e.name,
            (_action("trust_node", node_id=e.node_id),),
            f"node {e.name} ({e.node_id[:16]}) joined with a verified quote and waits for trust",
        )
        for e in (nodes.nodes if nodes is not None else ())
        if e.status is NodeStatus.PENDING and e.node_id in ok
    ]


# ---------------------------------------------------------------------- documents and manifest
def proposal_document(
    key: PrivateKey, certificate_pem: str, consortium: str, intent: Intent, now: datetime
) -> bytes:
    """The proposal, signed with the operator's member key (COSE_Sign1, documents.py)."""
    payload = {
        "type": "proposal",
        "consortium": consortium,
        "created_at": rfc3339(now.replace(microsecond=0)),
        "actions": [dict(a) for a in intent.actions],
    }
    return sign_document(key, certificate_pem, payload)


def withdrawal_document(
    key: PrivateKey, certificate_pem: str, consortium: str, proposal_id: str
) -> bytes:
    payload = {"type": "withdrawal", "consortium": consortium, "proposal_id": proposal_id}
    return sign_document(key, certificate_pem, payload)


def proposal_manifest(
    consortium: str,
    namespace: str,
    owner_uid: str,
    intent: Intent,
    document: bytes,
) -> dict[str, Any]:
    """A whole Proposal CR for an operator intent, owned by the Consortium."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Proposal",
        "metadata": {
            "name": intent.cr_name(consortium),
            "namespace": namespace,
            "labels": {
                LABEL_CONSORTIUM: consortium,
                LABEL_PROPOSED_BY: "operator",
                LABEL_INTENT: intent.category,
            },
            "annotations": {ANNOTATION_WHY: intent.why},
            "ownerReferences": [owner_reference(consortium, owner_uid)],
        },
        "spec": {
            "consortium": consortium,
            "proposal": base64.b64encode(document).decode("ascii"),
        },
    }
