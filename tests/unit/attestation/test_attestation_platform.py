"""VirtualPlatform: root certificate, load, deterministic chips, revocation list."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from attestation_support import NOW
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from consortium_node.attestation import PlatformError
from consortium_node.attestation.insecure_virtual import REVOKED_TEST_CHIP_ID, VirtualPlatform
from consortium_node.attestation.insecure_virtual.certificates import tcb_version_of
from consortium_node.common.timeutil import utcnow


def public_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def cert_of(pem: str | bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)


def test_root_certificate_is_a_self_signed_p256_ca(platform: VirtualPlatform) -> None:
    root = cert_of(platform.root_certificate_pem)
    cn = root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "insecure-virtual platform root"
    assert root.issuer == root.subject
    root.verify_directly_issued_by(root)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    # now, not NOW (taken when the session collected): a whole run can last over an hour
    assert root.not_valid_before_utc <= utcnow() - timedelta(hours=23)
    assert root.not_valid_after_utc - root.not_valid_before_utc >= timedelta(days=3650)
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)


def test_load_restores_the_same_platform_and_chips(platform: VirtualPlatform) -> None:
    restored = VirtualPlatform.load(platform.root_key_pem(), platform.root_certificate_pem)
    assert restored.root_certificate_pem == platform.root_certificate_pem
    original, again = platform.chip("node-7"), restored.chip("node-7")
    assert public_bytes(again.public_key) == public_bytes(original.public_key)
    assert again.secret == original.secret
    assert again.endorsements == original.endorsements


def test_load_accepts_text_pem(platform: VirtualPlatform) -> None:
    restored = VirtualPlatform.load(
        platform.root_key_pem().decode(), platform.root_certificate_pem.decode()
    )
    assert restored.root_certificate_pem == platform.root_certificate_pem


def test_load_rejects_a_key_that_does_not_match_the_certificate(
    platform: VirtualPlatform,
) -> None:
    other_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(PlatformError, match="does not match"):
        VirtualPlatform.load(other_key, platform.root_certificate_pem)


def garbage_key(platform: VirtualPlatform) -> tuple[bytes, bytes]:
    return b"not a key", platform.root_certificate_pem


def garbage_certificate(platform: VirtualPlatform) -> tuple[bytes, bytes]:
    return platform.root_key_pem(), b"not a certificate"


def chip_certificate_as_root(platform: VirtualPlatform) -> tuple[bytes, bytes]:
    return platform.root_key_pem(), platform.chip("node-0").endorsements[0].encode()


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (garbage_key, "not an unencrypted PEM key"),
        (garbage_certificate, "not a PEM certificate"),
        (chip_certificate_as_root, "CA is not true"),
    ],
)
def test_load_rejects_garbage_with_a_clear_error(
    platform: VirtualPlatform,
    inputs: Callable[[VirtualPlatform], tuple[bytes, bytes]],
    message: str,
) -> None:
    key_pem, cert_pem = inputs(platform)
    with pytest.raises(PlatformError, match=message):
        VirtualPlatform.load(key_pem, cert_pem)


def test_load_rejects_a_non_p256_key(platform: VirtualPlatform) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(PlatformError, match="not an EC P-256"):
        VirtualPlatform.load(p384, platform.root_certificate_pem)


def test_same_chip_id_gives_the_same_key_secret_and_certificate(
    platform: VirtualPlatform,
) -> None:
    restarted = VirtualPlatform.load(platform.root_key_pem(), platform.root_certificate_pem)
    one, two = platform.chip("node-0"), restarted.chip("node-0")
    assert one.private_key.private_numbers() == two.private_key.private_numbers()
    assert one.secret == two.secret
    assert one.endorsements == two.endorsements
    assert public_bytes(one.public_key) == public_bytes(
        cert_of(one.endorsements[0]).public_key()  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("one", "two"),
    [(("node-0", 1), ("node-1", 1)), (("node-0", 1), ("node-0", 2)), (("a", 1), ("A", 1))],
)
def test_different_chip_id_or_tcb_gives_different_keys_and_secrets(
    platform: VirtualPlatform, one: tuple[str, int], two: tuple[str, int]
) -> None:
    first, second = platform.chip(*one), platform.chip(*two)
    assert public_bytes(first.public_key) != public_bytes(second.public_key)
    assert first.secret != second.secret


def test_other_platform_derives_other_chips(platform: VirtualPlatform) -> None:
    other = VirtualPlatform.generate()
    assert public_bytes(other.chip("node-0").public_key) != public_bytes(
        platform.chip("node-0").public_key
    )


def test_chip_certificate_is_issued_by_the_root(platform: VirtualPlatform) -> None:
    chip = platform.chip("node-3", tcb_version=4)
    assert len(chip.endorsements) == 1
    certificate = cert_of(chip.endorsements[0])
    certificate.verify_directly_issued_by(cert_of(platform.root_certificate_pem))
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-3"
    assert tcb_version_of(certificate) == 4
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert certificate.not_valid_before_utc <= NOW <= certificate.not_valid_after_utc
    assert chip.endorsements[0] != platform.root_certificate_pem.decode()


def test_chip_signature_verifies_with_its_certificate(platform: VirtualPlatform) -> None:
    chip = platform.chip("node-0")
    key = cert_of(chip.endorsements[0]).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(chip.sign(b"payload"), b"payload", ec.ECDSA(hashes.SHA256()))
    assert len(chip.secret) == 32
    assert chip.secret.hex() not in repr(chip)
    assert repr(chip.secret) not in repr(chip)


@pytest.mark.parametrize(
    ("chip_id", "tcb_version", "message"),
    [
        ("", 1, "1..64 characters"),
        ("x" * 65, 1, "1..64 characters"),
        ("bad\nid", 1, "non-printable"),
        ("node-0", -1, "tcb_version must be in"),
        ("node-0", 2**32, "tcb_version must be in"),
        ("node-0", True, "must be an integer"),
    ],
)
def test_chip_rejects_invalid_ids_and_tcb_versions(
    platform: VirtualPlatform, chip_id: str, tcb_version: int, message: str
) -> None:
    with pytest.raises(PlatformError, match=message):
        platform.chip(chip_id, tcb_version)


def test_revocation_list_always_contains_the_test_chip(platform: VirtualPlatform) -> None:
    assert REVOKED_TEST_CHIP_ID == "insecure-virtual-revoked-test-chip"
    assert platform.revoked_chip_ids == frozenset({REVOKED_TEST_CHIP_ID})


def test_revocation_list_can_be_extended(platform: VirtualPlatform) -> None:
    extended = VirtualPlatform.load(
        platform.root_key_pem(), platform.root_certificate_pem, revoked_chip_ids={"node-9"}
    )
    assert extended.revoked_chip_ids == frozenset({REVOKED_TEST_CHIP_ID, "node-9"})
