"""The facts one reconcile pass gathers, owned by the pass: what each pod's status says
(``PodView``), what the operator verified (``NodeCheck``, from ``nodes.verify``) and everything
observed of the ledger (``Observation``). Steps add to an ``Observation`` with
``dataclasses.replace``; ``status`` decides conditions from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from consortium_node.identity.trusted_list import NodeEntry, NodeStatus, TrustedNodeList
from consortium_operator.api import conditions as c
from consortium_operator.api.names import Names
from consortium_operator.api.spec import SpecError
from consortium_operator.nodes.client import BackupReport
from consortium_operator.nodes.verify import NodeCheck

__all__ = ["BackupFacts", "NodeCheck", "Observation", "PodView"]


@dataclass(frozen=True)
class PodView:
    """What the operator needs from one node pod's status."""

    name: str
    ordinal: int
    ip: str | None = None
    ready: bool = False
    waiting_reason: str | None = None
    waiting_message: str | None = None
    last_termination_message: str | None = None
    restarts: int = 0
    deleting: bool = False

    @classmethod
    def of(cls, pod: Mapping[str, Any], names: Names) -> PodView | None:
        """The view of one pod of the StatefulSet; None for a pod that is not one of its
        ordinals."""
        ordinal = names.ordinal_of(pod["metadata"]["name"])
        if ordinal is None:
            return None
        st = pod.get("status") or {}
        ready = any(
            cond.get("type") == "Ready" and cond.get("status") == "True"
            for cond in st.get("conditions", [])
        )
        waiting_reason = waiting_message = last = None
        restarts = 0
        for cs in st.get("containerStatuses") or []:
            restarts += int(cs.get("restartCount", 0))
            waiting = (cs.get("state") or {}).get("waiting") or {}
            waiting_reason = waiting.get("reason") or waiting_reason
            waiting_message = waiting.get("message") or waiting_message
            term = (cs.get("lastState") or {}).get("terminated") or (cs.get("state") or {}).get(
                "terminated"
            )
            if term:
                last = term.get("message") or last
        return cls(
            name=pod["metadata"]["name"],
            ordinal=ordinal,
            ip=st.get("podIP"),
            ready=ready,
            waiting_reason=waiting_reason,
            waiting_message=waiting_message,
            last_termination_message=last,
            restarts=restarts,
            deleting=pod["metadata"].get("deletionTimestamp") is not None,
        )


@dataclass(frozen=True)
class BackupFacts:
    """With ``spec.backup``: its credentials Secret and what the primary says of its backups."""

    secret: str  # spec.backup.s3.credentialsSecret
    max_lag_seconds: float | None = None  # spec.backup.maxLag (mode Continuous)
    secret_found: bool | None = None  # None: not known (the read failed)
    report: BackupReport | None = None  # the primary's GET /node/backup
    reporter: str | None = None  # the pod that answered
    error: str | None = None  # why there is no report (no primary, no answer)


@dataclass(frozen=True)
class Observation:
    consortium: str
    generation: int
    now: datetime
    desired: int
    spec_error: SpecError | None = None
    image: str = ""
    pods: tuple[PodView, ...] = ()
    service_certificate_pem: str | None = None
    service_certificate_sha256: str | None = None
    trusted_list: TrustedNodeList | None = None
    list_sha256: str | None = None
    list_error: str | None = None
    published_version: int | None = None
    checks: Mapping[str, NodeCheck] = field(default_factory=dict)  # pod name → check
    renewal_failures: Mapping[str, str] = field(default_factory=dict)  # node_id → reason
    primary: str | None = None
    term: int | None = None
    commit_index: int | None = None
    snapshot: Mapping[str, Any] | None = None  # the primary's newest committed {index, txid}
    recovery: Mapping[str, Any] | None = None  # the primary's recovery record summary
    ledger_members: Mapping[str, str] | None = None  # member_id → status in the ledger
    envelope: bytes | None = None  # the verified COSE list
    network: Mapping[str, Any] | None = None  # the primary's /node/network (ledger decisions)
    up_to_date: c.Condition | None = None  # decided by upgrade.py once bootstrapped
    running_image: str | None = None  # the StatefulSet's image (spec.image once approved)
    waiting_proposals: tuple[str, ...] = ()  # operator Proposal CRs the spec waits for
    allowed_measurements: tuple[str, ...] = ()  # spec.attestation.measurements
    platform: str = ""  # spec.attestation.platform
    platform_insecure: bool = False  # an emulation: anyone with its root Secret forges nodes
    member_resources: int = 0  # Member objects bound to this Consortium
    ledger_roles: Mapping[str, str] | None = None  # member_id → role, from the ledger
    backup: BackupFacts | None = None  # None: no spec.backup (or not observed: invalid spec)
    service_phase: str | None = None  # the primary's (``GET /node/state``); None: not read
    recovery_source: str | None = None  # spec.recovery's bucket, s3://bucket/prefix
    ceremony: Mapping[str, Any] | None = None  # GET /recovery (``recovering``), while relevant
    # pod name → the node's ``ledger_repair`` (GET /node/state) where it found a storage fault
    ledger_repairs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def current_entries(self) -> dict[str, NodeEntry]:
        """Per pod name, the list entry of the node running there now.

        The node the operator saw in the pod (by its quote) wins; else a non-Retired entry of
        that name; else the most recently attested Retired one.
        """
        by_name: dict[str, list[NodeEntry]] = {}
        for entry in self.trusted_list.nodes if self.trusted_list else ():
            by_name.setdefault(entry.name, []).append(entry)
        out: dict[str, NodeEntry] = {}
        for name, entries in by_name.items():
            check = self.checks.get(name)
            seen = [e for e in entries if check is not None and e.node_id == check.node_id]
            live = [e for e in entries if e.status is not NodeStatus.RETIRED]
            newest = sorted(entries, key=lambda e: e.attested_at)
            out[name] = (seen or live or newest)[-1]
        return out

    def not_retired_above(self, current: int) -> list[NodeEntry]:
        """Scale-down from ``current`` pods: the entries of ordinals ``desired``…``current - 1``
        whose node is not Retired yet, highest ordinal first."""
        names, entries = Names(self.consortium), self.current_entries()
        pending = []
        for ordinal in range(current - 1, self.desired - 1, -1):
            entry = entries.get(names.pod(ordinal))
            if entry is not None and entry.status is not NodeStatus.RETIRED:
                pending.append(entry)
        return pending

    def trusted_pods(self) -> list[str]:
        """Pods (ordinal < desired) running a node that is Trusted, unexpired and verified."""
        names = Names(self.consortium)
        out = []
        for name, entry in self.current_entries().items():
            ordinal = names.ordinal_of(name)
            check = self.checks.get(name)
            if (
                ordinal is not None
                and ordinal < self.desired
                and entry.is_trusted(self.now)
                and check is not None
                and check.verified
                and check.node_id == entry.node_id
            ):
                out.append(name)
        return sorted(out, key=lambda n: names.ordinal_of(n) or 0)
