"""One reconcile pass over one Consortium: observe → verify → build → apply → status.

Thin by design: the decisions live in ``builders`` (manifests), ``status`` (conditions) and
``verify`` (quotes, lists); this module sequences them and talks to the pods. Writes happen
only when something differs (``Kube.apply_if_changed``, status compared before patching), so a
pass over a healthy Consortium makes no API writes at all.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization

from consortium_node.attestation import VirtualPlatform
from consortium_node.common.timeutil import rfc3339, utcnow
from consortium_node.identity import keys
from consortium_node.identity.certs import (
    certificate_pem,
    certificate_sha256,
    load_certificate,
    self_signed_certificate,
)
from consortium_node.identity.trusted_list import NodeStatus
from consortium_operator import builders, conditions, metrics, status, upgrade, verify
from consortium_operator import intents as gov
from consortium_operator.k8s import Kube
from consortium_operator.members import MemberView, reconcile_members
from consortium_operator.names import Names
from consortium_operator.nodeclient import NodeClient, NodeUnreachableError, Reply
from consortium_operator.relay import Primary, Relay, RelayMemory, operator_signer
from consortium_operator.spec import ConsortiumSpec, SpecError, parse_consortium

log = logging.getLogger("consortium_operator")

FAST = 2.0
SLOW = float(os.environ.get("CONSORTIUM_OPERATOR_RESYNC_SECONDS", "30"))


@dataclass(frozen=True)
class Settings:
    cluster_domain: str = "cluster.local"
    insecure_test_faults: bool = False
    reverify_after: float = 60.0  # re-check a pod's quote at least this often (seconds)


@dataclass
class Memory:
    """What the operator remembers about one Consortium between passes (not persisted)."""

    checks: dict[str, tuple[str, float, status.NodeCheck]] = field(default_factory=dict)
    trust: dict[str, tuple[str, str]] | None = None  # node_id → (status, attested_at)
    refused: set[tuple[str, str]] = field(default_factory=set)  # (pod uid, reason)
    failures: dict[str, str] = field(default_factory=dict)
    known: dict[str, str] = field(default_factory=dict)  # pod uid → node_id last verified there
    due: float = 0.0
    relay: RelayMemory = field(default_factory=RelayMemory)
    allowed: frozenset[str] = frozenset()  # measurements the ledger allowed when last read
    ledger_members: frozenset[str] | None = None  # member ids in the ledger when last read
    asked: tuple[upgrade.Asked, ...] = ()  # operator proposals the spec waits for


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
    platform_root: bytes = b""
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


def reconcile_consortium(
    kube: Kube, body: Mapping[str, Any], memory: Memory, settings: Settings
) -> float:
    """Reconcile once; returns seconds until the next pass is wanted."""
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    generation = int(meta.get("generation", 0))
    now = utcnow()
    members = [m for m in MemberView.list(kube, namespace) if m.spec and m.spec.consortium == name]
    try:
        spec = parse_consortium(name, body.get("spec") or {})
    except SpecError as exc:
        obs = status.Observation(name, generation, now, 0, spec_error=exc)
        _write_status(kube, body, obs, now, invalid=True)
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
            members_total=len(members),
        )
        _write_status(kube, body, obs, now, invalid=True, reason=conditions.NO_GOVERNOR)
        return FAST
    p = Pass(kube, body, spec, memory, settings, now, namespace, uid, Names(name))
    _secrets(p)
    p.pods = kube.list("Pod", namespace, p.names.selector())
    obs = _observe(p, generation, members)
    obs = _governance(p, obs, members)
    _apply(p, obs, members)
    _rotate(p, obs)
    _replace_retired(p, obs)
    obs = _roll(p, obs)
    _events(p, obs)
    _metrics(p, obs)
    conds = _write_status(kube, body, obs, now)
    reconcile_members(kube, members, body, obs.ledger_members, _member_proposals(p))
    ready = conditions.find(conds, conditions.READY)
    return SLOW if ready is not None and ready.status else FAST


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


# ---------------------------------------------------------------------- observe
def _pod_view(pod: Mapping[str, Any], names: Names) -> status.PodView | None:
    ordinal = names.ordinal_of(pod["metadata"]["name"])
    if ordinal is None:
        return None
    st = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions", [])
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
    return status.PodView(
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


def _check(p: Pass, client: NodeClient, pod: Mapping[str, Any], cert: str | None) -> None:
    """Verify one pod's quote over a fresh nonce (cached per pod uid for a while)."""
    name, pod_uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    ip = (pod.get("status") or {}).get("podIP")
    cached = p.memory.checks.get(name)
    fresh = time.monotonic() - cached[1] < p.settings.reverify_after if cached else False
    if cached and cached[0] == pod_uid and fresh and cached[2].verified:
        return
    if not ip:
        p.memory.checks.pop(name, None)
        return
    nonce = os.urandom(32)
    try:
        reply = client.request(ip, p.fqdn(name), "GET", f"/node/quote?nonce={nonce.hex()}")
        if reply.status != 200:
            raise NodeUnreachableError(f"{name}: HTTP {reply.status} for its quote")
    except NodeUnreachableError as exc:
        # A node whose certificate expired with its attestation can no longer complete
        # authenticated TLS, and is still that node: learn which one from its quote alone.
        known = p.memory.known.get(pod_uid) or _identify(p, name, ip)
        p.memory.checks[name] = (pod_uid, 0.0, status.NodeCheck(name, known, False, str(exc)))
        return
    answer = reply.json()
    check, reason = verify.check_pod(
        name,
        answer,
        nonce,
        platform_root_pem=p.platform_root,
        spec=_verification_spec(p),
        tls_certificate_der=reply.peer_certificate_der,
        service_certificate_pem=cert,
    )
    metrics.VERIFICATIONS.labels(
        p.namespace,
        p.names.consortium,
        p.spec.attestation.platform,
        "ok" if check.verified else "refused",
        reason,
    ).inc()
    p.memory.checks[name] = (pod_uid, time.monotonic(), check)
    if check.verified and check.node_id:
        p.memory.known[pod_uid] = check.node_id
    if not check.verified and (pod_uid, reason) not in p.memory.refused:
        p.memory.refused.add((pod_uid, reason))
        p.event("Warning", "AttestationRefused", f"{name}: {check.reason}")


def _identify(p: Pass, name: str, ip: str) -> str | None:
    """Which node a pod runs, proven by possession of its key only (no attestation): used
    to recognise a node whose certificate expired or whose quotes fail, to replace it once
    it is Retired. The node must terminate TLS with the key it claims."""
    try:
        reply = NodeClient(None).request(
            ip, p.fqdn(name), "GET", f"/node/quote?nonce={os.urandom(32).hex()}"
        )
    except NodeUnreachableError:
        return None
    return (
        verify.key_holder(reply.json(), reply.peer_certificate_der) if reply.status == 200 else None
    )


def _service_certificate(p: Pass) -> str | None:
    """The published service certificate, or pod 0's once its quote and TLS key verify."""
    live = p.live("ConfigMap", p.names.service_identity)
    if live is not None:
        pem: str = live["data"]["service-certificate.pem"]
        return pem
    pod0 = next((x for x in p.pods if x["metadata"]["name"] == p.names.pod(0)), None)
    ip = p.pod_ips().get(p.names.pod(0))
    if pod0 is None or not ip:
        return None
    client = NodeClient(None)
    try:
        network = client.get_json(ip, p.fqdn(p.names.pod(0)), "/node/network")
        candidate = network["service_certificate"]
    except (NodeUnreachableError, KeyError, TypeError):
        return None
    p.memory.checks.pop(p.names.pod(0), None)
    _check(p, client, pod0, candidate)  # the TLS certificate must chain to the candidate
    found = p.memory.checks.get(p.names.pod(0))
    return candidate if found is not None and found[2].verified else None


def _observe(p: Pass, generation: int, members: list[MemberView]) -> status.Observation:
    views = [v for v in (_pod_view(x, p.names) for x in p.pods) if v is not None]
    obs = status.Observation(
        consortium=p.spec.name,
        generation=generation,
        now=p.now,
        desired=p.spec.nodes,
        image=p.spec.image,
        pods=tuple(sorted(views, key=lambda v: v.ordinal)),
        members_total=len(members),
    )
    cert = _service_certificate(p)
    if cert is None:
        return replace(obs, checks={k: v[2] for k, v in p.memory.checks.items()})
    client = NodeClient(cert, p.operator_identity)
    running = [x for x in p.pods if (x.get("status") or {}).get("podIP")]
    for pod in running:
        _check(p, client, pod, cert)
    # A check belongs to one pod (uid): a replacement pod with the same name that has no IP
    # yet must not inherit its predecessor's node (it would be taken for a Retired node).
    uid_of = {x["metadata"]["name"]: x["metadata"]["uid"] for x in p.pods}
    for gone in [n for n, v in p.memory.checks.items() if uid_of.get(n) != v[0]]:
        del p.memory.checks[gone]
    live_uids = {x["metadata"]["uid"] for x in p.pods}
    for uid in set(p.memory.known) - live_uids:
        del p.memory.known[uid]
    checks = {k: v[2] for k, v in p.memory.checks.items()}
    published = p.live("ConfigMap", p.names.trusted_nodes)
    published_version = (
        int(published["metadata"]["annotations"]["consortium.tee.dev/list-version"])
        if published
        else None
    )
    obs = replace(
        obs,
        service_certificate_pem=cert,
        service_certificate_sha256=certificate_sha256(load_certificate(cert)),
        checks=checks,
        published_version=published_version,
    )
    return _observe_ledger(p, obs, client, published_version, members)


def _observe_ledger(
    p: Pass,
    obs: status.Observation,
    client: NodeClient,
    published_version: int | None,
    members: list[MemberView],
) -> status.Observation:
    """The primary's network view, its signed list (verified) and its commit."""
    ips = p.pod_ips()
    by_node = {c.node_id: n for n, c in obs.checks.items() if c.verified and c.node_id}
    network = None
    errors = []
    for name in sorted(ips, key=lambda n: p.names.ordinal_of(n) or 0):
        check = obs.checks.get(name)
        if check is None or not check.verified:
            continue
        try:
            network = client.get_json(ips[name], p.fqdn(name), "/node/network")
        except NodeUnreachableError as exc:
            errors.append(str(exc))
            continue
        primary_id = (network.get("primary") or {}).get("node_id")
        if primary_id in by_node:
            break
    if network is None:
        return replace(obs, list_error="; ".join(errors) or "no verified node answered")
    primary_id = (network.get("primary") or {}).get("node_id")
    primary = by_node.get(primary_id) if primary_id else None
    source = primary or next(iter(sorted(by_node.values())), None)
    if source is None or source not in ips:
        return replace(obs, list_error="no verified node to read the list from")
    try:
        envelope = client.request(ips[source], p.fqdn(source), "GET", "/node/trusted-list")
        state = client.get_json(ips[source], p.fqdn(source), "/node/state")
        if source != primary:
            network = client.get_json(ips[source], p.fqdn(source), "/node/network")
    except NodeUnreachableError as exc:
        return replace(obs, list_error=str(exc))
    assert obs.service_certificate_pem is not None
    lst, error = verify.check_list(
        envelope.body, obs.service_certificate_pem, p.spec.name, published_version
    )
    failures = {
        n["node_id"]: n["renewal_failure"]
        for n in network.get("nodes", [])
        if isinstance(n, dict) and n.get("renewal_failure")
    }
    ledger_members = {
        m["member_id"]: m["status"] for m in network.get("members", []) if isinstance(m, dict)
    }
    p.memory.failures = failures
    ledger = gov.LedgerGovernance.from_network(network)
    if ledger is not None:
        p.memory.allowed = ledger.measurements()
        p.memory.ledger_members = frozenset(ledger.members)
    member_ids = {m.spec.member_id for m in members if m.spec is not None}
    return replace(
        obs,
        members_active=sum(1 for i in member_ids if ledger_members.get(i) == "Active"),
        trusted_list=lst,
        list_error=error,
        list_sha256=hashlib.sha256(envelope.body).hexdigest() if lst else None,
        renewal_failures=failures,
        primary=primary,
        term=state.get("term"),
        commit_index=state.get("commit_index"),
        ledger_members=ledger_members,
        envelope=envelope.body if lst else None,
        network=network,
    )


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
    _retire(p, obs, pending[0])  # one configuration change at a time, highest ordinal first
    return current


def _ask_primary(
    p: Pass, obs: status.Observation, path: str, body: Mapping[str, Any], timeout: float
) -> Reply | None:
    """POST to the primary as the operator (a member with role ``operator``); None if no
    primary is known or it did not answer (logged; the next pass tries again)."""
    ip = p.pod_ips().get(obs.primary) if obs.primary else None
    if obs.primary is None or not ip or obs.service_certificate_pem is None:
        return None
    client = NodeClient(obs.service_certificate_pem, p.operator_identity, timeout=timeout)
    try:
        return client.request(ip, p.fqdn(obs.primary), "POST", path, dict(body))
    except NodeUnreachableError as exc:
        log.warning("%s on the primary: %s", path, exc)
        return None


def _retire(p: Pass, obs: status.Observation, entry: Any, why: str = "scale-down") -> None:
    reply = _ask_primary(p, obs, "/gov/nodes/retire", {"node_id": entry.node_id}, timeout=15)
    if reply is None:
        return
    if reply.status == 200:
        p.event("Normal", "NodeRetired", f"{entry.name} ({entry.node_id[:16]}) retired: {why}")
    else:
        log.warning("retiring %s: HTTP %d %s", entry.name, reply.status, reply.body[:200])


def _apply(p: Pass, obs: status.Observation, members: list[MemberView]) -> None:
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
            p.event(
                "Normal",
                "TrustedListPublished",
                f"trusted-node list version {obs.trusted_list.version} published in "
                f"ConfigMap {meta['name']}",
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


def _unstick(p: Pass, sts: Mapping[str, Any] | None, config_changed: bool) -> None:
    """Delete broken pods that a fixed spec would heal: a StatefulSet rolling update waits
    forever for a pod that never became Ready, and a crash-looping pod would only see a
    corrected configuration after its back-off (minutes). Healthy pods are never touched."""
    if sts is None:
        return
    update = (sts.get("status") or {}).get("updateRevision")
    for pod in p.pods:
        view = _pod_view(pod, p.names)
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
    reply = _ask_primary(p, obs, "/node/reattest", {}, timeout=20)
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
    if invalid:  # keep what was known; only the verdict changes
        new = {**{k: v for k, v in existing.items() if k not in new}, **new}
        new["nodesReady"] = existing.get("nodesReady", "0/0")
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


# ---------------------------------------------------------------------- governance, upgrades
def _verification_spec(p: Pass) -> ConsortiumSpec:
    """The spec to verify quotes against: its measurements plus those the ledger allows (old
    nodes keep running the approved code until they are replaced)."""
    allowed = tuple(sorted(set(p.spec.attestation.measurements) | p.memory.allowed))
    return replace(p.spec, attestation=replace(p.spec.attestation, measurements=allowed))


def _member_names(p: Pass, members: list[MemberView]) -> dict[str, str]:
    names = {m.spec.member_id: m.spec.name for m in members if m.spec is not None}
    if p.operator_identity is not None:
        cert = load_certificate(p.operator_identity[1])
        names[keys.member_id_of(cert.public_bytes(serialization.Encoding.DER))] = "operator"
    return names


def _governance(p: Pass, obs: status.Observation, members: list[MemberView]) -> status.Observation:
    """Relay every Proposal CR, propose what the spec and Member CRs still need, and decide
    the image the nodes may run (``upgrade.node_image``)."""
    primary = None
    ip = p.pod_ips().get(obs.primary) if obs.primary else None
    if obs.primary and ip and obs.service_certificate_pem is not None:
        client = NodeClient(obs.service_certificate_pem, p.operator_identity)
        primary = Primary(client, ip, p.fqdn(obs.primary))
    signer = operator_signer(p.kube, p.namespace, p.names.operator_secret)
    relay = Relay(p.kube, p.namespace, p.body, primary, p.memory.relay, p.now, signer)
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
    p.memory.asked = tuple(asked)
    live = p.live("StatefulSet", p.names.statefulset)
    image = upgrade.node_image(
        p.spec.image, _node_image(live), obs.service_certificate_pem is not None, asked
    )
    return replace(obs, running_image=image, waiting_proposals=tuple(a.name for a in asked))


def _node_image(workload: Mapping[str, Any] | None) -> str | None:
    """The node container's image in a StatefulSet or Pod (None if there is none)."""
    if workload is None:
        return None
    spec = workload.get("spec") or {}
    pod_spec = spec.get("template", {}).get("spec") if "template" in spec else spec
    for container in (pod_spec or {}).get("containers", []):
        if container.get("name") == "node":
            return str(container.get("image"))
    return None


def _member_proposals(p: Pass) -> dict[str, str]:
    """Member name → what its add-member proposal waits for (for its Active condition)."""
    out = {}
    for a in p.memory.asked:
        if a.category == "add-member":
            votes = f", {a.votes} approvals" if a.votes else ""
            out[a.subject] = f"Proposal {a.name} is {a.state}{votes}"
    return out


def _roll(p: Pass, obs: status.Observation) -> status.Observation:
    """Replace one outdated pod when the consortium is settled; decide UpToDate."""
    if obs.service_certificate_pem is None or obs.running_image is None or obs.network is None:
        return obs
    trusted = set(obs.trusted_pods())
    checks = obs.checks
    facts = []
    for pod in p.pods:
        view = _pod_view(pod, p.names)
        if view is None:
            continue
        check = checks.get(view.name)
        facts.append(
            upgrade.PodFacts(
                name=view.name,
                ordinal=view.ordinal,
                image=_node_image(pod) or "",
                revision=pod["metadata"].get("labels", {}).get("controller-revision-hash"),
                ready=view.ready,
                deleting=view.deleting,
                node_id=check.node_id if check is not None else None,
                trusted=view.name in trusted,
            )
        )
    sts = p.live("StatefulSet", p.names.statefulset) or {}
    lst = obs.trusted_list
    step = upgrade.next_step(
        facts,
        template_image=obs.running_image,
        update_revision=(sts.get("status") or {}).get("updateRevision"),
        desired=p.spec.nodes,
        primary=obs.primary,
        list_published=lst is not None and obs.published_version == lst.version,
    )
    entry = obs.current_entries().get(step.pod) if step is not None else None
    if step is not None and step.action == "retire" and entry is not None:
        _retire(p, obs, entry, why=f"replaced by a node running {obs.running_image}")
    elif step is not None and step.action == "delete":
        pod = next(x for x in p.pods if x["metadata"]["name"] == step.pod)
        p.event("Normal", "NodeRestarted", f"{step.pod}: the pod template changed; restarting")
        p.kube.delete("Pod", p.namespace, step.pod, uid=pod["metadata"]["uid"])
    cond = upgrade.up_to_date(
        p.memory.asked,
        facts,
        obs.running_image,
        p.spec.nodes,
        (sts.get("status") or {}).get("updateRevision"),
    )
    return replace(obs, up_to_date=cond)
