"""Service, node and member certificates (DESIGN section 3)."""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from consortium_node.common.timeutil import utcnow
from consortium_node.identity.certs import (
    ServiceIdentity,
    certificate_der,
    certificate_pem,
    issue_node_certificate,
    load_member_certificate,
    self_signed_certificate,
    verify_node_certificate,
)
from consortium_node.identity.errors import CertificateError
from consortium_node.identity.keys import KeyKind, generate_key, node_id_of, public_key_der


def _issue(
    service: ServiceIdentity, hours: int = 24
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = generate_key("p256")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert = issue_node_certificate(
        service,
        key.public_key(),
        subject_alt_names=["10.1.2.3", "demo-0.demo-nodes.default.svc", "::1"],
        not_after=utcnow() + timedelta(hours=hours),
    )
    return key, cert


def test_service_identity_is_self_signed_ca(service: ServiceIdentity) -> None:
    cert = service.certificate
    cert.verify_directly_issued_by(cert)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert service.kid == hashlib.sha256(public_key_der(service.key)).digest()
    assert service.certificate_sha256 == hashlib.sha256(certificate_der(cert)).hexdigest()
    assert service.certificate_pem.startswith("-----BEGIN CERTIFICATE-----")


def test_service_from_parts_accepts_matching_pair(service: ServiceIdentity) -> None:
    rebuilt = ServiceIdentity.from_parts(service.key, service.certificate)
    assert rebuilt.kid == service.kid


@pytest.mark.parametrize("kind", ["p256", "ed25519"])
def test_service_from_parts_rejects_mismatch(service: ServiceIdentity, kind: KeyKind) -> None:
    with pytest.raises(CertificateError, match="key does not match the certificate"):
        ServiceIdentity.from_parts(generate_key(kind), service.certificate)


def test_node_certificate_issued_and_verified(service: ServiceIdentity) -> None:
    key, cert = _issue(service)
    assert verify_node_certificate(cert, service.certificate) == node_id_of(key)
    assert verify_node_certificate(cert, service.certificate, at=utcnow()) == node_id_of(key)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == node_id_of(key)
    assert cert.issuer == service.certificate.subject


def test_node_certificate_sans_contain_ip_and_dns(service: ServiceIdentity) -> None:
    _, cert = _issue(service)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("::1"),
    ]
    assert san.get_values_for_type(x509.DNSName) == ["demo-0.demo-nodes.default.svc"]


def test_node_certificate_issuer_mismatch(service: ServiceIdentity) -> None:
    _, cert = _issue(service)
    stranger = ServiceIdentity.create("other-consortium")
    with pytest.raises(CertificateError, match="issuer does not match"):
        verify_node_certificate(cert, stranger.certificate)


def test_node_certificate_signed_by_other_service(
    service: ServiceIdentity, other_service: ServiceIdentity
) -> None:
    assert other_service.certificate.subject == service.certificate.subject
    _, cert = _issue(other_service)
    with pytest.raises(CertificateError, match="not signed by the service certificate"):
        verify_node_certificate(cert, service.certificate)


@pytest.mark.parametrize(
    ("offset", "valid"),
    [
        (timedelta(hours=-1), False),  # before notBefore (which is backdated five minutes)
        (timedelta(minutes=-4), True),
        (timedelta(hours=1), True),
        (timedelta(hours=3), False),  # after notAfter
    ],
)
def test_node_certificate_validity_window(
    service: ServiceIdentity, offset: timedelta, valid: bool
) -> None:
    _, cert = _issue(service, hours=2)
    at = cert.not_valid_before_utc + timedelta(minutes=5) + offset
    if valid:
        verify_node_certificate(cert, service.certificate, at=at)
    else:
        with pytest.raises(CertificateError, match="not valid at"):
            verify_node_certificate(cert, service.certificate, at=at)


def test_node_certificate_not_after_in_the_past_is_refused(service: ServiceIdentity) -> None:
    key = generate_key("p256")
    with pytest.raises(CertificateError, match="is not after notBefore"):
        issue_node_certificate(
            service,
            key.public_key(),
            subject_alt_names=[],
            not_after=datetime(2000, 1, 1, tzinfo=UTC),
        )


@pytest.mark.parametrize("kind", ["p256", "ed25519"])
def test_member_certificate_loads(kind: KeyKind) -> None:
    cert = self_signed_certificate(generate_key(kind), "member-a")
    for pem in (certificate_pem(cert), certificate_pem(cert).encode()):
        member = load_member_certificate(pem)
        assert member.member_id == hashlib.sha256(certificate_der(cert)).hexdigest()
        assert member.common_name == "member-a"
        assert member.pem == certificate_pem(cert)


@pytest.mark.parametrize("pem", ["", "hello", "-----BEGIN CERTIFICATE-----\nAAAA\n"])
def test_member_certificate_rejects_non_pem(pem: str) -> None:
    with pytest.raises(CertificateError, match=r"member certificate: not a PEM X\.509 certificate"):
        load_member_certificate(pem)


def test_member_certificate_rejects_rsa() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rsa-member")])
    now = utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CertificateError, match=r"member certificate: .*only P-256 and Ed25519"):
        load_member_certificate(pem)
