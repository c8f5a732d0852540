"""The SEV-SNP verifier: claims from a report and its chip certificate, or one named reason.

``verify_report`` runs an ordered chain of small checks and stops at the first refusal, so
each kind of bad evidence maps to exactly one ``Reason``:

 1. Malformed                    the report is not 1184 bytes
 2. UnsupportedVersion           VERSION not 2..5
 3. UnsupportedSignatureAlgorithm SIGNATURE_ALGO not 1 (ECDSA P-384 SHA-384)
 4. Malformed                    a reserved byte or bit is set (go-sev-guest's checks)
 5. BadSignature                 MASK_CHIP_KEY: the firmware did not sign it
 6. BadEndorsement               the VCEK/VLEK is unreadable or does not chain to the pinned ARK
                                 of its product (wrong product's root, expired, revoked ASK,
                                 bad signature, a stale CRL)
 7. EndorsementMismatch          the certificate is of another kind (VCEK/VLEK), chip (hwID vs
                                 CHIP_ID), TCB (SPLs vs REPORTED_TCB) or product (CPUID)
 8. BadSignature                 the ECDSA P-384 signature over bytes 0..0x29F does not verify
 9. ChipRevoked                  CHIP_ID in the policy's revoked list
10. ReportDataMismatch           REPORT_DATA is not the expected binding
11. NonceMismatch                the quote answers another nonce (quotes only)
12. ProductNotAllowed            the processor product is not in the policy's products
13. DebugEnabled                 guest policy DEBUG set and the policy does not allow it
14. GuestPolicyRefused           guest policy MIGRATE_MA set (a migration agent may export it)
15. VmplNotAllowed               VMPL is not the policy's
16. TcbTooLow                    REPORTED_TCB below the policy's minimum for that product
17. MeasurementNotAllowed        MEASUREMENT not allowed (skipped when no list is given)
18. HostDataNotAllowed           HOST_DATA not allowed (skipped when no list is given)

``SevSnpVerifier`` adapts it to the ``QuoteVerifier`` interface (``sev-snp/v1`` quotes,
REPORT_DATA = SHA-256(node key) || SHA-256(nonce)).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from consortium_node.attestation.binding import report_data_for
from consortium_node.attestation.errors import QuoteFormatError
from consortium_node.attestation.results import Claims, Policy, Reason, VerificationResult
from consortium_node.attestation.sev_snp import report as r
from consortium_node.attestation.sev_snp.certificates import (
    VCEK,
    VLEK,
    Anchor,
    ChainError,
    ChipCertificate,
    chip_certificate,
    load_certificates,
    verify_chain,
)
from consortium_node.attestation.sev_snp.policy import PLATFORM_NAME, SnpPolicy
from consortium_node.attestation.sev_snp.quote import QUOTE_FORMAT, SnpQuote
from consortium_node.attestation.sev_snp.tcb import Tcb, product_of_cpuid
from consortium_node.attestation.verifier import QuoteVerifier, fail, moment_of, not_this_format


@dataclass(frozen=True)
class Expectations:
    """What the caller requires beyond well-formed, genuine evidence."""

    snp: SnpPolicy = field(default_factory=SnpPolicy)
    report_data: bytes | None = None  # None: not checked
    nonce: tuple[bytes, bytes] | None = None  # (the quote's, the verifier's)
    measurements: frozenset[str] | None = None  # lowercase hex; None: not checked
    host_data: frozenset[str] | None = None
    revoked_chip_ids: frozenset[str] = frozenset()


def chip_id_hex(report: r.Report, product: str) -> str:
    """The chip id as the VCEK's hwID holds it: 64 bytes, or 8 on Turin."""
    return (report.chip_id[:8] if product == "Turin" else report.chip_id).hex()


@dataclass(frozen=True)
class SnpClaims:
    """What a verified report establishes (``to_json`` is what ``consortiumctl`` prints)."""

    report: r.Report
    chip: ChipCertificate
    root: Anchor

    def to_json(self) -> dict[str, Any]:
        rep, product = self.report, self.chip.product
        tcb = {name: Tcb.decode(getattr(rep, f"{name}_tcb"), product).components()
               for name in ("reported", "current", "committed", "launch")}  # fmt: skip
        out: dict[str, Any] = {
            "version": rep.version,
            "product": self.chip.product_name,
            "measurement": rep.measurement.hex(),
            "host_data": rep.host_data.hex(),
            "report_data": rep.report_data.hex(),
            "chip_id": chip_id_hex(rep, product),
            "reported_tcb": tcb["reported"],
            "reported_tcb_raw": f"{rep.reported_tcb:016x}",
            "current_tcb": tcb["current"],
            "committed_tcb": tcb["committed"],
            "launch_tcb": tcb["launch"],
            "policy": {
                "raw": f"{rep.policy:#x}",
                "debug": rep.debug,
                "migrate_ma": rep.migrate_ma,
                "smt": bool(rep.policy & r.POLICY_SMT),
                "abi": f"{(rep.policy >> 8) & 0xFF}.{rep.policy & 0xFF}",
            },
            "vmpl": rep.vmpl,
            "guest_svn": rep.guest_svn,
            "family_id": rep.family_id.hex(),
            "image_id": rep.image_id.hex(),
            "id_key_digest": rep.id_key_digest.hex(),
            "author_key_digest": rep.author_key_digest.hex(),
            "platform_info": f"{rep.platform_info:#x}",
            "firmware": ".".join(map(str, rep.current_version)),
            "signing_key": self.chip.kind,
            "root": self.root.name,
            "insecure_root": self.root.insecure,
        }
        if rep.version >= 5:
            out["launch_mit_vector"] = f"{rep.launch_mit_vector:#x}"
            out["current_mit_vector"] = f"{rep.current_mit_vector:#x}"
        return out


@dataclass(frozen=True)
class Outcome:
    ok: bool
    claims: SnpClaims | None
    reason: Reason | None
    detail: str


Refusal = tuple[Reason, str] | None


def _endorsement_mismatch(rep: r.Report, chip: ChipCertificate) -> Refusal:
    kind = {r.SIGNING_KEY_VCEK: VCEK, r.SIGNING_KEY_VLEK: VLEK}.get(rep.signing_key)
    if kind != chip.kind:
        return (
            Reason.ENDORSEMENT_MISMATCH,
            f"the report names signing key {kind or rep.signing_key}, "
            f"the certificate is a {chip.kind}",
        )
    if chip.hw_id is not None:
        used = bytes.fromhex(chip_id_hex(rep, chip.product))
        if not hmac.compare_digest(chip.hw_id, used) or (
            chip.product == "Turin" and any(rep.chip_id[8:])
        ):
            return Reason.ENDORSEMENT_MISMATCH, (
                f"the VCEK is for chip {chip.hw_id.hex()[:16]}…, the report is from chip "
                f"{rep.chip_id.hex()[:16]}…"
            )
    reported = Tcb.decode(rep.reported_tcb, chip.product)
    if reported.components() != chip.tcb.components():
        return Reason.ENDORSEMENT_MISMATCH, (
            f"the {chip.kind} is for TCB {chip.tcb.components()}, the report's REPORTED_TCB is "
            f"{reported.components()}"
        )
    if rep.cpuid is not None and product_of_cpuid(rep.cpuid[0], rep.cpuid[1]) != chip.product:
        return Reason.ENDORSEMENT_MISMATCH, (
            f"the report's CPUID family {rep.cpuid[0]:#x} model {rep.cpuid[1]:#x} is not a "
            f"{chip.product} processor"
        )
    return None


def _signature(rep: r.Report, chip: ChipCertificate) -> Refusal:
    signature = encode_dss_signature(rep.signature_r, rep.signature_s)
    try:
        chip.public_key.verify(signature, rep.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return Reason.BAD_SIGNATURE, f"the report's signature does not verify with the {chip.kind}"
    return None


def _binding(rep: r.Report, expect: Expectations) -> Refusal:
    if expect.report_data is not None and not hmac.compare_digest(
        rep.report_data, expect.report_data
    ):
        return Reason.REPORT_DATA_MISMATCH, (
            f"REPORT_DATA is {rep.report_data.hex()[:32]}…, expected "
            f"{expect.report_data.hex()[:32]}…"
        )
    if expect.nonce is not None and not hmac.compare_digest(*expect.nonce):
        quoted, wanted = expect.nonce
        return Reason.NONCE_MISMATCH, (
            f"quote answers nonce {quoted.hex()[:16]}…, expected {wanted.hex()[:16]}… "
            "(replayed or for another verifier)"
        )
    return None


def _guest(rep: r.Report, chip: ChipCertificate, snp: SnpPolicy) -> Refusal:
    if chip.product not in snp.products:
        return Reason.PRODUCT_NOT_ALLOWED, (
            f"{chip.product_name} is not among the allowed products {sorted(snp.products)}"
        )
    if rep.debug and not snp.allow_debug:
        return Reason.DEBUG_ENABLED, (
            f"guest policy {rep.policy:#x} has DEBUG (bit 19) set: the host can read the guest"
        )
    if rep.migrate_ma:
        return Reason.GUEST_POLICY_REFUSED, (
            f"guest policy {rep.policy:#x} has MIGRATE_MA (bit 18) set: a migration agent "
            "could export the guest"
        )
    if rep.vmpl != snp.vmpl:
        return Reason.VMPL_NOT_ALLOWED, f"the report is from VMPL {rep.vmpl}, required {snp.vmpl}"
    reported = Tcb.decode(rep.reported_tcb, chip.product)
    if below := reported.below(snp.minimum_tcb.get(chip.product, {})):
        return Reason.TCB_TOO_LOW, f"REPORTED_TCB of this {chip.product} is low: {', '.join(below)}"
    return None


def _allowed(rep: r.Report, expect: Expectations) -> Refusal:
    measurement, host_data = rep.measurement.hex(), rep.host_data.hex()
    if expect.measurements is not None and measurement not in expect.measurements:
        return Reason.MEASUREMENT_NOT_ALLOWED, (
            f"measurement {measurement} is not in the {len(expect.measurements)} allowed"
        )
    if expect.host_data is not None and host_data not in expect.host_data:
        return Reason.HOST_DATA_NOT_ALLOWED, (
            f"host_data {host_data} is not in the {len(expect.host_data)} allowed"
        )
    return None


def _form(rep: r.Report) -> Refusal:
    if rep.version not in r.KNOWN_VERSIONS:
        return Reason.UNSUPPORTED_VERSION, (
            f"report version {rep.version} is not one of {sorted(r.KNOWN_VERSIONS)}"
        )
    if rep.signature_algo != r.ECDSA_P384_SHA384:
        return Reason.UNSUPPORTED_SIGNATURE_ALGORITHM, (
            f"signature algorithm {rep.signature_algo} is not 1 (ECDSA P-384 with SHA-384)"
        )
    if violations := r.zero_violations(rep):
        return Reason.MALFORMED, f"reserved fields are not zero: {', '.join(violations)}"
    if rep.mask_chip_key:
        return Reason.BAD_SIGNATURE, "MASK_CHIP_KEY is set: the firmware did not sign the report"
    return None


def verify_report(
    report: bytes,
    chip_certificate_data: bytes,
    anchors: Sequence[Anchor],
    expect: Expectations,
    *,
    now: datetime,
    presented: Sequence[x509.Certificate] = (),
    crls: Iterable[x509.CertificateRevocationList] = (),
) -> Outcome:
    """Verify ``report`` with its chip certificate (PEM or DER) against ``anchors``; see the
    module docstring for the order of checks. Never raises for bad evidence."""
    try:
        rep = r.parse_report(report)
    except QuoteFormatError as exc:
        return Outcome(False, None, Reason.MALFORMED, str(exc))
    if refusal := _form(rep):
        return Outcome(False, None, *refusal)
    try:
        certs = load_certificates(chip_certificate_data, "chip certificate")
        chip = chip_certificate(certs[0])
        root = verify_chain(chip, anchors, now=now, presented=[*certs[1:], *presented], crls=crls)
    except ChainError as exc:
        return Outcome(False, None, Reason.BAD_ENDORSEMENT, str(exc))
    checks: tuple[Callable[[], Refusal], ...] = (
        lambda: _endorsement_mismatch(rep, chip),
        lambda: _signature(rep, chip),
        lambda: (Reason.CHIP_REVOKED, f"chip {chip_id_hex(rep, chip.product)[:16]}… is revoked")
        if chip_id_hex(rep, chip.product) in expect.revoked_chip_ids else None,
        lambda: _binding(rep, expect),
        lambda: _guest(rep, chip, expect.snp),
        lambda: _allowed(rep, expect),
    )  # fmt: skip
    for check in checks:
        if refusal := check():
            return Outcome(False, None, *refusal)
    claims = SnpClaims(rep, chip, root)
    insecure = ", INSECURE emulator root" if root.insecure else ""
    return Outcome(
        True, claims, None, f"{chip.product_name} report verified ({root.name}{insecure})"
    )


class SevSnpVerifier(QuoteVerifier):
    """Verifies ``sev-snp/v1`` quotes against AMD's pinned roots (plus, only when given, the
    test emulator's INSECURE root)."""

    format: ClassVar[str] = QUOTE_FORMAT
    platform: ClassVar[str] = PLATFORM_NAME

    def __init__(
        self,
        anchors: Sequence[Anchor],
        *,
        crls: Iterable[x509.CertificateRevocationList] = (),
    ) -> None:
        self.anchors = tuple(anchors)
        self.crls = tuple(crls)

    def verify(
        self,
        quote: Mapping[str, Any],
        *,
        public_key_der: bytes,
        nonce: bytes,
        policy: Policy,
        now: datetime | None = None,
    ) -> VerificationResult:
        """See ``QuoteVerifier.verify`` and the check order in the module docstring."""
        moment = moment_of(now)
        if refused := not_this_format(quote, self.format):
            return refused
        try:
            parsed = SnpQuote.from_json(quote)
            snp = SnpPolicy.from_json(policy.platform.get(PLATFORM_NAME), "policy.sev-snp")
        except (QuoteFormatError, ValueError) as exc:
            return fail(Reason.MALFORMED, str(exc))
        expect = Expectations(
            snp=snp,
            report_data=report_data_for(public_key_der, parsed.nonce),
            nonce=(parsed.nonce, nonce),
            measurements=policy.allowed_measurements,
            host_data=policy.allowed_host_data,
            revoked_chip_ids=frozenset(c.lower() for c in policy.revoked_chip_ids),
        )
        chain = "".join(parsed.endorsements).encode("ascii")
        outcome = verify_report(
            parsed.report, chain, self.anchors, expect, now=moment, crls=self.crls
        )
        if not outcome.ok or outcome.claims is None:
            assert outcome.reason is not None
            return fail(outcome.reason, outcome.detail)
        rep, chip = outcome.claims.report, outcome.claims.chip
        return VerificationResult.success(
            Claims(
                format=self.format,
                platform=self.platform,
                measurement=rep.measurement.hex(),
                host_data=rep.host_data.hex(),
                public_key_sha256=hashlib.sha256(public_key_der).hexdigest(),
                nonce=parsed.nonce.hex(),
                timestamp=moment,  # SEV-SNP reports carry no time: fresh by the nonce, now
                tcb_version=rep.reported_tcb,
                chip_id=chip_id_hex(rep, chip.product),
            )
        )


__all__ = ["Expectations", "Outcome", "SevSnpVerifier", "SnpClaims", "verify_report"]
