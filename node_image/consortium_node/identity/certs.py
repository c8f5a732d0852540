"""X.509 certificates of the consortium (DESIGN section 3).

* The **service certificate** is self-signed by the service key, which is created inside the
  genesis enclave. It is the one thing a user must hold to verify anything offline.
* A **node certificate** is issued by the service key to a Trusted node; its ``notAfter`` is
  the node's attestation expiry, so an unattested node cannot keep speaking TLS as a member of
  the network. It carries the node's addresses as subjectAltNames (HTTP API and mTLS).
* **Member certificates** are self-signed by each member (P-256 or Ed25519); the member_id is
  the SHA-256 of the certificate DER.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from consortium_node.common.timeutil import utcnow
from consortium_node.identity.errors import CertificateError
from consortium_node.identity.keys import (
    PrivateKey,
    PublicKey,
    check_key_type,
    generate_key,
    member_id_of,
    node_id_of,
    public_key_der,
)

SERVICE_CERT_DAYS = 3650
_BACKDATE = timedelta(minutes=5)  # tolerate small clock differences between nodes and clients


def certificate_der(cert: x509.Certificate) -> bytes:
    """DER bytes of a certificate."""
    return cert.public_bytes(serialization.Encoding.DER)


def certificate_pem(cert: x509.Certificate) -> str:
    """PEM text of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def certificate_sha256(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the certificate DER (the service certificate digest)."""
    return hashlib.sha256(certificate_der(cert)).hexdigest()


def load_certificate(pem: bytes | str, what: str = "certificate") -> x509.Certificate:
    """Parse one PEM certificate; ``what`` names it in the error message."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"{what}: not a PEM X.509 certificate ({exc})") from exc


def _signature_hash(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def self_signed_certificate(
    key: PrivateKey, common_name: str, days: int = 365, *, ca: bool = False
) -> x509.Certificate:
    """A self-signed certificate for ``key`` (members, users and the service identity)."""
    now = utcnow()
    name = _name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(key, _signature_hash(key))


@dataclass(frozen=True)
class ServiceIdentity:
    """The consortium's service key and self-signed certificate (lives only in enclaves)."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, consortium: str) -> ServiceIdentity:
        """Generate the service identity; call this only inside the genesis enclave."""
        key = generate_key("p256")
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        cert = self_signed_certificate(
            key, f"{consortium} service identity", SERVICE_CERT_DAYS, ca=True
        )
        return cls(key, cert)

    @classmethod
    def from_parts(cls, key: PrivateKey, cert: x509.Certificate) -> ServiceIdentity:
        """Rebuild from an unsealed key and certificate, checking they belong together."""
        cert_key = cert.public_key()
        if (
            not isinstance(key, ec.EllipticCurvePrivateKey)
            or not isinstance(cert_key, ec.EllipticCurvePublicKey)
            or public_key_der(key) != public_key_der(cert_key)
        ):
            raise CertificateError("service identity: the key does not match the certificate")
        return cls(key, cert)

    @property
    def certificate_pem(self) -> str:
        return certificate_pem(self.certificate)

    @property
    def certificate_sha256(self) -> str:
        return certificate_sha256(self.certificate)

    @property
    def kid(self) -> bytes:
        """COSE key id: SHA-256 of the service public key SubjectPublicKeyInfo DER."""
        return hashlib.sha256(public_key_der(self.key)).digest()


def _san(addresses: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for address in addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            names.append(x509.DNSName(address))
    return x509.SubjectAlternativeName(names)


def subject_alt_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a certificate is valid for, as text, in its order."""
    try:
        found = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    dns = found.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in found.get_values_for_type(x509.IPAddress)]
    return [*dns, *ips]


def issue_node_certificate(
    service: ServiceIdentity,
    node_public_key: PublicKey,
    *,
    subject_alt_names: list[str],
    not_after: datetime,
    not_before: datetime | None = None,
) -> x509.Certificate:
    """Issue a node certificate: CN = node_id, SANs = addresses, valid until ``not_after``.

    ``not_after`` is the node's attestation expiry; it is clamped to the service certificate's
    own expiry so the chain never outlives its root.
    """
    check_key_type(node_public_key)
    start = (not_before or utcnow()) - _BACKDATE
    end = min(not_after, service.certificate.not_valid_after_utc)
    if end <= start:
        raise CertificateError(f"node certificate: notAfter {end} is not after notBefore {start}")
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(node_id_of(node_public_key), "consortium node"))
        .issuer_name(service.certificate.subject)
        .public_key(node_public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(service.key.public_key()),
            critical=False,
        )
    )
    if subject_alt_names:
        builder = builder.add_extension(_san(subject_alt_names), critical=False)
    return builder.sign(service.key, hashes.SHA256())


def verify_node_certificate(
    node_cert: x509.Certificate, service_cert: x509.Certificate, at: datetime | None = None
) -> str:
    """Check ``node_cert`` was issued by ``service_cert`` (and is valid ``at``, if given).

    Returns the node_id of the certified key. Raises CertificateError naming the failure.
    """
    if node_cert.issuer != service_cert.subject:
        raise CertificateError(
            "node certificate: issuer does not match the service certificate's subject"
        )
    try:
        node_cert.verify_directly_issued_by(service_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateError(
            f"node certificate: not signed by the service certificate ({exc or 'bad signature'})"
        ) from exc
    if at is not None:
        moment = at.astimezone(UTC)
        if not node_cert.not_valid_before_utc <= moment <= node_cert.not_valid_after_utc:
            raise CertificateError(
                f"node certificate: not valid at {moment.isoformat()} (valid "
                f"{node_cert.not_valid_before_utc.isoformat()} to "
                f"{node_cert.not_valid_after_utc.isoformat()})"
            )
    public = node_cert.public_key()
    check_key_type(public)
    return node_id_of(public)  # type: ignore[arg-type]


@dataclass(frozen=True)
class MemberCertificate:
    """A member's (or user's) certificate as registered with the consortium."""

    member_id: str
    certificate: x509.Certificate
    pem: str
    common_name: str


def load_member_certificate(
    pem: bytes | str, what: str = "member certificate"
) -> MemberCertificate:
    """Parse and check a member certificate: one PEM cert with a P-256 or Ed25519 key."""
    cert = load_certificate(pem, what)
    public = cert.public_key()
    try:
        check_key_type(public)
    except Exception as exc:
        raise CertificateError(f"{what}: {exc}") from exc
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(cns[0].value) if cns else ""
    return MemberCertificate(
        member_id=member_id_of(certificate_der(cert)),
        certificate=cert,
        pem=certificate_pem(cert),
        common_name=common_name,
    )
