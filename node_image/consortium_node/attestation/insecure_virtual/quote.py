"""The insecure-virtual quote: the evidence a node shows to prove what it runs, and where.

Shaped like an SEV-SNP attestation report (measurement, host data, 64-byte report data,
TCB version, chip id, chip signature, VCEK chain) but carried as JSON so that every hop
(node, operator, ``consortiumctl``) can log and inspect it.

JSON object, all keys required, no others::

    format        "insecure-virtual/v1"
    measurement   64 lowercase hex (SHA-256 of the node code, see measurement.py)
    host_data     64 lowercase hex (SHA-256 of the launch config)
    report_data   128 lowercase hex = SHA-256(node public key SPKI DER) || SHA-256(nonce)
    nonce         lowercase hex, 1..1024 bytes, chosen by the verifier
    timestamp     RFC 3339 UTC, second precision ("2026-01-02T03:04:05Z")
    tcb_version   integer 0..2**32-1
    chip_id       1..64 printable characters
    signature     lowercase hex of an ECDSA P-256/SHA-256 DER signature by the chip key
    endorsements  list of 1..8 PEM certificates, chip certificate first, platform root excluded

The signature covers ``signed_bytes()``: the canonical JSON of every field except
``signature`` and ``endorsements``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from consortium_node.attestation.binding import REPORT_DATA_BYTES, report_data_for
from consortium_node.attestation.errors import QuoteFormatError
from consortium_node.common.canonical import canonical_json
from consortium_node.common.timeutil import parse_rfc3339, rfc3339

QUOTE_FORMAT = "insecure-virtual/v1"
DIGEST_HEX_LENGTH = 64
MAX_NONCE_BYTES = 1024
MAX_SIGNATURE_BYTES = 256
MAX_ENDORSEMENTS = 8
MAX_CHIP_ID_LENGTH = 64  # the X.509 upper bound for a common name
MAX_TCB_VERSION = 2**32 - 1
UNSIGNED_FIELDS = frozenset({"signature", "endorsements"})
__all__ = ["QUOTE_FORMAT", "REPORT_DATA_BYTES", "Quote", "check_hex", "report_data_for"]

_HEX = re.compile(r"^(?:[0-9a-f]{2})*$")


def check_hex(name: str, value: object, *, min_bytes: int, max_bytes: int) -> str:
    """Return ``value`` if it is lowercase hex of ``min_bytes..max_bytes`` bytes."""
    if not isinstance(value, str):
        raise QuoteFormatError(name, f"must be a hex string, got {type(value).__name__}")
    if not _HEX.match(value):
        raise QuoteFormatError(name, "must be lowercase hex with an even number of digits")
    size = len(value) // 2
    if not min_bytes <= size <= max_bytes:
        expected = f"{min_bytes}" if min_bytes == max_bytes else f"{min_bytes}..{max_bytes}"
        raise QuoteFormatError(name, f"must be {expected} bytes, got {size}")
    return value


def _check_format(value: object) -> None:
    if value != QUOTE_FORMAT:
        raise QuoteFormatError("format", f"must be {QUOTE_FORMAT!r}, got {value!r}")


def _check_timestamp(value: object) -> None:
    if not isinstance(value, str):
        raise QuoteFormatError("timestamp", f"must be a string, got {type(value).__name__}")
    try:
        parsed = parse_rfc3339(value)
    except ValueError as error:
        raise QuoteFormatError("timestamp", str(error)) from None
    if rfc3339(parsed) != value:
        raise QuoteFormatError(
            "timestamp", f"must be UTC with second precision, like {rfc3339(parsed)}"
        )


def _check_tcb_version(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise QuoteFormatError("tcb_version", f"must be an integer, got {type(value).__name__}")
    if not 0 <= value <= MAX_TCB_VERSION:
        raise QuoteFormatError("tcb_version", f"must be in 0..{MAX_TCB_VERSION}, got {value}")


def _check_chip_id(value: object) -> None:
    if not isinstance(value, str):
        raise QuoteFormatError("chip_id", f"must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_CHIP_ID_LENGTH or not value.isprintable():
        raise QuoteFormatError("chip_id", f"must be 1..{MAX_CHIP_ID_LENGTH} printable characters")


def _check_endorsements(value: object) -> None:
    if not isinstance(value, tuple):
        raise QuoteFormatError("endorsements", f"must be a list, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_ENDORSEMENTS:
        raise QuoteFormatError("endorsements", f"must hold 1..{MAX_ENDORSEMENTS} certificates")
    for index, item in enumerate(value):
        if not isinstance(item, str) or "-----BEGIN CERTIFICATE-----" not in item:
            raise QuoteFormatError(f"endorsements[{index}]", "must be a PEM certificate string")


_CHECKS: dict[str, Callable[[object], object]] = {
    "format": _check_format,
    "measurement": lambda v: check_hex("measurement", v, min_bytes=32, max_bytes=32),
    "host_data": lambda v: check_hex("host_data", v, min_bytes=32, max_bytes=32),
    "report_data": lambda v: check_hex(
        "report_data", v, min_bytes=REPORT_DATA_BYTES, max_bytes=REPORT_DATA_BYTES
    ),
    "nonce": lambda v: check_hex("nonce", v, min_bytes=1, max_bytes=MAX_NONCE_BYTES),
    "timestamp": _check_timestamp,
    "tcb_version": _check_tcb_version,
    "chip_id": _check_chip_id,
    "signature": lambda v: check_hex("signature", v, min_bytes=1, max_bytes=MAX_SIGNATURE_BYTES),
    "endorsements": _check_endorsements,
}


@dataclass(frozen=True)
class Quote:
    """One insecure-virtual quote; constructing it validates every field (``QuoteFormatError``)."""

    format: str
    measurement: str
    host_data: str
    report_data: str
    nonce: str
    timestamp: str
    tcb_version: int
    chip_id: str
    signature: str
    endorsements: tuple[str, ...]

    def __post_init__(self) -> None:
        for item in fields(self):
            _CHECKS[item.name](getattr(self, item.name))

    @classmethod
    def create(
        cls,
        *,
        measurement: str,
        host_data: str,
        report_data: bytes,
        nonce: bytes,
        timestamp: datetime,
        tcb_version: int,
        chip_id: str,
        endorsements: tuple[str, ...],
        sign: Callable[[bytes], bytes],
    ) -> Quote:
        """Build a quote and sign ``signed_bytes()`` with ``sign`` (e.g. ``Chip.sign``)."""
        quote_fields: dict[str, Any] = {
            "format": QUOTE_FORMAT,
            "measurement": measurement,
            "host_data": host_data,
            "report_data": report_data.hex(),
            "nonce": nonce.hex(),
            "timestamp": rfc3339(timestamp),
            "tcb_version": tcb_version,
            "chip_id": chip_id,
        }
        for name, value in quote_fields.items():
            _CHECKS[name](value)
        quote_fields["signature"] = sign(canonical_json(quote_fields)).hex()
        quote_fields["endorsements"] = tuple(endorsements)
        return cls(**quote_fields)

    def signed_bytes(self) -> bytes:
        """Canonical JSON of every field except ``signature`` and ``endorsements``."""
        return canonical_json({k: v for k, v in self.to_json().items() if k not in UNSIGNED_FIELDS})

    def to_json(self) -> dict[str, Any]:
        """The quote as a JSON-ready dict (``endorsements`` as a list)."""
        out: dict[str, Any] = {item.name: getattr(self, item.name) for item in fields(self)}
        out["endorsements"] = list(self.endorsements)
        return out

    @classmethod
    def from_json(cls, obj: object) -> Quote:
        """Parse and validate a decoded JSON quote; ``QuoteFormatError`` names the bad field."""
        if not isinstance(obj, Mapping):
            raise QuoteFormatError("quote", f"must be a JSON object, got {type(obj).__name__}")
        names = [item.name for item in fields(cls)]
        for key in obj:
            if key not in _CHECKS:
                raise QuoteFormatError(str(key), "unknown field")
        for name in names:
            if name not in obj:
                raise QuoteFormatError(name, "missing")
        values = dict(obj)
        endorsements = values["endorsements"]
        if not isinstance(endorsements, list | tuple):
            raise QuoteFormatError(
                "endorsements", f"must be a list, got {type(endorsements).__name__}"
            )
        values["endorsements"] = tuple(endorsements)
        return cls(**values)

    @property
    def report_data_bytes(self) -> bytes:
        """``report_data`` decoded."""
        return bytes.fromhex(self.report_data)

    @property
    def nonce_bytes(self) -> bytes:
        """``nonce`` decoded."""
        return bytes.fromhex(self.nonce)

    @property
    def signature_bytes(self) -> bytes:
        """``signature`` decoded (DER)."""
        return bytes.fromhex(self.signature)

    @property
    def issued_at(self) -> datetime:
        """``timestamp`` parsed (aware UTC)."""
        return parse_rfc3339(self.timestamp)
