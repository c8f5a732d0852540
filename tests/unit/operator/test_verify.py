"""The operator's own checks (``nodes.verify``), table-driven on real crypto: a pod's quote
answer and TLS certificate (``check_pod``, ``key_holder``), a signed trusted-node list
(``check_list``) and the policy a spec stands for (``policy_for``).

Quotes come from the emulated platform's enclaves (its test faults make the refused ones),
certificates and lists from real service identities; nothing is mocked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from typing import Any

import pytest

from consortium_node.attestation import Fault, host_data_for
from consortium_node.attestation.insecure_virtual import VirtualEnclave, VirtualPlatform
from consortium_node.common.timeutil import utcnow
from consortium_node.identity import keys
from consortium_node.identity.certs import (
    ServiceIdentity,
    certificate_der,
    issue_node_certificate,
    self_signed_certificate,
)
from consortium_node.identity.trusted_list import (
    NodeEntry,
    NodeStatus,
    TrustedNodeList,
    sign_trusted_list,
)
from consortium_operator.nodes.verify import (
    NodeCheck,
    check_list,
    check_pod,
    key_holder,
    policy_for,
)
from tests.unit.operator.support import EXTRA_HOST_DATA, M1, M2, T0, consortium

POD = "demo-1"
NONCE = bytes(range(32))
JOIN = host_data_for("demo", "join")
DROP = object()  # an answer override that removes the key


@dataclass(frozen=True)
class World:
    """Platforms, keys, service identities, certificates and a signed list, built once."""

    platform: VirtualPlatform
    other_platform: VirtualPlatform
    node_key: keys.PrivateKey
    other_key: keys.PrivateKey
    service: ServiceIdentity
    other_service: ServiceIdentity
    tls: Mapping[str, bytes | None]
    lst: TrustedNodeList
    envelope: bytes


@cache
def world() -> World:
    node_key, other_key = keys.generate_key(), keys.generate_key()
    service, other_service = ServiceIdentity.create("demo"), ServiceIdentity.create("demo")

    def issued(by: ServiceIdentity) -> bytes:
        expiry = utcnow() + timedelta(hours=1)
        cert = issue_node_certificate(
            by, node_key.public_key(), subject_alt_names=[POD], not_after=expiry
        )
        return certificate_der(cert)

    tls: dict[str, bytes | None] = {
        "none": None,
        "own": certificate_der(self_signed_certificate(node_key, POD)),
        "other-key": certificate_der(self_signed_certificate(other_key, POD)),
        "issued": issued(service),
        "issued-by-other-service": issued(other_service),
        "garbage": b"not a certificate",
    }
    entry = NodeEntry.for_key(
        node_key.public_key(), name=POD, address=f"{POD}.demo-nodes.ledger.svc",
        measurement=M1, host_data=JOIN, status=NodeStatus.TRUSTED,
        attested_at=T0, attestation_expires_at=T0 + timedelta(hours=12),
    )  # fmt: skip
    lst = TrustedNodeList(
        "demo", 3, "2026-01-02T03:04:05Z", service.certificate_sha256, (M1, M2), (entry,)
    )
    return World(
        VirtualPlatform.generate(), VirtualPlatform.generate(), node_key, other_key,
        service, other_service, tls, lst, sign_trusted_list(lst, service),
    )  # fmt: skip


# -- check_pod ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PodCase:
    """One pod answer: how its quote is made, what the answer and TLS show, what comes out."""

    label: str  # the verification reason label ("" = passed)
    prefix: str  # how NodeCheck.reason starts (checked after the label)
    node_id: bool = True  # NodeCheck.node_id is the node's (else None)
    measurement: str = M1
    host_data: str = JOIN
    faults: frozenset[Fault] = frozenset()
    quote_nonce: bytes = NONCE
    quoted_key: str = "node"  # whose key the quote binds: "node" or "other"
    answer: Mapping[str, object] = field(default_factory=dict)  # overrides; DROP removes
    tls: str = "own"  # a key of World.tls
    service: bool = False  # pass the service certificate (the service exists)
    root: str = "own"  # whose platform root the operator trusts: "own" or "other"


def refused(fault: Fault, label: str) -> PodCase:
    return PodCase(label, f"{label}: ", faults=frozenset({fault}))


PASSED = PodCase("", "")
POD_CASES = [
    pytest.param(PASSED, id="pass-before-the-service-exists"),
    pytest.param(PodCase("", "", measurement=M2, host_data=EXTRA_HOST_DATA), id="pass-m2-extra"),
    pytest.param(PodCase("", "", host_data=host_data_for("demo", "genesis")), id="pass-genesis"),
    pytest.param(PodCase("", "", tls="issued", service=True), id="pass-issued-by-the-service"),
    pytest.param(PodCase("Malformed", "Malformed: ", False, answer={"public_key": DROP}),
                 id="malformed-missing-public-key"),
    pytest.param(PodCase("Malformed", "Malformed: ", False, answer={"node_id": DROP}),
                 id="malformed-missing-node-id"),
    pytest.param(PodCase("Malformed", "Malformed: ", False, answer={"quote": DROP}),
                 id="malformed-missing-quote"),
    pytest.param(PodCase("Malformed", "Malformed: ", False, answer={"public_key": "clé"}),
                 id="malformed-public-key-not-ascii"),
    pytest.param(PodCase("Malformed", "Malformed: ", False, answer={"public_key": "garbage"}),
                 id="malformed-public-key-not-pem"),
    pytest.param(PodCase("Malformed", "Malformed: node_id is not SHA-256(key)", False,
                         answer={"node_id": "ab" * 32}), id="malformed-node-id-not-key-hash"),
    pytest.param(PodCase("Malformed", "Malformed: quote must be a JSON object",
                         answer={"quote": "nope"}), id="malformed-quote-not-an-object"),
    pytest.param(refused(Fault.WRONG_MEASUREMENT, "MeasurementNotAllowed"),
                 id="fault-wrong-measurement"),
    pytest.param(refused(Fault.STALE_TIMESTAMP, "Stale"), id="fault-stale-timestamp"),
    pytest.param(refused(Fault.REPLAYED_NONCE, "NonceMismatch"), id="fault-replayed-nonce"),
    pytest.param(refused(Fault.BAD_SIGNATURE, "BadSignature"), id="fault-bad-signature"),
    pytest.param(refused(Fault.REVOKED_CHIP, "ChipRevoked"), id="fault-revoked-chip"),
    pytest.param(PodCase("NonceMismatch", "NonceMismatch: ", quote_nonce=b"\x07" * 32),
                 id="quote-for-another-nonce"),
    pytest.param(PodCase("ReportDataMismatch", "ReportDataMismatch: ", quoted_key="other"),
                 id="quote-binds-another-key"),
    pytest.param(PodCase("HostDataNotAllowed", "HostDataNotAllowed: ",
                         host_data=host_data_for("other", "join")),
                 id="host-data-of-another-consortium"),
    pytest.param(PodCase("UnknownPlatform", "UnknownPlatform: ", root="other"),
                 id="quote-from-another-platform-root"),
    pytest.param(PodCase("TlsKeyMismatch", "TLS: no server certificate", tls="none"),
                 id="tls-no-certificate"),
    pytest.param(PodCase("TlsKeyMismatch", "TLS is terminated by another key", tls="other-key"),
                 id="tls-certificate-of-another-key"),
    pytest.param(PodCase("TlsKeyMismatch", "TLS: unreadable certificate", tls="garbage"),
                 id="tls-certificate-not-der"),
    pytest.param(PodCase("WrongService", "WrongService: ", service=True),
                 id="tls-self-signed-once-the-service-exists"),
    pytest.param(PodCase("WrongService", "WrongService: ", tls="issued-by-other-service",
                         service=True), id="tls-issued-by-another-service"),
]  # fmt: skip


def pod_answer(case: PodCase) -> dict[str, Any]:
    w = world()
    enclave = VirtualEnclave(
        w.platform, "demo-chip-1", case.measurement, case.host_data, faults=case.faults
    )
    quoted = w.node_key if case.quoted_key == "node" else w.other_key
    answer: dict[str, Any] = {
        "public_key": keys.public_key_pem(w.node_key),
        "node_id": keys.node_id_of(w.node_key),
        "quote": enclave.quote(keys.public_key_der(quoted), case.quote_nonce).to_json(),
    }
    for key, value in case.answer.items():
        if value is DROP:
            del answer[key]
        else:
            answer[key] = value
    return answer


@pytest.mark.parametrize("case", POD_CASES)
def test_check_pod(case: PodCase) -> None:
    w = world()
    root = (w.platform if case.root == "own" else w.other_platform).root_certificate_pem
    check, label = check_pod(
        POD,
        pod_answer(case),
        NONCE,
        endorsements={"root.pem": root},
        spec=consortium(),
        tls_certificate_der=w.tls[case.tls],
        service_certificate_pem=w.service.certificate_pem if case.service else None,
    )
    node_id = keys.node_id_of(w.node_key) if case.node_id else None
    assert label == case.label
    if not case.label:
        assert check == NodeCheck(POD, node_id, True, "")
        return
    assert (check.pod, check.node_id, check.verified) == (POD, node_id, False)
    assert check.reason.startswith(case.prefix), check.reason


# -- key_holder ---------------------------------------------------------------------------

KEY_HOLDER_CASES = [
    pytest.param("node", "own", True, id="self-signed-with-the-quoted-key"),
    pytest.param("node", "issued", True, id="issued-for-the-quoted-key"),
    pytest.param("node", "other-key", False, id="tls-of-another-key"),
    pytest.param("node", "none", False, id="no-tls-certificate"),
    pytest.param("node", "garbage", False, id="tls-certificate-not-der"),
    pytest.param("missing", "own", False, id="missing-public-key"),
    pytest.param("clé", "own", False, id="public-key-not-ascii"),
    pytest.param("garbage", "own", False, id="public-key-not-pem"),
]  # fmt: skip


@pytest.mark.parametrize(("public_key", "tls", "holds"), KEY_HOLDER_CASES)
def test_key_holder(public_key: str, tls: str, holds: bool) -> None:
    w = world()
    answer: dict[str, Any] = {"node_id": keys.node_id_of(w.node_key)}
    if public_key == "node":
        answer["public_key"] = keys.public_key_pem(w.node_key)
    elif public_key != "missing":
        answer["public_key"] = public_key
    expected = keys.node_id_of(w.node_key) if holds else None
    assert key_holder(answer, w.tls[tls]) == expected


# -- check_list ---------------------------------------------------------------------------

REJECTED = "the trusted-node list was rejected: "
LIST_CASES = [
    pytest.param("valid", "service", "demo", None, None, id="valid"),
    pytest.param("valid", "service", "demo", 3, None, id="valid-same-version-as-last"),
    pytest.param("valid", "service", "demo", 2, None, id="valid-newer-than-last"),
    pytest.param("tampered", "service", "demo", None, "BadSignature", id="tampered-payload"),
    pytest.param("truncated", "service", "demo", None, "Malformed", id="truncated-envelope"),
    pytest.param("valid", "other-service", "demo", None, "WrongSigner", id="other-service"),
    pytest.param("valid", "service", "other", None, "WrongService", id="wrong-consortium"),
    pytest.param("valid", "service", "demo", 4, "Rollback", id="version-below-min-version"),
]


@pytest.mark.parametrize(("envelope", "service", "name", "min_version", "rejection"), LIST_CASES)
def test_check_list(
    envelope: str, service: str, name: str, min_version: int | None, rejection: str | None
) -> None:
    w = world()
    signed = {
        "valid": w.envelope,
        "tampered": w.envelope.replace(b'"consortium":"demo"', b'"consortium":"dema"'),
        "truncated": w.envelope[:-10],
    }[envelope]
    assert signed != w.envelope or envelope == "valid"
    identity = w.service if service == "service" else w.other_service
    lst, error = check_list(signed, identity.certificate_pem, name, min_version)
    if rejection is None:
        assert (lst, error) == (w.lst, None)
        return
    assert lst is None
    assert error is not None
    assert error.startswith(f"{REJECTED}{rejection}: "), error


# -- policy_for ---------------------------------------------------------------------------


def own(name: str) -> set[str]:
    return {host_data_for(name, "genesis"), host_data_for(name, "join")}


POLICY_CASES = [
    pytest.param("demo", {}, {M1, M2}, own("demo") | {EXTRA_HOST_DATA}, id="full-spec"),
    pytest.param("demo", {"attestation__hostData": ...}, {M1, M2}, own("demo"),
                 id="no-extra-host-data"),
    pytest.param("demo", {"attestation__measurements": [M1]}, {M1},
                 own("demo") | {EXTRA_HOST_DATA}, id="one-measurement"),
    pytest.param("bank", {}, {M1, M2}, own("bank") | {EXTRA_HOST_DATA},
                 id="host-data-of-its-own-consortium"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "overrides", "measurements", "host_data"), POLICY_CASES)
def test_policy_for(
    name: str, overrides: dict[str, Any], measurements: set[str], host_data: set[str]
) -> None:
    policy = policy_for(consortium(name, **overrides))
    assert policy.allowed_measurements == frozenset(measurements)
    assert policy.allowed_host_data == frozenset(host_data)
