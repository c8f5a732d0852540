"""An SEV-SNP *emulator* for tests, INSECURE BY DESIGN: reports in the real byte format,
signed by a test VCEK whose chain ends in a test ARK.

Why: this machine and CI have no SEV-SNP hardware, yet the node, the operator and the whole
join/re-attestation flow must run the real ``sev-snp`` verifier end to end. The emulator
plays the AMD Secure Processor behind the same interface as ``device.SevGuestDevice``
(``report``, ``extended_report``, ``derived_key``), so the attester code is the same for real
and emulated hardware; real hardware reports (``tests/data/sev_snp``) prove the parser and
the signature and chain code.

Why it is insecure: its ARK/ASK are ordinary keys in a Kubernetes Secret; whoever reads the
ASK key (``insecure-emulator.key``) mints VCEKs and forges any report. A verifier trusts the
emulator's root only when it is given that root explicitly (``insecure-emulator-chain.pem``);
then the verification detail says "INSECURE emulator root", ``consortiumctl``'s report claims
say ``insecure_root``, the Consortium's ``status.platform.insecure`` is true, a node logs a
warning at start, and the root's names say ``INSECURE-EMULATED``.

Material (``provision``): ``insecure-emulator-chain.pem`` (test ASK then test ARK, the shape
of AMD KDS ``cert_chain``) and ``insecure-emulator.key`` (the test ASK's RSA key, PKCS#8).
Per chip, derived from the ASK key: the VCEK (EC P-384) and the chip's sealing secret
(HKDF-SHA384, ``info`` = purpose || chip id || u64le(TCB)), so a restarted pod on the same
chip id gets the same VCEK and derived keys, as on real hardware.
"""

from __future__ import annotations

import hashlib
import os
import struct
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from consortium_node.attestation.errors import PlatformError
from consortium_node.attestation.sev_snp import device
from consortium_node.attestation.sev_snp.certificates import AMD_OID, load_certificates
from consortium_node.attestation.sev_snp.report import (
    POLICY_RESERVED_ONE,
    POLICY_SMT,
    ReportBody,
    build_report,
)
from consortium_node.attestation.sev_snp.tcb import GENOA, TURIN, Tcb, cpuid_of
from consortium_node.common.timeutil import utcnow

CHAIN_FILE = "insecure-emulator-chain.pem"
KEY_FILE = "insecure-emulator.key"
DEFAULT_POLICY = POLICY_RESERVED_ONE | POLICY_SMT | 0x1F  # like CCF's real reports: 0x3001f
_P384_ORDER = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
    16,
)
_LAUNCH_PREFIX = b"consortium-node insecure-sev-snp-emulator launch v1\x00"
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


def launch_measurement(package_measurement: str) -> bytes:
    """The 48-byte MEASUREMENT the emulator reports for a node package measurement:
    ``SHA-384(b"consortium-node insecure-sev-snp-emulator launch v1\\0" || package digest)``.
    (Real hardware measures the guest's initial memory; this stands for it.)"""
    return hashlib.sha384(_LAUNCH_PREFIX + bytes.fromhex(package_measurement)).digest()


def chip_id_for(name: str, product: str) -> bytes:
    """A 64-byte CHIP_ID for an emulated chip called ``name`` (Turin: 8 bytes, rest zero)."""
    chip = hashlib.sha512(b"insecure-emulated-chip\x00" + name.encode("utf-8")).digest()
    return chip[:8] + bytes(56) if product == TURIN else chip


def _name(common: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(x509.NameOID.COMMON_NAME, common),
        x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "INSECURE test emulator, not AMD"),
    ])  # fmt: skip


def _certificate(
    subject: str, issuer: str, public_key: object, signer: rsa.RSAPrivateKey, *,
    start: datetime, days: int, ca: bool, extensions: list[x509.ExtensionType] = (),  # type: ignore[assignment]
) -> x509.Certificate:  # fmt: skip
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(signer, hashes.SHA384(), rsa_padding=_PSS)


def provision(product: str = GENOA, *, key_size: int = 2048) -> dict[str, bytes]:
    """Fresh emulator material: a test ARK and ASK for ``product`` (RSA-PSS SHA-384, as
    AMD's; 2048-bit keys by default where AMD's are 4096, to keep tests fast)."""
    start = utcnow() - timedelta(days=1)
    ark_key = rsa.generate_private_key(65537, key_size)
    ask_key = rsa.generate_private_key(65537, key_size)
    ark_name, ask_name = f"INSECURE-EMULATED-ARK-{product}", f"INSECURE-EMULATED-SEV-{product}"
    ark = _certificate(ark_name, ark_name, ark_key.public_key(), ark_key, start=start,
                       days=3650, ca=True)  # fmt: skip
    ask = _certificate(ask_name, ark_name, ask_key.public_key(), ark_key, start=start,
                       days=3650, ca=True)  # fmt: skip
    pem = serialization.Encoding.PEM
    return {
        CHAIN_FILE: ask.public_bytes(pem) + ark.public_bytes(pem),
        KEY_FILE: ask_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    }


def _der_integer(value: int) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True)
    return bytes([0x02, len(body)]) + body


def _ia5(text: str) -> bytes:
    return bytes([0x16, len(text)]) + text.encode("ascii")


def _vcek_extensions(product: str, tcb: Tcb, chip_id: bytes) -> list[x509.ExtensionType]:
    spl = {"3.1": tcb.bootloader, "3.2": tcb.tee, "3.3": tcb.snp, "3.8": tcb.microcode}
    if product == TURIN:
        spl["3.9"] = tcb.fmc or 0
    values = {"1": _der_integer(1 if product == TURIN else 0), "2": _ia5(product)}
    values |= {oid: _der_integer(v) for oid, v in spl.items()}
    values["4"] = chip_id[:8] if product == TURIN else chip_id  # raw octets, as AMD KDS does
    return [x509.UnrecognizedExtension(x509.ObjectIdentifier(AMD_OID + oid), value)
            for oid, value in values.items()]  # fmt: skip


class EmulatedSevGuest:
    """One emulated guest on one emulated chip: answers like ``device.SevGuestDevice``.

    ``measurement`` (48 bytes) and ``host_data`` (32) are what a real host and launch would
    fix; ``version`` is the report version to produce (2..5; 4 is laid out as 3).
    """

    def __init__(
        self,
        material: dict[str, bytes],
        *,
        chip: str,
        product: str,
        tcb: Tcb,
        measurement: bytes,
        host_data: bytes,
        policy: int = DEFAULT_POLICY,
        version: int = 3,
    ) -> None:
        try:
            ask_key = serialization.load_pem_private_key(material[KEY_FILE], password=None)
            ask, ark = load_certificates(material[CHAIN_FILE], CHAIN_FILE)
        except (KeyError, ValueError) as exc:
            raise PlatformError(f"insecure SEV-SNP emulator material: {exc}") from None
        if not isinstance(ask_key, rsa.RSAPrivateKey) or ask_key.public_key() != ask.public_key():
            raise PlatformError(f"{KEY_FILE} is not the key of the ASK in {CHAIN_FILE}")
        if tcb.product != product:
            raise PlatformError(f"emulator TCB is for {tcb.product}, the chip is a {product}")
        self.product, self.tcb, self.policy, self.version = product, tcb, policy, version
        self.measurement, self.host_data = measurement, host_data
        self.wrong_measurement = False  # the test fault ``wrong-measurement``
        self.chip_id = chip_id_for(chip, product)
        secret = ask_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._secret = self._derive(secret, b"chip-secret", 48)
        scalar = int.from_bytes(self._derive(secret, b"vcek", 64), "big") % (_P384_ORDER - 1) + 1
        self._vcek_key = ec.derive_private_key(scalar, ec.SECP384R1())
        self.vcek = _certificate(
            "SEV-VCEK", str(ask.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value),
            self._vcek_key.public_key(), ask_key, start=ask.not_valid_before_utc, days=2555,
            ca=False, extensions=_vcek_extensions(product, tcb, self.chip_id),
        )  # fmt: skip
        self._table = {
            device.VCEK_GUID: self.vcek.public_bytes(serialization.Encoding.DER),
            device.ASK_GUID: ask.public_bytes(serialization.Encoding.DER),
            device.ARK_GUID: ark.public_bytes(serialization.Encoding.DER),
        }

    def _derive(self, secret: bytes, purpose: bytes, length: int) -> bytes:
        info = purpose + b"\x00" + self.chip_id + struct.pack("<Q", self.tcb.encode())
        return HKDF(hashes.SHA384(), length, b"insecure-emulated-snp-v1", info).derive(secret)

    def available(self) -> bool:
        return True

    def report(self, report_data: bytes, *, vmpl: int = 0) -> bytes:
        """A signed ATTESTATION_REPORT carrying ``report_data``."""
        if len(report_data) != device.REPORT_DATA_SIZE:
            raise ValueError(f"report_data must be {device.REPORT_DATA_SIZE} bytes")
        tcb = self.tcb.encode()
        body = ReportBody(
            version=self.version, policy=self.policy, vmpl=vmpl, current_tcb=tcb,
            reported_tcb=tcb, committed_tcb=tcb, launch_tcb=tcb, report_data=report_data,
            measurement=bytes(b ^ 0xFF for b in self.measurement) if self.wrong_measurement
            else self.measurement, host_data=self.host_data, chip_id=self.chip_id,
            report_id=os.urandom(32), cpuid=cpuid_of(self.product),
        )  # fmt: skip
        unsigned = build_report(body)
        signature = self._vcek_key.sign(unsigned[:0x2A0], ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(signature)
        return build_report(body, r, s)

    def extended_report(self, report_data: bytes, *, vmpl: int = 0) -> device.ReportResponse:
        """The report and the host's certificate table (VCEK, ASK, ARK)."""
        return device.ReportResponse(self.report(report_data, vmpl=vmpl), dict(self._table))

    def derived_key(
        self,
        *,
        root_key_select: int = 0,
        guest_field_select: int,
        vmpl: int = 0,
        guest_svn: int = 0,
        tcb_version: int = 0,
    ) -> bytes:
        """MSG_KEY_REQ: 32 bytes from the chip secret and the selected guest fields."""
        mixed = struct.pack("<IQIIQ", root_key_select, guest_field_select, vmpl, guest_svn,
                            tcb_version)  # fmt: skip
        if guest_field_select & device.GUEST_FIELD_MEASUREMENT:
            mixed += self.measurement
        if guest_field_select & device.GUEST_FIELD_POLICY:
            mixed += struct.pack("<Q", self.policy)
        return HKDF(hashes.SHA384(), 32, b"insecure-emulated-snp-key-v1", mixed).derive(
            self._secret
        )
