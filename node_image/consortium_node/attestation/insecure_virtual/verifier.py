"""The insecure-virtual verifier: claims from a quote, or exactly one named reason.

``InsecureVirtualVerifier`` checks in this order, returning at the first failure so each
kind of bad evidence maps to exactly one ``Reason``:

 1. UnknownPlatform        ``format`` is not ``insecure-virtual/v1`` (checked before parsing,
                           so another platform's evidence is never called malformed)
 2. Malformed              any field fails ``Quote.from_json`` or an endorsement is not PEM
 3. UnknownPlatform        endorsements do not chain to the trusted root, are outside their
                           validity, or the chip certificate's CN / tcb do not match the quote
 4. ChipRevoked            chip_id in ``policy.revoked_chip_ids`` or the platform's built-in list
 5. BadSignature           chip signature over ``Quote.signed_bytes()`` does not verify
 6. ReportDataMismatch     report_data != SHA-256(presented key) || SHA-256(quote's nonce)
 7. NonceMismatch          quote's nonce != the verifier's nonce (a replay)
 8. Stale                  older than ``max_age`` or ahead of ``now`` by more than the skew
 9. TcbTooLow              tcb_version < ``min_tcb_version``
10. MeasurementNotAllowed  measurement not in ``allowed_measurements``
11. HostDataNotAllowed     host_data not in ``allowed_host_data`` (skipped if that is None)
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, ClassVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.attestation.errors import QuoteFormatError
from consortium_node.attestation.insecure_virtual.certificates import (
    PLATFORM_NAME,
    EndorsementError,
    load_root_certificate,
    verify_endorsements,
)
from consortium_node.attestation.insecure_virtual.platform import BUILTIN_REVOKED_CHIP_IDS
from consortium_node.attestation.insecure_virtual.quote import QUOTE_FORMAT, Quote
from consortium_node.attestation.results import Claims, Policy, Reason, VerificationResult
from consortium_node.attestation.verifier import QuoteVerifier, fail, moment_of, not_this_format


class InsecureVirtualVerifier(QuoteVerifier):
    """Verifier for ``insecure-virtual/v1`` quotes, trusting one platform root certificate.

    INSECURE: anyone holding the platform root key (a Kubernetes Secret) can forge quotes
    this verifier accepts. Raises ``PlatformError`` if the root certificate is unusable.
    """

    format: ClassVar[str] = QUOTE_FORMAT
    platform: ClassVar[str] = PLATFORM_NAME

    def __init__(
        self, platform_root_certificate_pem: bytes | str, *, revoked_chip_ids: Iterable[str] = ()
    ) -> None:
        self._root = load_root_certificate(platform_root_certificate_pem)
        self._revoked = BUILTIN_REVOKED_CHIP_IDS | frozenset(revoked_chip_ids)

    def verify(
        self,
        quote: Mapping[str, Any],
        *,
        public_key_der: bytes,
        nonce: bytes,
        policy: Policy,
        now: datetime | None = None,
    ) -> VerificationResult:
        """See ``QuoteVerifier.verify`` and the check order in the module docstring."""
        moment = moment_of(now)
        if refused := not_this_format(quote, self.format):
            return refused
        try:
            parsed = Quote.from_json(quote)
        except QuoteFormatError as error:
            return fail(Reason.MALFORMED, str(error))
        chain: list[x509.Certificate] = []
        for index, pem in enumerate(parsed.endorsements):
            try:
                chain.append(x509.load_pem_x509_certificate(pem.encode("utf-8")))
            except ValueError:
                return fail(Reason.MALFORMED, f"endorsements[{index}]: not a PEM certificate")
        try:
            chip_key = verify_endorsements(
                chain,
                self._root,
                chip_id=parsed.chip_id,
                tcb_version=parsed.tcb_version,
                now=moment,
            )
        except EndorsementError as error:
            return fail(Reason.UNKNOWN_PLATFORM, str(error))
        return self._check_claims(
            parsed, chip_key, public_key_der=public_key_der, nonce=nonce, policy=policy, now=moment
        )

    def _check_claims(
        self,
        quote: Quote,
        chip_key: ec.EllipticCurvePublicKey,
        *,
        public_key_der: bytes,
        nonce: bytes,
        policy: Policy,
        now: datetime,
    ) -> VerificationResult:
        if quote.chip_id in self._revoked or quote.chip_id in policy.revoked_chip_ids:
            return fail(Reason.CHIP_REVOKED, f"chip {quote.chip_id!r} is revoked")
        try:
            chip_key.verify(quote.signature_bytes, quote.signed_bytes(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return fail(
                Reason.BAD_SIGNATURE,
                f"signature does not verify with the key of chip {quote.chip_id!r}",
            )
        key_hash = hashlib.sha256(public_key_der).digest()
        bound_key, bound_nonce = quote.report_data_bytes[:32], quote.report_data_bytes[32:]
        if not hmac.compare_digest(bound_key, key_hash):
            return fail(
                Reason.REPORT_DATA_MISMATCH,
                f"report_data binds public key sha256 {bound_key.hex()}, "
                f"but the presented key hashes to {key_hash.hex()}",
            )
        if not hmac.compare_digest(bound_nonce, hashlib.sha256(quote.nonce_bytes).digest()):
            return fail(
                Reason.REPORT_DATA_MISMATCH,
                "report_data's second half is not the SHA-256 of the quote's own nonce",
            )
        if not hmac.compare_digest(quote.nonce_bytes, nonce):
            return fail(
                Reason.NONCE_MISMATCH,
                f"quote answers nonce {quote.nonce[:16]}…, expected {nonce.hex()[:16]}… "
                "(replayed or for another verifier)",
            )
        issued = quote.issued_at
        if now - issued > policy.max_age:
            return fail(
                Reason.STALE,
                f"quote timestamp {quote.timestamp} is {int((now - issued).total_seconds())}s "
                f"old; max_age is {int(policy.max_age.total_seconds())}s",
            )
        if issued - now > policy.max_clock_skew:
            return fail(
                Reason.STALE,
                f"quote timestamp {quote.timestamp} is {int((issued - now).total_seconds())}s "
                f"in the future; max_clock_skew is {int(policy.max_clock_skew.total_seconds())}s",
            )
        if quote.tcb_version < policy.min_tcb_version:
            return fail(
                Reason.TCB_TOO_LOW,
                f"tcb_version {quote.tcb_version} is below the minimum {policy.min_tcb_version}",
            )
        if quote.measurement not in policy.allowed_measurements:
            return fail(
                Reason.MEASUREMENT_NOT_ALLOWED,
                f"measurement {quote.measurement} is not in the "
                f"{len(policy.allowed_measurements)} allowed measurements",
            )
        if policy.allowed_host_data is not None and quote.host_data not in policy.allowed_host_data:
            return fail(
                Reason.HOST_DATA_NOT_ALLOWED,
                f"host_data {quote.host_data} is not in the "
                f"{len(policy.allowed_host_data)} allowed host_data values",
            )
        return VerificationResult.success(
            Claims(
                format=quote.format,
                platform=self.platform,
                measurement=quote.measurement,
                host_data=quote.host_data,
                public_key_sha256=key_hash.hex(),
                nonce=quote.nonce,
                timestamp=issued,
                tcb_version=quote.tcb_version,
                chip_id=quote.chip_id,
            )
        )
