"""What an accepted proposal changes: the ledger writes of its actions, against current state.

Pure: ``effects_of(actions, state)`` reads a snapshot (``GovState``) and returns the writes, or
raises GovernanceError naming the action (``actions[i]``) that cannot apply now — for example
removing the last Active governor, or a threshold no one could reach any more. The service
(``governance.py``) writes them in the same ledger transaction as the proposal's new state, so
an outcome and its effects commit together or not at all.

Tables written (DESIGN section 6; values as genesis wrote them):

* ``public:consortium.members``       member_id → {certificate, role, status[, recovery_key]};
                                      ``None`` removes
* ``public:consortium.attestation``   "policy" → measurements, host_data, validity, renewal
* ``public:consortium.constitution``  "constitution" → constitution.py's JSON form

Node trust changes (``trust_node``/``retire_node``) and measurement changes are returned
separately: they become the next trusted-node list version, which the primary signs. A
``rotate_ledger_secret`` is returned as the nodes to wrap the new secret to (every node Trusted
once the proposal's other actions applied): the secret itself is made when the transaction is
appended (``server/ledger_secrets.py``), never here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from consortium_node.governance.actions import KNOWN, Action
from consortium_node.governance.constitution import Constitution, parse_constitution
from consortium_node.governance.errors import GovernanceError
from consortium_node.server.genesis import T_ATTESTATION, T_CONSTITUTION, T_MEMBERS
from consortium_node.server.service_state import OPEN, SERVICE_KEY, T_SERVICE, opened_row, status_of


@dataclass(frozen=True)
class GovState:
    members: Mapping[str, Mapping[str, Any]]  # member_id → {certificate, role, status, …}
    policy: Mapping[str, Any]
    constitution: Constitution
    nodes: Mapping[str, str]  # node_id → Pending | Trusted | Retired
    service: Mapping[str, Any] | None = None  # the service row (``service_state``)
    secrets_recovered: bool = True  # the primary holds every ledger secret version


@dataclass
class Effects:
    writes: dict[str, dict[str, Any]] = field(default_factory=dict)
    trust: list[str] = field(default_factory=list)
    retire: list[str] = field(default_factory=list)
    measurements_changed: bool = False
    secret_recipients: list[str] | None = None  # rotate the ledger secret to these nodes


def active_governors(members: Mapping[str, Mapping[str, Any]]) -> set[str]:
    return {m for m, v in members.items() if v["role"] == "governor" and v["status"] == "Active"}


def _check_reachable(constitution: Constitution, governors: int, where: str) -> None:
    if governors < 1:
        raise GovernanceError(where, "would leave no Active governor: nothing could pass again")
    needed = constitution.votes_needed(governors)
    if needed > governors:
        raise GovernanceError(
            where,
            f"would leave {governors} Active governor(s) under a threshold of {needed}: "
            "nothing could pass again",
        )


def _set_item(policy: dict[str, Any], key: str, value: str, add: bool, where: str) -> None:
    items = list(policy[key])
    if add:
        if value in items:
            raise GovernanceError(where, f"{value[:16]}… is already in {key}")
        items.append(value)
    else:
        if value not in items:
            raise GovernanceError(where, f"{value[:16]}… is not in {key}")
        if len(items) == 1:
            raise GovernanceError(where, f"would leave {key} empty: no node could attest")
        items.remove(value)
    policy[key] = sorted(items)


@dataclass
class _Draft:
    """The state as the actions so far left it."""

    members: dict[str, dict[str, Any]]
    policy: dict[str, Any]
    constitution: Constitution
    nodes: dict[str, str]
    service: Mapping[str, Any] | None = None
    secrets_recovered: bool = True
    out: Effects = field(default_factory=Effects)
    touched_members: set[str] = field(default_factory=set)


def _members(d: _Draft, action: Action, where: str) -> None:
    member_id = action.args["member_id"]
    if action.name == "add_member":
        if member_id in d.members:
            raise GovernanceError(where, f"{member_id[:16]}… is already a member")
        d.members[member_id] = {
            "certificate": action.args["certificate"],
            "role": action.args["role"],
            "status": "Accepted",  # Active once the member acknowledges (signed ack)
        }
        if "recovery_key" in action.args:
            _governor_only(action.args["role"], where)
            d.members[member_id]["recovery_key"] = action.args["recovery_key"]
    else:
        if member_id not in d.members:
            raise GovernanceError(where, f"{member_id[:16]}… is not a member")
        del d.members[member_id]
        _check_reachable(d.constitution, len(active_governors(d.members)), where)
        _check_recoverable(d, where)
    d.touched_members.add(member_id)


def _check_recoverable(d: _Draft, where: str) -> None:
    """Recovery members (those with a recovery key) must stay at least as many as the
    recovery threshold, or no recovery record could be written (``recovery``)."""
    holders = sum(1 for m in d.members.values() if m.get("recovery_key"))
    needed = d.constitution.recovery_shares_needed(holders)
    if holders and needed > holders:
        raise GovernanceError(
            where,
            f"would leave {holders} recovery member(s) under a recovery threshold of {needed}: "
            "the ledger secrets could no longer be recovered from their shares",
        )


def _governor_only(role: str, where: str) -> None:
    if role != "governor":
        raise GovernanceError(where, f"only governors are recovery members; this one is a {role}")


def _recovery_key(d: _Draft, action: Action, where: str) -> None:
    member_id = action.args["member_id"]
    member = d.members.get(member_id)
    if member is None:
        raise GovernanceError(where, f"{member_id[:16]}… is not a member")
    if action.args["recovery_key"] is None:
        member.pop("recovery_key", None)
    else:
        _governor_only(member["role"], where)
        member["recovery_key"] = action.args["recovery_key"]
    _check_recoverable(d, where)
    d.touched_members.add(member_id)


def _nodes(d: _Draft, action: Action, where: str) -> None:
    node_id = action.args["node_id"]
    status = d.nodes.get(node_id)
    trust = action.name == "trust_node"
    allowed = {"Pending"} if trust else {"Trusted", "Pending"}
    if status not in allowed:
        raise GovernanceError(
            where,
            f"node {node_id[:16]}… is {status or 'unknown'}, not {' or '.join(sorted(allowed))}",
        )
    trusted = sum(1 for s in d.nodes.values() if s == "Trusted")
    if not trust and status == "Trusted" and trusted <= 1:
        raise GovernanceError(where, "cannot retire the last Trusted node")
    d.nodes[node_id] = "Trusted" if trust else "Retired"
    (d.out.trust if trust else d.out.retire).append(node_id)


def _policy(d: _Draft, action: Action, where: str) -> None:
    add = action.name.startswith("add_")
    if action.name.endswith("_measurement"):
        _set_item(d.policy, "measurements", action.args["measurement"], add, where)
        d.out.measurements_changed = True
    elif action.name.endswith("_host_data"):
        _set_item(d.policy, "host_data", action.args["host_data"], add, where)
    elif action.name == "set_sev_snp_policy":
        d.policy["platform"] = {**d.policy.get("platform", {}), "sev-snp": action.args["policy"]}
    else:  # set_attestation_validity
        d.policy["validity_seconds"] = action.args["validity_seconds"]
        d.policy["renew_before_seconds"] = action.args["renew_before_seconds"]


def _constitution(d: _Draft, action: Action, where: str) -> None:
    d.constitution = parse_constitution(action.args["constitution"], KNOWN, f"{where}.args")
    _check_reachable(d.constitution, len(active_governors(d.members)), where)
    _check_recoverable(d, where)
    d.out.writes[T_CONSTITUTION] = {"constitution": d.constitution.to_json()}


def _rotate(d: _Draft, action: Action, where: str) -> None:
    if action.name == "rotate_ledger_secret" and status_of(d.service) != OPEN:
        raise GovernanceError(
            where, "the service is recovering: transition_service_to_open rotates the secret"
        )
    if d.out.secret_recipients is not None:
        raise GovernanceError(where, "this proposal already rotates the ledger secret")
    d.out.secret_recipients = []  # filled in once every action applied


def _open_service(d: _Draft, action: Action, where: str) -> None:
    """Open a recovered service (``service_state``) and rotate a fresh ledger secret in."""
    if d.service is None or status_of(d.service) == OPEN:
        raise GovernanceError(where, "the service is already open")
    if not d.secrets_recovered:
        raise GovernanceError(
            where,
            "the ledger secrets are not recovered yet: the recovery members submit their "
            "shares first (GET /recovery)",
        )
    d.out.writes[T_SERVICE] = {SERVICE_KEY: opened_row(d.service)}
    _rotate(d, action, where)


EFFECTS = {
    "add_member": _members,
    "remove_member": _members,
    "set_recovery_key": _recovery_key,
    "trust_node": _nodes,
    "retire_node": _nodes,
    "add_measurement": _policy,
    "remove_measurement": _policy,
    "add_host_data": _policy,
    "remove_host_data": _policy,
    "set_attestation_validity": _policy,
    "set_sev_snp_policy": _policy,
    "set_constitution": _constitution,
    "rotate_ledger_secret": _rotate,
    "transition_service_to_open": _open_service,
}


def effects_of(actions: tuple[Action, ...], state: GovState) -> Effects:
    """The writes of ``actions`` applied in order to ``state``; GovernanceError if one can't."""
    d = _Draft(
        members={k: dict(v) for k, v in state.members.items()},
        policy=dict(state.policy),
        constitution=state.constitution,
        nodes=dict(state.nodes),
        service=state.service,
        secrets_recovered=state.secrets_recovered,
    )
    for i, action in enumerate(actions):
        where = f"actions[{i}]"
        effect = EFFECTS.get(action.name)
        if effect is None:  # parse_actions admits only known actions: one must be handled here
            raise GovernanceError(where, f"no effect defined for {action.name}")
        effect(d, action, where)
    if d.touched_members:
        d.out.writes[T_MEMBERS] = {m: d.members.get(m) for m in sorted(d.touched_members)}
    if d.policy != state.policy:
        d.out.writes[T_ATTESTATION] = {"policy": d.policy}
    if d.out.secret_recipients is not None:
        d.out.secret_recipients = sorted(n for n, s in d.nodes.items() if s == "Trusted")
    return d.out
