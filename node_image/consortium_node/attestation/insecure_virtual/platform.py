"""The emulated hardware vendor: a platform root key that endorses per-node "chips".

On AMD SEV-SNP the vendor root (ARK) endorses a per-chip, per-TCB key (VCEK) that is derived
inside the chip; a verifier trusts a quote because its signing key chains to the vendor root.
``VirtualPlatform`` plays the vendor and the silicon at once: its root key is an ordinary EC
P-256 key kept in a file / Kubernetes Secret, which is exactly why ``insecure-virtual`` is
insecure — whoever reads that Secret can mint chips and forge quotes.

Chips are *derived*, not stored: the chip key and the chip's sealing secret are
HKDF-SHA256 functions of (root private scalar, chip_id, tcb_version), so a pod that restarts
with the same chip id gets the same key and can unseal what it sealed before, as a VCEK stays
the same across reboots of one chip at one TCB level. The chip certificate is deterministic
too (validity copied from the root, deterministic ECDSA), so a restart reproduces it exactly.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from consortium_node.attestation.errors import PlatformError
from consortium_node.attestation.insecure_virtual.certificates import (
    PLATFORM_NAME,
    build_chip_certificate,
    build_root_certificate,
    check_root_certificate,
    is_p256,
    load_root_certificate,
)
from consortium_node.attestation.insecure_virtual.quote import MAX_CHIP_ID_LENGTH, MAX_TCB_VERSION
from consortium_node.common.timeutil import utcnow

REVOKED_TEST_CHIP_ID = "insecure-virtual-revoked-test-chip"
BUILTIN_REVOKED_CHIP_IDS: frozenset[str] = frozenset({REVOKED_TEST_CHIP_ID})

_CHIP_KDF_SALT = b"insecure-virtual-chip-v1"
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def check_chip_id(chip_id: str) -> None:
    """Raise ``PlatformError`` unless ``chip_id`` is 1..64 printable characters."""
    if not isinstance(chip_id, str) or not chip_id or len(chip_id) > MAX_CHIP_ID_LENGTH:
        raise PlatformError(f"chip_id must be 1..{MAX_CHIP_ID_LENGTH} characters, got {chip_id!r}")
    if not chip_id.isprintable():
        raise PlatformError(f"chip_id {chip_id!r} contains non-printable characters")


def check_tcb_version(tcb_version: int) -> None:
    """Raise ``PlatformError`` unless ``tcb_version`` is an int in 0..2**32-1."""
    if isinstance(tcb_version, bool) or not isinstance(tcb_version, int):
        raise PlatformError(f"tcb_version must be an integer, got {tcb_version!r}")
    if not 0 <= tcb_version <= MAX_TCB_VERSION:
        raise PlatformError(f"tcb_version must be in 0..{MAX_TCB_VERSION}, got {tcb_version}")


def derive_chip_material(
    root_key: ec.EllipticCurvePrivateKey,
    purpose: bytes,
    chip_id: str,
    tcb_version: int,
    length: int,
) -> bytes:
    """HKDF-SHA256 output for one chip.

    ``ikm`` = the root private scalar as 32 big-endian bytes, ``salt`` =
    ``b"insecure-virtual-chip-v1"``, ``info`` =
    ``purpose || 0x00 || u32be(len(chip_id_utf8)) || chip_id_utf8 || u32be(tcb_version)``.
    """
    ikm = root_key.private_numbers().private_value.to_bytes(32, "big")
    encoded = chip_id.encode("utf-8")
    info = purpose + b"\x00" + struct.pack(">I", len(encoded)) + encoded
    info += struct.pack(">I", tcb_version)
    return HKDF(hashes.SHA256(), length, _CHIP_KDF_SALT, info).derive(ikm)


def derive_chip_key(
    root_key: ec.EllipticCurvePrivateKey, chip_id: str, tcb_version: int
) -> ec.EllipticCurvePrivateKey:
    """The chip's P-256 key: 48 HKDF bytes (purpose ``chip-key``) reduced to ``1..n-1``."""
    okm = derive_chip_material(root_key, b"chip-key", chip_id, tcb_version, 48)
    scalar = int.from_bytes(okm, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


@dataclass(frozen=True)
class Chip:
    """One emulated chip: its endorsed signing key and its sealing secret.

    ``endorsements`` is the PEM chain from the chip certificate up to, but excluding, the
    platform root (today just the chip certificate). ``secret`` is 32 bytes, the root of the
    chip's sealing keys; it never leaves the (virtual) chip.
    """

    chip_id: str
    tcb_version: int
    endorsements: tuple[str, ...]
    secret: bytes = field(repr=False)
    private_key: ec.EllipticCurvePrivateKey = field(repr=False, compare=False)

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 / SHA-256 signature over ``data``, DER encoded."""
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The chip's public key (the one its certificate carries)."""
        return self.private_key.public_key()


class VirtualPlatform:
    """The insecure-virtual vendor root: endorses chips and keeps a revocation list.

    ``revoked_chip_ids`` always contains ``REVOKED_TEST_CHIP_ID`` (the platform's built-in
    "CRL") plus any ids given to the constructor.
    """

    name = PLATFORM_NAME

    def __init__(
        self,
        root_key: ec.EllipticCurvePrivateKey,
        root_certificate: x509.Certificate,
        *,
        revoked_chip_ids: Iterable[str] = frozenset(),
    ) -> None:
        if not isinstance(root_key, ec.EllipticCurvePrivateKey) or not is_p256(root_key):
            raise PlatformError("platform root key: not an EC P-256 private key")
        check_root_certificate(root_certificate)
        if root_certificate.public_key() != root_key.public_key():
            raise PlatformError(
                "platform root key does not match the platform root certificate's public key"
            )
        self._root_key = root_key
        self._root_certificate = root_certificate
        self._revoked = BUILTIN_REVOKED_CHIP_IDS | frozenset(revoked_chip_ids)
        self._chips: dict[tuple[str, int], Chip] = {}

    @classmethod
    def generate(cls, *, revoked_chip_ids: Iterable[str] = frozenset()) -> VirtualPlatform:
        """A fresh root key and self-signed CA certificate (valid 10 years, back-dated 1 day)."""
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = build_root_certificate(key, utcnow())
        return cls(key, certificate, revoked_chip_ids=revoked_chip_ids)

    @classmethod
    def load(
        cls,
        key_pem: bytes | str,
        cert_pem: bytes | str,
        *,
        revoked_chip_ids: Iterable[str] = frozenset(),
    ) -> VirtualPlatform:
        """Load a root key (PKCS#8/SEC1 PEM, unencrypted) and its certificate; check they match."""
        key_data = key_pem.encode("ascii") if isinstance(key_pem, str) else key_pem
        try:
            key = serialization.load_pem_private_key(key_data, password=None)
        except (ValueError, TypeError) as error:
            raise PlatformError(
                f"platform root key: not an unencrypted PEM key ({error})"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PlatformError("platform root key: not an EC P-256 private key")
        certificate = load_root_certificate(cert_pem)
        return cls(key, certificate, revoked_chip_ids=revoked_chip_ids)

    @property
    def root_certificate(self) -> x509.Certificate:
        """The platform root certificate (the verifier's trust anchor)."""
        return self._root_certificate

    @property
    def root_certificate_pem(self) -> bytes:
        """The platform root certificate, PEM."""
        return self._root_certificate.public_bytes(serialization.Encoding.PEM)

    def root_key_pem(self) -> bytes:
        """The root private key as unencrypted PKCS#8 PEM (what the Secret stores)."""
        return self._root_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def revoked_chip_ids(self) -> frozenset[str]:
        """Chip ids this vendor has revoked (always includes ``REVOKED_TEST_CHIP_ID``)."""
        return self._revoked

    def chip(self, chip_id: str, tcb_version: int = 1) -> Chip:
        """The chip ``chip_id`` at ``tcb_version``: same inputs, same key/secret/certificate."""
        check_chip_id(chip_id)
        check_tcb_version(tcb_version)
        cached = self._chips.get((chip_id, tcb_version))
        if cached is None:
            cached = self._make_chip(chip_id, tcb_version)
            self._chips[(chip_id, tcb_version)] = cached
        return cached

    def _make_chip(self, chip_id: str, tcb_version: int) -> Chip:
        key = derive_chip_key(self._root_key, chip_id, tcb_version)
        secret = derive_chip_material(self._root_key, b"chip-secret", chip_id, tcb_version, 32)
        serial_bytes = derive_chip_material(
            self._root_key, b"chip-serial", chip_id, tcb_version, 19
        )
        certificate = build_chip_certificate(
            self._root_key,
            self._root_certificate,
            key.public_key(),
            chip_id=chip_id,
            tcb_version=tcb_version,
            serial=int.from_bytes(serial_bytes, "big") | 1,
        )
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
        return Chip(chip_id, tcb_version, (pem,), secret, key)
