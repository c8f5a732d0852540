"""Member CRs: validation and status (``memberId``, Accepted, Active).

Before bootstrap, the Consortium's valid Members become the genesis members (the config
ConfigMap carries their certificates). After bootstrap the ledger is authoritative: a Member
added later becomes an add_member proposal (``intents.py``) and shows ``GovernancePending``
naming it, then ``AcknowledgementNeeded`` once the members accepted it, and is Active only when
the ledger says so (after its own signed ack). A deleted Member becomes a remove_member
proposal (the finalizer in ``handlers.py``).

Every Member that names a Consortium gets a status, an invalid one too (``Accepted=False``
naming the field), so nothing a user applies is ignored silently. ``spec.consortium`` is
immutable once the Member was admitted (``status.consortium`` set): the first consortium's
ledger still holds the member, so a Member cannot move; the operator keeps it with the
consortium it was admitted to and says to delete and recreate it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consortium_node.common.timeutil import rfc3339, utcnow
from consortium_operator.api import conditions as c
from consortium_operator.api.spec import MemberSpec, SpecError, parse_member
from consortium_operator.kube.k8s import Kube


@dataclass(frozen=True)
class MemberView:
    body: Mapping[str, Any]
    spec: MemberSpec | None
    error: SpecError | None

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> MemberView:
        try:
            return cls(body, parse_member(body["metadata"]["name"], body.get("spec") or {}), None)
        except SpecError as exc:
            return cls(body, None, exc)

    @classmethod
    def list(cls, kube: Kube, namespace: str) -> list[MemberView]:
        return [cls.of(b) for b in kube.list("Member", namespace)]

    @property
    def requested(self) -> str | None:
        """``spec.consortium`` as written (also when the rest of the spec is invalid)."""
        name = (self.body.get("spec") or {}).get("consortium")
        return name if isinstance(name, str) else None

    @property
    def bound(self) -> str | None:
        """The Consortium this Member belongs to: the one it was admitted to
        (``status.consortium.name``), else the one its spec names."""
        admitted = ((self.body.get("status") or {}).get("consortium") or {}).get("name")
        return admitted if isinstance(admitted, str) and admitted else self.requested

    @property
    def moved(self) -> bool:
        """``spec.consortium`` was changed after the Member was admitted (not allowed)."""
        return self.requested is not None and self.bound != self.requested


def member_conditions(
    view: MemberView,
    consortium: Mapping[str, Any] | None,
    ledger: Mapping[str, str] | None,
    proposal: str | None = None,
) -> list[c.Condition]:
    """Accepted: valid and its Consortium exists. Active: Active in the consortium's ledger."""
    if view.moved:
        return [
            c.Condition(
                c.ACCEPTED,
                False,
                c.CONSORTIUM_IMMUTABLE,
                f"spec.consortium is immutable: this Member was admitted to {view.bound!r} and "
                f"its ledger still holds it; set spec.consortium back to {view.bound!r}, or "
                f"delete this Member (the members vote on removing it) and create a new one "
                f"for {view.requested!r}",
            ),
            c.Condition(c.ACTIVE, False, c.CONSORTIUM_IMMUTABLE, "spec.consortium changed"),
        ]
    if view.error is not None:
        return [
            c.Condition(
                c.ACCEPTED,
                False,
                c.CERTIFICATE_INVALID if view.error.field == "spec.certificate" else c.INVALID_SPEC,
                str(view.error),
            ),
            c.Condition(c.ACTIVE, False, c.INVALID_SPEC, "fix the spec first"),
        ]
    assert view.spec is not None
    if consortium is None:
        return [
            c.Condition(
                c.ACCEPTED,
                False,
                c.CONSORTIUM_NOT_FOUND,
                f"spec.consortium: no Consortium {view.spec.consortium!r} in this namespace",
            ),
            c.Condition(c.ACTIVE, False, c.CONSORTIUM_NOT_FOUND, "no such consortium"),
        ]
    bootstrapped = (consortium.get("status") or {}).get("serviceCertificate") is not None
    accepted = c.Condition(
        c.ACCEPTED,
        True,
        c.MEMBER_OF_GENESIS if not bootstrapped else c.AS_EXPECTED,
        "certificate valid; consortium found",
    )
    if ledger is None:
        return [accepted, c.Condition(c.ACTIVE, None, c.LEDGER_UNKNOWN, "ledger not read yet")]
    state = ledger.get(view.spec.member_id)
    if state == "Active":
        return [accepted, c.Condition(c.ACTIVE, True, c.LEDGER_ACTIVE, "Active in the ledger")]
    if state == "Accepted":
        return [
            accepted,
            c.Condition(
                c.ACTIVE,
                False,
                c.ACK_NEEDED,
                "the members accepted it; it becomes Active when it acknowledges with its own "
                f"key: consortiumctl ack --consortium {view.spec.consortium} --cert CERT.pem "
                f"--key KEY.pem --kube {view.spec.name}",
            ),
        ]
    return [
        accepted,
        c.Condition(
            c.ACTIVE,
            False,
            c.GOVERNANCE_PENDING,
            "not a member in the ledger yet: the members vote on adding it"
            + (f" ({proposal})" if proposal else "")
            if state is None
            else f"{state} in the ledger",
        ),
    ]


def share_condition(share: str | None, consortium: str = "CONSORTIUM") -> c.Condition | None:
    """RecoveryShare while a recovery waits for shares (None otherwise)."""
    if share == "Submitted":
        return c.Condition(
            c.RECOVERY_SHARE,
            True,
            c.RECOVERY_SHARE_SUBMITTED,
            "the recovery node holds this member's valid recovery share",
        )
    if share == "Requested":
        return c.Condition(
            c.RECOVERY_SHARE,
            False,
            c.RECOVERY_SHARE_REQUESTED,
            "the recovery node waits for this member's share: consortiumctl recovery "
            f"submit-share --kube {consortium} (decrypted on the member's own machine)",
        )
    return None


def member_status(
    view: MemberView,
    consortium: Mapping[str, Any] | None,
    ledger: Mapping[str, str] | None,
    proposal: str | None = None,
    share: str | None = None,
) -> dict[str, Any]:
    meta = view.body["metadata"]
    existing = view.body.get("status") or {}
    conds = member_conditions(view, consortium, ledger, proposal)
    shown = share_condition(share, view.spec.consortium if view.spec else "CONSORTIUM")
    if ledger is None and existing.get("conditions"):  # keep the last known Active verdict
        known = next((x for x in existing["conditions"] if x.get("type") == c.ACTIVE), None)
        if known is not None:
            conds = [
                conds[0],
                c.Condition(
                    c.ACTIVE,
                    _parse(known.get("status")),
                    known.get("reason", ""),
                    known.get("message", ""),
                ),
            ]
    generation = int(meta.get("generation", 0))
    merged = c.merge(
        existing.get("conditions"),
        [*conds, *([shown] if shown else [])],
        now=rfc3339(utcnow()),
        generation=generation,
    )
    if shown is None:  # no recovery waits for shares: the condition goes
        merged = [x for x in merged if x.get("type") != c.RECOVERY_SHARE]
    body: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": merged,
        "phase": "Active" if conds[1].status else ("Accepted" if conds[0].status else "Invalid"),
    }
    if view.spec is not None:
        body["memberId"] = view.spec.member_id
    if share is not None:
        body["recoveryShare"] = share
    elif "recoveryShare" in existing:
        body["recoveryShare"] = None  # no share awaited any more: a merge patch deletes it
    if "consortium" in existing:  # the admission is kept as it was (spec.consortium immutable)
        body["consortium"] = existing["consortium"]
    elif consortium is not None and view.spec is not None:
        body["consortium"] = {
            "name": consortium["metadata"]["name"],
            "uid": consortium["metadata"]["uid"],
        }
    return body


def _parse(text: Any) -> bool | None:
    return True if text == "True" else (False if text == "False" else None)


def reconcile_members(
    kube: Kube,
    members: Sequence[MemberView],
    consortium: Mapping[str, Any] | None,
    ledger: Mapping[str, str] | None,
    proposals: Mapping[str, str] | None = None,
    *,
    recovery_shares: Mapping[str, str] | None = None,
) -> None:
    """Write each Member's status if it changed (zero writes otherwise). ``proposals``:
    Member name → where its add-member proposal stands; ``recovery_shares``: member_id →
    ``Requested``/``Submitted`` while a recovery waits for shares."""
    for view in members:
        name = view.spec.name if view.spec is not None else ""
        proposal = (proposals or {}).get(name)
        share = (recovery_shares or {}).get(view.spec.member_id) if view.spec else None
        new = member_status(view, consortium, ledger, proposal, share)
        if c.without_transition_times(new) == c.without_transition_times(
            view.body.get("status") or {}
        ):
            continue
        meta = view.body["metadata"]
        old = {x.get("type"): x for x in (view.body.get("status") or {}).get("conditions", [])}
        shown = share_condition(share)
        for cond in [
            *member_conditions(view, consortium, ledger, proposal),
            *([shown] if shown else []),
        ]:
            prev = old.get(cond.type, {})
            if prev.get("status") != cond.status_text and cond.status is not None:
                kube.event(
                    view.body,
                    "Normal" if cond.status else "Warning",
                    cond.reason,
                    f"{cond.type}={cond.status_text}: {cond.message}",
                    rfc3339(utcnow()),
                )
        kube.patch_status("Member", meta["namespace"], meta["name"], new)
