"""Quote verification: turn evidence into claims, or into exactly one named reason.

Who verifies: the primary node's enclave (joins and rotation), the operator (status), and
``consortiumctl`` (audits). All of them go through ``VerifierRegistry.verify`` with a
``Policy`` built from the consortium's governance-approved values, so the decision is the
same everywhere. The registry dispatches on the quote's ``format``; callers obtain one from
``attestation.platforms.verifier_registry`` (every known platform, given its endorsement
material), so adding SEV-SNP or TDX is one more platform package; no caller changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from consortium_node.attestation.results import Claims, Policy, Reason, VerificationResult
from consortium_node.common.timeutil import utcnow

__all__ = [
    "Claims",
    "Policy",
    "QuoteVerifier",
    "Reason",
    "VerificationResult",
    "VerifierRegistry",
]


class QuoteVerifier(ABC):
    """Verifies the quotes of one evidence ``format``; one subclass per TEE technology."""

    format: ClassVar[str]
    platform: ClassVar[str]

    @abstractmethod
    def verify(
        self,
        quote: Mapping[str, Any],
        *,
        public_key_der: bytes,
        nonce: bytes,
        policy: Policy,
        now: datetime | None = None,
    ) -> VerificationResult:
        """Check ``quote`` (decoded JSON) binds ``public_key_der`` and ``nonce`` under ``policy``.

        Must never raise for bad evidence: it returns a failure with one ``Reason``.
        ``now`` (aware) defaults to the current time.
        """


def fail(reason: Reason, detail: str) -> VerificationResult:
    return VerificationResult.failure(reason, detail)


def format_of(quote: object) -> str | VerificationResult:
    """The quote's ``format`` string, or a Malformed failure."""
    if not isinstance(quote, Mapping):
        return fail(Reason.MALFORMED, f"quote must be a JSON object, got {type(quote).__name__}")
    value = quote.get("format")
    if not isinstance(value, str):
        return fail(Reason.MALFORMED, "format: missing or not a string")
    return value


def not_this_format(quote: object, expected: str) -> VerificationResult | None:
    """A failure unless ``quote`` has format ``expected`` (Malformed without a format,
    UnknownPlatform for another one: another platform's evidence is never called malformed)."""
    quote_format = format_of(quote)
    if isinstance(quote_format, VerificationResult):
        return quote_format
    if quote_format != expected:
        return fail(Reason.UNKNOWN_PLATFORM, f"quote format {quote_format!r} is not {expected!r}")
    return None


def moment_of(now: datetime | None) -> datetime:
    """``now`` (aware; ValueError if naive), or the current time."""
    moment = utcnow() if now is None else now
    if moment.tzinfo is None:
        raise ValueError("verify: now must be an aware datetime")
    return moment


class VerifierRegistry:
    """Dispatches a quote to the verifier registered for its ``format``."""

    def __init__(self) -> None:
        self._verifiers: dict[str, QuoteVerifier] = {}

    def register(self, verifier: QuoteVerifier) -> None:
        """Add ``verifier``; ``ValueError`` if its format is already registered."""
        if verifier.format in self._verifiers:
            raise ValueError(f"a verifier for format {verifier.format!r} is already registered")
        self._verifiers[verifier.format] = verifier

    @property
    def formats(self) -> tuple[str, ...]:
        """Registered formats, sorted."""
        return tuple(sorted(self._verifiers))

    def verify(
        self,
        quote: Mapping[str, Any],
        *,
        public_key_der: bytes,
        nonce: bytes,
        policy: Policy,
        now: datetime | None = None,
    ) -> VerificationResult:
        """Verify with the verifier for ``quote["format"]`` (UnknownPlatform if none)."""
        quote_format = format_of(quote)
        if isinstance(quote_format, VerificationResult):
            return quote_format
        verifier = self._verifiers.get(quote_format)
        if verifier is None:
            known = ", ".join(self.formats) or "none registered"
            return fail(
                Reason.UNKNOWN_PLATFORM,
                f"quote format {quote_format!r} is not one of the known formats: {known}",
            )
        return verifier.verify(
            quote, public_key_der=public_key_der, nonce=nonce, policy=policy, now=now
        )
