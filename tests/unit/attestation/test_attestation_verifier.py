"""InsecureVirtualVerifier and VerifierRegistry: claims, or exactly one Reason per failure."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest
from attestation_support import CHIP_ID, HOST_DATA, MEASUREMENT, NONCE, NOW, Setup
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from consortium_node.attestation import (
    Claims,
    Fault,
    PlatformError,
    Policy,
    QuoteVerifier,
    Reason,
    VerificationResult,
    VerifierRegistry,
)
from consortium_node.attestation.insecure_virtual import (
    QUOTE_FORMAT,
    REVOKED_TEST_CHIP_ID,
    InsecureVirtualVerifier,
    VirtualPlatform,
    report_data_for,
)
from consortium_node.attestation.insecure_virtual.certificates import build_chip_certificate
from consortium_node.common.timeutil import rfc3339


@dataclass
class Attempt:
    """One call to ``verify``: a quote and the verifier's expectations."""

    quote: Any
    public_key_der: bytes
    nonce: bytes = NONCE
    policy_overrides: dict[str, Any] = field(default_factory=dict)
    now: datetime = NOW

    def run(self, setup: Setup, verifier: QuoteVerifier | VerifierRegistry) -> VerificationResult:
        return verifier.verify(
            self.quote,
            public_key_der=self.public_key_der,
            nonce=self.nonce,
            policy=setup.policy(**self.policy_overrides),
            now=self.now,
        )


def honest(setup: Setup, **enclave_args: Any) -> Attempt:
    quote = setup.enclave(**enclave_args).quote(setup.node_key_der, NONCE).to_json()
    return Attempt(quote, setup.node_key_der)


def with_fault(fault: Fault) -> Callable[[Setup], Attempt]:
    return lambda setup: honest(setup, faults={fault})


def hand(setup: Setup, **overrides: Any) -> Attempt:
    return Attempt(setup.hand_quote(**overrides), setup.node_key_der)


def edited(setup: Setup, **changes: Any) -> Attempt:
    attempt = honest(setup)
    attempt.quote = {**attempt.quote, **changes}
    return attempt


def other_platform_root(setup: Setup) -> Attempt:
    chip = VirtualPlatform.generate().chip(CHIP_ID)
    return hand(setup, chip=chip)


def endorsed_by_other_chip(setup: Setup) -> Attempt:
    return hand(setup, chip_id="demo-1")


def tcb_not_endorsed(setup: Setup) -> Attempt:
    return hand(setup, tcb_version=2)


def chip_key_swapped(setup: Setup) -> Attempt:
    own = setup.platform.chip(CHIP_ID)
    stolen = setup.platform.chip("demo-1")
    return hand(setup, chip=own, sign=stolen.sign)


def after_root_expiry(setup: Setup) -> Attempt:
    attempt = honest(setup)
    attempt.now = NOW + timedelta(days=3660)
    return attempt


def garbage_signature(setup: Setup) -> Attempt:
    return edited(setup, signature="3006020101020101")


def tampered_host_data(setup: Setup) -> Attempt:
    return edited(setup, host_data="cd" * 32)


def other_public_key(setup: Setup) -> Attempt:
    attempt = honest(setup)
    attempt.public_key_der = setup.other_key_der
    return attempt


def report_data_for_other_nonce(setup: Setup) -> Attempt:
    return hand(setup, report_data=report_data_for(setup.node_key_der, b"another nonce"))


def verifier_asked_another_nonce(setup: Setup) -> Attempt:
    attempt = honest(setup)
    attempt.nonce = b"a fresh challenge"
    return attempt


def from_the_future(setup: Setup) -> Attempt:
    return hand(setup, timestamp=NOW + timedelta(minutes=5))


def policy(**overrides: Any) -> Callable[[Setup], Attempt]:
    def build(setup: Setup) -> Attempt:
        attempt = honest(setup)
        attempt.policy_overrides = overrides
        return attempt

    return build


def raw(quote: object) -> Callable[[Setup], Attempt]:
    return lambda setup: Attempt(quote, setup.node_key_der)


def missing_field(setup: Setup) -> Attempt:
    attempt = honest(setup)
    del attempt.quote["nonce"]
    return attempt


def minted_by_a_chip(setup: Setup) -> Attempt:
    """A chip (not a CA) endorsing a key of its own choosing must not be trusted."""
    rogue = setup.platform.chip("demo-1")
    minted_key = ec.generate_private_key(ec.SECP256R1())
    rogue_cert = x509.load_pem_x509_certificate(rogue.endorsements[0].encode())
    minted = build_chip_certificate(
        rogue.private_key,
        rogue_cert,
        minted_key.public_key(),
        chip_id=CHIP_ID,
        tcb_version=1,
        serial=7,
    )
    chain = (minted.public_bytes(serialization.Encoding.PEM).decode(), rogue.endorsements[0])
    return hand(
        setup,
        endorsements=chain,
        sign=lambda data: minted_key.sign(data, ec.ECDSA(hashes.SHA256())),
    )


def ed25519_chip_key(setup: Setup) -> Attempt:
    platform = setup.platform
    root_key = serialization.load_pem_private_key(platform.root_key_pem(), None)
    assert isinstance(root_key, ec.EllipticCurvePrivateKey)
    chip_key = ed25519.Ed25519PrivateKey.generate()
    certificate = build_chip_certificate(
        root_key,
        platform.root_certificate,
        chip_key.public_key(),  # type: ignore[arg-type]
        chip_id=CHIP_ID,
        tcb_version=1,
        serial=9,
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    return hand(setup, endorsements=(pem,), sign=chip_key.sign)


def broken_certificate(setup: Setup) -> Attempt:
    pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    return edited(setup, endorsements=[pem])


CASES: list[tuple[str, Callable[[Setup], Attempt], Reason, str]] = [
    ("fault-bad-signature", with_fault(Fault.BAD_SIGNATURE), Reason.BAD_SIGNATURE, "signature"),
    ("garbage-signature", garbage_signature, Reason.BAD_SIGNATURE, "signature"),
    ("tampered-host-data", tampered_host_data, Reason.BAD_SIGNATURE, "signature"),
    ("signed-by-another-chip", chip_key_swapped, Reason.BAD_SIGNATURE, "demo-0"),
    ("other-platform-root", other_platform_root, Reason.UNKNOWN_PLATFORM, "not issued by"),
    ("unknown-format", raw({"format": "sev-snp/v1"}), Reason.UNKNOWN_PLATFORM, "sev-snp/v1"),
    ("cn-not-chip-id", endorsed_by_other_chip, Reason.UNKNOWN_PLATFORM, "does not match chip_id"),
    ("tcb-not-endorsed", tcb_not_endorsed, Reason.UNKNOWN_PLATFORM, "quote claims tcb 2"),
    ("root-expired", after_root_expiry, Reason.UNKNOWN_PLATFORM, "expired"),
    ("minted-by-a-chip", minted_by_a_chip, Reason.UNKNOWN_PLATFORM, "not a CA certificate"),
    ("ed25519-chip-key", ed25519_chip_key, Reason.UNKNOWN_PLATFORM, "not EC P-256"),
    (
        "fault-revoked-chip",
        with_fault(Fault.REVOKED_CHIP),
        Reason.CHIP_REVOKED,
        REVOKED_TEST_CHIP_ID,
    ),
    (
        "policy-revoked-chip",
        policy(revoked_chip_ids=frozenset({CHIP_ID})),
        Reason.CHIP_REVOKED,
        CHIP_ID,
    ),
    ("other-public-key", other_public_key, Reason.REPORT_DATA_MISMATCH, "presented key"),
    ("nonce-not-bound", report_data_for_other_nonce, Reason.REPORT_DATA_MISMATCH, "own nonce"),
    ("fault-replayed-nonce", with_fault(Fault.REPLAYED_NONCE), Reason.NONCE_MISMATCH, "replayed"),
    ("another-challenge", verifier_asked_another_nonce, Reason.NONCE_MISMATCH, "expected"),
    ("fault-stale-timestamp", with_fault(Fault.STALE_TIMESTAMP), Reason.STALE, "3600s old"),
    ("from-the-future", from_the_future, Reason.STALE, "300s in the future"),
    ("tcb-too-low", policy(min_tcb_version=2), Reason.TCB_TOO_LOW, "below the minimum 2"),
    (
        "fault-wrong-measurement",
        with_fault(Fault.WRONG_MEASUREMENT),
        Reason.MEASUREMENT_NOT_ALLOWED,
        "not in the 1 allowed measurements",
    ),
    (
        "no-allowed-measurements",
        policy(allowed_measurements=frozenset()),
        Reason.MEASUREMENT_NOT_ALLOWED,
        MEASUREMENT,
    ),
    (
        "host-data-not-allowed",
        policy(allowed_host_data=frozenset({"cd" * 32, "ef" * 32})),
        Reason.HOST_DATA_NOT_ALLOWED,
        f"host_data {HOST_DATA} is not in the 2 allowed",
    ),
    (
        "empty-host-data-set-allows-nothing",
        policy(allowed_host_data=frozenset()),
        Reason.HOST_DATA_NOT_ALLOWED,
        HOST_DATA,
    ),
    ("not-an-object", raw(["format", QUOTE_FORMAT]), Reason.MALFORMED, "JSON object"),
    ("null-quote", raw(None), Reason.MALFORMED, "JSON object"),
    ("no-format", raw({}), Reason.MALFORMED, "format"),
    ("format-not-string", raw({"format": 1}), Reason.MALFORMED, "format"),
    ("only-format", raw({"format": QUOTE_FORMAT}), Reason.MALFORMED, "missing"),
    ("missing-nonce", missing_field, Reason.MALFORMED, "nonce: missing"),
    ("bad-hex", lambda s: edited(s, measurement="xyz"), Reason.MALFORMED, "measurement:"),
    ("unknown-field", lambda s: edited(s, extra=1), Reason.MALFORMED, "extra: unknown field"),
    ("broken-certificate", broken_certificate, Reason.MALFORMED, "endorsements[0]"),
]


# Reasons only hardware evidence can earn (tests/unit/attestation/test_sev_snp_*.py).
HARDWARE_ONLY = {
    Reason.BAD_ENDORSEMENT,
    Reason.ENDORSEMENT_MISMATCH,
    Reason.UNSUPPORTED_VERSION,
    Reason.UNSUPPORTED_SIGNATURE_ALGORITHM,
    Reason.DEBUG_ENABLED,
    Reason.GUEST_POLICY_REFUSED,
    Reason.VMPL_NOT_ALLOWED,
    Reason.PRODUCT_NOT_ALLOWED,
}


def test_every_reason_has_a_case() -> None:
    assert {reason for _, _, reason, _ in CASES} | HARDWARE_ONLY == set(Reason)


def test_reason_values_are_the_documented_names() -> None:
    assert sorted(reason.value for reason in Reason) == sorted(
        [
            "BadSignature",
            "UnknownPlatform",
            "MeasurementNotAllowed",
            "HostDataNotAllowed",
            "ReportDataMismatch",
            "NonceMismatch",
            "Stale",
            "TcbTooLow",
            "ChipRevoked",
            "Malformed",
            "BadEndorsement",
            "EndorsementMismatch",
            "UnsupportedVersion",
            "UnsupportedSignatureAlgorithm",
            "DebugEnabled",
            "GuestPolicyRefused",
            "VmplNotAllowed",
            "ProductNotAllowed",
        ]
    )
    assert str(Reason.STALE) == "Stale"


@pytest.mark.parametrize(
    ("build", "reason", "detail"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_failure_has_exactly_its_reason(
    setup: Setup, build: Callable[[Setup], Attempt], reason: Reason, detail: str
) -> None:
    result = build(setup).run(setup, setup.verifier)
    assert (result.ok, result.reason, result.claims) == (False, reason, None)
    assert detail in result.detail


@pytest.mark.parametrize(
    ("build", "reason"),
    [(case[1], case[2]) for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_registry_gives_the_same_reason(
    setup: Setup, build: Callable[[Setup], Attempt], reason: Reason
) -> None:
    registry = VerifierRegistry()
    registry.register(setup.verifier)
    assert build(setup).run(setup, registry).reason == reason


def test_honest_quote_verifies_with_claims(setup: Setup) -> None:
    result = honest(setup).run(setup, setup.verifier)
    assert result.ok and result.reason is None
    assert result.claims == Claims(
        format=QUOTE_FORMAT,
        platform="insecure-virtual",
        measurement=MEASUREMENT,
        host_data=HOST_DATA,
        public_key_sha256=hashlib.sha256(setup.node_key_der).hexdigest(),
        nonce=NONCE.hex(),
        timestamp=NOW,
        tcb_version=1,
        chip_id=CHIP_ID,
    )
    assert result.claims is not None
    assert result.claims.to_json()["timestamp"] == rfc3339(NOW)
    assert "verified" in result.detail


def test_chain_may_include_the_root_itself(setup: Setup) -> None:
    chip = setup.platform.chip(CHIP_ID)
    root_pem = setup.platform.root_certificate_pem.decode()
    assert hand(setup, endorsements=(*chip.endorsements, root_pem)).run(setup, setup.verifier).ok


def test_host_data_none_means_not_checked(setup: Setup) -> None:
    attempt = hand(setup, host_data="cd" * 32)
    attempt.policy_overrides = {"allowed_host_data": None}
    result = attempt.run(setup, setup.verifier)
    assert result.ok
    assert result.claims is not None and result.claims.host_data == "cd" * 32


@pytest.mark.parametrize(
    ("timestamp", "ok"),
    [
        (NOW - timedelta(minutes=10), True),
        (NOW - timedelta(minutes=10, seconds=1), False),
        (NOW + timedelta(seconds=60), True),
        (NOW + timedelta(seconds=61), False),
    ],
)
def test_freshness_boundaries(setup: Setup, timestamp: datetime, ok: bool) -> None:
    result = hand(setup, timestamp=timestamp).run(setup, setup.verifier)
    assert result.ok is ok
    assert result.reason is (None if ok else Reason.STALE)


def test_higher_tcb_passes_a_lower_minimum(setup: Setup) -> None:
    attempt = honest(setup, tcb_version=5)
    attempt.policy_overrides = {"min_tcb_version": 5}
    assert attempt.run(setup, setup.verifier).ok


def test_verifier_revocation_list_can_be_extended(setup: Setup) -> None:
    verifier = InsecureVirtualVerifier(
        setup.platform.root_certificate_pem, revoked_chip_ids={CHIP_ID}
    )
    assert honest(setup).run(setup, verifier).reason is Reason.CHIP_REVOKED


def test_faults_are_checked_in_order(setup: Setup) -> None:
    attempt = honest(setup, faults=frozenset(Fault))
    assert attempt.run(setup, setup.verifier).reason is Reason.CHIP_REVOKED


def test_policy_normalises_hex_and_validates_limits() -> None:
    policy = Policy(frozenset({"AB" * 32}), frozenset({"CD" * 32}))
    assert policy.allowed_measurements == frozenset({"ab" * 32})
    assert policy.allowed_host_data == frozenset({"cd" * 32})
    assert policy.max_age == timedelta(minutes=10)
    assert policy.max_clock_skew == timedelta(seconds=60)
    assert policy.min_tcb_version == 1
    for bad in (
        {"max_age": timedelta(0)},
        {"max_clock_skew": timedelta(seconds=-1)},
        {"min_tcb_version": -1},
    ):
        with pytest.raises(ValueError, match="Policy"):
            replace(policy, **bad)


def test_verifier_requires_an_aware_now(setup: Setup) -> None:
    with pytest.raises(ValueError, match="aware"):
        setup.verifier.verify(
            honest(setup).quote,
            public_key_der=setup.node_key_der,
            nonce=NONCE,
            policy=setup.policy(),
            now=NOW.replace(tzinfo=None),
        )


@pytest.mark.parametrize("root", [b"garbage", "chip-certificate"])
def test_verifier_refuses_an_unusable_root(setup: Setup, root: bytes | str) -> None:
    pem = setup.platform.chip("node-0").endorsements[0] if root == "chip-certificate" else root
    with pytest.raises(PlatformError):
        InsecureVirtualVerifier(pem)


def test_result_constructors() -> None:
    failure = VerificationResult.failure(Reason.STALE, "too old")
    assert (failure.ok, failure.claims, failure.reason, failure.detail) == (
        False,
        None,
        Reason.STALE,
        "too old",
    )


class EchoVerifier(QuoteVerifier):
    """A stand-in for another TEE format (e.g. SEV-SNP): accepts anything, returns a claim."""

    format: ClassVar[str] = "echo/v1"
    platform: ClassVar[str] = "echo"

    def verify(
        self,
        quote: Mapping[str, Any],
        *,
        public_key_der: bytes,
        nonce: bytes,
        policy: Policy,
        now: datetime | None = None,
    ) -> VerificationResult:
        return VerificationResult.failure(Reason.TCB_TOO_LOW, f"echo saw {quote['format']}")


def test_registry_dispatches_by_format(setup: Setup) -> None:
    registry = VerifierRegistry()
    registry.register(setup.verifier)
    registry.register(EchoVerifier())
    assert registry.formats == ("echo/v1", QUOTE_FORMAT)
    assert honest(setup).run(setup, registry).ok
    echoed = raw({"format": "echo/v1"})(setup).run(setup, registry)
    assert (echoed.reason, echoed.detail) == (Reason.TCB_TOO_LOW, "echo saw echo/v1")


def test_registry_names_known_formats_for_an_unknown_one(setup: Setup) -> None:
    registry = VerifierRegistry()
    registry.register(setup.verifier)
    result = raw({"format": "tdx/v1"})(setup).run(setup, registry)
    assert result.reason is Reason.UNKNOWN_PLATFORM
    assert "'tdx/v1'" in result.detail and QUOTE_FORMAT in result.detail


def test_empty_registry_says_so(setup: Setup) -> None:
    result = honest(setup).run(setup, VerifierRegistry())
    assert result.reason is Reason.UNKNOWN_PLATFORM
    assert "none registered" in result.detail


def test_registry_refuses_a_second_verifier_for_a_format(setup: Setup) -> None:
    registry = VerifierRegistry()
    registry.register(setup.verifier)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(InsecureVirtualVerifier(setup.platform.root_certificate_pem))
