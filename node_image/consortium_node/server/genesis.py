"""The genesis transaction: what a new consortium's first entries contain.

Pure builders (configuration → write sets) so the content of genesis is reviewable in one place:

* ``public:consortium.info``         service certificate, genesis node, genesis quote (its nonce
                                      is SHA-256 of the service certificate DER, binding the two)
* ``public:consortium.members``       member_id → certificate, role, status[, recovery_key]
* ``public:consortium.constitution``  threshold, automatic node trust
* ``public:consortium.attestation``   allowed measurements and host_data, validity, renewal
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from consortium_node.attestation import Policy, host_data_for
from consortium_node.common.timeutil import rfc3339, utcnow
from consortium_node.identity.certs import MemberCertificate, ServiceIdentity
from consortium_node.server.config import NodeConfig

T_INFO = "public:consortium.info"
T_MEMBERS = "public:consortium.members"
T_CONSTITUTION = "public:consortium.constitution"
T_ATTESTATION = "public:consortium.attestation"
T_NODES = "public:consortium.nodes"
T_LISTS = "public:consortium.trusted_lists"


def attestation_policy(config: NodeConfig) -> dict[str, Any]:
    """The attestation policy recorded at genesis (governance changes it later)."""
    att = config.attestation
    host_data = att.host_data or tuple(
        host_data_for(config.consortium, mode) for mode in ("genesis", "join")
    )
    platform = (
        {}
        if config.platform.policy is None
        else {"platform": {config.platform.name: dict(config.platform.policy)}}
    )
    return {
        **platform,
        "measurements": sorted(att.measurements),
        "host_data": sorted(set(host_data)),
        "validity_seconds": att.validity.total_seconds(),
        "renew_before_seconds": att.renew_before.total_seconds(),
        "max_quote_age_seconds": att.max_quote_age.total_seconds(),
        "min_tcb_version": config.platform.min_tcb_version,
        "revoked_chip_ids": sorted(config.platform.revoked_chip_ids),
    }


def policy_from_value(value: dict[str, Any]) -> Policy:
    """The verifier's policy from the attestation policy as the ledger holds it."""
    return Policy(
        allowed_measurements=frozenset(value["measurements"]),
        allowed_host_data=frozenset(value["host_data"]),
        max_age=timedelta(seconds=value["max_quote_age_seconds"]),
        min_tcb_version=value["min_tcb_version"],
        revoked_chip_ids=frozenset(value["revoked_chip_ids"]),
        platform=value.get("platform", {}),
    )


def genesis_writes(
    config: NodeConfig,
    *,
    service: ServiceIdentity,
    members: list[MemberCertificate],
    node_id: str,
    genesis_quote: dict[str, Any],
    platform: str,
) -> dict[str, dict[str, Any]]:
    """The write set of the genesis transaction."""
    policy = attestation_policy(config)
    # Durations are stored as integers of milliseconds-free seconds where whole, else as
    # strings would lose canonical form: keep them integral (canonical JSON has no floats).
    for key in ("validity_seconds", "renew_before_seconds", "max_quote_age_seconds"):
        policy[key] = max(1, round(policy[key]))
    return {
        T_INFO: {
            "service": {
                "consortium": config.consortium,
                "service_certificate": service.certificate_pem,
                "service_certificate_sha256": service.certificate_sha256,
                "created_at": rfc3339(utcnow()),
                "genesis_node_id": node_id,
                "genesis_quote": genesis_quote,
                "platform": platform,
            }
        },
        T_MEMBERS: {
            m.member_id: {
                "certificate": m.pem,
                "role": cfg.role,
                "status": "Active",
                **({"recovery_key": cfg.recovery_key_pem} if cfg.recovery_key_pem else {}),
            }
            for m, cfg in zip(members, config.members, strict=True)
        },
        T_CONSTITUTION: {"constitution": config.constitution.to_json()},
        T_ATTESTATION: {"policy": policy},
    }
