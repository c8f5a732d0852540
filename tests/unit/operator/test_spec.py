"""Consortium and Member specs: valid input parses to the right values; every invalid field is
named in ``SpecError.field`` so the Ready condition can point the user at it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.attestation import host_data_for
from consortium_node.recovery.record import recovery_key_pem
from consortium_operator.api.spec import (
    MAX_CONSORTIUM_NAME,
    SpecError,
    parse_consortium,
    parse_member,
)

from .support import (
    EXTRA_HOST_DATA,
    M1,
    M2,
    cached_certificate,
    full_spec,
    minimal_spec,
    sha256_hex,
    spec_with,
)

P384_PUBLIC = recovery_key_pem(ec.generate_private_key(ec.SECP384R1()).public_key())

# ---------------------------------------------------------------------------- Consortium


def test_full_spec_parses_every_field() -> None:
    spec = parse_consortium("demo", full_spec())
    assert spec.name == "demo"
    assert spec.nodes == 5
    assert spec.image == "registry.example:5000/consortium-node:1.2.3"
    assert spec.image_pull_policy == "Always"
    assert spec.attestation.platform == "insecure-virtual"
    assert spec.attestation.measurements == (M2, M1)
    assert spec.attestation.host_data == (EXTRA_HOST_DATA,)
    assert spec.attestation.validity == timedelta(hours=12)
    assert spec.attestation.renew_before == timedelta(hours=4)
    assert spec.threshold == 2
    assert spec.auto_trust_nodes is False
    assert spec.storage.size == "2Gi"
    assert spec.storage.storage_class_name == "fast"
    assert spec.storage.retain_on_delete is True
    assert spec.resources == {"requests": {"cpu": "500m", "memory": "256Mi"}}
    assert spec.signature_interval_tx == 50
    assert spec.signature_interval == timedelta(milliseconds=250)
    assert spec.client_selector == {"matchLabels": {"team": "ledger"}}


def test_minimal_spec_takes_defaults() -> None:
    spec = parse_consortium("demo", minimal_spec())
    assert spec.nodes == 3
    assert spec.image_pull_policy == "IfNotPresent"
    assert spec.attestation.platform == "insecure-virtual"
    assert spec.attestation.host_data == ()
    assert spec.attestation.validity == timedelta(hours=24)
    assert spec.attestation.renew_before == timedelta(hours=8)
    assert spec.threshold == "majority"
    assert spec.auto_trust_nodes is True
    assert spec.storage.size == "1Gi"
    assert spec.storage.storage_class_name is None
    assert spec.storage.retain_on_delete is False
    assert spec.resources == {}
    assert spec.signature_interval_tx == 100
    assert spec.signature_interval == timedelta(milliseconds=100)
    assert spec.client_selector == {}


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("nodes", 0, "spec.nodes"),
        ("nodes", -1, "spec.nodes"),
        ("nodes", "3", "spec.nodes"),
        ("nodes", True, "spec.nodes"),
        ("nodes", 2.0, "spec.nodes"),
        ("image", ..., "spec.image"),
        ("image", "", "spec.image"),
        ("image", "   ", "spec.image"),
        ("image", 7, "spec.image"),
        ("image", "localhost/consortium-node:latest", "spec.image"),
        ("image", "localhost/consortium-node", "spec.image"),
        ("image", "registry.example:5000/consortium-node", "spec.image"),
        ("imagePullPolicy", "always", "spec.imagePullPolicy"),
        ("imagePullPolicy", "Sometimes", "spec.imagePullPolicy"),
        ("attestation", "insecure-virtual", "spec.attestation"),
        ("attestation.measurements", ..., "spec.attestation.measurements"),
        ("attestation.measurements", [], "spec.attestation.measurements"),
        ("attestation.measurements", M1, "spec.attestation.measurements"),
        ("attestation.measurements", [M1, "zz" * 32], "spec.attestation.measurements[1]"),
        ("attestation.measurements", ["ab" * 31], "spec.attestation.measurements[0]"),
        ("attestation.measurements", [M1.upper()], "spec.attestation.measurements[0]"),
        ("attestation.measurements", [42], "spec.attestation.measurements[0]"),
        ("attestation.hostData", ["nothex"], "spec.attestation.hostData[0]"),
        ("attestation.hostData", "cd" * 32, "spec.attestation.hostData"),
        ("attestation.validity", "1 day", "spec.attestation.validity"),
        ("attestation.validity", "0s", "spec.attestation.validity"),
        ("attestation.validity", 3600, "spec.attestation.validity"),
        ("attestation.renewBefore", "soon", "spec.attestation.renewBefore"),
        ("attestation.renewBefore", "12h", "spec.attestation.renewBefore"),  # == validity
        ("attestation.renewBefore", "13h", "spec.attestation.renewBefore"),  # > validity
        ("governance", [], "spec.governance"),
        ("governance.threshold", 0, "spec.governance.threshold"),
        ("governance.threshold", -2, "spec.governance.threshold"),
        ("governance.threshold", "0", "spec.governance.threshold"),
        ("governance.threshold", "most", "spec.governance.threshold"),
        ("governance.threshold", True, "spec.governance.threshold"),
        ("governance.threshold", 1.5, "spec.governance.threshold"),
        ("governance.autoTrustNodes", "true", "spec.governance.autoTrustNodes"),
        ("governance.autoTrustNodes", 1, "spec.governance.autoTrustNodes"),
        ("storage.size", "1GB", "spec.storage.size"),
        ("storage.size", "lots", "spec.storage.size"),
        ("storage.size", 1024, "spec.storage.size"),
        ("storage.retainOnDelete", "yes", "spec.storage.retainOnDelete"),
        ("storage.retainOnDelete", 0, "spec.storage.retainOnDelete"),
        ("resources", "big", "spec.resources"),
        ("ledger.signatureIntervalTx", 0, "spec.ledger.signatureIntervalTx"),
        ("ledger.signatureIntervalTx", "100", "spec.ledger.signatureIntervalTx"),
        ("ledger.signatureIntervalTx", False, "spec.ledger.signatureIntervalTx"),
        ("ledger.signatureInterval", "fast", "spec.ledger.signatureInterval"),
        ("ledger.snapshotInterval", -1, "spec.ledger.snapshotInterval"),
        ("ledger.snapshotInterval", "10000", "spec.ledger.snapshotInterval"),
        ("ledger.snapshotInterval", True, "spec.ledger.snapshotInterval"),
        ("ledger.snapshotInterval", 100_000_001, "spec.ledger.snapshotInterval"),
        ("ledger.snapshotWritesPercent", -1, "spec.ledger.snapshotWritesPercent"),
        ("ledger.snapshotWritesPercent", 10_001, "spec.ledger.snapshotWritesPercent"),
        ("ledger.snapshotWritesPercent", "50", "spec.ledger.snapshotWritesPercent"),
        ("ledger.snapshotWritesPercent", 0.5, "spec.ledger.snapshotWritesPercent"),
        ("clientSelector", "app=x", "spec.clientSelector"),
    ],
)
def test_invalid_field_is_named(path: str, value: Any, field: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_consortium("demo", spec_with(path, value))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert caught.value.message


@pytest.mark.parametrize(
    "name",
    [
        "a" * (MAX_CONSORTIUM_NAME + 1),
        "Demo",
        "demo_1",
        "-demo",
        "demo-",
        "",
        "demo.example",
    ],
)
def test_invalid_metadata_name_is_named(name: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_consortium(name, full_spec())
    assert caught.value.field == "metadata.name"


@pytest.mark.parametrize("name", ["a", "demo", "a" * MAX_CONSORTIUM_NAME, "prod-2"])
def test_valid_metadata_names(name: str) -> None:
    assert parse_consortium(name, full_spec()).name == name


@pytest.mark.parametrize(
    ("path", "value", "attribute", "expected"),
    [
        ("governance.threshold", "2", "threshold", 2),
        ("governance.threshold", "majority", "threshold", "majority"),
        ("governance.threshold", 1, "threshold", 1),
        ("nodes", 1, "nodes", 1),
        ("image", "localhost/consortium-node@sha256:" + "e" * 64, "image", None),
        ("image", "consortium-node:v1", "image", "consortium-node:v1"),
        ("image", "  consortium-node:v1  ", "image", "consortium-node:v1"),
        ("imagePullPolicy", "Never", "image_pull_policy", "Never"),
        ("storage.size", "1.5Gi", None, None),
        ("storage.size", "100k", None, None),
        ("storage.size", "500M", None, None),
        ("storage.size", "1073741824", None, None),
        ("storage.storageClassName", "", None, None),
        ("attestation.hostData", ..., None, None),
    ],
)
def test_accepted_values(path: str, value: Any, attribute: str | None, expected: Any) -> None:
    spec = parse_consortium("demo", spec_with(path, value))
    if attribute is not None:
        assert getattr(spec, attribute) == (value if expected is None else expected)


def test_empty_storage_class_means_cluster_default() -> None:
    spec = parse_consortium("demo", spec_with("storage.storageClassName", ""))
    assert spec.storage.storage_class_name is None


def test_padded_latest_image_is_refused() -> None:
    with pytest.raises(SpecError) as caught:
        parse_consortium("demo", spec_with("image", "localhost/consortium-node:latest "))
    assert caught.value.field == "spec.image"


def test_spec_error_is_a_value_error() -> None:
    err = SpecError("spec.nodes", "must be positive")
    assert isinstance(err, ValueError)
    assert (err.field, err.message, str(err)) == (
        "spec.nodes",
        "must be positive",
        "spec.nodes: must be positive",
    )


@pytest.mark.parametrize(
    ("name", "extra", "expected_extra"),
    [
        ("demo", [], []),
        ("demo", [EXTRA_HOST_DATA], [EXTRA_HOST_DATA]),
        ("demo", [EXTRA_HOST_DATA, EXTRA_HOST_DATA], [EXTRA_HOST_DATA]),
        ("prod", ["00" * 32, "ff" * 32], ["00" * 32, "ff" * 32]),
    ],
)
def test_allowed_host_data(name: str, extra: list[str], expected_extra: list[str]) -> None:
    spec = parse_consortium(name, spec_with("attestation.hostData", extra))
    own = [host_data_for(name, "genesis"), host_data_for(name, "join")]
    assert spec.allowed_host_data() == tuple(sorted({*own, *expected_extra}))
    assert list(spec.allowed_host_data()) == sorted(spec.allowed_host_data())
    assert len(set(spec.allowed_host_data())) == len(spec.allowed_host_data())


def test_allowed_host_data_includes_own_host_data_already_listed() -> None:
    own = host_data_for("demo", "join")
    spec = parse_consortium("demo", spec_with("attestation.hostData", [own]))
    assert spec.allowed_host_data().count(own) == 1
    assert host_data_for("demo", "genesis") in spec.allowed_host_data()
    assert host_data_for("other", "genesis") not in spec.allowed_host_data()


# ---------------------------------------------------------------------------- Member


def _member(**overrides: Any) -> dict[str, Any]:
    pem, _ = cached_certificate("p256", "alice")
    data: dict[str, Any] = {"consortium": "demo", "role": "governor", "certificate": pem}
    for key, value in overrides.items():
        if value is ...:
            data.pop(key)
        else:
            data[key] = value
    return data


@pytest.mark.parametrize("kind", ["p256", "ed25519"])
@pytest.mark.parametrize("role", ["governor", "user"])
def test_member_accepted(kind: str, role: str) -> None:
    pem, der = cached_certificate(kind, "alice")
    spec = parse_member("alice", {"consortium": "demo", "role": role, "certificate": pem})
    assert spec.name == "alice"
    assert spec.consortium == "demo"
    assert spec.role == role
    assert spec.member_id == sha256_hex(der)
    assert spec.certificate_pem.strip() == pem.strip()


def test_member_role_defaults_to_governor() -> None:
    assert parse_member("alice", _member(role=...)).role == "governor"


def test_member_certificate_with_surrounding_whitespace_is_normalised() -> None:
    pem, der = cached_certificate("p256", "alice")
    spec = parse_member("alice", _member(certificate=f"\n\n{pem}\n\n"))
    assert spec.member_id == sha256_hex(der)
    assert spec.certificate_pem.startswith("-----BEGIN CERTIFICATE-----")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"consortium": ...}, "spec.consortium"),
        ({"consortium": ""}, "spec.consortium"),
        ({"consortium": "Demo"}, "spec.consortium"),
        ({"consortium": 5}, "spec.consortium"),
        ({"role": "operator"}, "spec.role"),
        ({"role": "admin"}, "spec.role"),
        ({"role": "Governor"}, "spec.role"),
        ({"certificate": ...}, "spec.certificate"),
        ({"certificate": ""}, "spec.certificate"),
        ({"certificate": "  \n"}, "spec.certificate"),
        ({"certificate": "not a certificate"}, "spec.certificate"),
        (
            {"certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
            "spec.certificate",
        ),
        ({"certificate": 12}, "spec.certificate"),
        ({"recoveryKey": "not a key"}, "spec.recoveryKey"),
        ({"recoveryKey": 12}, "spec.recoveryKey"),
        ({"recoveryKey": P384_PUBLIC}, "spec.recoveryKey"),
        ({"recoveryKey": "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"},
         "spec.recoveryKey"),
    ],
)  # fmt: skip
def test_invalid_member_field_is_named(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_member("alice", _member(**overrides))
    assert caught.value.field == field


def test_a_user_is_not_a_recovery_member() -> None:
    pem = recovery_key_pem(ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(SpecError) as caught:
        parse_member("ursula", _member(role="user", recoveryKey=pem))
    assert caught.value.field == "spec.recoveryKey" and "only governors" in str(caught.value)


def test_a_members_recovery_key_is_kept_in_canonical_form() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = recovery_key_pem(key)
    spec = parse_member("alice", _member(recoveryKey=f"\n{pem}\n"))
    assert spec.recovery_key_pem == pem
    assert parse_member("alice", _member()).recovery_key_pem is None


@pytest.mark.parametrize(
    ("value", "parsed"), [(None, "majority"), ("majority", "majority"), (2, 2), ("3", 3)]
)
def test_recovery_threshold(value: Any, parsed: str | int) -> None:
    path = "governance.recoveryThreshold"
    spec = parse_consortium("demo", spec_with(path, ... if value is None else value))
    assert spec.recovery_threshold == parsed


@pytest.mark.parametrize("value", [0, -1, True, "most", 1.5])
def test_a_bad_recovery_threshold_is_named(value: Any) -> None:
    with pytest.raises(SpecError) as caught:
        parse_consortium("demo", spec_with("governance.recoveryThreshold", value))
    assert caught.value.field == "spec.governance.recoveryThreshold"


@pytest.mark.parametrize("kind", ["rsa", "p384"])
def test_member_certificate_with_unsupported_key_is_refused(kind: str) -> None:
    pem, _ = cached_certificate(kind, "mallory")
    with pytest.raises(SpecError) as caught:
        parse_member("mallory", _member(certificate=pem))
    assert caught.value.field == "spec.certificate"
    assert "P-256" in caught.value.message
    assert not caught.value.message.startswith("spec.certificate:")


@pytest.mark.parametrize(
    ("path", "value", "field", "words"),
    [
        ("nodes", 10, "spec.nodes", "from 1 to 9"),
        ("nodes", 1000, "spec.nodes", "from 1 to 9"),
        ("attestation.validity", "59s", "spec.attestation.validity", "at least 60s"),
        ("attestation.validity", "10s", "spec.attestation.validity", "at least 60s"),
        ("attestation.renewBefore", "29s", "spec.attestation.renewBefore", "at least 30s"),
        ("attestation.renewBefore", "5s", "spec.attestation.renewBefore", "at least 30s"),
    ],
)
def test_limits_are_enforced_with_their_bound(
    path: str, value: Any, field: str, words: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse_consortium("demo", spec_with(path, value))
    assert caught.value.field == field
    assert words in caught.value.message


@pytest.mark.parametrize(
    ("validity", "renew", "ok"),
    [
        ("65s", "50s", True),
        ("70s", "58s", False),  # rounds every 12 s: status and alerts cannot follow
        ("1m", "30s", True),
        ("75s", "55s", True),
        ("75s", "61s", False),  # rounds every 14 s
        ("2m", "1m", True),
        ("24h", "8h", True),
        ("24h", "23h59m50s", False),
    ],
)
def test_renewal_window(validity: str, renew: str, ok: bool) -> None:
    data = spec_with("attestation.validity", validity)
    data["attestation"]["renewBefore"] = renew
    if ok:
        parsed = parse_consortium("demo", data)
        assert parsed.attestation.validity - parsed.attestation.renew_before >= timedelta(
            seconds=15
        )
        return
    with pytest.raises(SpecError) as caught:
        parse_consortium("demo", data)
    assert caught.value.field == "spec.attestation.renewBefore"


def test_nine_nodes_is_the_largest_consortium() -> None:
    assert parse_consortium("demo", spec_with("nodes", 9)).nodes == 9
