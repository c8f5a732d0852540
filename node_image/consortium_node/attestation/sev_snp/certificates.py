"""SEV-SNP endorsements: the chip certificate (VCEK or VLEK), its extensions, and its chain to
AMD's root key for its product.

Why: the report's signature proves only that *some* key signed it; the chain proves that key
lives in a genuine AMD processor (VCEK: derived in that chip at that TCB; VLEK: issued to a
cloud provider), and the VCEK's extensions say which chip and which TCB it was derived for.

Chain (AMD "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface
Specification", document 57230; observed in the real chains of ``tests/data/sev_snp``)::

    ARK  (RSA-4096, self-signed, RSASSA-PSS SHA-384)        pinned per product (amd_roots.py)
     └ ASK / ASVK (RSA-4096, signed by the ARK, PSS)          pinned or presented
        └ VCEK / VLEK (EC P-384, signed by the ASK, PSS)     from the host or the user

VCEK extensions under OID 1.3.6.1.4.1.3704.1 (57230 tables 10/11; go-sev-guest ``kds.go``):
``.1`` structVersion INTEGER, ``.2`` productName IA5String, ``.3.1`` blSPL, ``.3.2`` teeSPL,
``.3.3`` snpSPL, ``.3.4``-``.3.7`` spl_4..7, ``.3.8`` ucodeSPL, ``.3.9`` fmcSPL (Turin), all
INTEGER; ``.4`` hwID: the chip id as raw octets *without* an ASN.1 tag (64 bytes; 8 on
Turin); ``.5`` cspID IA5String (VLEK only, instead of hwID).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.attestation.errors import AttestationError
from consortium_node.attestation.sev_snp import amd_roots
from consortium_node.attestation.sev_snp.tcb import Tcb, product_of_name

AMD_OID = "1.3.6.1.4.1.3704.1."
_SPL_OIDS = {"3.1": "bootloader", "3.2": "tee", "3.3": "snp", "3.8": "microcode", "3.9": "fmc"}
VCEK, VLEK = "VCEK", "VLEK"


class ChainError(AttestationError):
    """An endorsement that does not chain to a pinned root, is outside its validity, is
    revoked, or cannot be read; the message says which certificate and why."""


def load_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    """Every certificate of ``data``: PEM (one or more) or a single DER."""
    with warnings.catch_warnings():  # AMD's VCEKs have serial number 0 (a deprecation warning)
        warnings.simplefilter("ignore")
        try:
            if b"-----BEGIN CERTIFICATE-----" in data:
                certificates = x509.load_pem_x509_certificates(data)
            else:
                certificates = [x509.load_der_x509_certificate(data)]
            for certificate in certificates:  # parsed lazily: read now what the checks use
                _ = (certificate.subject, certificate.issuer, certificate.extensions,
                     certificate.public_key(), certificate.not_valid_after_utc,
                     certificate.not_valid_before_utc, certificate.serial_number)  # fmt: skip
        except Exception as exc:  # ValueError, InvalidVersion, DuplicateExtension… by field
            raise ChainError(f"{what}: not a usable certificate ({exc})") from None
    return certificates


def _der_integer(value: bytes, oid: str) -> int:
    if len(value) < 3 or value[0] != 0x02 or value[1] != len(value) - 2 or value[1] > 8:
        raise ChainError(f"VCEK extension {oid}: not a small DER INTEGER")
    return int.from_bytes(value[2:], "big", signed=True)


def _der_ia5(value: bytes, oid: str) -> str:
    if len(value) < 2 or value[0] != 0x16 or value[1] != len(value) - 2:
        raise ChainError(f"VCEK extension {oid}: not a short DER IA5String")
    return value[2:].decode("ascii", errors="replace")


@dataclass(frozen=True)
class ChipCertificate:
    """A VCEK or VLEK and what its extensions say."""

    certificate: x509.Certificate
    kind: str  # VCEK or VLEK
    product: str  # Milan, Genoa, Turin
    product_name: str  # as in the certificate, e.g. "Milan-B0"
    tcb: Tcb
    hw_id: bytes | None  # VCEK only
    csp_id: str | None  # VLEK only

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        key = self.certificate.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return key


def _extensions(certificate: x509.Certificate) -> dict[str, bytes]:
    found = {}
    for extension in certificate.extensions:
        oid = extension.oid.dotted_string
        if oid.startswith(AMD_OID) and isinstance(extension.value, x509.UnrecognizedExtension):
            found[oid[len(AMD_OID) :]] = extension.value.value
    return found


def chip_certificate(certificate: x509.Certificate) -> ChipCertificate:
    """Read a VCEK/VLEK: EC P-384 key, productName, the SPLs, hwID or cspID."""
    key = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise ChainError("chip certificate: its key is not EC P-384")
    ext = _extensions(certificate)
    if "2" not in ext:
        raise ChainError("chip certificate: no productName extension (1.3.6.1.4.1.3704.1.2)")
    product_name = _der_ia5(ext["2"], AMD_OID + "2")
    product = product_of_name(product_name)
    if product is None:
        raise ChainError(f"chip certificate: unknown product {product_name!r}")
    spl = {name: _der_integer(ext[oid], AMD_OID + oid) for oid, name in _SPL_OIDS.items()
           if oid in ext}  # fmt: skip
    wanted = {"bootloader", "tee", "snp", "microcode"} | ({"fmc"} if product == "Turin" else set())
    if missing := sorted(wanted - set(spl)):
        raise ChainError(f"chip certificate: no {', '.join(missing)} SPL extension")
    tcb = Tcb(product=product, **{k: v for k, v in spl.items() if k in wanted})
    hw_id, csp_id = ext.get("4"), ext.get("5")
    if (hw_id is None) == (csp_id is None):
        raise ChainError("chip certificate: needs exactly one of hwID (VCEK) and cspID (VLEK)")
    return ChipCertificate(
        certificate=certificate,
        kind=VCEK if hw_id is not None else VLEK,
        product=product,
        product_name=product_name,
        tcb=tcb,
        hw_id=hw_id,
        csp_id=_der_ia5(csp_id, AMD_OID + "5") if csp_id is not None else None,
    )


@dataclass(frozen=True)
class Anchor:
    """A pinned root for one product: its ARK and the intermediates this code knows."""

    product: str
    ark: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]
    insecure: bool = False  # the test emulator's root (never AMD's)

    @property
    def name(self) -> str:
        common = self.ark.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(common[0].value) if common else self.ark.subject.rfc4514_string()


def amd_anchors() -> list[Anchor]:
    """AMD's ARK of each product with its ASK (and ASVK where known): a new list each time
    (callers may add the emulator's) of anchors parsed once."""
    return list(_pinned())


@functools.cache
def _pinned() -> tuple[Anchor, ...]:
    anchors = []
    for product, (ark, intermediates) in amd_roots.ROOTS.items():
        pems = (ark, *intermediates)
        certs = [load_certificates(pem.encode("ascii"), product)[0] for pem in pems]
        anchors.append(Anchor(product, certs[0], tuple(certs[1:])))
    return tuple(anchors)


def _tlv(data: bytes, offset: int) -> tuple[int, int]:
    """(start of the value, end of the element) of the DER element at ``offset``."""
    length, start = data[offset + 1], offset + 2
    if length & 0x80:
        count = length & 0x7F
        length, start = int.from_bytes(data[start : start + count], "big"), start + count
    return start, start + length


def strict_envelope(certificate: x509.Certificate) -> bool:
    """The unsigned parts of the certificate are exactly what they must be: the outer
    ``signatureAlgorithm`` equals the signed ``tbsCertificate.signature`` byte for byte
    (RFC 5280 4.1.1.2; else e.g. the PSS salt length could be altered without breaking the
    signature) and the signature BIT STRING has no unused bits."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    body, _ = _tlv(der, 0)
    _, tbs_end = _tlv(der, body)
    _, outer_end = _tlv(der, tbs_end)
    outer = der[tbs_end:outer_end]
    bits_start, _ = _tlv(der, outer_end)
    if der[outer_end] != 0x03 or der[bits_start] != 0:
        return False
    tbs = certificate.tbs_certificate_bytes
    at, _ = _tlv(tbs, 0)
    if tbs[at] == 0xA0:  # [0] version
        at = _tlv(tbs, at)[1]
    at = _tlv(tbs, at)[1]  # serialNumber
    return tbs[at : _tlv(tbs, at)[1]] == outer


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if not strict_envelope(child):
        return False
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _name(certificate: x509.Certificate) -> str:
    common = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(common[0].value) if common else certificate.subject.rfc4514_string()


def _check_validity(certificate: x509.Certificate, now: datetime, what: str) -> None:
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise ChainError(
            f"{what} {_name(certificate)!r} is valid {certificate.not_valid_before_utc:%Y-%m-%d}"
            f" to {certificate.not_valid_after_utc:%Y-%m-%d}, not at {now:%Y-%m-%d %H:%M}"
        )


def _check_crls(
    crls: Iterable[x509.CertificateRevocationList],
    anchor: Anchor,
    ask: x509.Certificate,
    now: datetime,
) -> None:
    for crl in crls:
        if crl.issuer != anchor.ark.subject:
            continue
        if not crl.is_signature_valid(anchor.ark.public_key()):  # type: ignore[arg-type]
            raise ChainError(f"a CRL claiming to be from {anchor.name} does not verify with it")
        if crl.next_update_utc is not None and crl.next_update_utc < now:
            raise ChainError(
                f"the CRL of {anchor.name} was due for renewal on "
                f"{crl.next_update_utc:%Y-%m-%d %H:%M}: a stale CRL proves no ASK unrevoked "
                "(fetch a fresh one from AMD KDS)"
            )
        if crl.get_revoked_certificate_by_serial_number(ask.serial_number) is not None:
            raise ChainError(
                f"{_name(ask)} (serial 0x{ask.serial_number:x}) is revoked by {anchor.name}'s CRL"
            )


def verify_chain(
    chip: ChipCertificate,
    anchors: Sequence[Anchor],
    *,
    now: datetime,
    presented: Sequence[x509.Certificate] = (),
    crls: Iterable[x509.CertificateRevocationList] = (),
) -> Anchor:
    """The anchor ``chip`` chains to, or ``ChainError``.

    ``presented`` is the rest of the chain a host or user gave (ASK, ARK in any order): a
    root among them must be the pinned ARK of the chip's product (a wrong product's ARK, or
    any other root, fails) and an intermediate must be signed by it (a tampered ASK fails
    even though the pinned ASK would do). Every
    certificate must be within its validity at ``now``; a CRL issued by the ARK (signature
    checked) must not list the ASK.
    """
    mine = [a for a in anchors if a.product == chip.product]
    if not mine:
        raise ChainError(f"no root is pinned for product {chip.product}")
    presented = [c for c in presented if c != chip.certificate]  # a whole chain file given
    roots = [c for c in presented if c.issuer == c.subject]
    for certificate in roots:
        if not any(certificate == a.ark for a in mine):
            raise ChainError(
                f"the presented root {_name(certificate)!r} is not the pinned root of "
                f"{chip.product} ({', '.join(a.name for a in mine)})"
            )
    for certificate in presented:
        if certificate not in roots and not any(_issued_by(certificate, a.ark) for a in mine):
            raise ChainError(
                f"the presented intermediate {_name(certificate)!r} is not signed by "
                f"{', '.join(a.name for a in mine)}"
            )
    for anchor in mine:
        candidates = [*anchor.intermediates, *(c for c in presented if c.subject != c.issuer)]
        for ask in candidates:
            if ask.subject != chip.certificate.issuer or not _issued_by(ask, anchor.ark):
                continue
            if not _issued_by(chip.certificate, ask):
                raise ChainError(f"the {chip.kind}'s signature does not verify with {_name(ask)!r}")
            _check_validity(chip.certificate, now, chip.kind)
            _check_validity(ask, now, "intermediate")
            _check_validity(anchor.ark, now, "root")
            _check_crls(crls, anchor, ask, now)
            return anchor
    issuer = chip.certificate.issuer.rfc4514_string()
    raise ChainError(
        f"the {chip.kind} (issuer {issuer}) does not chain to {', '.join(a.name for a in mine)}"
    )


def as_anchor(pem_chain: bytes, *, insecure: bool) -> Anchor:
    """An anchor from a PEM bundle (ASK then ARK, as AMD KDS serves ``cert_chain``); the
    ARK must be self-signed and have signed the ASK. Its product is read from the ARK's
    common name (``ARK-Milan`` → Milan)."""
    certs = load_certificates(pem_chain, "chain")
    if len(certs) != 2:
        raise ChainError(f"chain: expected 2 certificates (ASK, ARK), got {len(certs)}")
    ask, ark = certs
    if not _issued_by(ark, ark) or not _issued_by(ask, ark):
        raise ChainError("chain: the ARK is not self-signed or did not sign the ASK")
    product = product_of_name(_name(ark).rsplit("ARK-", 1)[-1])
    if product is None:
        raise ChainError(f"chain: cannot tell the product of root {_name(ark)!r}")
    return Anchor(product, ark, (ask,), insecure=insecure)


def chain_certificates(certificates: Mapping[str, bytes]) -> list[x509.Certificate]:
    """Certificates of a host's certificate table (GUID → DER), any order."""
    found: list[x509.Certificate] = []
    for guid, der in certificates.items():
        found.extend(load_certificates(der, f"certificate table entry {guid}"))
    return found
