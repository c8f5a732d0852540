"""The virtual TEE ``insecure-virtual``: measurement, quotes, verification and sealing.

Why it exists: a confidential consortium only admits nodes that *prove* which code they run
and that their keys live inside a TEE. Kubernetes test clusters have no SEV-SNP or TDX
hardware, so this package emulates the shape of SEV-SNP evidence — a code measurement, launch
``host_data``, 64 bytes of ``report_data`` binding the node's key and the verifier's nonce,
a TCB version, a chip key endorsed by a vendor root (VCEK ← ARK), and measurement-bound
sealing keys — so every protocol above it (join, rotation, trusted-node lists) runs unchanged.

Why it is insecure, and named so everywhere: the emulated vendor root key is an ordinary key
in a file / Kubernetes Secret, not fused into silicon, and the "enclave" is an ordinary
process. Anyone who can read that Secret or the node's memory can forge evidence. Production
plugs a real ``QuoteVerifier`` (SEV-SNP, TDX) into the same ``VerifierRegistry``.

Modules: ``measurement`` (what runs), ``platform`` (vendor root + derived chips),
``certificates`` (endorsement X.509), ``quote`` (evidence format), ``enclave`` (quote + seal,
test faults), ``faults``, ``verifier`` (claims or one ``Reason``), ``errors``.
"""

from consortium_node.attestation.certificates import PLATFORM_NAME
from consortium_node.attestation.enclave import VirtualEnclave
from consortium_node.attestation.errors import (
    AttestationError,
    MeasurementError,
    PlatformError,
    QuoteFormatError,
    UnsealError,
)
from consortium_node.attestation.faults import Fault, parse_faults
from consortium_node.attestation.measurement import host_data_for, measure_installed, measure_tree
from consortium_node.attestation.platform import REVOKED_TEST_CHIP_ID, Chip, VirtualPlatform
from consortium_node.attestation.quote import QUOTE_FORMAT, Quote, report_data_for
from consortium_node.attestation.verifier import (
    Claims,
    InsecureVirtualVerifier,
    Policy,
    QuoteVerifier,
    Reason,
    VerificationResult,
    VerifierRegistry,
)

__all__ = [
    "PLATFORM_NAME",
    "QUOTE_FORMAT",
    "REVOKED_TEST_CHIP_ID",
    "AttestationError",
    "Chip",
    "Claims",
    "Fault",
    "InsecureVirtualVerifier",
    "MeasurementError",
    "PlatformError",
    "Policy",
    "Quote",
    "QuoteFormatError",
    "QuoteVerifier",
    "Reason",
    "UnsealError",
    "VerificationResult",
    "VerifierRegistry",
    "VirtualEnclave",
    "VirtualPlatform",
    "host_data_for",
    "measure_installed",
    "measure_tree",
    "parse_faults",
    "report_data_for",
]
