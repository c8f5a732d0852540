"""The actions a proposal may carry: argument validation, and the state each one touches.

An action is ``{"name": <action>, "args": {…}}``. ``parse_actions`` validates a proposal's
list and returns normalised ``Action`` values, each with its *subjects*: the pieces of
consortium state it changes (``member:<id>``, ``measurement:<hex>``, ``constitution``, …).
Two proposals conflict when their subjects intersect; once one is applied, the other open
ones touching the same subjects are invalidated (their ballots were cast on another state).

| action                  | args                                            | subject              |
|-------------------------|-------------------------------------------------|----------------------|
| add_member              | certificate (PEM, P-256/Ed25519), role,         | member:<member_id>   |
|                         | recovery_key (optional P-256 public key PEM)    |                      |
| remove_member           | member_id                                       | member:<member_id>   |
| set_recovery_key        | member_id, recovery_key (PEM, or null: none)    | member:<member_id>   |
| trust_node              | node_id                                         | node:<node_id>       |
| retire_node             | node_id                                         | node:<node_id>       |
| add_measurement         | measurement (64 hex, or 96: SEV-SNP)            | measurement:<hex>    |
| remove_measurement      | measurement                                     | measurement:<hex>    |
| add_host_data           | host_data (64 hex)                              | host_data:<hex>      |
| remove_host_data        | host_data                                       | host_data:<hex>      |
| set_attestation_validity| validity_seconds, renew_before_seconds          | attestation_validity |
| set_sev_snp_policy      | policy: minimum_tcb, allow_debug, vmpl,         | platform_policy:     |
|                         | products (attestation/sev_snp/policy.py)        | sev-snp              |
| set_constitution        | constitution (see constitution.py)              | constitution         |
| rotate_ledger_secret    | (none)                                          | ledger_secret        |
| transition_service_to_open | (none): opens a recovered service and    | service,             |
|                         | rotates the ledger secret (docs/recovery.md)    | ledger_secret        |
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from consortium_node.attestation.sev_snp.policy import SnpPolicy
from consortium_node.governance.constitution import parse_constitution
from consortium_node.governance.errors import GovernanceError
from consortium_node.identity.certs import load_member_certificate
from consortium_node.recovery.record import RecoveryError, load_recovery_key, recovery_key_pem

HEX64 = re.compile(r"[0-9a-f]{64}")  # used with fullmatch: "$" would accept a final newline
MEASUREMENT = re.compile(r"[0-9a-f]{64}|[0-9a-f]{96}")  # SHA-256, or SEV-SNP's 48 bytes
ROLES = ("governor", "user")
MAX_ACTIONS = 16
MIN_VALIDITY_SECONDS = 300
MAX_VALIDITY_SECONDS = 366 * 24 * 3600


def is_sha256_hex(value: object) -> TypeGuard[str]:
    """64 lowercase hex digits (a SHA-256): member, node and proposal ids, measurements."""
    return isinstance(value, str) and HEX64.fullmatch(value) is not None


@dataclass(frozen=True)
class Action:
    name: str
    args: dict[str, Any]
    subjects: frozenset[str]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "args": self.args}


Parser = Callable[[Mapping[str, Any], str], tuple[dict[str, Any], frozenset[str]]]


def _only(args: Mapping[str, Any], field: str, allowed: set[str]) -> None:
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise GovernanceError(
            f"{field}.{unknown[0]}", f"unknown argument (known: {sorted(allowed)})"
        )
    missing = sorted(allowed - set(args))
    if missing:
        raise GovernanceError(f"{field}.{missing[0]}", "required")


def _hex64(args: Mapping[str, Any], field: str, name: str) -> str:
    value = args[name]
    if not is_sha256_hex(value):
        raise GovernanceError(f"{field}.{name}", "expected 64 lowercase hex digits (a SHA-256)")
    return value


def _seconds(args: Mapping[str, Any], field: str, name: str) -> int:
    value = args[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise GovernanceError(f"{field}.{name}", "expected an integer number of seconds")
    if not MIN_VALIDITY_SECONDS <= value <= MAX_VALIDITY_SECONDS:
        raise GovernanceError(
            f"{field}.{name}", f"expected {MIN_VALIDITY_SECONDS} to {MAX_VALIDITY_SECONDS} seconds"
        )
    return value


def _add_member(args: Mapping[str, Any], field: str) -> tuple[dict[str, Any], frozenset[str]]:
    # ``member_id`` is derived from the certificate; a stored (normalised) action carries it,
    # and then it must agree with the certificate.
    given_id = args.get("member_id")
    _only(
        {k: v for k, v in args.items() if k not in ("member_id", "recovery_key")},
        field,
        {"certificate", "role"},
    )
    pem, role = args["certificate"], args["role"]
    if not isinstance(pem, str):
        raise GovernanceError(f"{field}.certificate", "expected a PEM certificate")
    try:
        member = load_member_certificate(pem)
    except Exception as exc:  # the certificate layer says what is wrong with it
        raise GovernanceError(f"{field}.certificate", str(exc)) from exc
    if role not in ROLES:
        raise GovernanceError(f"{field}.role", f"expected one of {list(ROLES)}")
    if given_id is not None and given_id != member.member_id:
        raise GovernanceError(f"{field}.member_id", "is not the SHA-256 of the certificate's DER")
    normalised = {"certificate": member.pem, "role": role, "member_id": member.member_id}
    if args.get("recovery_key") is not None:
        normalised["recovery_key"] = _recovery_key(args["recovery_key"], f"{field}.recovery_key")
    return normalised, frozenset({f"member:{member.member_id}"})


def _recovery_key(pem: object, field: str) -> str:
    try:
        return recovery_key_pem(load_recovery_key(pem))
    except RecoveryError as exc:
        raise GovernanceError(field, str(exc)) from exc


def _set_recovery_key(args: Mapping[str, Any], field: str) -> tuple[dict[str, Any], frozenset[str]]:
    """A member's recovery public key (a recovery member holds a share), or null to stop
    being one."""
    _only(args, field, {"member_id", "recovery_key"})
    member_id = _hex64(args, field, "member_id")
    if "recovery_key" not in args:
        raise GovernanceError(
            f"{field}.recovery_key", "required (null: no longer a recovery member)"
        )
    pem = args["recovery_key"]
    key = None if pem is None else _recovery_key(pem, f"{field}.recovery_key")
    return {"member_id": member_id, "recovery_key": key}, frozenset({f"member:{member_id}"})


def _by_id(key: str, subject: str) -> Parser:
    def parse(args: Mapping[str, Any], field: str) -> tuple[dict[str, Any], frozenset[str]]:
        _only(args, field, {key})
        value = _hex64(args, field, key)
        return {key: value}, frozenset({f"{subject}:{value}"})

    return parse


def _measurement(args: Mapping[str, Any], field: str) -> tuple[dict[str, Any], frozenset[str]]:
    _only(args, field, {"measurement"})
    value = args["measurement"]
    if not isinstance(value, str) or MEASUREMENT.fullmatch(value) is None:
        raise GovernanceError(
            f"{field}.measurement",
            "expected 64 lowercase hex digits (insecure-virtual) or 96 (an SEV-SNP launch digest)",
        )
    return {"measurement": value}, frozenset({f"measurement:{value}"})


def _sev_snp_policy(args: Mapping[str, Any], field: str) -> tuple[dict[str, Any], frozenset[str]]:
    _only(args, field, {"policy"})
    try:
        policy = SnpPolicy.from_json(args["policy"], f"{field}.policy")
    except ValueError as exc:
        where, _, why = str(exc).partition(": ")
        raise GovernanceError(where, why) from exc
    return {"policy": policy.to_json()}, frozenset({"platform_policy:sev-snp"})


def _validity(args: Mapping[str, Any], field: str) -> tuple[dict[str, Any], frozenset[str]]:
    _only(args, field, {"validity_seconds", "renew_before_seconds"})
    validity = _seconds(args, field, "validity_seconds")
    renew = _seconds(args, field, "renew_before_seconds")
    if renew >= validity:
        raise GovernanceError(
            f"{field}.renew_before_seconds", f"must be less than validity_seconds ({validity})"
        )
    return {"validity_seconds": validity, "renew_before_seconds": renew}, frozenset(
        {"attestation_validity"}
    )


def _constitution(args: Mapping[str, Any], field: str) -> tuple[dict[str, Any], frozenset[str]]:
    _only(args, field, {"constitution"})
    parsed = parse_constitution(args["constitution"], KNOWN, f"{field}.constitution")
    return {"constitution": parsed.to_json()}, frozenset({"constitution"})


def _rotate(args: Mapping[str, Any], field: str) -> tuple[dict[str, Any], frozenset[str]]:
    _only(args, field, set())
    return {}, frozenset({"ledger_secret"})


def _open_service(args: Mapping[str, Any], field: str) -> tuple[dict[str, Any], frozenset[str]]:
    _only(args, field, set())
    return {}, frozenset({"service", "ledger_secret"})


PARSERS: dict[str, Parser] = {
    "add_member": _add_member,
    "remove_member": _by_id("member_id", "member"),
    "set_recovery_key": _set_recovery_key,
    "trust_node": _by_id("node_id", "node"),
    "retire_node": _by_id("node_id", "node"),
    "add_measurement": _measurement,
    "remove_measurement": _measurement,
    "add_host_data": _by_id("host_data", "host_data"),
    "remove_host_data": _by_id("host_data", "host_data"),
    "set_attestation_validity": _validity,
    "set_sev_snp_policy": _sev_snp_policy,
    "set_constitution": _constitution,
    "rotate_ledger_secret": _rotate,
    "transition_service_to_open": _open_service,
}
KNOWN = frozenset(PARSERS)


def parse_action(value: object, field: str) -> Action:
    if not isinstance(value, Mapping) or set(value) != {"name", "args"}:
        raise GovernanceError(field, 'expected {"name": <action>, "args": {…}}')
    name, args = value["name"], value["args"]
    if not isinstance(name, str) or name not in PARSERS:
        raise GovernanceError(f"{field}.name", f"unknown action {name!r} (known: {sorted(KNOWN)})")
    if not isinstance(args, Mapping):
        raise GovernanceError(f"{field}.args", "expected an object")
    normalised, subjects = PARSERS[name](args, f"{field}.args")
    return Action(name, normalised, subjects)


def parse_actions(value: object, field: str = "actions") -> tuple[Action, ...]:
    """A proposal's actions: 1 to 16, none touching what another one of them touches."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_ACTIONS:
        raise GovernanceError(field, f"expected a list of 1 to {MAX_ACTIONS} actions")
    actions = tuple(parse_action(item, f"{field}[{i}]") for i, item in enumerate(value))
    seen: dict[str, int] = {}
    for i, action in enumerate(actions):
        for subject in sorted(action.subjects):
            if subject in seen:
                raise GovernanceError(
                    f"{field}[{i}]",
                    f"touches {subject} like {field}[{seen[subject]}]: one change each",
                )
            seen[subject] = i
    return actions


def subjects_of(actions: tuple[Action, ...]) -> frozenset[str]:
    return frozenset().union(*(a.subjects for a in actions))
