"""The vocabulary of verification: policy in, claims or one named reason out.

Shared by every ``QuoteVerifier`` (one per TEE format), so the operator's status, the node's
join decisions and the metrics label ``reason`` use the same names whatever the hardware.
Kept free of any format specifics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from consortium_node.common.timeutil import rfc3339


class Reason(StrEnum):
    """Why a quote was rejected; the value is the name users see in status and metrics."""

    BAD_SIGNATURE = "BadSignature"
    UNKNOWN_PLATFORM = "UnknownPlatform"
    MEASUREMENT_NOT_ALLOWED = "MeasurementNotAllowed"
    HOST_DATA_NOT_ALLOWED = "HostDataNotAllowed"
    REPORT_DATA_MISMATCH = "ReportDataMismatch"
    NONCE_MISMATCH = "NonceMismatch"
    STALE = "Stale"
    TCB_TOO_LOW = "TcbTooLow"
    CHIP_REVOKED = "ChipRevoked"
    MALFORMED = "Malformed"
    # Hardware platforms (sev-snp) add these:
    BAD_ENDORSEMENT = "BadEndorsement"  # the chip key does not chain to the pinned vendor root
    ENDORSEMENT_MISMATCH = "EndorsementMismatch"  # the chip certificate is for another chip/TCB
    UNSUPPORTED_VERSION = "UnsupportedVersion"  # a report version this code cannot judge
    UNSUPPORTED_SIGNATURE_ALGORITHM = "UnsupportedSignatureAlgorithm"
    DEBUG_ENABLED = "DebugEnabled"  # the guest policy lets the host debug (read) the guest
    GUEST_POLICY_REFUSED = "GuestPolicyRefused"  # another guest policy bit refused
    VMPL_NOT_ALLOWED = "VmplNotAllowed"  # the report is not from the required privilege level
    PRODUCT_NOT_ALLOWED = "ProductNotAllowed"  # a processor product the policy does not allow


def _hex_set(values: Iterable[str]) -> frozenset[str]:
    return frozenset(value.lower() for value in values)


@dataclass(frozen=True)
class Policy:
    """What a verifier accepts.

    ``allowed_host_data=None`` means host_data is not checked at all; an empty set means no
    host_data is acceptable (every quote fails with HostDataNotAllowed), never "anything".
    Hex values are compared lower-cased. ``revoked_chip_ids`` adds to the platform's own list.
    ``platform`` holds each platform's own settings by platform name (``sev-snp``: minimum
    TCB per component, debug, VMPL, products), read by that platform's verifier only.
    """

    allowed_measurements: frozenset[str]
    allowed_host_data: frozenset[str] | None
    max_age: timedelta = timedelta(minutes=10)
    max_clock_skew: timedelta = timedelta(seconds=60)
    min_tcb_version: int = 1
    revoked_chip_ids: frozenset[str] = frozenset()
    platform: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_measurements", _hex_set(self.allowed_measurements))
        if self.allowed_host_data is not None:
            object.__setattr__(self, "allowed_host_data", _hex_set(self.allowed_host_data))
        object.__setattr__(self, "revoked_chip_ids", frozenset(self.revoked_chip_ids))
        if self.max_age <= timedelta(0):
            raise ValueError(f"Policy.max_age must be positive, got {self.max_age}")
        if self.max_clock_skew < timedelta(0):
            raise ValueError(
                f"Policy.max_clock_skew must not be negative, got {self.max_clock_skew}"
            )
        if isinstance(self.min_tcb_version, bool) or self.min_tcb_version < 0:
            raise ValueError(f"Policy.min_tcb_version must be >= 0, got {self.min_tcb_version}")


@dataclass(frozen=True)
class Claims:
    """What a verified quote establishes about the node that produced it."""

    format: str
    platform: str
    measurement: str
    host_data: str
    public_key_sha256: str
    nonce: str
    timestamp: datetime
    tcb_version: int
    chip_id: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (timestamp as RFC 3339)."""
        out = asdict(self)
        out["timestamp"] = rfc3339(self.timestamp)
        return out


@dataclass(frozen=True)
class VerificationResult:
    """``ok`` with ``claims``, or not ``ok`` with one ``reason``; ``detail`` is for humans."""

    ok: bool
    claims: Claims | None
    reason: Reason | None
    detail: str

    @classmethod
    def success(cls, claims: Claims) -> VerificationResult:
        """A passed verification."""
        detail = f"{claims.platform} quote from chip {claims.chip_id!r} verified"
        return cls(ok=True, claims=claims, reason=None, detail=detail)

    @classmethod
    def failure(cls, reason: Reason, detail: str) -> VerificationResult:
        """A failed verification for ``reason``."""
        return cls(ok=False, claims=None, reason=reason, detail=detail)
