"""Sealed blobs: AES-256-GCM under a key only one TEE instance can derive.

Why shared: every platform derives its sealing key its own way (the emulated chip's secret,
SEV-SNP's ``MSG_KEY_REQ`` bound to the launch measurement), but the blob on disk must have one
documented format so the node's sealed store does not depend on the platform.

Byte format (version 1)::

    0x01 || nonce (12 bytes) || AES-256-GCM ciphertext || tag (16 bytes)

The GCM associated data is the label's UTF-8 bytes, so a blob sealed as one secret cannot be
opened as another.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consortium_node.attestation.errors import UnsealError

SEAL_VERSION = 1
SEAL_NONCE_BYTES = 12
SEAL_TAG_BYTES = 16
SEAL_MIN_BYTES = 1 + SEAL_NONCE_BYTES + SEAL_TAG_BYTES


def seal_with(key: bytes, plaintext: bytes, label: str) -> bytes:
    """A version-1 blob of ``plaintext`` under ``key`` (32 bytes) for ``label``."""
    nonce = os.urandom(SEAL_NONCE_BYTES)
    return bytes([SEAL_VERSION]) + nonce + AESGCM(key).encrypt(nonce, plaintext, label.encode())


def unseal_with(key: bytes, blob: bytes, label: str, whose: str) -> bytes:
    """Open a ``seal_with`` blob; ``UnsealError`` naming ``whose`` key (chip, measurement)
    if it is not ours, not this label, or damaged."""
    if len(blob) < SEAL_MIN_BYTES:
        raise UnsealError(
            f"sealed blob is {len(blob)} bytes; a version-{SEAL_VERSION} blob has at least "
            f"{SEAL_MIN_BYTES} (version byte, {SEAL_NONCE_BYTES}-byte nonce, "
            f"{SEAL_TAG_BYTES}-byte tag)"
        )
    if blob[0] != SEAL_VERSION:
        raise UnsealError(
            f"sealed blob byte 0: version {blob[0]} is not the supported version {SEAL_VERSION}"
        )
    nonce = blob[1 : 1 + SEAL_NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, blob[1 + SEAL_NONCE_BYTES :], label.encode())
    except InvalidTag:
        raise UnsealError(
            f"sealed blob does not open with label {label!r} {whose}: it was sealed by another "
            "measurement, another chip or under another label, or it was modified"
        ) from None
