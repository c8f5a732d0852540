"""The SEV-SNP verifier against real hardware evidence (tests/data/sev_snp/SOURCES.md).

Each real report verifies with its VCEK chained to AMD's pinned ARK; flipping any byte of the
signed region, of the signature or of a certificate fails with the reason the verifier's
check order assigns to that byte; a wrong product's ARK, an expired chain, a debug report and
policy limits fail by name.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from consortium_node.attestation import Reason
from consortium_node.attestation.sev_snp import amd_roots
from consortium_node.attestation.sev_snp.certificates import (
    amd_anchors,
    chip_certificate,
    load_certificates,
    verify_chain,
)
from consortium_node.attestation.sev_snp.policy import SnpPolicy
from consortium_node.attestation.sev_snp.report import parse_report, zero_violations
from consortium_node.attestation.sev_snp.tcb import Tcb
from consortium_node.attestation.sev_snp.verifier import Expectations, verify_report

DATA = Path(__file__).parents[2] / "data" / "sev_snp"
NOW = datetime(2026, 12, 1, tzinfo=UTC)  # inside every real VCEK's validity (2025 → 2032)
ANCHORS = amd_anchors()
MILAN_MEASUREMENT = (
    "5feee30d6d7e1a29f403d70a4198237ddfb13051a2d6976439487c609388ed7f"
    "98189887920ab2fa0096903a0c23fca1"
)

REAL = [  # report, chain, product, version, reported TCB (bootloader, tee, snp, microcode)
    ("milan.bin", "milan_chain.pem", "Milan-B0", 3, (4, 0, 24, 219)),
    ("genoa.bin", "genoa_chain.pem", "Genoa", 3, (10, 0, 23, 84)),
    ("virtee_milan.bin", "virtee_milan_chain.pem", "Milan-B0", 2, (3, 0, 8, 115)),
]


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def pems(name: str) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.PEM) for c in load_certificates(read(name), name)]


def check(report: bytes, chain: bytes, **expect: object) -> tuple[Reason | None, str]:
    outcome = verify_report(report, chain, ANCHORS, Expectations(**expect), now=NOW)  # type: ignore[arg-type]
    assert outcome.ok == (outcome.reason is None)
    return outcome.reason, outcome.detail


def test_the_data_files_are_the_documented_bytes() -> None:
    documented = {}
    for line in (DATA / "SOURCES.md").read_text().splitlines():
        cells = [c.strip(" `") for c in line.split("|")]
        if len(cells) > 4 and len(cells[-2]) == 64:
            documented[cells[1]] = cells[-2]
    assert len(documented) == 10
    for name, digest in documented.items():
        assert hashlib.sha256(read(name)).hexdigest() == digest, name


@pytest.mark.parametrize("product", ["Milan", "Genoa", "Turin"])
def test_pinned_roots_are_self_signed_and_sign_their_intermediates(product: str) -> None:
    ark_pem, intermediates = amd_roots.ROOTS[product]
    ark = x509.load_pem_x509_certificate(ark_pem.encode())
    ark.verify_directly_issued_by(ark)
    assert ark.subject.rfc4514_string().startswith(f"CN=ARK-{product},O=Advanced Micro Devices")
    for pem in intermediates:
        x509.load_pem_x509_certificate(pem.encode()).verify_directly_issued_by(ark)
    assert ark.signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.10"  # RSASSA-PSS


def test_pinned_roots_are_the_ones_of_the_real_chains() -> None:
    for chain, product in (("milan_chain.pem", "Milan"), ("genoa_chain.pem", "Genoa"),
                           ("virtee_turin_vcek_chain.pem", "Turin")):  # fmt: skip
        ark = x509.load_pem_x509_certificate(amd_roots.ROOTS[product][0].encode())
        assert load_certificates(read(chain), chain)[2] == ark
    der = x509.load_pem_x509_certificate(amd_roots.MILAN_ARK.encode()).public_bytes(
        serialization.Encoding.DER
    )
    assert hashlib.sha256(der).hexdigest() == (
        "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"
    )


@pytest.mark.parametrize(("report", "chain", "product", "version", "tcb"), REAL)
def test_each_real_report_verifies(
    report: str, chain: str, product: str, version: int, tcb: tuple[int, ...]
) -> None:
    outcome = verify_report(read(report), read(chain), ANCHORS, Expectations(), now=NOW)
    assert outcome.ok, outcome.detail
    assert outcome.claims is not None
    claims = outcome.claims.to_json()
    assert claims["version"] == version
    assert claims["product"] == product
    assert claims["root"].startswith("ARK-")
    assert claims["insecure_root"] is False
    assert (
        tuple(claims["reported_tcb"][k] for k in ("bootloader", "tee", "snp", "microcode")) == tcb
    )
    assert claims["policy"]["debug"] is False


def test_the_milan_report_fields_are_read_at_their_offsets() -> None:
    rep = parse_report(read("milan.bin"))
    assert rep.version == 3
    assert rep.policy == 0x3001F
    assert rep.vmpl == 0
    assert rep.signature_algo == 1
    assert rep.cpuid == (0x19, 0x01, 1)
    assert rep.current_version == (1, 55, 29)
    assert rep.measurement.hex() == MILAN_MEASUREMENT
    assert rep.chip_id.hex().startswith("4ffb5cb4fd594f3f")
    assert rep.report_data == bytes(64)
    assert rep.reported_tcb == 0xDB18000000000004
    assert Tcb.decode(rep.reported_tcb, "Milan").components() == {
        "bootloader": 4, "tee": 0, "snp": 24, "microcode": 219,
    }  # fmt: skip
    assert rep.launch_mit_vector is None
    assert zero_violations(rep) == []
    v2 = parse_report(read("virtee_milan.bin"))
    assert v2.version == 2
    assert v2.cpuid is None
    assert v2.current_version == (1, 52, 4)


def test_a_measurement_not_in_the_list_fails() -> None:
    report, chain = read("milan.bin"), read("milan_chain.pem")
    assert check(report, chain, measurements=frozenset({MILAN_MEASUREMENT}))[0] is None
    reason, detail = check(report, chain, measurements=frozenset({"00" * 48}))
    assert reason is Reason.MEASUREMENT_NOT_ALLOWED
    assert MILAN_MEASUREMENT in detail
    host = parse_report(report).host_data.hex()
    assert check(report, chain, host_data=frozenset({host}))[0] is None
    assert check(report, chain, host_data=frozenset({"11" * 32}))[0] is Reason.HOST_DATA_NOT_ALLOWED


def test_the_real_debug_report_is_refused_unless_debug_is_allowed() -> None:
    report, chain = read("gsg_milan.bin"), read("gsg_milan_chain.pem")
    reason, detail = check(report, chain)
    assert reason is Reason.DEBUG_ENABLED
    assert "bit 19" in detail
    assert check(report, chain, snp=SnpPolicy(allow_debug=True))[0] is None


def test_policy_limits_on_a_real_report() -> None:
    report, chain = read("milan.bin"), read("milan_chain.pem")
    low = SnpPolicy(minimum_tcb={"Milan": {"snp": 25}, "Genoa": {"snp": 99}})
    reason, detail = check(report, chain, snp=low)
    assert reason is Reason.TCB_TOO_LOW
    assert "snp 24 < 25" in detail
    assert check(report, chain, snp=SnpPolicy(minimum_tcb={"Milan": {"snp": 24}}))[0] is None
    assert check(report, chain, snp=SnpPolicy(minimum_tcb={"Genoa": {"snp": 99}}))[0] is None
    only_genoa = SnpPolicy(products=frozenset({"Genoa"}))
    assert check(report, chain, snp=only_genoa)[0] is Reason.PRODUCT_NOT_ALLOWED
    assert check(read("genoa.bin"), read("genoa_chain.pem"), snp=only_genoa)[0] is None
    assert check(report, chain, snp=SnpPolicy(vmpl=1))[0] is Reason.VMPL_NOT_ALLOWED
    chip = parse_report(report).chip_id.hex()
    assert check(report, chain, revoked_chip_ids=frozenset({chip}))[0] is Reason.CHIP_REVOKED
    reason, _ = check(report, chain, report_data=b"\x01" * 64)
    assert reason is Reason.REPORT_DATA_MISMATCH
    assert check(report, chain, report_data=bytes(64))[0] is None


def test_a_wrong_products_root_fails() -> None:
    milan_vcek, _, _ = pems("milan_chain.pem")
    _, genoa_ask, genoa_ark = pems("genoa_chain.pem")
    report = read("milan.bin")
    reason, detail = check(report, milan_vcek + genoa_ask + genoa_ark)
    assert reason is Reason.BAD_ENDORSEMENT
    assert "ARK-Genoa" in detail
    # A Genoa VCEK for a Milan report: the chain is fine, the chip and TCB are not.
    genoa_vcek = pems("genoa_chain.pem")[0]
    assert check(report, genoa_vcek)[0] is Reason.ENDORSEMENT_MISMATCH
    # The Milan VCEK against Genoa's root only.
    genoa_only = [a for a in ANCHORS if a.product == "Genoa"]
    chip = chip_certificate(load_certificates(milan_vcek, "vcek")[0])
    with pytest.raises(Exception, match="no root is pinned for product Milan"):
        verify_chain(chip, genoa_only, now=NOW)


def test_a_report_from_another_chip_than_the_vcek_fails() -> None:
    reason, detail = check(read("v2_milan.bin"), read("milan_chain.pem"))
    assert reason is Reason.ENDORSEMENT_MISMATCH
    assert "chip" in detail


def test_the_chain_must_be_valid_now() -> None:
    report, chain = read("milan.bin"), read("milan_chain.pem")
    late = verify_report(
        report, chain, ANCHORS, Expectations(), now=datetime(2033, 1, 1, tzinfo=UTC)
    )
    assert late.reason is Reason.BAD_ENDORSEMENT
    assert "VCEK" in late.detail


def test_the_real_turin_vcek_chains_to_the_turin_root() -> None:
    vcek, ask, ark = load_certificates(read("virtee_turin_vcek_chain.pem"), "turin")
    chip = chip_certificate(vcek)
    assert chip.product == "Turin"
    assert chip.hw_id == bytes.fromhex("1e550a8ee5cf9f4d")
    assert chip.tcb.fmc == 0
    assert chip.tcb.microcode == 9
    assert verify_chain(chip, ANCHORS, now=NOW, presented=[ask, ark]).name == "ARK-Turin"


def pem_of(der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n"


def expected_reason(offset: int) -> Reason:
    """The reason for the Milan v3 report with byte ``offset`` XOR 0x80 (check order)."""
    malformed = [(0x00B, 0x010), (0x048, 0x050), (0x18B, 0x1A0), (0x1EB, 0x1EC),
                 (0x1EF, 0x1F0), (0x1F8, 0x2A0), (0x330, 0x4A0)]  # fmt: skip
    if any(a <= offset < b for a, b in malformed):
        return Reason.MALFORMED  # reserved bytes, policy bits 63:26, signer info bits 31:5
    if offset < 0x004:
        return Reason.UNSUPPORTED_VERSION
    if 0x034 <= offset < 0x038:
        return Reason.UNSUPPORTED_SIGNATURE_ALGORITHM
    if offset in (0x180, 0x181, 0x186, 0x187, 0x188, 0x189) or 0x1A0 <= offset < 0x1E0:
        return Reason.ENDORSEMENT_MISMATCH  # reported TCB SPLs, CPUID family/model, chip id
    return Reason.BAD_SIGNATURE


def test_flipping_any_byte_of_the_report_fails_with_its_reason() -> None:
    report, chain = read("milan.bin"), read("milan_chain.pem")
    seen: dict[Reason, int] = {}
    for offset in range(len(report)):
        for mask in (0x01, 0x80):
            flipped = report[:offset] + bytes([report[offset] ^ mask]) + report[offset + 1 :]
            reason, _ = check(flipped, chain)
            assert reason is not None, f"byte 0x{offset:03x} ^ {mask:#x} still verifies"
            if mask == 0x80:
                assert reason is expected_reason(offset), f"byte 0x{offset:03x}: {reason}"
                seen[reason] = seen.get(reason, 0) + 1
    assert seen[Reason.BAD_SIGNATURE] > 400  # the signed fields and both signature halves


@pytest.mark.parametrize("index", [0, 1, 2], ids=["vcek", "ask", "ark"])
def test_flipping_any_byte_of_a_certificate_fails(index: int) -> None:
    report = read("milan.bin")
    certs = load_certificates(read("milan_chain.pem"), "chain")
    ders = [c.public_bytes(serialization.Encoding.DER) for c in certs]
    for offset in range(len(ders[index])):
        damaged = list(ders)
        damaged[index] = (
            ders[index][:offset] + bytes([ders[index][offset] ^ 0x01]) + ders[index][offset + 1 :]
        )
        chain = b"".join(pem_of(d) for d in damaged)  # unparsed: the verifier must cope
        reason, _ = check(report, chain)
        assert reason is Reason.BAD_ENDORSEMENT, f"cert {index} byte {offset}: {reason}"


def test_an_unparseable_chip_certificate_is_a_bad_endorsement() -> None:
    vcek = load_certificates(read("milan_chain.pem"), "c")[0].public_bytes(
        serialization.Encoding.DER
    )
    assert check(read("milan.bin"), vcek[:-10])[0] is Reason.BAD_ENDORSEMENT
    assert check(read("milan.bin"), vcek)[0] is None  # DER alone, pinned ASK and ARK
    assert hashes.SHA384().digest_size == 48
