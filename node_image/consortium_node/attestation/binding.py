"""What a quote's 64 report-data bytes bind, the same on every platform.

Why shared: the verifier of any platform must find in the hardware-signed report data both
the node's public key (so the quote vouches for that key, not just for "some enclave") and
the verifier's nonce (so the quote is fresh, not replayed). SEV-SNP's REPORT_DATA and TDX's
REPORTDATA are both 64 bytes; the emulated platform copies the shape.
"""

from __future__ import annotations

import hashlib

REPORT_DATA_BYTES = 64


def report_data_for(public_key_der: bytes, nonce: bytes) -> bytes:
    """``SHA-256(public key SubjectPublicKeyInfo DER) || SHA-256(nonce)``: 64 bytes."""
    return hashlib.sha256(public_key_der).digest() + hashlib.sha256(nonce).digest()
