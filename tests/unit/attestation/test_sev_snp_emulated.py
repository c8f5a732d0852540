"""The sev-snp platform end to end with the INSECURE emulator: attester → quote → verifier,
each refusal by name, report versions 2/3/5 and Turin's layout, CRLs, VCEK choice, sealing."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from consortium_node.attestation import AttesterSettings, Fault, Policy, Reason, platforms
from consortium_node.attestation.errors import PlatformError, UnsealError
from consortium_node.attestation.sev_snp import SnpPolicy, device, emulator
from consortium_node.attestation.sev_snp.attester import SealingUnavailableError, SnpAttester
from consortium_node.attestation.sev_snp.certificates import as_anchor, load_certificates
from consortium_node.attestation.sev_snp.report import (
    POLICY_DEBUG,
    POLICY_MIGRATE_MA,
    ReportBody,
    build_report,
    parse_report,
)
from consortium_node.attestation.sev_snp.tcb import Tcb
from consortium_node.attestation.sev_snp.verifier import Expectations, verify_report
from consortium_node.identity import keys

PLATFORM = platforms.by_name("sev-snp")
PACKAGE = "ab" * 32
HOST_DATA = "cd" * 32


@pytest.fixture(scope="module")
def material() -> dict[str, bytes]:
    return emulator.provision()


@pytest.fixture(scope="module")
def products(material: dict[str, bytes]) -> dict[str, dict[str, bytes]]:
    return {"Genoa": material, "Milan": emulator.provision("Milan"),
            "Turin": emulator.provision("Turin")}  # fmt: skip


def settings(material: dict[str, bytes], **options: Any) -> AttesterSettings:
    faults = options.pop("faults", frozenset())
    return AttesterSettings(
        chip_id=options.pop("chip", "node-0"),
        tcb_version=1,
        measurement=PACKAGE,
        host_data=HOST_DATA,
        endorsements=material,
        faults=faults,
        options={"device": "insecure-emulator", **options},
    )


def policy(measurement: str, **snp: Any) -> Policy:
    return Policy(
        allowed_measurements=frozenset({measurement}),
        allowed_host_data=frozenset({HOST_DATA}),
        platform={"sev-snp": snp},
    )


def quote_and_verify(
    material: dict[str, bytes], *, verify_nonce: bytes | None = None, **options: Any
) -> tuple[Reason | None, str]:
    snp = options.pop("snp", {})
    attester = PLATFORM.attester(settings(material, **options))
    key = keys.public_key_der(keys.generate_key("p256"))
    nonce = os.urandom(32)
    quote = attester.quote(key, nonce).to_json()
    registry = platforms.verifier_registry({"sev-snp": PLATFORM.public(material)})
    result = registry.verify(
        quote,
        public_key_der=key,
        nonce=nonce if verify_nonce is None else verify_nonce,
        policy=policy(emulator.launch_measurement(PACKAGE).hex(), **snp),
    )
    return result.reason, result.detail


def test_an_emulated_quote_verifies_through_the_registry(material: dict[str, bytes]) -> None:
    attester = PLATFORM.attester(settings(material))
    assert attester.measurement == emulator.launch_measurement(PACKAGE).hex()
    assert len(attester.measurement) == 96
    key = keys.public_key_der(keys.generate_key("p256"))
    nonce = os.urandom(32)
    quote = attester.quote(key, nonce).to_json()
    assert quote["format"] == "sev-snp/v1"
    registry = platforms.verifier_registry({"sev-snp": PLATFORM.public(material)})
    result = registry.verify(
        quote, public_key_der=key, nonce=nonce, policy=policy(attester.measurement)
    )
    assert result.ok, result.detail
    assert result.claims is not None
    assert result.claims.platform == "sev-snp"
    assert result.claims.host_data == HOST_DATA
    assert result.claims.chip_id == emulator.chip_id_for("node-0", "Genoa").hex()


def test_without_the_emulators_root_an_emulated_quote_is_a_bad_endorsement(
    material: dict[str, bytes],
) -> None:
    attester = PLATFORM.attester(settings(material))
    key = keys.public_key_der(keys.generate_key("p256"))
    quote = attester.quote(key, b"n").to_json()
    registry = platforms.verifier_registry({"sev-snp": {}})  # AMD's roots only
    result = registry.verify(
        quote, public_key_der=key, nonce=b"n", policy=policy(attester.measurement)
    )
    assert result.reason is Reason.BAD_ENDORSEMENT
    assert "ARK-Genoa" in result.detail


def test_the_emulator_private_key_is_never_given_to_verifiers(material: dict[str, bytes]) -> None:
    assert emulator.KEY_FILE not in PLATFORM.public(material)
    assert emulator.CHAIN_FILE in PLATFORM.public(material)


@pytest.mark.parametrize(
    ("case", "options", "reason"),
    [
        ("fresh", {}, None),
        ("replayed nonce", {"verify_nonce": b"another"}, Reason.NONCE_MISMATCH),
        (
            "fault wrong-measurement",
            {"faults": frozenset({Fault.WRONG_MEASUREMENT})},
            Reason.MEASUREMENT_NOT_ALLOWED,
        ),
        ("fault bad-signature", {"faults": frozenset({Fault.BAD_SIGNATURE})}, Reason.BAD_SIGNATURE),
        ("version 2", {"report_version": 2}, None),
        ("version 5", {"report_version": 5}, None),
        ("version 6", {"report_version": 6}, Reason.UNSUPPORTED_VERSION),
        ("turin", {"product": "Turin"}, None),
        (
            "milan, genoa only",
            {"product": "Milan", "snp": {"products": ["Genoa"]}},
            Reason.PRODUCT_NOT_ALLOWED,
        ),
        ("tcb too low", {"snp": {"minimum_tcb": {"Genoa": {"microcode": 85}}}}, Reason.TCB_TOO_LOW),
        ("tcb at minimum", {"snp": {"minimum_tcb": {"Genoa": {"microcode": 84, "snp": 23}}}}, None),
        ("vmpl 2 asked", {"snp": {"vmpl": 2}}, Reason.VMPL_NOT_ALLOWED),
        ("bad policy", {"snp": {"vmpl": 7}}, Reason.MALFORMED),
    ],
)
def test_quote_outcomes(
    products: dict[str, dict[str, bytes]], case: str, options: dict[str, Any], reason: Reason | None
) -> None:
    got, detail = quote_and_verify(products[options.get("product", "Genoa")], **options)
    assert got is reason, f"{case}: {detail}"


def test_a_replaying_attester_answers_the_previous_nonce(material: dict[str, bytes]) -> None:
    attester = PLATFORM.attester(settings(material, faults=frozenset({Fault.REPLAYED_NONCE})))
    key = keys.public_key_der(keys.generate_key("p256"))
    attester.quote(key, b"first")
    quote = attester.quote(key, b"second").to_json()
    registry = platforms.verifier_registry({"sev-snp": PLATFORM.public(material)})
    result = registry.verify(
        quote, public_key_der=key, nonce=b"second", policy=policy(attester.measurement)
    )
    assert result.reason is Reason.NONCE_MISMATCH


def test_a_quote_for_another_key_is_a_report_data_mismatch(material: dict[str, bytes]) -> None:
    attester = PLATFORM.attester(settings(material))
    key = keys.public_key_der(keys.generate_key("p256"))
    other = keys.public_key_der(keys.generate_key("p256"))
    quote = attester.quote(key, b"n").to_json()
    registry = platforms.verifier_registry({"sev-snp": PLATFORM.public(material)})
    result = registry.verify(
        quote, public_key_der=other, nonce=b"n", policy=policy(attester.measurement)
    )
    assert result.reason is Reason.REPORT_DATA_MISMATCH


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda q: {**q, "format": "insecure-virtual/v1"}, Reason.UNKNOWN_PLATFORM),
        (lambda q: {**q, "report": q["report"][:-2]}, Reason.MALFORMED),
        (lambda q: {**q, "extra": 1}, Reason.MALFORMED),
        (lambda q: {k: v for k, v in q.items() if k != "nonce"}, Reason.MALFORMED),
        (lambda q: {**q, "endorsements": []}, Reason.MALFORMED),
        (lambda q: {**q, "endorsements": ["not a pem"]}, Reason.MALFORMED),
    ],
)
def test_malformed_quotes_are_refused_by_name(
    material: dict[str, bytes], edit: Any, reason: Reason
) -> None:
    attester = PLATFORM.attester(settings(material))
    key = keys.public_key_der(keys.generate_key("p256"))
    quote = edit(attester.quote(key, b"n").to_json())
    verifier = PLATFORM.verifier(PLATFORM.public(material))
    result = verifier.verify(
        quote, public_key_der=key, nonce=b"n", policy=policy(attester.measurement)
    )
    assert result.reason is reason, result.detail


def emulated_report(material: dict[str, bytes], **changes: Any) -> tuple[bytes, bytes]:
    """A report built with ``changes`` and signed by the emulator's VCEK, and that VCEK."""
    guest = emulator.EmulatedSevGuest(
        material, chip="node-0", product="Genoa",
        tcb=Tcb("Genoa", bootloader=10, tee=0, snp=23, microcode=84),
        measurement=bytes(48), host_data=bytes(32),
    )  # fmt: skip
    for name, value in changes.items():
        setattr(guest, name, value)
    report = guest.report(bytes(64))
    return report, guest.vcek.public_bytes(serialization.Encoding.PEM)


def anchors(material: dict[str, bytes]) -> list[Any]:
    from consortium_node.attestation.sev_snp.certificates import amd_anchors  # noqa: PLC0415

    return [*amd_anchors(), as_anchor(material[emulator.CHAIN_FILE], insecure=True)]


def test_guest_policy_bits(material: dict[str, bytes]) -> None:
    now = datetime.now(UTC)
    base = emulator.DEFAULT_POLICY
    for bits, reason in ((POLICY_DEBUG, Reason.DEBUG_ENABLED),
                         (POLICY_MIGRATE_MA, Reason.GUEST_POLICY_REFUSED),
                         (1 << 40, Reason.MALFORMED)):  # fmt: skip
        report, vcek = emulated_report(material, policy=base | bits)
        outcome = verify_report(report, vcek, anchors(material), Expectations(), now=now)
        assert outcome.reason is reason, outcome.detail
    report, vcek = emulated_report(material)
    outcome = verify_report(report, vcek, anchors(material), Expectations(), now=now)
    assert outcome.ok
    assert outcome.claims is not None
    assert outcome.claims.to_json()["insecure_root"] is True
    assert outcome.claims.to_json()["root"] == "INSECURE-EMULATED-ARK-Genoa"


def test_an_unknown_signature_algorithm_is_refused(material: dict[str, bytes]) -> None:
    report, vcek = emulated_report(material)
    edited = report[:0x34] + (2).to_bytes(4, "little") + report[0x38:]
    outcome = verify_report(edited, vcek, anchors(material), Expectations(), now=datetime.now(UTC))
    assert outcome.reason is Reason.UNSUPPORTED_SIGNATURE_ALGORITHM


def test_a_crl_from_the_root_revokes_the_intermediate(material: dict[str, bytes]) -> None:
    """AMD publishes a CRL per product (KDS ``/vcek/v1/<product>/crl``) signed by the ARK,
    listing revoked ASKs. The emulator's root has no private key in the material, so this
    test builds its own root and ASK."""
    now = datetime.now(UTC)
    report, vcek = emulated_report(material)
    ask, ark = load_certificates(material[emulator.CHAIN_FILE], "chain")
    other = rsa.generate_private_key(65537, 2048)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ark.subject)
        .last_update(now - timedelta(hours=1))
        .next_update(now + timedelta(days=1))
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(ask.serial_number)
            .revocation_date(now - timedelta(hours=1))
            .build()
        )
        .sign(other, hashes.SHA384(), rsa_padding=pss)
    )
    outcome = verify_report(report, vcek, anchors(material), Expectations(), now=now, crls=[crl])
    assert outcome.reason is Reason.BAD_ENDORSEMENT
    assert "does not verify" in outcome.detail  # a CRL not signed by the ARK is refused too


def test_report_versions_round_trip_their_fields() -> None:
    for version in (2, 3, 5):
        body = ReportBody(
            version=version, policy=emulator.DEFAULT_POLICY, vmpl=1, current_tcb=1,
            reported_tcb=2, committed_tcb=3, launch_tcb=4, report_data=b"\x01" * 64,
            measurement=b"\x02" * 48, host_data=b"\x03" * 32, chip_id=b"\x04" * 64,
            report_id=b"\x05" * 32, cpuid=(0x19, 0x11, 1),
        )  # fmt: skip
        rep = parse_report(build_report(body, r=7, s=9))
        assert (rep.version, rep.vmpl, rep.current_tcb, rep.reported_tcb) == (version, 1, 1, 2)
        assert (rep.committed_tcb, rep.launch_tcb) == (3, 4)
        assert rep.measurement == b"\x02" * 48
        assert rep.cpuid == (None if version == 2 else (0x19, 0x11, 1))
        assert rep.launch_mit_vector == (0 if version == 5 else None)
        assert (rep.signature_r, rep.signature_s) == (7, 9)


def test_turin_tcb_layout_matches_ccfs_vector() -> None:
    tcb = Tcb.decode(0x1100000022334455, "Turin")
    assert (tcb.fmc, tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode) == (
        0x55,
        0x44,
        0x33,
        0x22,
        0x11,
    )
    assert tcb.encode() == 0x1100000022334455
    milan = Tcb.decode(0xD315000000000004, "Milan")
    assert (milan.bootloader, milan.tee, milan.snp, milan.microcode) == (4, 0, 0x15, 0xD3)


def test_the_attester_uses_a_mounted_vcek_when_the_host_gives_none(
    material: dict[str, bytes],
) -> None:
    guest = emulator.EmulatedSevGuest(
        material, chip="n", product="Genoa", tcb=Tcb("Genoa", 10, 0, 23, 84),
        measurement=bytes(48), host_data=bytes(32),
    )  # fmt: skip

    class NoTable:
        def available(self) -> bool:
            return True

        def extended_report(self, data: bytes, *, vmpl: int = 0) -> device.ReportResponse:
            return device.ReportResponse(guest.report(data, vmpl=vmpl), {})

    with pytest.raises(PlatformError, match="no VCEK for chip"):
        SnpAttester(NoTable()).quote(b"k", b"n")
    other_chip = emulator.EmulatedSevGuest(
        material, chip="m", product="Genoa", tcb=Tcb("Genoa", 10, 0, 23, 84),
        measurement=bytes(48), host_data=bytes(32),
    )  # fmt: skip
    attester = SnpAttester(NoTable(), vceks=[other_chip.vcek, guest.vcek])
    quote = attester.quote(b"k", b"n")
    assert quote.endorsements == (guest.vcek.public_bytes(serialization.Encoding.PEM).decode(),)
    with pytest.raises(SealingUnavailableError):
        attester.seal(b"x", "label")
    assert attester.can_seal is False


def test_sealing_is_bound_to_the_measurement(material: dict[str, bytes]) -> None:
    first = PLATFORM.attester(settings(material))
    blob = first.seal(b"node key", "node-key")
    again = PLATFORM.attester(settings(material))  # a restarted pod on the same chip
    assert again.unseal(blob, "node-key") == b"node key"
    with pytest.raises(UnsealError):
        again.unseal(blob, "ledger-secret")
    other_code = PLATFORM.attester(
        AttesterSettings(
            chip_id="node-0", tcb_version=1, measurement="ef" * 32, host_data=HOST_DATA,
            endorsements=material, options={"device": "insecure-emulator"},
        )
    )  # fmt: skip
    with pytest.raises(UnsealError):
        other_code.unseal(blob, "node-key")
    with pytest.raises(UnsealError):
        PLATFORM.attester(settings(material, chip="node-1")).unseal(blob, "node-key")


def test_device_choice(material: dict[str, bytes], tmp_path: Path) -> None:
    missing = {"device": "auto", "sev_guest_path": str(tmp_path / "none"),
               "configfs_path": str(tmp_path / "none")}  # fmt: skip
    with pytest.raises(PlatformError, match="no SEV-SNP guest device"):
        PLATFORM.attester(settings(material, **missing))
    public_only = {k: v for k, v in material.items() if k != emulator.KEY_FILE}
    with pytest.raises(PlatformError, match="insecure-emulator"):
        PLATFORM.attester(settings(public_only))
    with pytest.raises(PlatformError, match="the emulator's root is for Genoa"):
        PLATFORM.attester(settings(material, product="Milan"))


def test_faults_need_the_emulator(material: dict[str, bytes]) -> None:
    with pytest.raises(PlatformError, match="do not apply"):
        PLATFORM.attester(settings(material, faults=frozenset({Fault.STALE_TIMESTAMP})))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"vmpl": 4}, "sev_snp.vmpl"),
        ({"allow_debug": "yes"}, "sev_snp.allow_debug"),
        ({"products": ["Naples"]}, "sev_snp.products"),
        ({"minimum_tcb": {"Milan": {"fmc": 1}}}, "sev_snp.minimum_tcb.Milan.fmc"),
        ({"minimum_tcb": {"Zen": {}}}, "sev_snp.minimum_tcb.Zen"),
        ({"minimum_tcb": {"Genoa": {"snp": 256}}}, "sev_snp.minimum_tcb.Genoa.snp"),
        ({"debug": True}, "sev_snp.debug: unknown"),
    ],
)
def test_policy_errors_name_the_field(value: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SnpPolicy.from_json(value)


def test_policy_round_trips() -> None:
    value = {"minimum_tcb": {"Turin": {"fmc": 1, "snp": 3}}, "allow_debug": False, "vmpl": 0,
             "products": ["Genoa", "Turin"]}  # fmt: skip
    assert SnpPolicy.from_json(value).to_json() == value
    assert SnpPolicy.from_json(None) == SnpPolicy()


def _own_root(product: str = "Genoa") -> tuple[dict[str, bytes], rsa.RSAPrivateKey]:
    """Emulator material whose ARK key this test holds (to sign CRLs as AMD's ARK does)."""
    start = datetime.now(UTC) - timedelta(days=1)
    ark_key = rsa.generate_private_key(65537, 2048)
    ask_key = rsa.generate_private_key(65537, 2048)
    ark_name, ask_name = f"TEST-ARK-{product}", f"TEST-SEV-{product}"
    ark = emulator._certificate(ark_name, ark_name, ark_key.public_key(), ark_key,
                                start=start, days=30, ca=True)  # fmt: skip
    ask = emulator._certificate(ask_name, ark_name, ask_key.public_key(), ark_key,
                                start=start, days=30, ca=True)  # fmt: skip
    pem = serialization.Encoding.PEM
    material = {
        emulator.CHAIN_FILE: ask.public_bytes(pem) + ark.public_bytes(pem),
        emulator.KEY_FILE: ask_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    }
    return material, ark_key


def _crl(
    material: dict[str, bytes], ark_key: rsa.RSAPrivateKey, *, revoke: bool, next_update: datetime
) -> x509.CertificateRevocationList:
    ask, ark = load_certificates(material[emulator.CHAIN_FILE], "chain")
    now = datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ark.subject)
        .last_update(now - timedelta(days=2))
        .next_update(next_update)
    )
    if revoke:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(ask.serial_number)
            .revocation_date(now - timedelta(hours=1))
            .build()
        )
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
    return builder.sign(ark_key, hashes.SHA384(), rsa_padding=pss)


def test_a_valid_crl_revokes_its_intermediate_and_a_stale_one_is_refused() -> None:
    material, ark_key = _own_root()
    report, vcek = emulated_report(material)
    now = datetime.now(UTC)
    check = lambda crl: verify_report(  # noqa: E731
        report, vcek, anchors(material), Expectations(), now=now, crls=[crl]
    )
    fresh = _crl(material, ark_key, revoke=False, next_update=now + timedelta(days=1))
    assert check(fresh).ok
    revoked = check(_crl(material, ark_key, revoke=True, next_update=now + timedelta(days=1)))
    assert revoked.reason is Reason.BAD_ENDORSEMENT
    assert "is revoked by TEST-ARK-Genoa's CRL" in revoked.detail
    stale = check(_crl(material, ark_key, revoke=False, next_update=now - timedelta(hours=1)))
    assert stale.reason is Reason.BAD_ENDORSEMENT
    assert "stale CRL" in stale.detail


def test_revoked_chip_ids_are_compared_case_blind(material: dict[str, bytes]) -> None:
    attester = PLATFORM.attester(settings(material))
    key = keys.public_key_der(keys.generate_key("p256"))
    quote = attester.quote(key, b"n").to_json()
    chip = emulator.chip_id_for("node-0", "Genoa").hex().upper()
    revoked = Policy(
        allowed_measurements=frozenset({attester.measurement}),
        allowed_host_data=None,
        revoked_chip_ids=frozenset({chip}),
    )
    result = PLATFORM.verifier(PLATFORM.public(material)).verify(
        quote, public_key_der=key, nonce=b"n", policy=revoked
    )
    assert result.reason is Reason.CHIP_REVOKED


class _Fake:
    def __init__(self, present: bool) -> None:
        self.present = present
        self.asked: list[str] = []

    def available(self) -> bool:
        return self.present

    def extended_report(self, report_data: bytes, *, vmpl: int = 0) -> str:
        self.asked.append(f"report vmpl={vmpl}")
        return "tsm-report"

    def derived_key(self, **fields: int) -> bytes:
        self.asked.append(f"key {sorted(fields)}")
        return b"k" * 32


@pytest.mark.parametrize(
    ("guest", "tsm", "expected"),
    [(True, True, "TsmWithKeys"), (False, True, "tsm"), (True, False, "guest")],
)
def test_auto_takes_reports_from_configfs_and_keys_from_the_device(
    guest: bool, tsm: bool, expected: str
) -> None:
    from consortium_node.attestation.sev_snp import backends  # noqa: PLC0415

    fake_guest, fake_tsm = _Fake(guest), _Fake(tsm)
    chosen = backends.choose("auto", fake_guest, fake_tsm)  # type: ignore[arg-type]
    named = {id(fake_guest): "guest", id(fake_tsm): "tsm"}.get(id(chosen), type(chosen).__name__)
    assert named == expected
    if isinstance(chosen, backends.TsmWithKeys):
        assert chosen.extended_report(b"\0" * 64, vmpl=1) == "tsm-report"  # type: ignore[comparison-overlap]
        assert chosen.derived_key(guest_field_select=8) == b"k" * 32
        assert fake_tsm.asked == ["report vmpl=1"]
        assert fake_guest.asked == [
            "key ['guest_field_select', 'guest_svn', 'root_key_select', 'tcb_version', 'vmpl']"
        ]
    assert backends.choose("sev-guest", fake_guest, fake_tsm) is fake_guest  # type: ignore[arg-type]
    assert backends.choose("configfs-tsm", fake_guest, fake_tsm) is fake_tsm  # type: ignore[arg-type]
