"""Pass step: a Consortium that starts by recovering a lost one (``spec.recovery``,
``docs/recovery.md``) — observe the ceremony, relay the members' shares, report it.

Why here and not in a resource of its own (a ``ConsortiumRecovery``): a recovery is how this
Consortium is *born*, as genesis is for others. The StatefulSet, the service certificate, the
Members and their governance are the Consortium's; a second resource would need a second writer
of the same StatefulSet and status. ``spec.recovery`` is read only until the service is
bootstrapped (pod 0 runs in mode ``recover``, the node decides from what is mounted), and the
phase comes from the ledger (``GET /node/state`` ``service_phase``), never from the spec.

While the primary's phase is not Open the operator:

* reads ``GET /recovery`` (the previous identity, the last recovered txid, who submitted,
  who is awaited) and, while shares are awaited, a fresh quote of the recovery node and the
  recovered record, published in ``status.recovery`` for ``consortiumctl recovery
  submit-share --kube`` (the member verifies the quote itself before wrapping its share to
  the quoted key: the operator is not trusted with it);
* relays each Member's ``spec.recoveryShare`` (a signed document whose share only the attested
  enclave can open) to ``POST /recovery/shares``, as acks are relayed (``acks.relay``): a
  refusal is a Warning Event on the Member, and the same bytes are not sent again for a while;
* keeps the StatefulSet at one replica (``apply.replicas``) until the governors open the
  service; then the other nodes join it as they would any service.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from consortium_node.common.timeutil import parse_rfc3339, rfc3339
from consortium_operator.api import conditions as c
from consortium_operator.consortium.acks import Due, member_events, relay
from consortium_operator.consortium.context import Pass, primary
from consortium_operator.consortium.observation import Observation
from consortium_operator.consortium.status import awaited, recovery_status, submitted
from consortium_operator.members.reconcile import MemberView
from consortium_operator.nodes.client import NodeUnreachableError, Reply
from consortium_operator.proposals.mirror import Document
from consortium_operator.proposals.relay import Primary

log = logging.getLogger("consortium_operator")

QUOTE_REFRESH = timedelta(minutes=4)  # submit-share --kube accepts quotes up to 10 minutes old
OPEN = "Open"  # the service phases, as the nodes name them (Ready's reasons while recovering)
WAITING_FOR_SHARES = c.WAITING_FOR_RECOVERY_SHARES
WAITING_FOR_OPEN = c.WAITING_FOR_OPEN
SHARES_PATH = "/recovery/shares"
FIELD = "spec.recoveryShare"
SHARE_SUBMITTED = "RecoveryShareSubmitted"
SHARE_REFUSED = "RecoveryShareRefused"


def recovering(obs: Observation) -> bool:
    return obs.service_phase is not None and obs.service_phase != OPEN


def observe_recovery(p: Pass, obs: Observation) -> Observation:
    """The ceremony as the primary tells it (module docstring); ``obs`` unchanged when the
    service is open and was never recovered, or when no primary answers."""
    if not recovering(obs) and p.spec.recovery is None:
        return obs
    target = primary(p, obs)
    if target is None:
        return obs
    try:
        ceremony = target.get("/recovery")
        if ceremony.status != 200:
            return obs
        found: dict[str, Any] = dict(ceremony.json())
        if found.get("phase") == WAITING_FOR_SHARES:
            found.update(_published(p, target))
    except NodeUnreachableError as exc:
        log.warning("%s/%s: reading the recovery: %s", p.namespace, p.spec.name, exc)
        return obs
    return replace(obs, ceremony=found)


def _published(p: Pass, target: Primary) -> dict[str, Any]:
    """The quote and record ``submit-share --kube`` reads: the ones in the status while the
    quote is younger than ``QUOTE_REFRESH`` (a status written every pass helps nobody), else
    fresh ones."""
    shown = ((p.body.get("status") or {}).get("recovery") or {}) if p.body else {}
    attestation, record = shown.get("attestation"), shown.get("record")
    fetched = _time(attestation.get("fetchedAt")) if isinstance(attestation, dict) else None
    if fetched is not None and record is not None and p.now - fetched < QUOTE_REFRESH:
        return {"attestation": attestation, "record": record}
    nonce = os.urandom(32).hex()
    quote, found = target.get(f"/node/quote?nonce={nonce}"), target.get("/gov/recovery")
    if quote.status != 200 or found.status != 200:
        return {}
    answer = quote.json()
    return {
        "attestation": {
            "nodeId": answer.get("node_id"),
            "publicKey": answer.get("public_key"),
            "quote": answer.get("quote"),
            "nonce": nonce,
            "fetchedAt": rfc3339(p.now),
        },
        "record": found.json().get("record"),
    }


def _time(text: object) -> datetime | None:
    try:
        return parse_rfc3339(str(text))
    except ValueError:
        return None


def share_states(obs: Observation) -> dict[str, str]:
    """member_id → ``Requested`` or ``Submitted`` while shares are awaited (else empty)."""
    if (obs.ceremony or {}).get("phase") != WAITING_FOR_SHARES:
        return {}
    return {
        **dict.fromkeys(awaited(obs), "Requested"),
        **dict.fromkeys(submitted(obs), "Submitted"),
    }


def due_shares(members: Sequence[MemberView], obs: Observation) -> list[Due]:
    """Members whose spec carries a share the recovery node does not hold yet (pure)."""
    if (obs.ceremony or {}).get("phase") != WAITING_FOR_SHARES:
        return []
    held = submitted(obs)
    found = []
    for view in members:
        text = (view.body.get("spec") or {}).get("recoveryShare")
        if view.spec is None or text is None or view.spec.member_id in held:
            continue
        found.append(Due(view.body, view.spec.member_id, Document.decode(text, FIELD), FIELD))
    return found


def relay_shares(p: Pass, obs: Observation, members: Sequence[MemberView]) -> Observation:
    """Relay every due share (module docstring); ``obs`` with the ceremony as the last
    answer left it."""
    items = due_shares(members, obs)
    target = primary(p, obs) if items else None
    if target is None:
        return obs
    ceremony = dict(obs.ceremony or {})

    def post(document: bytes) -> Reply:
        reply = target.post(SHARES_PATH, document)
        if reply.status == 200:
            progress = reply.json()
            ceremony["shares"] = {**(ceremony.get("shares") or {}), **progress}
        return reply

    try:
        relay(
            items,
            post,
            p.memory.relay,
            member_events(p),
            ok=(SHARE_SUBMITTED, "the recovery node holds this member's valid share"),
            refused=SHARE_REFUSED,
        )
    except NodeUnreachableError as exc:
        log.warning("%s/%s: relaying recovery shares: %s", p.namespace, p.spec.name, exc)
    return replace(obs, ceremony=ceremony)


EVENTS = {
    WAITING_FOR_SHARES: (
        "RecoveryStarted",
        "a new service identity recovered the lost consortium's history up to {txid}; "
        "waiting for {needed} recovery shares (consortiumctl recovery submit-share --kube {name})",
    ),
    WAITING_FOR_OPEN: (
        "LedgerSecretsRecovered",
        "the recovery shares opened every ledger secret; the governors vote "
        "transition_service_to_open",
    ),
    OPEN: ("ServiceOpened", "the recovered service is open; scaling to spec.nodes"),
}


def events(p: Pass, obs: Observation) -> None:
    """An Event at each phase change of a recovery (from the last status to this pass), and
    one per new share the recovery node holds."""
    old = ((p.body.get("status") or {}).get("recovery") or {}) if p.body else {}
    new = recovery_status(obs)
    if not new or (not old.get("phase") and new.get("phase") == OPEN):
        return
    phase = new["phase"]
    if phase != old.get("phase") and phase in EVENTS:
        reason, text = EVENTS[phase]
        message = text.format(
            txid=new.get("lastRecoveredTxid", "?"),
            needed=new.get("sharesNeeded", "k"),
            name=p.spec.name,
        )
        p.event("Normal", reason, message)
    before = set(old.get("sharesSubmitted") or ())
    for member_id in sorted(set(new.get("sharesSubmitted") or ()) - before):
        count = len(new.get("sharesSubmitted") or ())
        p.event(
            "Normal",
            SHARE_SUBMITTED,
            f"member {member_id[:16]}… submitted its share ({count} of "
            f"{new.get('sharesNeeded', '?')})",
        )
