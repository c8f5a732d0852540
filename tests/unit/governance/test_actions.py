"""Proposal actions: argument validation, normalisation and the subjects each touches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from consortium_node.governance.actions import (
    KNOWN,
    MAX_ACTIONS,
    MAX_VALIDITY_SECONDS,
    MIN_VALIDITY_SECONDS,
    PARSERS,
    Action,
    parse_action,
    parse_actions,
    subjects_of,
)
from consortium_node.governance.constitution import DEFAULT_EXPIRY_SECONDS
from consortium_node.governance.errors import GovernanceError
from consortium_node.identity.certs import certificate_pem
from consortium_node.recovery.record import recovery_key_pem
from tests.unit.governance.support import (
    MEASUREMENT,
    NODE_ID,
    OTHER_MEASUREMENT,
    action,
    add_measurement,
    member,
)

P256 = member("alice-p256", "p256")
ED25519 = member("bob-ed25519", "ed25519")
GARBAGE_PEM = "-----BEGIN CERTIFICATE-----\nZm9vYmFy\n-----END CERTIFICATE-----\n"


@cache
def foreign_certificate_pem(kind: str) -> str:
    """A self-signed certificate with a key members may not use (RSA-2048 or P-384)."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP384R1())
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{kind} member")])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return certificate_pem(cert)


CONSTITUTION_IN = {"threshold": "2", "auto_trust_nodes": False}
RECOVERY_KEY = recovery_key_pem(ec.generate_private_key(ec.SECP256R1()).public_key())
P384_KEY = recovery_key_pem(ec.generate_private_key(ec.SECP384R1()).public_key())
CONSTITUTION_OUT = {
    "threshold": 2,
    "auto_approve": [],
    "proposal_expiry_seconds": DEFAULT_EXPIRY_SECONDS,
    "auto_trust_nodes": False,
    "recovery_threshold": "majority",  # the default when a constitution does not say
}

VALID = [
    pytest.param(
        "add_member",
        {"certificate": P256.certificate_pem, "role": "governor"},
        {"certificate": P256.certificate_pem, "role": "governor", "member_id": P256.member_id},
        {f"member:{P256.member_id}"},
        id="add_member-p256-governor",
    ),
    pytest.param(
        "add_member",
        {"certificate": ED25519.certificate_pem, "role": "user"},
        {"certificate": ED25519.certificate_pem, "role": "user", "member_id": ED25519.member_id},
        {f"member:{ED25519.member_id}"},
        id="add_member-ed25519-user",
    ),
    pytest.param(
        "add_member",
        {"certificate": ED25519.certificate_pem, "role": "governor", "recovery_key": RECOVERY_KEY},
        {
            "certificate": ED25519.certificate_pem,
            "role": "governor",
            "member_id": ED25519.member_id,
            "recovery_key": RECOVERY_KEY,
        },
        {f"member:{ED25519.member_id}"},
        id="add_member-with-a-recovery-key",
    ),
    pytest.param(
        "set_recovery_key",
        {"member_id": P256.member_id, "recovery_key": RECOVERY_KEY},
        {"member_id": P256.member_id, "recovery_key": RECOVERY_KEY},
        {f"member:{P256.member_id}"},
        id="set_recovery_key",
    ),
    pytest.param(
        "set_recovery_key",
        {"member_id": P256.member_id, "recovery_key": None},
        {"member_id": P256.member_id, "recovery_key": None},
        {f"member:{P256.member_id}"},
        id="set_recovery_key-none",
    ),
    pytest.param(
        "remove_member",
        {"member_id": P256.member_id},
        {"member_id": P256.member_id},
        {f"member:{P256.member_id}"},
        id="remove_member",
    ),
    pytest.param(
        "trust_node", {"node_id": NODE_ID}, {"node_id": NODE_ID}, {f"node:{NODE_ID}"}, id="trust"
    ),
    pytest.param(
        "retire_node", {"node_id": NODE_ID}, {"node_id": NODE_ID}, {f"node:{NODE_ID}"}, id="retire"
    ),
    pytest.param(
        "add_measurement",
        {"measurement": MEASUREMENT},
        {"measurement": MEASUREMENT},
        {f"measurement:{MEASUREMENT}"},
        id="add_measurement",
    ),
    pytest.param(
        "remove_measurement",
        {"measurement": MEASUREMENT},
        {"measurement": MEASUREMENT},
        {f"measurement:{MEASUREMENT}"},
        id="remove_measurement",
    ),
    pytest.param(
        "add_measurement",
        {"measurement": "ab" * 48},
        {"measurement": "ab" * 48},
        {f"measurement:{'ab' * 48}"},
        id="add_measurement-sev-snp",
    ),
    pytest.param(
        "set_sev_snp_policy",
        {"policy": {"minimum_tcb": {"Genoa": {"snp": 23}}, "products": ["Genoa"]}},
        {
            "policy": {
                "minimum_tcb": {"Genoa": {"snp": 23}},
                "allow_debug": False,
                "vmpl": 0,
                "products": ["Genoa"],
            }
        },
        {"platform_policy:sev-snp"},
        id="set_sev_snp_policy-normalised",
    ),
    pytest.param(
        "add_host_data",
        {"host_data": OTHER_MEASUREMENT},
        {"host_data": OTHER_MEASUREMENT},
        {f"host_data:{OTHER_MEASUREMENT}"},
        id="add_host_data",
    ),
    pytest.param(
        "remove_host_data",
        {"host_data": OTHER_MEASUREMENT},
        {"host_data": OTHER_MEASUREMENT},
        {f"host_data:{OTHER_MEASUREMENT}"},
        id="remove_host_data",
    ),
    pytest.param(
        "set_attestation_validity",
        {"validity_seconds": 86400, "renew_before_seconds": 3600},
        {"validity_seconds": 86400, "renew_before_seconds": 3600},
        {"attestation_validity"},
        id="set_attestation_validity",
    ),
    pytest.param(
        "set_attestation_validity",
        {"validity_seconds": MAX_VALIDITY_SECONDS, "renew_before_seconds": MIN_VALIDITY_SECONDS},
        {"validity_seconds": MAX_VALIDITY_SECONDS, "renew_before_seconds": MIN_VALIDITY_SECONDS},
        {"attestation_validity"},
        id="set_attestation_validity-bounds",
    ),
    pytest.param(
        "set_constitution",
        {"constitution": CONSTITUTION_IN},
        {"constitution": CONSTITUTION_OUT},
        {"constitution"},
        id="set_constitution-legacy-normalised",
    ),
    pytest.param("rotate_ledger_secret", {}, {}, {"ledger_secret"}, id="rotate_ledger_secret"),
    pytest.param(
        "transition_service_to_open",
        {},
        {},
        {"service", "ledger_secret"},
        id="transition_service_to_open",
    ),
]


@pytest.mark.parametrize(("name", "args", "expected_args", "subjects"), VALID)
def test_valid_action_is_normalised(
    name: str, args: dict[str, Any], expected_args: dict[str, Any], subjects: set[str]
) -> None:
    (parsed,) = parse_actions([{"name": name, "args": args}])
    assert parsed == Action(name, expected_args, frozenset(subjects))
    assert parsed.to_json() == {"name": name, "args": expected_args}


def test_every_action_has_a_valid_case() -> None:
    assert {case.values[0] for case in VALID} == set(PARSERS) == KNOWN


def test_add_member_pem_is_re_encoded() -> None:
    """Whitespace around the PEM does not change the certificate (nor the member_id)."""
    (parsed,) = parse_actions(
        [action("add_member", certificate=f"\n\n{P256.certificate_pem}\n", role="user")]
    )
    assert parsed.args["certificate"] == P256.certificate_pem
    assert parsed.args["member_id"] == P256.member_id


def _validity(validity: object, renew: object) -> dict[str, Any]:
    return action("set_attestation_validity", validity_seconds=validity, renew_before_seconds=renew)


INVALID = [
    pytest.param(
        action("set_recovery_key", member_id=P256.member_id),
        "actions[0].args.recovery_key",
        id="set_recovery_key-missing-key",
    ),
    pytest.param(
        action("set_recovery_key", member_id=P256.member_id, recovery_key=P384_KEY),
        "actions[0].args.recovery_key",
        id="recovery-key-p384",
    ),
    pytest.param(
        action(
            "add_member",
            certificate=P256.certificate_pem,
            role="governor",
            recovery_key=P256.certificate_pem,
        ),
        "actions[0].args.recovery_key",
        id="recovery-key-a-certificate",
    ),
    pytest.param(
        action(
            "add_member",
            certificate=P256.certificate_pem,
            role="governor",
            recovery_key="-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n",
        ),
        "actions[0].args.recovery_key",
        id="recovery-key-private",
    ),
    pytest.param(action("trust_node"), "actions[0].args.node_id", id="missing-arg"),
    pytest.param(
        action("trust_node", node_id=NODE_ID, reason="x"),
        "actions[0].args.reason",
        id="unknown-arg",
    ),
    pytest.param(
        action("add_member", certificate=P256.certificate_pem),
        "actions[0].args.role",
        id="add_member-missing-role",
    ),
    pytest.param(
        add_measurement(MEASUREMENT.upper()), "actions[0].args.measurement", id="hex-uppercase"
    ),
    pytest.param(add_measurement(MEASUREMENT[:63]), "actions[0].args.measurement", id="hex-63"),
    pytest.param(add_measurement("ab" * 40), "actions[0].args.measurement", id="hex-80"),
    pytest.param(
        action("set_sev_snp_policy", policy={"vmpl": 9}),
        "actions[0].args.policy.vmpl",
        id="sev-snp-policy-vmpl",
    ),
    pytest.param(
        action("set_sev_snp_policy", policy={"minimum_tcb": {"Milan": {"fmc": 1}}}),
        "actions[0].args.policy.minimum_tcb.Milan.fmc",
        id="sev-snp-policy-fmc-on-milan",
    ),
    pytest.param(add_measurement(MEASUREMENT + "a"), "actions[0].args.measurement", id="hex-65"),
    pytest.param(add_measurement("zz" * 32), "actions[0].args.measurement", id="not-hex"),
    pytest.param(add_measurement(12), "actions[0].args.measurement", id="hex-not-string"),
    pytest.param(
        action("remove_host_data", host_data=MEASUREMENT + "\n"),
        "actions[0].args.host_data",
        id="hex-trailing-newline",
    ),
    pytest.param(
        action("add_member", certificate=P256.certificate_pem, role="admin"),
        "actions[0].args.role",
        id="bad-role",
    ),
    pytest.param(
        action("add_member", certificate=P256.certificate_pem, role="operator"),
        "actions[0].args.role",
        id="operator-role-not-grantable",
    ),
    pytest.param(
        action("add_member", certificate=GARBAGE_PEM, role="user"),
        "actions[0].args.certificate",
        id="garbage-certificate",
    ),
    pytest.param(
        action("add_member", certificate="hello", role="user"),
        "actions[0].args.certificate",
        id="not-pem",
    ),
    pytest.param(
        action("add_member", certificate=42, role="user"),
        "actions[0].args.certificate",
        id="certificate-not-string",
    ),
    pytest.param(
        _validity(3600, 3600), "actions[0].args.renew_before_seconds", id="renew-equals-validity"
    ),
    pytest.param(
        _validity(3600, 7200), "actions[0].args.renew_before_seconds", id="renew-above-validity"
    ),
    pytest.param(
        _validity(MIN_VALIDITY_SECONDS - 1, MIN_VALIDITY_SECONDS),
        "actions[0].args.validity_seconds",
        id="validity-too-short",
    ),
    pytest.param(
        _validity(MAX_VALIDITY_SECONDS + 1, 3600),
        "actions[0].args.validity_seconds",
        id="validity-too-long",
    ),
    pytest.param(
        _validity(86400, MIN_VALIDITY_SECONDS - 1),
        "actions[0].args.renew_before_seconds",
        id="renew-too-short",
    ),
    pytest.param(_validity(True, 3600), "actions[0].args.validity_seconds", id="validity-bool"),
    pytest.param(_validity(86400, False), "actions[0].args.renew_before_seconds", id="renew-bool"),
    pytest.param(_validity("86400", 3600), "actions[0].args.validity_seconds", id="validity-str"),
    pytest.param(_validity(86400.0, 3600), "actions[0].args.validity_seconds", id="validity-float"),
    pytest.param(
        action("set_constitution", constitution={"threshold": 0}),
        "actions[0].args.constitution.threshold",
        id="set_constitution-bad-threshold",
    ),
    pytest.param(
        action("set_constitution", constitution={"auto_approve": ["set_constitution"]}),
        "actions[0].args.constitution.auto_approve",
        id="set_constitution-auto-approves-itself",
    ),
    pytest.param(
        action("set_constitution", constitution="majority"),
        "actions[0].args.constitution",
        id="set_constitution-not-object",
    ),
    pytest.param(
        action("rotate_ledger_secret", now=True),
        "actions[0].args.now",
        id="rotate_ledger_secret-with-args",
    ),
    pytest.param(action("grant_everything"), "actions[0].name", id="unknown-action"),
    pytest.param({"name": "trust_node"}, "actions[0]", id="no-args-key"),
    pytest.param(
        {"name": "trust_node", "args": {"node_id": NODE_ID}, "why": "x"},
        "actions[0]",
        id="extra-key",
    ),
    pytest.param(["trust_node", {"node_id": NODE_ID}], "actions[0]", id="action-not-object"),
    pytest.param({"name": "trust_node", "args": [NODE_ID]}, "actions[0].args", id="args-list"),
]


@pytest.mark.parametrize(("item", "field"), INVALID)
def test_invalid_action_names_the_field(item: object, field: str) -> None:
    with pytest.raises(GovernanceError) as caught:
        parse_actions([item])
    assert caught.value.field == field


@pytest.mark.parametrize("kind", ["rsa", "p384"])
def test_certificate_with_another_key_type_is_refused(kind: str) -> None:
    pem = foreign_certificate_pem(kind)
    with pytest.raises(GovernanceError) as caught:
        parse_actions([action("add_member", certificate=pem, role="governor")])
    assert caught.value.field == "actions[0].args.certificate"


def test_error_field_points_at_the_failing_action() -> None:
    with pytest.raises(GovernanceError) as caught:
        parse_actions([add_measurement(), action("trust_node", node_id="nope")])
    assert caught.value.field == "actions[1].args.node_id"


def test_caller_chooses_the_field_prefix() -> None:
    with pytest.raises(GovernanceError) as caught:
        parse_actions([action("trust_node")], "payload.actions")
    assert caught.value.field == "payload.actions[0].args.node_id"


@pytest.mark.parametrize("name", [["trust_node"], {"x": 1}], ids=["list", "object"])
def test_unhashable_action_name_is_a_governance_error(name: object) -> None:
    with pytest.raises(GovernanceError) as caught:
        parse_action({"name": name, "args": {}}, "actions[0]")
    assert caught.value.field == "actions[0].name"


def _trust(i: int) -> dict[str, Any]:
    return action("trust_node", node_id=f"{i:064x}")


@pytest.mark.parametrize(
    ("value", "field"),
    [
        pytest.param([], "actions", id="empty"),
        pytest.param([_trust(i) for i in range(MAX_ACTIONS + 1)], "actions", id="17-actions"),
        pytest.param({"name": "trust_node", "args": {}}, "actions", id="object-not-list"),
        pytest.param(None, "actions", id="null"),
        pytest.param(
            [add_measurement(), action("remove_measurement", measurement=MEASUREMENT)],
            "actions[1]",
            id="same-measurement-twice",
        ),
        pytest.param(
            [
                action("add_member", certificate=P256.certificate_pem, role="user"),
                action("remove_member", member_id=P256.member_id),
            ],
            "actions[1]",
            id="add-and-remove-same-member",
        ),
        pytest.param(
            [_trust(1), _trust(2), action("retire_node", node_id=f"{1:064x}")],
            "actions[2]",
            id="trust-then-retire-same-node",
        ),
        pytest.param(
            [action("rotate_ledger_secret"), action("rotate_ledger_secret")],
            "actions[1]",
            id="rotate-twice",
        ),
    ],
)
def test_parse_actions_rejects(value: object, field: str) -> None:
    with pytest.raises(GovernanceError) as caught:
        parse_actions(value)
    assert caught.value.field == field


def test_sixteen_distinct_actions_are_accepted() -> None:
    parsed = parse_actions([_trust(i) for i in range(MAX_ACTIONS)])
    assert len(parsed) == MAX_ACTIONS
    assert [a.args["node_id"] for a in parsed] == [f"{i:064x}" for i in range(MAX_ACTIONS)]


def test_different_subjects_of_one_kind_do_not_conflict() -> None:
    parsed = parse_actions([add_measurement(), add_measurement(OTHER_MEASUREMENT)])
    assert [a.subjects for a in parsed] == [
        frozenset({f"measurement:{MEASUREMENT}"}),
        frozenset({f"measurement:{OTHER_MEASUREMENT}"}),
    ]


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        pytest.param([], set(), id="none"),
        pytest.param([add_measurement()], {f"measurement:{MEASUREMENT}"}, id="one"),
        pytest.param(
            [
                add_measurement(),
                action("trust_node", node_id=NODE_ID),
                action("set_constitution", constitution={}),
                action("rotate_ledger_secret"),
            ],
            {f"measurement:{MEASUREMENT}", f"node:{NODE_ID}", "constitution", "ledger_secret"},
            id="union",
        ),
    ],
)
def test_subjects_of(items: list[dict[str, Any]], expected: set[str]) -> None:
    parsed = tuple(parse_action(item, f"actions[{i}]") for i, item in enumerate(items))
    assert subjects_of(parsed) == frozenset(expected)


def test_trailing_newline_cannot_dodge_the_conflict_check() -> None:
    with pytest.raises(GovernanceError) as caught:
        parse_actions(
            [
                add_measurement(MEASUREMENT + "\n"),
                action("remove_measurement", measurement=MEASUREMENT),
            ]
        )
    assert caught.value.field in ("actions[0].args.measurement", "actions[1]")
