"""The platform ``sev-snp``: AMD SEV-SNP confidential VMs (Confidential Containers / Kata on
bare metal, cloud confidential node pools and container instances).

Why: ``insecure-virtual`` protects nothing (whoever reads its root Secret forges any node).
On SEV-SNP a node's evidence is a report signed by a key derived inside the AMD processor and
endorsed by AMD (VCEK ← ASK ← ARK); the operator and the cluster's administrators cannot forge
it. What it still trusts: AMD (its processors, firmware and root keys), the certificates AMD's
KDS serves, and the host for availability (docs/reference/security.md).

Modules: ``report`` (the byte format), ``tcb`` (products, TCB layouts), ``certificates``
(VCEK extensions, chain to the pinned roots of ``amd_roots``), ``policy`` (minimum TCB, debug,
VMPL, products), ``quote`` (``sev-snp/v1`` JSON), ``verifier`` (claims or one ``Reason``),
``device`` (configfs-tsm, ``/dev/sev-guest``), ``backends`` (which of them answers what),
``attester`` (quotes, VCEK choice, sealing),
``emulator`` (an INSECURE stand-in for the hardware, for tests only).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from consortium_node.attestation.errors import PlatformError
from consortium_node.attestation.platforms import AttesterSettings, Endorsement, Platform
from consortium_node.attestation.sev_snp import backends, device, emulator
from consortium_node.attestation.sev_snp.attester import SnpAttester
from consortium_node.attestation.sev_snp.certificates import (
    ChainError,
    amd_anchors,
    as_anchor,
    load_certificates,
)
from consortium_node.attestation.sev_snp.policy import PLATFORM_NAME, SnpPolicy
from consortium_node.attestation.sev_snp.quote import QUOTE_FORMAT
from consortium_node.attestation.sev_snp.tcb import Tcb
from consortium_node.attestation.sev_snp.verifier import SevSnpVerifier

VCEKS = "vceks.pem"
CRLS = "crls.pem"
DEVICES = ("auto", "sev-guest", "configfs-tsm", "insecure-emulator")
EMULATOR_TCB = {"bootloader": 10, "tee": 0, "snp": 23, "microcode": 84, "fmc": 0}


def load_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    """CRLs from PEM (one or more) or one DER."""
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            blocks = data.split(b"-----END X509 CRL-----")
            return [x509.load_pem_x509_crl(b + b"-----END X509 CRL-----\n")
                    for b in blocks if b"-----BEGIN X509 CRL-----" in b]  # fmt: skip
        return [x509.load_der_x509_crl(data)] if data.strip() else []
    except ValueError as exc:
        raise ChainError(f"{CRLS}: not a PEM or DER CRL ({exc})") from None


def verifier(material: Mapping[str, bytes]) -> SevSnpVerifier:
    """AMD's pinned roots, plus the emulator's INSECURE root only when it is given."""
    anchors = amd_anchors()
    if emulator.CHAIN_FILE in material:
        anchors.append(as_anchor(material[emulator.CHAIN_FILE], insecure=True))
    return SevSnpVerifier(anchors, crls=load_crls(material.get(CRLS, b"")))


def _emulated(
    settings: AttesterSettings, options: Mapping[str, Any]
) -> emulator.EmulatedSevGuest | backends.ReportsOnly:
    missing = [
        f for f in (emulator.CHAIN_FILE, emulator.KEY_FILE) if f not in settings.endorsements
    ]
    if missing:
        raise PlatformError(f"device insecure-emulator needs the endorsement files {missing}")
    product = as_anchor(settings.endorsements[emulator.CHAIN_FILE], insecure=True).product
    if options.get("product", product) != product:
        raise PlatformError(
            f"emulator product {options['product']!r}: the emulator's root is for {product}"
        )
    parts = {k: v for k, v in {**EMULATOR_TCB, **options.get("tcb", {})}.items()
             if product == "Turin" or k != "fmc"}  # fmt: skip
    guest = emulator.EmulatedSevGuest(
        dict(settings.endorsements),
        chip=settings.chip_id,
        product=product,
        tcb=Tcb(product=product, **parts),
        measurement=emulator.launch_measurement(settings.measurement),
        host_data=bytes.fromhex(settings.host_data),
        version=int(options.get("report_version", 3)),
    )
    return guest if options.get("derived_keys", True) else backends.ReportsOnly(guest)


def attester(settings: AttesterSettings) -> SnpAttester:
    """The attester for ``settings.options`` (the node's ``platform.sev_snp`` section):
    ``device`` auto (``backends.choose``), sev-guest, configfs-tsm or insecure-emulator
    (tests only)."""
    options = settings.options
    choice = str(options.get("device", "auto"))
    guest_path = Path(options.get("sev_guest_path", "/dev/sev-guest"))
    tsm_path = Path(options.get("configfs_path", "/sys/kernel/config/tsm/report"))
    guest, tsm = device.SevGuestDevice(guest_path), device.ConfigfsTsm(tsm_path)
    emulated = choice == "insecure-emulator"
    backend = _emulated(settings, options) if emulated else backends.choose(choice, guest, tsm)
    vceks = (
        load_certificates(settings.endorsements[VCEKS], VCEKS)
        if settings.endorsements.get(VCEKS)
        else []
    )
    return SnpAttester(
        backend,
        vceks=vceks,
        vmpl=int(options.get("vmpl", 0)),
        emulated=emulated,
        faults=settings.faults,
    )


def emulate(options: Mapping[str, Any]) -> dict[str, bytes] | None:
    """The INSECURE emulator's material when ``options`` (the node configuration's
    ``platform.sev_snp``, plus ``product``) ask for device insecure-emulator."""
    if options.get("device") != "insecure-emulator":
        return None
    return emulator.provision(str(options.get("product", "Genoa")))


PLATFORM = Platform(
    name=PLATFORM_NAME,
    evidence_format=QUOTE_FORMAT,
    insecure=False,
    endorsements=(
        Endorsement(
            VCEKS,
            "vceks",
            None,
            private=False,
            optional=True,
            description="VCEKs from AMD KDS, for hosts that give no certificate table",
        ),
        Endorsement(
            CRLS,
            "crls",
            "--crl",
            private=False,
            optional=True,
            description="AMD CRLs (KDS /vcek/v1/<product>/crl): revoked ASKs",
        ),
        Endorsement(
            emulator.CHAIN_FILE,
            "insecure_emulator_chain",
            "--insecure-emulator-root",
            private=False,
            optional=True,
            emulator=True,
            description="the INSECURE test emulator's ASK and ARK (tests only)",
        ),
        Endorsement(
            emulator.KEY_FILE,
            "insecure_emulator_key",
            None,
            private=True,
            optional=True,
            emulator=True,
            description="the INSECURE test emulator's ASK key: whoever reads it forges "
            "any report its root vouches for (tests only)",
        ),
    ),
    verifier=verifier,
    attester=attester,
    emulate=emulate,
)

__all__ = ["DEVICES", "PLATFORM", "PLATFORM_NAME", "QUOTE_FORMAT", "SnpPolicy", "verifier"]
