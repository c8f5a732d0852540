"""The ``sev-snp/v1`` quote: an SEV-SNP report with its chip certificate, as JSON.

Why JSON around the binary report: every hop (node, operator, ``consortiumctl``, the ledger's
node records) already carries quotes as JSON objects dispatched on ``format``; the report
itself stays the exact bytes the firmware signed.

JSON object, all keys required, no others::

    format        "sev-snp/v1"
    report        lowercase hex of the 1184-byte ATTESTATION_REPORT
    nonce         lowercase hex, 1..1024 bytes, chosen by the verifier; the report's
                  REPORT_DATA must be SHA-256(node public key DER) || SHA-256(nonce)
    endorsements  list of 1..3 PEM certificates: the VCEK or VLEK first, then optionally the
                  intermediate (ASK/ASVK) and the root (which must be the pinned one)

There is no timestamp: SEV-SNP reports carry none, and freshness comes from the nonce.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from consortium_node.attestation.errors import QuoteFormatError
from consortium_node.attestation.insecure_virtual.quote import check_hex
from consortium_node.attestation.sev_snp.report import REPORT_SIZE

QUOTE_FORMAT = "sev-snp/v1"
MAX_NONCE_BYTES = 1024
MAX_ENDORSEMENTS = 3
_KEYS = ("format", "report", "nonce", "endorsements")


@dataclass(frozen=True)
class SnpQuote:
    report: bytes
    nonce: bytes
    endorsements: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": QUOTE_FORMAT,
            "report": self.report.hex(),
            "nonce": self.nonce.hex(),
            "endorsements": list(self.endorsements),
        }

    @classmethod
    def from_json(cls, obj: object) -> SnpQuote:
        """Parse and check every field; ``QuoteFormatError`` names the bad one."""
        if not isinstance(obj, Mapping):
            raise QuoteFormatError("quote", f"must be a JSON object, got {type(obj).__name__}")
        for key in obj:
            if key not in _KEYS:
                raise QuoteFormatError(str(key), "unknown field")
        for key in _KEYS:
            if key not in obj:
                raise QuoteFormatError(key, "missing")
        if obj["format"] != QUOTE_FORMAT:
            raise QuoteFormatError("format", f"must be {QUOTE_FORMAT!r}")
        report = check_hex("report", obj["report"], min_bytes=REPORT_SIZE, max_bytes=REPORT_SIZE)
        nonce = check_hex("nonce", obj["nonce"], min_bytes=1, max_bytes=MAX_NONCE_BYTES)
        endorsements = obj["endorsements"]
        if not isinstance(endorsements, list) or not 1 <= len(endorsements) <= MAX_ENDORSEMENTS:
            raise QuoteFormatError("endorsements", f"must be a list of 1..{MAX_ENDORSEMENTS} PEM")
        for index, item in enumerate(endorsements):
            if not isinstance(item, str) or "-----BEGIN CERTIFICATE-----" not in item:
                raise QuoteFormatError(f"endorsements[{index}]", "must be a PEM certificate")
        return cls(bytes.fromhex(report), bytes.fromhex(nonce), tuple(endorsements))
