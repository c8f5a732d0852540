"""Exceptions of the attestation layer.

Every layer raises its own types (docs/ARCHITECTURE.md) so callers can tell an attestation
problem from a ledger or identity one, and every message names what was wrong. Verification
itself never raises for bad evidence: it returns a ``VerificationResult`` with a ``Reason``.
These exceptions are for programming and configuration errors (a malformed quote handed to
``Quote.from_json``, a platform key that does not match its certificate) and for unsealing.
"""

from __future__ import annotations


class AttestationError(Exception):
    """Base class of every error raised by ``consortium_node.attestation``."""


class PlatformError(AttestationError):
    """The platform root key/certificate, or a chip request, is unusable (says why)."""


class MeasurementError(AttestationError):
    """A tree cannot be measured (not a directory, or it contains a symbolic link)."""


class UnsealError(AttestationError):
    """A sealed blob cannot be opened by this enclave (other measurement/chip/label, damage)."""


class QuoteFormatError(AttestationError):
    """A quote field is missing, unknown, or has the wrong type, length or encoding.

    ``field`` names the offending JSON field (``"quote"`` for the object as a whole) and
    ``reason`` says what is wrong with it; ``str(error)`` is ``"field: reason"``.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
