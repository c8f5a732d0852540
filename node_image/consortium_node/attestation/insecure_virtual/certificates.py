"""X.509 for the virtual platform: the root CA, chip certificates, and the endorsement chain.

Kept apart from ``platform.py`` (which holds the secrets) because the verifier needs the
checking half without ever touching a private key, exactly as a real SEV-SNP verifier checks
VCEK ← ASK ← ARK with only public certificates.

Chip certificate profile: subject ``O=insecure-virtual, OU=tcb=<tcb_version>,
CN=<chip_id>``, issued by the root, basicConstraints CA=false, keyUsage digitalSignature,
validity copied from the root. The ``OU`` binds the TCB level the chip key was derived for,
like the TCB fields of a VCEK certificate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from consortium_node.attestation.errors import PlatformError

PLATFORM_NAME = "insecure-virtual"
ROOT_COMMON_NAME = "insecure-virtual platform root"
TCB_PREFIX = "tcb="
ROOT_VALIDITY = timedelta(days=3650)
BACKDATE = timedelta(days=1)


class EndorsementError(Exception):
    """The endorsement chain does not establish the chip on this platform (detail says why)."""


def is_p256(key: object) -> bool:
    """True for an EC P-256 public or private key."""
    return isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and (
        key.curve.name == "secp256r1"
    )


def fingerprint(certificate: x509.Certificate) -> str:
    """First 16 hex digits of SHA-256(certificate DER), for messages."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()[:16]


def common_name_of(certificate: x509.Certificate) -> str | None:
    """The subject common name of ``certificate``, or None."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return value if isinstance(value, str) else None


def tcb_version_of(certificate: x509.Certificate) -> int | None:
    """The ``OU=tcb=N`` of a chip certificate, or None if absent or not a number."""
    for attribute in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME):
        value = attribute.value
        if isinstance(value, str) and value.startswith(TCB_PREFIX):
            digits = value[len(TCB_PREFIX) :]
            if digits.isascii() and digits.isdigit():
                return int(digits)
    return None


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def build_root_certificate(key: ec.EllipticCurvePrivateKey, now: datetime) -> x509.Certificate:
    """Self-signed CA: CN "insecure-virtual platform root", keyUsage certSign+crlSign, 10y."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, PLATFORM_NAME),
            x509.NameAttribute(NameOID.COMMON_NAME, ROOT_COMMON_NAME),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + ROOT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )


def build_chip_certificate(
    root_key: ec.EllipticCurvePrivateKey,
    root_certificate: x509.Certificate,
    chip_key: ec.EllipticCurvePublicKey,
    *,
    chip_id: str,
    tcb_version: int,
    serial: int,
) -> x509.Certificate:
    """The root's endorsement of one chip key (profile in the module docstring).

    Deterministic: validity is the root's and the ECDSA signature is RFC 6979, so the same
    inputs always give the same DER.
    """
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, PLATFORM_NAME),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"{TCB_PREFIX}{tcb_version}"),
            x509.NameAttribute(NameOID.COMMON_NAME, chip_id),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root_certificate.subject)
        .public_key(chip_key)
        .serial_number(serial)
        .not_valid_before(root_certificate.not_valid_before_utc)
        .not_valid_after(root_certificate.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(chip_key), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256(), ecdsa_deterministic=True)
    )


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def check_root_certificate(certificate: x509.Certificate) -> None:
    """Raise ``PlatformError`` unless ``certificate`` is a self-signed P-256 CA certificate."""
    if not is_p256(certificate.public_key()):
        raise PlatformError("platform root certificate: public key is not EC P-256")
    if not _is_ca(certificate):
        raise PlatformError("platform root certificate: basicConstraints CA is not true")
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature) as error:
        raise PlatformError(f"platform root certificate is not self-signed ({error})") from None


def load_root_certificate(pem: bytes | str) -> x509.Certificate:
    """Parse a platform root certificate PEM and ``check_root_certificate`` it."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError as error:
        raise PlatformError(f"platform root certificate: not a PEM certificate ({error})") from None
    check_root_certificate(certificate)
    return certificate


def _check_validity(certificate: x509.Certificate, label: str, now: datetime) -> None:
    if now < certificate.not_valid_before_utc:
        start = certificate.not_valid_before_utc.isoformat()
        raise EndorsementError(f"{label} is not valid before {start}")
    if now > certificate.not_valid_after_utc:
        end = certificate.not_valid_after_utc.isoformat()
        raise EndorsementError(f"{label} expired at {end}")


def verify_endorsements(
    chain: Sequence[x509.Certificate],
    root: x509.Certificate,
    *,
    chip_id: str,
    tcb_version: int,
    now: datetime,
) -> ec.EllipticCurvePublicKey:
    """Check ``chain`` (chip certificate first, root excluded) and return the chip key.

    Each certificate must be signed by the next one (the last by ``root``), intermediates
    must be CAs, every certificate including the root must be valid at ``now``, and the chip
    certificate must name ``chip_id`` as CN, carry ``OU=tcb=<tcb_version>`` and a P-256 key.
    Raises ``EndorsementError`` naming the first certificate that fails, also when a
    certificate cannot be decoded at all (cryptography parses names and keys lazily).
    """
    try:
        return _verify_endorsements(chain, root, chip_id=chip_id, tcb_version=tcb_version, now=now)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise EndorsementError(f"endorsement certificate cannot be processed: {error}") from None


def _verify_endorsements(
    chain: Sequence[x509.Certificate],
    root: x509.Certificate,
    *,
    chip_id: str,
    tcb_version: int,
    now: datetime,
) -> ec.EllipticCurvePublicKey:
    if not chain:
        raise EndorsementError("no endorsement certificates: expected the chip certificate")
    _check_validity(root, f"platform root {fingerprint(root)}", now)
    for index, certificate in enumerate(chain):
        issuer = chain[index + 1] if index + 1 < len(chain) else root
        label = f"endorsements[{index}] ({common_name_of(certificate)!r})"
        issuer_label = (
            f"endorsements[{index + 1}]"
            if issuer is not root
            else f"platform root {fingerprint(root)}"
        )
        try:
            certificate.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            raise EndorsementError(f"{label} is not issued by {issuer_label}") from None
        if index > 0 and not _is_ca(certificate):
            raise EndorsementError(f"{label} is an intermediate but not a CA certificate")
        _check_validity(certificate, label, now)
    chip = chain[0]
    if common_name_of(chip) != chip_id:
        raise EndorsementError(
            f"chip certificate CN {common_name_of(chip)!r} does not match chip_id {chip_id!r}"
        )
    if tcb_version_of(chip) != tcb_version:
        raise EndorsementError(
            f"chip certificate is for tcb {tcb_version_of(chip)}, quote claims tcb {tcb_version}"
        )
    key = chip.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not is_p256(key):
        raise EndorsementError("chip certificate key is not EC P-256")
    return key
