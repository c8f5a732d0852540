"""What one reconcile pass works with: settings, the memory kept between passes, the facts of
this pass, and the two requests the operator's member identity makes of the primary.

Every step of the pass (``observe``, ``governing``, ``apply``, ``lifecycle``, ``report``…)
takes a ``Pass``; it lives below them so that steps never import one another's modules for it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from consortium_node.common.timeutil import rfc3339
from consortium_operator.api.names import Names
from consortium_operator.api.spec import ConsortiumSpec
from consortium_operator.consortium.observation import NodeCheck, Observation
from consortium_operator.kube.k8s import Kube
from consortium_operator.nodes.client import NodeClient, NodeUnreachableError, Reply
from consortium_operator.proposals.relay import Primary, RelayMemory

log = logging.getLogger("consortium_operator")


@dataclass(frozen=True)
class Settings:
    cluster_domain: str = "cluster.local"
    insecure_test_faults: bool = False
    reverify_after: float = 60.0  # re-check a pod's quote at least this often (seconds)


@dataclass(frozen=True)
class CachedCheck:
    """The operator's last verification of one pod's quote, kept between passes."""

    pod_uid: str  # the pod it was made on: a replacement pod of the same name starts afresh
    at: float  # time.monotonic() when it was made (0.0: the pod did not answer)
    check: NodeCheck


@dataclass
class Memory:
    """What the operator remembers about one Consortium between passes (not persisted)."""

    checks: dict[str, CachedCheck] = field(default_factory=dict)  # pod name →
    trust: dict[str, tuple[str, str]] | None = None  # node_id → (status, attested_at)
    refused: set[tuple[str, str]] = field(default_factory=set)  # (pod uid, reason)
    failures: dict[str, str] = field(default_factory=dict)
    known: dict[str, str] = field(default_factory=dict)  # pod uid → node_id last verified there
    due: float = 0.0  # time.monotonic() at which the next pass is wanted
    pokes: int = 0  # watch events that asked for a pass (counted, so none is lost mid-pass)
    relay: RelayMemory = field(default_factory=RelayMemory)
    allowed: frozenset[str] = frozenset()  # measurements the ledger allowed when last read
    ledger_members: frozenset[str] | None = None  # member ids in the ledger when last read
    retired_by_us: set[str] = field(default_factory=set)  # node ids retired on our request
    repairs: dict[tuple[str, str], str] | None = None  # (pod, damage) → state last reported

    def poke(self) -> None:
        """A watch event: a pass is due now. A pass already running when the event came
        is followed by another (``schedule``), as it may have read the old state."""
        self.pokes += 1
        self.due = 0.0

    def schedule(self, now: float, delay: float, pokes_at_start: int) -> None:
        """After a pass: the next in ``delay`` seconds, or at once if poked meanwhile."""
        self.due = 0.0 if self.pokes != pokes_at_start else now + delay


@dataclass
class Pass:
    """Facts gathered during one pass."""

    kube: Kube
    body: Mapping[str, Any]
    spec: ConsortiumSpec
    memory: Memory
    settings: Settings
    now: datetime
    namespace: str
    uid: str
    names: Names
    pods: list[dict[str, Any]] = field(default_factory=list)
    endorsements: dict[str, bytes] = field(default_factory=dict)  # the platform's public files
    operator_identity: tuple[bytes, bytes] | None = None

    _live: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)

    def event(self, type_: str, reason: str, message: str) -> None:
        """An Event on the Consortium, and the same line in the operator's log."""
        level = logging.WARNING if type_ == "Warning" else logging.INFO
        log.log(level, "%s/%s %s: %s", self.namespace, self.names.consortium, reason, message)
        self.kube.event(self.body, type_, reason, message, rfc3339(self.now))

    def live(self, kind: str, name: str) -> dict[str, Any] | None:
        """The live object, read at most once per pass (later steps compare against it)."""
        key = (kind, name)
        if key not in self._live:
            self._live[key] = self.kube.get(kind, self.namespace, name)
        return self._live[key]

    def pod_ips(self) -> dict[str, str]:
        """Pod name → IP of this Consortium's pods that have one."""
        return {
            x["metadata"]["name"]: x["status"]["podIP"]
            for x in self.pods
            if (x.get("status") or {}).get("podIP")
        }

    def fqdn(self, pod: str) -> str:
        return self.names.pod_fqdn(pod, self.namespace, self.settings.cluster_domain)


def primary(p: Pass, obs: Observation, timeout: float | None = None) -> Primary | None:
    """The primary, to ask as the operator; None while no primary with an IP is known or the
    service certificate is not (the next pass tries again). ``timeout``: the client's, if not
    its default."""
    ip = p.pod_ips().get(obs.primary) if obs.primary else None
    if obs.primary is None or not ip or obs.service_certificate_pem is None:
        return None
    extra = {} if timeout is None else {"timeout": timeout}
    client = NodeClient(obs.service_certificate_pem, p.operator_identity, **extra)
    return Primary(client, ip, p.fqdn(obs.primary))


def ask_primary(
    p: Pass, obs: Observation, path: str, body: Mapping[str, Any], timeout: float
) -> Reply | None:
    """POST to the primary as the operator (a member with role ``operator``); None if no
    primary is known or it did not answer (logged; the next pass tries again)."""
    target = primary(p, obs, timeout)
    if target is None:
        return None
    try:
        return target.client.request(target.ip, target.server_name, "POST", path, dict(body))
    except NodeUnreachableError as exc:
        log.warning("%s on the primary: %s", path, exc)
        return None


def retire(p: Pass, obs: Observation, entry: Any, why: str = "scale-down") -> None:
    reply = ask_primary(p, obs, "/gov/nodes/retire", {"node_id": entry.node_id}, timeout=15)
    if reply is None:
        return
    if reply.status == 200:
        p.memory.retired_by_us.add(entry.node_id)  # its Event is this one, not a Warning later
        p.event("Normal", "NodeRetired", f"{entry.name} ({entry.node_id[:16]}) retired: {why}")
    else:
        log.warning("retiring %s: HTTP %d %s", entry.name, reply.status, reply.body[:200])
