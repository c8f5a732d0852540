"""Decide a Consortium's conditions and status from what one reconcile pass observed.

Pure: an ``Observation`` in, conditions and a status dict out. The Ready condition is an
ordered chain of small checks; the first that fails names the cause (and, for spec problems,
the field), so a user reads one actionable message. Table-driven unit tests cover each link.

With ``spec.backup`` the BackupHealthy condition is a chain of its own (``BACKUP_CHAIN``) over
the primary's ``GET /node/backup``. It never feeds Ready, Degraded or the phase: a backup that
fails does not stop the ledger serving (Degraded means a *node* needs attention); it has its own
condition, Events (``backup_event``) and alerts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from consortium_node.common.timeutil import parse_rfc3339, rfc3339
from consortium_node.identity.trusted_list import NodeStatus
from consortium_operator.api import conditions as c
from consortium_operator.api.names import BACKUP_CREDENTIAL_KEYS, Names
from consortium_operator.consortium.observation import BackupFacts, Observation

IMAGE_FAILURES = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
POLICY_REFUSAL = "refused by the configured policy"


Check = Callable[[Observation], c.Condition | None]


def _spec(o: Observation) -> c.Condition | None:
    if o.spec_error is None:
        return None
    return c.Condition(c.READY, False, c.INVALID_SPEC, str(o.spec_error))


def _image(o: Observation) -> c.Condition | None:
    for pod in o.pods:
        if pod.waiting_reason in IMAGE_FAILURES:
            detail = pod.waiting_message or pod.waiting_reason
            return c.Condition(
                c.READY,
                False,
                c.IMAGE_UNAVAILABLE,
                f"spec.image: {o.image} cannot be started on {pod.name}: {detail}",
            )
    return None


# The node's refusal names its own measurement ("measurement <hex> is not in …", or
# "measures <hex>" where the verifier's detail did not).
_MEASURES = re.compile(r"\bmeasure(?:s|ment) ([0-9a-f]{64})\b")


def refusal_message(pod: str, node_message: str, allowed: Sequence[str]) -> str:
    """AttestationRefused: what the node measures, once, and what the spec allows."""
    found = _MEASURES.search(node_message)
    listed = ", ".join(allowed) if allowed else "none"
    if found is None:
        return (
            f"spec.attestation.measurements: {pod} was refused: {node_message.strip()[:300]} "
            f"(allowed: {listed})"
        )
    return (
        f"spec.attestation.measurements: {pod} runs code measuring {found.group(1)}, which is "
        f"not in the allowed list [{listed}]: add it, or run the image that measures as allowed"
    )


def _node_start(o: Observation) -> c.Condition | None:
    for pod in o.pods:
        message = pod.last_termination_message
        if not message or pod.ready:
            continue
        if POLICY_REFUSAL in message:
            return c.Condition(
                c.READY,
                False,
                c.ATTESTATION_REFUSED,
                refusal_message(pod.name, message, o.allowed_measurements),
            )
        if pod.waiting_reason == "CrashLoopBackOff":
            return c.Condition(
                c.READY, False, c.NODE_START_FAILED, f"{pod.name}: {message.strip()[:500]}"
            )
    return None


def _bootstrapped(o: Observation) -> c.Condition | None:
    if o.service_certificate_pem is None:
        return c.Condition(
            c.READY,
            False,
            c.WAITING_FOR_GENESIS,
            f"waiting for {o.consortium}-0 to recover the lost consortium from "
            f"{o.recovery_source} (spec.recovery: verify its backup, start a new service "
            "identity)"
            if o.recovery_source
            else f"waiting for {o.consortium}-0 to run genesis",
        )
    return None


def _list(o: Observation) -> c.Condition | None:
    if o.trusted_list is None:
        why = o.list_error or "no node answered with its trusted-node list"
        return c.Condition(c.READY, False, c.LIST_UNVERIFIED, why)
    return None


def _nodes(o: Observation) -> c.Condition | None:
    trusted = o.trusted_pods()
    if len(trusted) >= o.desired:
        return None
    no_quorum = len(trusted) * 2 <= o.desired and o.commit_index is None
    reason = c.NO_QUORUM if no_quorum else c.NODES_JOINING
    missing = [
        Names(o.consortium).pod(i)
        for i in range(o.desired)
        if Names(o.consortium).pod(i) not in trusted
    ]
    return c.Condition(
        c.READY,
        False,
        reason,
        f"{len(trusted)}/{o.desired} nodes trusted and verified; waiting for {', '.join(missing)}",
    )


def _recovering(o: Observation) -> c.Condition | None:
    """No primary while nodes recover committed entries lost to storage faults: none can be
    elected without them (the nodes refuse to), so writes wait for a node that holds them."""
    recovering = sorted(n for n, r in o.ledger_repairs.items() if r.get("state") == "recovering")
    if o.primary is not None or o.trusted_list is None or not recovering:
        return None
    return c.Condition(
        c.READY,
        False,
        c.LEDGER_RECOVERING,
        f"no primary: {', '.join(recovering)} lost committed entries to a storage fault "
        f"({ledger_problem(recovering[0], o.ledger_repairs[recovering[0]])}); no primary "
        "can be elected without them, so writes wait until a node that holds them is back",
    )


def ledger_problem(pod: str, repair: Mapping[str, Any]) -> str:
    """One node's storage fault and where its repair stands, for a condition message."""
    known, damage = repair.get("known_committed", "?"), repair.get("damage", "?")
    if repair.get("state") == "diverged":
        return (
            f"{pod}: the entries replicated to it contradict the committed entry {known} it "
            f"held before a storage fault ({damage})"
        )
    return f"{pod}: recovering committed entries up to {known} lost to a storage fault ({damage})"


def _service_open(o: Observation) -> c.Condition | None:
    """A recovered service waits for its members: shares first, then the vote to open it."""
    if o.service_phase == c.WAITING_FOR_RECOVERY_SHARES:
        shares = (o.ceremony or {}).get("shares") or {}
        have, need = len(submitted(o)), shares.get("threshold", "k")
        return c.Condition(
            c.READY,
            False,
            c.WAITING_FOR_RECOVERY_SHARES,
            f"recovered the lost consortium's history under a new service identity; {have} of "
            f"{need} recovery shares submitted: each recovery member runs consortiumctl "
            f"recovery submit-share --kube {o.consortium} (docs/recovery.md)",
        )
    if o.service_phase == c.WAITING_FOR_OPEN:
        return c.Condition(
            c.READY,
            False,
            c.WAITING_FOR_OPEN,
            "the recovery shares opened every ledger secret; the governors vote "
            "transition_service_to_open (a Proposal), then the other nodes join",
        )
    return None


def _distributed(o: Observation) -> c.Condition | None:
    """Only the first list gates readiness: before it is published, joiners have nothing to
    verify. Later the nodes issue newer lists themselves (every re-attestation round) and
    adopt them from the ledger; the ConfigMap catching up a moment later is no outage (the
    TrustedListDistributed condition tells how far it lags)."""
    if o.trusted_list is not None and o.published_version is None:
        return c.Condition(
            c.READY,
            False,
            c.LIST_NOT_PUBLISHED,
            f"trusted-node list version {o.trusted_list.version} not yet published",
        )
    return None


def _scaling(o: Observation) -> c.Condition | None:
    extra = [p.name for p in o.pods if p.ordinal >= o.desired]
    if extra:
        return c.Condition(
            c.READY, False, c.SCALING, f"retiring and removing {', '.join(sorted(extra))}"
        )
    return None


READY_CHAIN: tuple[Check, ...] = (
    _spec,
    _image,
    _node_start,
    _bootstrapped,
    _list,
    _service_open,
    _nodes,
    _recovering,
    _distributed,
    _scaling,
)


def ready(o: Observation) -> c.Condition:
    for check in READY_CHAIN:
        found = check(o)
        if found is not None:
            return found
    version = o.trusted_list.version if o.trusted_list else "?"
    return c.Condition(
        c.READY,
        True,
        c.READY_REASON,
        f"{o.desired}/{o.desired} nodes trusted; trusted-node list version {version} published",
    )


def degraded(o: Observation) -> c.Condition:
    entries = {e.node_id: e for e in o.trusted_list.nodes} if o.trusted_list else {}
    repairs = sorted(o.ledger_repairs.items())
    problems = [  # a diverged ledger first: it needs a person, a recovering one only time
        (reason, ledger_problem(pod, repair))
        for state, reason in (("diverged", c.LEDGER_DIVERGED), ("recovering", c.LEDGER_RECOVERING))
        for pod, repair in repairs
        if repair.get("state") == state
    ]
    for node_id, reason in sorted(o.renewal_failures.items()):
        entry = entries.get(node_id)
        if entry is not None and entry.status is NodeStatus.TRUSTED:
            problems.append(
                (
                    c.REATTESTATION_FAILING,
                    f"{entry.name} failed re-attestation ({reason}); its attestation expires "
                    f"at {entry.attestation_expires_at}",
                )
            )
    current = o.current_entries()
    for pod in o.pods:
        entry = current.get(pod.name)
        check = o.checks.get(pod.name)
        runs_retired = (
            entry is not None
            and entry.status is NodeStatus.RETIRED
            and check is not None
            and check.node_id == entry.node_id
        )
        if runs_retired and pod.ordinal < o.desired:
            problems.append((c.NODE_RETIRED, f"{pod.name} was retired; replacing its pod"))
        if check is not None and not check.verified and check.reason and pod.ready:
            problems.append((c.NODE_NOT_VERIFIED, f"{pod.name}: {check.reason}"))
    if not problems:
        return c.Condition(c.DEGRADED, False, c.AS_EXPECTED, "no node needs attention")
    return c.Condition(c.DEGRADED, True, problems[0][0], "; ".join(m for _, m in problems))


def decide(o: Observation) -> list[c.Condition]:
    """All Consortium conditions, in a fixed order."""
    if o.spec_error is not None:
        return [ready(o)]  # nothing else can be judged against an invalid spec
    boot = (
        c.Condition(c.BOOTSTRAPPED, True, c.GENESIS_COMPLETE, "service identity published")
        if o.service_certificate_pem is not None
        else c.Condition(
            c.BOOTSTRAPPED, False, c.WAITING_FOR_GENESIS, f"waiting for {o.consortium}-0"
        )
    )
    trusted = o.trusted_pods()
    attested = (
        c.Condition(
            c.NODES_ATTESTED,
            True,
            c.ALL_NODES_ATTESTED,
            f"{len(trusted)} nodes verified by the operator and Trusted in the list",
        )
        if len(trusted) >= o.desired
        else c.Condition(
            c.NODES_ATTESTED,
            False,
            c.NODES_JOINING,
            f"{len(trusted)}/{o.desired} nodes verified and Trusted",
        )
    )
    if o.trusted_list is None:
        dist = c.Condition(
            c.LIST_DISTRIBUTED, False, c.LIST_UNVERIFIED, o.list_error or "no list yet"
        )
    elif o.published_version == o.trusted_list.version:
        dist = c.Condition(
            c.LIST_DISTRIBUTED,
            True,
            c.LIST_PUBLISHED,
            f"version {o.trusted_list.version} in ConfigMap {Names(o.consortium).trusted_nodes}",
        )
    else:
        dist = c.Condition(
            c.LIST_DISTRIBUTED,
            False,
            c.LIST_NOT_PUBLISHED,
            f"version {o.trusted_list.version} not published yet",
        )
    found = [ready(o), boot, attested, dist, degraded(o)]
    if o.up_to_date is not None:
        found.append(o.up_to_date)
    backup = backup_healthy(o)
    return found if backup is None else [*found, backup]


# ---------------------------------------------------------------------- backups
BackupCheck = Callable[[BackupFacts], c.Condition | None]


def _time(text: str) -> datetime | None:
    try:
        return parse_rfc3339(text)
    except (ValueError, TypeError):
        return None


def max_lag(b: BackupFacts) -> float | None:
    """The lag allowed: what the shipper applies (in mode Scheduled the schedule's period +
    60 s), else spec.backup.maxLag."""
    if b.report is not None and b.report.max_lag_seconds is not None:
        return b.report.max_lag_seconds
    return b.max_lag_seconds


def _b_secret(b: BackupFacts) -> c.Condition | None:
    if b.secret_found is not False:
        return None
    keys = " and ".join(BACKUP_CREDENTIAL_KEYS)
    return c.Condition(
        c.BACKUP_HEALTHY,
        False,
        c.CREDENTIALS_SECRET_NOT_FOUND,
        f"spec.backup.s3.credentialsSecret: no Secret {b.secret!r} in this namespace; create "
        f"it with keys {keys} (the nodes read it once it exists)",
    )


def _b_reported(b: BackupFacts) -> c.Condition | None:
    if b.report is not None:
        return None
    why = b.error or "no primary known yet"
    return c.Condition(
        c.BACKUP_HEALTHY, None, c.BACKUP_STATUS_UNKNOWN, f"backup state not read: {why}"
    )


def _b_configured(b: BackupFacts) -> c.Condition | None:
    if b.report is None or b.report.configured:
        return None
    return c.Condition(
        c.BACKUP_HEALTHY,
        None,
        c.BACKUP_CONFIG_PENDING,
        f"{b.reporter or 'the primary'} runs without spec.backup yet: the nodes are restarted "
        "with it one at a time",
    )


def _b_shipper(b: BackupFacts) -> c.Condition | None:
    if b.report is None or b.report.shipper:
        return None
    return c.Condition(
        c.BACKUP_HEALTHY,
        None,
        c.BACKUP_STATUS_UNKNOWN,
        f"{b.reporter or 'the node asked'} does not ship backups (no longer the primary?)",
    )


def _b_failing(b: BackupFacts) -> c.Condition | None:
    error = b.report.current_error() if b.report is not None else None
    if error is None:
        return None
    reason = c.backup_reason(error.reason)
    said = error.reason if reason != error.reason else ""
    detail = " ".join(filter(None, [said, error.message.strip()[:500]])) or error.reason
    return c.Condition(  # when: status.backup.lastError.time (the message stays put)
        c.BACKUP_HEALTHY, False, reason, f"the primary's backup rounds fail: {detail}"
    )


def _b_lagging(b: BackupFacts) -> c.Condition | None:
    limit = max_lag(b)
    report = b.report
    if report is None or limit is None or report.lag_seconds <= limit:
        return None
    return c.Condition(
        c.BACKUP_HEALTHY,
        False,
        c.BACKUP_LAGGING,
        f"committed entries wait longer than the allowed {limit:g}s to be backed up "
        "(status.backup.lagSeconds when this was written; the node metric "
        "consortium_backup_lag_seconds is live)",
    )


BACKUP_CHAIN: tuple[BackupCheck, ...] = (
    _b_secret,
    _b_reported,
    _b_configured,
    _b_shipper,
    _b_failing,
    _b_lagging,
)


def backup_healthy(o: Observation) -> c.Condition | None:
    """BackupHealthy, or None without spec.backup (the condition is then removed). Messages
    carry no lag figures: a change of lag alone is no reason for a status write."""
    b = o.backup
    if b is None:
        return None
    for check in BACKUP_CHAIN:
        found = check(b)
        if found is not None:
            return found
    assert b.report is not None
    last = b.report.last_success
    shipped = (
        f"last backup at {last.time}, through txid {last.txid} ({last.manifest})"
        if last is not None
        else "nothing committed needs a backup yet"
    )
    limit = max_lag(b)
    within = f"; backed up within {limit:g}s of commit" if limit is not None else ""
    return c.Condition(c.BACKUP_HEALTHY, True, c.BACKUP_HEALTHY_REASON, shipped + within)


def _normalised(text: str) -> str:
    found = _time(text)
    return rfc3339(found) if found is not None else text


SUCCESS_FIELDS = ("lastSuccessfulTime", "lastTxid", "manifest")


def backup_status(o: Observation, existing: Mapping[str, Any]) -> dict[str, Any] | None:
    """``status.backup`` from the primary's report; the last one written while it is not read
    (no primary, no answer, not configured yet, not the shipper). A success is kept once seen."""
    if o.backup is None:
        return None
    report = o.backup.report
    if report is None or not report.configured or not report.shipper:  # not the shipper's word
        return dict(existing) if existing else None
    out: dict[str, Any] = {
        "lagSeconds": round(report.lag_seconds, 1),
        "lagEntries": report.lag_entries,
    }
    last = report.last_success
    if last is not None:
        out.update(
            lastSuccessfulTime=_normalised(last.time), lastTxid=last.txid, manifest=last.manifest
        )
    else:
        out.update({k: existing[k] for k in SUCCESS_FIELDS if k in existing})
    error = report.current_error()
    if error is not None:
        out["lastError"] = {
            "reason": c.backup_reason(error.reason),
            "message": (error.message or error.reason)[:1000],
            "time": _normalised(error.time),
        }
    return out


# Status fields that change with every pass while backups work as they should: a change of
# these alone never justifies a status write (the node metrics carry them live).
VOLATILE_BACKUP = ("lagSeconds", "lagEntries")


def comparable(st: Mapping[str, Any]) -> dict[str, Any]:
    """What decides whether a status write is needed: no transition times, no lag figures and
    no time of the last failed round (the condition says when it starts or stops failing)."""
    out = c.without_transition_times(st)
    backup = out.get("backup")
    if isinstance(backup, Mapping):
        backup = {k: v for k, v in backup.items() if k not in VOLATILE_BACKUP}
        if isinstance(backup.get("lastError"), Mapping):
            backup["lastError"] = {k: v for k, v in backup["lastError"].items() if k != "time"}
        out["backup"] = backup
    return out


def backup_event(
    existing: Sequence[Mapping[str, Any]] | None, conds: Sequence[c.Condition]
) -> tuple[str, str, str] | None:
    """The Event for a BackupHealthy transition: (type, reason, message), or None. A Warning
    when it turns False or fails for another reason, a Normal one when it recovers."""
    new = c.find(conds, c.BACKUP_HEALTHY)
    if new is None:
        return None
    old = next((x for x in existing or () if x.get("type") == c.BACKUP_HEALTHY), {})
    if new.status is False and (old.get("status") != "False" or old.get("reason") != new.reason):
        return ("Warning", new.reason, new.message)
    if new.status is True and old.get("status") == "False":
        return ("Normal", new.reason, f"backups work again: {new.message}")
    return None


def node_statuses(o: Observation) -> list[dict[str, Any]]:
    """``status.nodes``: one item per pod the Consortium runs (or should run)."""
    names = Names(o.consortium)
    entries = o.current_entries()
    pods = {p.name: p for p in o.pods}
    out = []
    for name in sorted(set(entries) | set(pods), key=lambda n: names.ordinal_of(n) or 0):
        ordinal = names.ordinal_of(name)
        if ordinal is None:
            continue
        entry = entries.get(name)
        pod = pods.get(name)
        if pod is None and (entry is None or entry.status is NodeStatus.RETIRED):
            continue
        item: dict[str, Any] = {"name": name, "ordinal": ordinal}
        if pod is not None and pod.ip:
            item["podIP"] = pod.ip
        if entry is not None:
            item.update(
                nodeId=entry.node_id,
                status=entry.status.value,
                measurement=entry.measurement,
                attestedAt=entry.attested_at,
                attestationExpiresAt=entry.attestation_expires_at,
            )
            failure = o.renewal_failures.get(entry.node_id)
            if failure:
                item["reattestationFailure"] = failure
        else:
            item["status"] = "Unknown"
        out.append(item)
    return out


def members_status(o: Observation, existing: Mapping[str, Any]) -> dict[str, Any]:
    """``status.members``: the ledger's members (the operator's own identity, role
    ``operator``, is not one), and how many Member resources name this Consortium. Before the
    ledger was read (or while no node answers) the last counts read are kept."""
    out: dict[str, Any] = {"resources": o.member_resources}
    if o.ledger_members is None or o.ledger_roles is None:
        for key in ("total", "active"):
            if key in existing:
                out[key] = existing[key]
        return out
    ids = [i for i, role in o.ledger_roles.items() if role != "operator"]
    out["total"] = len(ids)
    out["active"] = sum(1 for i in ids if o.ledger_members.get(i) == "Active")
    return out


# ---------------------------------------------------------------------- recovery
# status.recovery's record summary (kept while the primary does not answer, as before)
RECORD_FIELDS = ("recordEpoch", "threshold", "members", "current")


def submitted(obs: Observation) -> set[str]:
    shares = (obs.ceremony or {}).get("shares") or {}
    return set(shares.get("submitted") or ())


def awaited(obs: Observation) -> set[str]:
    shares = (obs.ceremony or {}).get("shares") or {}
    return set(shares.get("waiting_for") or ())


def recovery_status(obs: Observation) -> dict[str, Any]:
    """What ``status.recovery`` shows of the ceremony (empty for a service never recovered)."""
    ceremony = obs.ceremony
    if not ceremony:
        return {}
    found: dict[str, Any] = {"phase": ceremony.get("phase", obs.service_phase or "Open")}
    details = ceremony.get("recovery") or {}
    for key, field in (
        ("previous_service_certificate_sha256", "previousServiceCertificateSha256"),
        ("last_recovered_txid", "lastRecoveredTxid"),
        ("started_at", "startedAt"),
    ):
        if isinstance(details.get(key), str):
            found[field] = details[key]
    shares = ceremony.get("shares")
    if isinstance(shares, Mapping):
        found["sharesSubmitted"] = sorted(submitted(obs))
        found["sharesAwaited"] = sorted(awaited(obs))
        found["sharesNeeded"] = int(shares.get("threshold") or 0)
    for key in ("attestation", "record"):
        if ceremony.get(key) is not None:
            found[key] = ceremony[key]
    return found


def status_body(
    o: Observation,
    conds: Sequence[c.Condition],
    existing: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """The whole ``status`` to write (compared with the current one before writing)."""
    trusted = len(o.trusted_pods())
    ready = c.find(conds, c.READY)
    first_ready = existing.get("firstReadyTime")
    if first_ready is None and ready is not None and ready.status:
        first_ready = rfc3339(now)
    merged = c.merge(existing.get("conditions"), conds, now=rfc3339(now), generation=o.generation)
    if o.spec_error is None and o.backup is None:  # no spec.backup: no BackupHealthy either
        merged = [x for x in merged if x["type"] != c.BACKUP_HEALTHY]
    body: dict[str, Any] = {
        "observedGeneration": o.generation,
        "phase": c.phase(conds, was_ready=first_ready is not None),
        "conditions": merged,
        "desiredNodes": o.desired,
        "trustedNodes": trusted,
        "nodesReady": f"{trusted}/{o.desired}",
        "nodes": node_statuses(o),
        "members": members_status(o, existing.get("members") or {}),
    }
    if o.platform:
        body["platform"] = {"name": o.platform, "insecure": o.platform_insecure}
    if first_ready is not None:
        body["firstReadyTime"] = first_ready
    if o.service_certificate_pem is not None:
        body["serviceCertificate"] = o.service_certificate_pem
        body["serviceCertificateSha256"] = o.service_certificate_sha256
    elif "serviceCertificate" in existing:
        body["serviceCertificate"] = existing["serviceCertificate"]
        body["serviceCertificateSha256"] = existing.get("serviceCertificateSha256")
    if o.trusted_list is not None:
        body["trustedNodeList"] = {
            "version": o.trusted_list.version,
            "sha256": o.list_sha256,
            "issuedAt": o.trusted_list.issued_at,
        }
    elif "trustedNodeList" in existing:
        body["trustedNodeList"] = existing["trustedNodeList"]
    if o.running_image is not None:
        body["runningImage"] = o.running_image
    if o.up_to_date is not None:
        body["waitingProposals"] = list(o.waiting_proposals)
    if o.commit_index is not None:
        body["ledger"] = {"term": o.term, "commitIndex": o.commit_index}
        if o.primary:  # no empty strings in custom resources (see the CRD notes)
            body["ledger"]["primary"] = o.primary
        if o.snapshot is not None:
            body["ledger"]["lastSnapshot"] = dict(o.snapshot)
    recovered = recovery_status(o)
    if o.recovery is not None or recovered:
        shown = {**dict(o.recovery or {}), **recovered}
        # Fields of a phase that is over (the shares, the quote): a merge patch deletes them.
        gone = set(existing.get("recovery") or {}) - set(shown) - set(RECORD_FIELDS)
        body["recovery"] = {**shown, **dict.fromkeys(sorted(gone))}
    backup = backup_status(o, existing.get("backup") or {})
    if backup is not None:
        body["backup"] = backup
    elif "backup" in existing:
        body["backup"] = None  # spec.backup removed: a merge patch deletes it with null
    return body
