"""The platform ``insecure-virtual``: a software emulation of a TEE, INSECURE BY DESIGN.

Why it exists: a confidential consortium only admits nodes that *prove* which code they run
and that their keys live inside a TEE. Kubernetes test clusters have no SEV-SNP or TDX
hardware, so this package emulates the shape of SEV-SNP evidence — a code measurement, launch
``host_data``, 64 bytes of ``report_data`` binding the node's key and the verifier's nonce,
a TCB version, a chip key endorsed by a vendor root (VCEK ← ARK), and measurement-bound
sealing keys — so every protocol above it (join, rotation, trusted-node lists) runs unchanged.

Why it is insecure, and named so everywhere: the emulated vendor root key is an ordinary key
in a file / Kubernetes Secret, not fused into silicon, and the "enclave" is an ordinary
process. Anyone who can read that Secret or the node's memory can forge evidence.

Modules: ``platform`` (vendor root + derived chips), ``certificates`` (endorsement X.509),
``quote`` (evidence format), ``enclave`` (quote + seal, test faults), ``verifier`` (claims or
one ``Reason``). ``PLATFORM`` is what the registry (``attestation.platforms``) knows of it.
"""

from __future__ import annotations

from collections.abc import Mapping

from consortium_node.attestation.insecure_virtual.certificates import PLATFORM_NAME
from consortium_node.attestation.insecure_virtual.enclave import VirtualEnclave
from consortium_node.attestation.insecure_virtual.platform import (
    REVOKED_TEST_CHIP_ID,
    Chip,
    VirtualPlatform,
)
from consortium_node.attestation.insecure_virtual.quote import QUOTE_FORMAT, Quote, report_data_for
from consortium_node.attestation.insecure_virtual.verifier import InsecureVirtualVerifier
from consortium_node.attestation.platforms import AttesterSettings, Endorsement, Platform

ROOT_CERTIFICATE = "root.pem"
ROOT_KEY = "root.key"


def _verifier(material: Mapping[str, bytes]) -> InsecureVirtualVerifier:
    return InsecureVirtualVerifier(material[ROOT_CERTIFICATE])


def _attester(settings: AttesterSettings) -> VirtualEnclave:
    platform = VirtualPlatform.load(
        settings.endorsements[ROOT_KEY], settings.endorsements[ROOT_CERTIFICATE]
    )
    return VirtualEnclave(
        platform,
        settings.chip_id,
        settings.measurement,
        settings.host_data,
        tcb_version=settings.tcb_version,
        faults=settings.faults,
    )


def _provision() -> dict[str, bytes]:
    platform = VirtualPlatform.generate()
    return {ROOT_KEY: platform.root_key_pem(), ROOT_CERTIFICATE: platform.root_certificate_pem}


PLATFORM = Platform(
    name=PLATFORM_NAME,
    evidence_format=QUOTE_FORMAT,
    insecure=True,
    endorsements=(
        Endorsement(
            ROOT_CERTIFICATE,
            "root_certificate",
            "--platform-root",
            private=False,
            description=f"the emulated vendor root certificate ({PLATFORM_NAME})",
        ),
        Endorsement(
            ROOT_KEY,
            "root_key",
            None,
            private=True,
            description="the emulated vendor root key: chips are derived from it (whoever "
            "reads it can forge any node)",
        ),
    ),
    verifier=_verifier,
    attester=_attester,
    provision=_provision,
)

__all__ = [
    "PLATFORM",
    "PLATFORM_NAME",
    "QUOTE_FORMAT",
    "REVOKED_TEST_CHIP_ID",
    "Chip",
    "InsecureVirtualVerifier",
    "Quote",
    "VirtualEnclave",
    "VirtualPlatform",
    "report_data_for",
]
