"""The constitution: how many governor votes accept a proposal, which actions need none, and
how long a proposal stays open.

JSON form (the ``public:consortium.constitution`` ledger value, and the ``set_constitution``
action's argument)::

    {"threshold": "majority" | <int ≥ 1>,      # approvals needed among Active governors
     "auto_approve": ["trust_node", …],         # actions accepted without votes (sorted)
     "proposal_expiry_seconds": <int ≥ 60>,     # Open → Expired after this long
     "auto_trust_nodes": <bool>,                # attested joiners become Trusted at once
     "recovery_threshold": "majority" | <int ≥ 1>}  # recovery shares needed (``recovery``)

Genesis wrote only ``threshold`` (possibly as a digit string) and ``auto_trust_nodes``; the
missing fields take their defaults, so every ledger ever written still parses.

``recovery_threshold`` is k of the recovery members' k-of-n shares of the recovery key
(``consortium_node.recovery``): ``majority`` of the recovery members (the default), or a
number. A number larger than the recovery members can never be met: the primary then writes
no new recovery record and says so (it is not silently lowered).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from consortium_node.governance.errors import GovernanceError

DEFAULT_EXPIRY_SECONDS = 7 * 24 * 3600
MIN_EXPIRY_SECONDS = 60
MAX_EXPIRY_SECONDS = 365 * 24 * 3600
FIELDS = frozenset(
    {"threshold", "auto_approve", "proposal_expiry_seconds", "auto_trust_nodes",
     "recovery_threshold"}
)  # fmt: skip


@dataclass(frozen=True)
class Constitution:
    threshold: str | int = "majority"
    auto_approve: tuple[str, ...] = ()
    proposal_expiry_seconds: int = DEFAULT_EXPIRY_SECONDS
    auto_trust_nodes: bool = True
    recovery_threshold: str | int = "majority"

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "auto_approve": list(self.auto_approve),
            "proposal_expiry_seconds": self.proposal_expiry_seconds,
            "auto_trust_nodes": self.auto_trust_nodes,
            "recovery_threshold": self.recovery_threshold,
        }

    def recovery_shares_needed(self, recovery_members: int) -> int:
        """k of k-of-n recovery shares when ``recovery_members`` hold them (``majority``: more
        than half; a number is returned as it is, even above ``recovery_members``)."""
        if self.recovery_threshold == "majority":
            return recovery_members // 2 + 1
        return int(self.recovery_threshold)

    def votes_needed(self, governors: int) -> int:
        """Approvals that accept a proposal when ``governors`` governors are Active.

        ``majority`` is more than half (2 of 3, 3 of 4, 1 of 1). An integer threshold larger
        than the number of governors can never be met: proposals then stay Open until they
        expire, and the caller reports it (it is not silently lowered).
        """
        if governors < 0:
            raise ValueError("governors must be ≥ 0")
        if self.threshold == "majority":
            return governors // 2 + 1
        return int(self.threshold)

    def auto_approves(self, action_names: list[str]) -> bool:
        """True when every action of a proposal is auto-approved (a proposal needs ≥ 1)."""
        return bool(action_names) and all(name in self.auto_approve for name in action_names)


def parse_threshold(value: object, field: str = "threshold") -> str | int:
    if value == "majority":
        return "majority"
    if isinstance(value, str) and value.isascii() and value.isdigit():  # genesis: "2"
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GovernanceError(field, f"expected 'majority' or an integer ≥ 1, got {value!r}")
    return value


def parse_constitution(
    value: object, known_actions: frozenset[str], field: str = "constitution"
) -> Constitution:
    """Validate a constitution (JSON form above); raise GovernanceError naming the field."""
    if not isinstance(value, Mapping):
        raise GovernanceError(field, "expected an object")
    unknown = sorted(set(value) - FIELDS)
    if unknown:
        raise GovernanceError(f"{field}.{unknown[0]}", f"unknown field (known: {sorted(FIELDS)})")
    threshold = parse_threshold(value.get("threshold", "majority"), f"{field}.threshold")
    auto = value.get("auto_approve", [])
    if not isinstance(auto, list) or not all(isinstance(a, str) for a in auto):
        raise GovernanceError(f"{field}.auto_approve", "expected a list of action names")
    for i, name in enumerate(auto):
        if name not in known_actions:
            raise GovernanceError(
                f"{field}.auto_approve[{i}]",
                f"unknown action {name!r} (known: {sorted(known_actions)})",
            )
    if "set_constitution" in auto:
        # The constitution would let anyone rewrite the constitution: refuse the foot-gun.
        raise GovernanceError(
            f"{field}.auto_approve", "set_constitution can never be auto-approved"
        )
    expiry = value.get("proposal_expiry_seconds", DEFAULT_EXPIRY_SECONDS)
    if (
        isinstance(expiry, bool)
        or not isinstance(expiry, int)
        or not MIN_EXPIRY_SECONDS <= expiry <= MAX_EXPIRY_SECONDS
    ):
        raise GovernanceError(
            f"{field}.proposal_expiry_seconds",
            f"expected {MIN_EXPIRY_SECONDS} to {MAX_EXPIRY_SECONDS} seconds, got {expiry!r}",
        )
    trust = value.get("auto_trust_nodes", True)
    if not isinstance(trust, bool):
        raise GovernanceError(f"{field}.auto_trust_nodes", "expected true or false")
    recovery = parse_threshold(
        value.get("recovery_threshold", "majority"), f"{field}.recovery_threshold"
    )
    return Constitution(threshold, tuple(sorted(set(auto))), expiry, trust, recovery)
