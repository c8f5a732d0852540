"""TEE attestation behind one interface: measurement, quotes, verification and sealing.

Why it exists: a confidential consortium only admits nodes that *prove* which code they run
and that their keys live inside a TEE. Everything above this package (join, rotation,
trusted-node lists) speaks only of ``Policy``, ``VerificationResult`` and the registry of
platforms (``platforms``), never of one platform.

Generic modules: ``measurement`` (what runs), ``results`` (claims, policy, one ``Reason`` per
refusal), ``verifier`` (the ``QuoteVerifier`` interface and the registry dispatching on a
quote's format), ``platforms`` (the platform registry), ``faults`` (test faults), ``errors``.
One subpackage per platform: ``insecure_virtual`` (an emulation, INSECURE BY DESIGN; real
hardware platforms plug in the same way).
"""

from consortium_node.attestation import platforms
from consortium_node.attestation.errors import (
    AttestationError,
    MeasurementError,
    PlatformError,
    QuoteFormatError,
    UnsealError,
)
from consortium_node.attestation.faults import Fault, parse_faults
from consortium_node.attestation.measurement import host_data_for, measure_installed, measure_tree
from consortium_node.attestation.platforms import (
    Attester,
    AttesterSettings,
    Endorsement,
    Platform,
    UnknownPlatformError,
)
from consortium_node.attestation.results import Claims, Policy, Reason, VerificationResult
from consortium_node.attestation.verifier import QuoteVerifier, VerifierRegistry

__all__ = [
    "AttestationError",
    "Attester",
    "AttesterSettings",
    "Claims",
    "Endorsement",
    "Fault",
    "MeasurementError",
    "Platform",
    "PlatformError",
    "Policy",
    "QuoteFormatError",
    "QuoteVerifier",
    "Reason",
    "UnknownPlatformError",
    "UnsealError",
    "VerificationResult",
    "VerifierRegistry",
    "host_data_for",
    "measure_installed",
    "measure_tree",
    "parse_faults",
    "platforms",
]
