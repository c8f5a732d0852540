"""Observing a Consortium: its pods, each pod's quote (verified by the operator itself), the
service certificate, and the primary's signed list, commit and ``/node/network``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from consortium_node.identity.certs import certificate_sha256, load_certificate
from consortium_operator.api import metrics
from consortium_operator.api.spec import ConsortiumSpec
from consortium_operator.consortium.context import CachedCheck, Pass
from consortium_operator.consortium.observation import NodeCheck, Observation, PodView
from consortium_operator.kube import platform as platform_pod
from consortium_operator.nodes import verify
from consortium_operator.nodes.client import NodeClient, NodeUnreachableError
from consortium_operator.proposals import intents as gov

log = logging.getLogger("consortium_operator")


def verify_pod(p: Pass, client: NodeClient, pod: Mapping[str, Any], cert: str | None) -> None:
    """Verify one pod's quote over a fresh nonce (cached per pod uid for a while)."""
    name, pod_uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    ip = (pod.get("status") or {}).get("podIP")
    cached = p.memory.checks.get(name)
    fresh = time.monotonic() - cached.at < p.settings.reverify_after if cached else False
    if cached and cached.pod_uid == pod_uid and fresh and cached.check.verified:
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
        known = p.memory.known.get(pod_uid) or identify(p, name, ip)
        p.memory.checks[name] = CachedCheck(pod_uid, 0.0, NodeCheck(name, known, False, str(exc)))
        return
    answer = reply.json()
    check, reason = verify.check_pod(
        name,
        answer,
        nonce,
        endorsements=p.endorsements,
        spec=verification_spec(p),
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
    p.memory.checks[name] = CachedCheck(pod_uid, time.monotonic(), check)
    if check.verified and check.node_id:
        p.memory.known[pod_uid] = check.node_id
    if not check.verified and (pod_uid, reason) not in p.memory.refused:
        p.memory.refused.add((pod_uid, reason))
        p.event("Warning", "AttestationRefused", f"{name}: {check.reason}")


def identify(p: Pass, name: str, ip: str) -> str | None:
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


def service_certificate(p: Pass) -> str | None:
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
    verify_pod(p, client, pod0, candidate)  # the TLS certificate must chain to the candidate
    found = p.memory.checks.get(p.names.pod(0))
    return candidate if found is not None and found.check.verified else None


def observe(p: Pass, generation: int) -> Observation:
    views = [v for v in (PodView.of(x, p.names) for x in p.pods) if v is not None]
    obs = Observation(
        consortium=p.spec.name,
        generation=generation,
        now=p.now,
        desired=p.spec.nodes,
        image=p.spec.image,
        pods=tuple(sorted(views, key=lambda v: v.ordinal)),
        allowed_measurements=p.spec.attestation.measurements,
        platform=p.spec.attestation.platform,
        platform_insecure=platform_pod.insecure(p.spec),
        recovery_source=(
            f"s3://{p.spec.recovery.s3.bucket}/{p.spec.recovery.s3.prefix}"
            if p.spec.recovery is not None
            else None
        ),
    )
    cert = service_certificate(p)
    if cert is None:
        return replace(obs, checks={k: v.check for k, v in p.memory.checks.items()})
    client = NodeClient(cert, p.operator_identity)
    running = [x for x in p.pods if (x.get("status") or {}).get("podIP")]
    for pod in running:
        verify_pod(p, client, pod, cert)
    # A check belongs to one pod (uid): a replacement pod with the same name that has no IP
    # yet must not inherit its predecessor's node (it would be taken for a Retired node).
    uid_of = {x["metadata"]["name"]: x["metadata"]["uid"] for x in p.pods}
    for gone in [n for n, v in p.memory.checks.items() if uid_of.get(n) != v.pod_uid]:
        del p.memory.checks[gone]
    live_uids = {x["metadata"]["uid"] for x in p.pods}
    for uid in set(p.memory.known) - live_uids:
        del p.memory.known[uid]
    checks = {k: v.check for k, v in p.memory.checks.items()}
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
    obs = _observe_ledger(p, obs, client, published_version)
    return replace(obs, ledger_repairs=_ledger_repairs(p, obs, client))


def _ledger_repairs(p: Pass, obs: Observation, client: NodeClient) -> dict[str, Any]:
    """Per verified pod, the storage fault its node found and where the repair stands
    (``ledger_repair`` of its ``GET /node/state``); pods that found none are left out."""
    ips, out = p.pod_ips(), {}
    for name, check in sorted(obs.checks.items()):
        if not check.verified or name not in ips:
            continue
        try:
            state = client.get_json(ips[name], p.fqdn(name), "/node/state")
        except NodeUnreachableError:
            continue
        repair = state.get("ledger_repair") if isinstance(state, dict) else None
        if isinstance(repair, dict) and isinstance(repair.get("state"), str):
            out[name] = repair
    return out


def _observe_ledger(
    p: Pass,
    obs: Observation,
    client: NodeClient,
    published_version: int | None,
) -> Observation:
    """The primary's network view, its signed list (verified) and its commit."""
    ips = p.pod_ips()
    by_node = {c.node_id: n for n, c in obs.checks.items() if c.verified and c.node_id}
    network = None
    answered = ""
    errors = []
    for name in sorted(ips, key=lambda n: p.names.ordinal_of(n) or 0):
        check = obs.checks.get(name)
        if check is None or not check.verified:
            continue
        try:
            network = client.get_json(ips[name], p.fqdn(name), "/node/network")
            answered = name
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
        if answered != source:  # governance facts come from the primary: backups may lag
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
    listed = [m for m in network.get("members", []) if isinstance(m, dict)]
    ledger_members = {m["member_id"]: m["status"] for m in listed}
    ledger_roles = {m["member_id"]: str(m.get("role", "")) for m in listed}
    p.memory.failures = failures
    ledger = gov.LedgerGovernance.from_network(network)
    if ledger is not None:
        p.memory.allowed = ledger.measurements()
        p.memory.ledger_members = frozenset(ledger.members)
    return replace(
        obs,
        trusted_list=lst,
        list_error=error,
        list_sha256=hashlib.sha256(envelope.body).hexdigest() if lst else None,
        renewal_failures=failures,
        primary=primary,
        term=state.get("term"),
        commit_index=state.get("commit_index"),
        snapshot=snapshot_shown(state.get("snapshot")),
        recovery=recovery_shown(state.get("recovery")),
        service_phase=str(state.get("service_phase") or "Open"),
        ledger_members=ledger_members,
        ledger_roles=ledger_roles,
        envelope=envelope.body if lst else None,
        network=network,
    )


def snapshot_shown(value: Any) -> dict[str, Any] | None:
    """``snapshot`` of a node's ``/node/state`` as status shows it (None: none, or not the
    shape this operator knows: an older node)."""
    if not isinstance(value, dict):
        return None
    index, txid = value.get("index"), value.get("txid")
    if type(index) is not int or not isinstance(txid, str) or not txid:
        return None
    return {"index": index, "txid": txid}


def recovery_shown(value: Any) -> dict[str, Any] | None:
    """``recovery`` of a node's ``/node/state`` as ``status.recovery`` shows it (None: not the
    shape this operator knows, an older node): the newest record's epoch and threshold, the
    recovery members, and whether the record covers what the ledger asks (``current``)."""
    if not isinstance(value, dict):
        return None
    numbers = [value.get(k) for k in ("epoch", "threshold", "members")]
    if not all(type(n) is int and n >= 0 for n in numbers) or type(value.get("stale")) is not bool:
        return None
    epoch, threshold, members = numbers
    return {
        "recordEpoch": epoch,
        "threshold": threshold,
        "members": members,
        "current": not value["stale"],
    }


def verification_spec(p: Pass) -> ConsortiumSpec:
    """The spec to verify quotes against: its measurements plus those the ledger allows (old
    nodes keep running the approved code until they are replaced)."""
    allowed = tuple(sorted(set(p.spec.attestation.measurements) | p.memory.allowed))
    return replace(p.spec, attestation=replace(p.spec.attestation, measurements=allowed))
