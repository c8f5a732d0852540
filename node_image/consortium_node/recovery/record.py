"""The recovery record: every ledger secret version wrapped under a recovery key, and that key
split among the recovery members, each share encrypted to its member's recovery key.

Why public, in the ledger: after a disaster no node can unseal anything, but the public
ledger survives in the backups (issue 10) and verifies with the service certificate. So the
primary writes, in the public table ``T_RECOVERY`` (key ``"current"``), everything needed to
bring the private state back, and nothing that helps anyone short of ``threshold`` members:

    {"epoch": e, "threshold": k, "secret_versions": [1, 2, ...],
     "wrapped_secrets": base64(nonce(12) || AES-256-GCM ciphertext and tag),
     "shares": {member_id: {"index": i, "encrypted": base64(wrap blob),
                            "commitment": hex(SHA-256(commitment input)),
                            "recovery_key_sha256": hex(SHA-256(the key's PEM))}, ...}}

* ``epoch`` counts records (1 at genesis); each record uses a **fresh** recovery key, so a
  new record (at every ledger-secret rotation, and every change of the recovery members or of
  the threshold) makes the shares of the previous ones useless for anything written since.
* ``wrapped_secrets``: AES-256-GCM under the recovery key, random 12-byte nonce, plaintext
  the canonical JSON ``{"<version>": "<hex secret>", ...}``, AAD ``wrap_context(...)``
  (consortium, epoch, threshold, versions): a record's parts cannot be mixed with another's.
* ``encrypted``: the 33-byte share (``shares.Share.to_bytes``) encrypted to the member's
  recovery public key (P-256, ``identity.wrap``: ECIES, HKDF-SHA256, AES-256-GCM) with
  context ``share_context(consortium, epoch, member_id)``: only that member can open it,
  and a blob copied to another member's entry does not open.
* ``commitment``: SHA-256 of ``b"consortium-recovery-share-v1" || len-prefixed consortium ||
  epoch (8 bytes BE) || member_id (ASCII hex) || share bytes``. A share is 32 random-looking
  bytes, so its digest reveals nothing; it lets the recovery node refuse a wrong share by
  name, before combining, instead of learning only that *some* share was wrong.
* ``recovery_key_sha256``: which key the share was encrypted to (the PEM as the ledger's
  member record holds it), so the primary sees when a member's key changed (``basis``).

A member's recovery key is an encryption key separate from its signing certificate: signing
keys may be Ed25519 (no ECDH here), are used daily, and a recovery key is best kept offline
(``consortiumctl keygen --recovery``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consortium_node.common.canonical import canonical_json
from consortium_node.identity import wrap as ecies
from consortium_node.identity.errors import WrapError
from consortium_node.recovery.shares import KEY_SIZE, Share, ShareError, combine, split

T_RECOVERY = "public:consortium.recovery"
RECORD_KEY = "current"
SHARE_PREFIX = b"consortium-recovery-share-v1"
SECRETS_PREFIX = b"consortium-recovery-secrets-v1"
NONCE_SIZE = 12
RECORD_FIELDS = frozenset({"epoch", "threshold", "secret_versions", "wrapped_secrets", "shares"})


class RecoveryError(ValueError):
    """A record, share or key that cannot be used; ``reason`` names why (a constant of this
    module's callers' API: ``ShareDoesNotDecrypt``, ``ShareDoesNotMatch``,
    ``NotARecoveryMember``, ``DuplicateShare``, ``NotEnoughShares``, ``SecretsDoNotOpen``,
    ``RecordFormat``, ``RecoveryKey``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason, self.detail = reason, message


def load_recovery_key(pem: object) -> ec.EllipticCurvePublicKey:
    """A member's recovery public key from its PEM (SubjectPublicKeyInfo, P-256), or
    RecoveryError ``RecoveryKey`` saying what is wrong (a private key is refused: only the
    public half ever leaves the member's machine)."""
    if not isinstance(pem, str) or "PRIVATE KEY" in pem:
        raise RecoveryError("RecoveryKey", "expected the PEM of a P-256 public key")
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise RecoveryError("RecoveryKey", f"not a PEM public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise RecoveryError("RecoveryKey", f"a {type(key).__name__}; expected a P-256 key")
    return key


def recovery_key_pem(key: ec.EllipticCurvePublicKey) -> str:
    """The canonical PEM (SubjectPublicKeyInfo) of a recovery key, as the ledger stores it."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def pem_digest(pem: str) -> str:
    """SHA-256 (hex) of a recovery key's PEM as the ledger stores it (canonical: every way in
    normalises it with ``recovery_key_pem``); how records and ``/node/network`` name a key."""
    return hashlib.sha256(pem.encode("ascii")).hexdigest()


def key_digest(key: ec.EllipticCurvePublicKey) -> str:
    """``pem_digest`` of a recovery key's canonical PEM."""
    return pem_digest(recovery_key_pem(key))


def basis(record: Mapping[str, Any]) -> tuple[int, dict[str, str], list[int]]:
    """What a record was built for: (threshold, member_id → recovery key digest, secret
    versions). A primary writes a new record when the ledger's current basis differs."""
    shares = record.get("shares") or {}
    return (
        int(record.get("threshold", 0)),
        {m: str(e.get("recovery_key_sha256", "")) for m, e in shares.items()},
        [int(v) for v in record.get("secret_versions", [])],
    )


def lp(data: bytes) -> bytes:
    """``data`` prefixed with its length (u16 big-endian): context fields never run together."""
    return struct.pack(">H", len(data)) + data


def share_context(consortium: str, epoch: int, member_id: str) -> bytes:
    return SHARE_PREFIX + lp(consortium.encode()) + struct.pack(">Q", epoch) + member_id.encode()


def wrap_context(consortium: str, epoch: int, threshold: int, versions: list[int]) -> bytes:
    listed = ",".join(str(v) for v in versions).encode()
    return (
        SECRETS_PREFIX + lp(consortium.encode()) + struct.pack(">QH", epoch, threshold) + lp(listed)
    )


def commitment(consortium: str, epoch: int, member_id: str, share: Share) -> str:
    return hashlib.sha256(
        share_context(consortium, epoch, member_id) + share.to_bytes()
    ).hexdigest()


def build_record(
    consortium: str,
    epoch: int,
    secrets: Mapping[int, bytes],
    members: Mapping[str, ec.EllipticCurvePublicKey],
    threshold: int,
) -> dict[str, Any]:
    """A new record (see the module docstring) with a fresh recovery key: ``secrets`` are the
    ledger secret versions, ``members`` the recovery members' public recovery keys."""
    if not members:
        raise RecoveryError("RecordFormat", "no recovery member")
    if not 1 <= threshold <= len(members):
        raise RecoveryError(
            "RecordFormat", f"recovery threshold {threshold} must be in 1..{len(members)}"
        )
    versions = sorted(secrets)
    key = os.urandom(KEY_SIZE)
    nonce = os.urandom(NONCE_SIZE)
    plaintext = canonical_json({str(v): secrets[v].hex() for v in versions})
    sealed = AESGCM(key).encrypt(
        nonce, plaintext, wrap_context(consortium, epoch, threshold, versions)
    )
    ordered = sorted(members)
    shares = split(key, threshold, len(ordered))
    return {
        "epoch": epoch,
        "threshold": threshold,
        "secret_versions": versions,
        "wrapped_secrets": base64.b64encode(nonce + sealed).decode("ascii"),
        "shares": {
            member_id: {
                "index": share.index,
                "encrypted": base64.b64encode(
                    ecies.wrap(
                        members[member_id],
                        share.to_bytes(),
                        share_context(consortium, epoch, member_id),
                    )
                ).decode("ascii"),
                "commitment": commitment(consortium, epoch, member_id, share),
                "recovery_key_sha256": key_digest(members[member_id]),
            }
            for member_id, share in zip(ordered, shares, strict=True)
        },
    }


def _entry(record: Mapping[str, Any], member_id: str) -> Mapping[str, Any]:
    entry = (record.get("shares") or {}).get(member_id)
    if not isinstance(entry, Mapping):
        raise RecoveryError(
            "NotARecoveryMember",
            f"member {member_id[:16]} holds no share of recovery record {record.get('epoch')}",
        )
    return entry


def open_share(
    record: Mapping[str, Any],
    consortium: str,
    member_id: str,
    private_key: ec.EllipticCurvePrivateKey,
) -> Share:
    """On the member's own machine: decrypt this member's share with its recovery key."""
    entry = _entry(record, member_id)
    try:
        blob = base64.b64decode(str(entry.get("encrypted", "")), validate=True)
        data = ecies.unwrap(
            private_key, blob, share_context(consortium, record["epoch"], member_id)
        )
        share = Share.from_bytes(data)
    except (ValueError, WrapError, ShareError) as exc:
        raise RecoveryError(
            "ShareDoesNotDecrypt",
            f"member {member_id[:16]}'s share does not open with this recovery key: {exc}",
        ) from exc
    check_share(record, consortium, member_id, share)
    return share


def check_share(record: Mapping[str, Any], consortium: str, member_id: str, share: Share) -> None:
    """The share this member submitted is the one the record committed to, or RecoveryError."""
    entry = _entry(record, member_id)
    if share.index != entry.get("index") or commitment(
        consortium, int(record["epoch"]), member_id, share
    ) != entry.get("commitment"):
        raise RecoveryError(
            "ShareDoesNotMatch",
            f"the share submitted for member {member_id[:16]} is not the one recovery record "
            f"{record['epoch']} holds for it",
        )


def recover_secrets(
    record: Mapping[str, Any], consortium: str, submitted: Mapping[str, Share]
) -> dict[int, bytes]:
    """Every ledger secret version, from ``threshold`` checked shares (member_id → share)."""
    for member_id, share in submitted.items():
        check_share(record, consortium, member_id, share)
    threshold, epoch = int(record["threshold"]), int(record["epoch"])
    versions = [int(v) for v in record["secret_versions"]]
    try:
        key = combine(list(submitted.values()), threshold)
    except ShareError as exc:
        raise RecoveryError(exc.reason, str(exc)) from exc
    try:
        blob = base64.b64decode(str(record["wrapped_secrets"]), validate=True)
        plaintext = AESGCM(key).decrypt(
            blob[:NONCE_SIZE],
            blob[NONCE_SIZE:],
            wrap_context(consortium, epoch, threshold, versions),
        )
    except (ValueError, InvalidTag) as exc:
        raise RecoveryError(
            "SecretsDoNotOpen",
            f"the recovery key rebuilt from {len(submitted)} shares does not open the ledger "
            f"secrets of recovery record {epoch}",
        ) from exc
    opened = json.loads(plaintext)
    secrets = {int(v): bytes.fromhex(h) for v, h in opened.items()}
    if sorted(secrets) != versions:
        raise RecoveryError("RecordFormat", "the wrapped secrets do not list the versions named")
    return secrets


def check_record(record: object) -> dict[str, Any]:
    """The record's shape (a dict with exactly ``RECORD_FIELDS``), or RecoveryError."""
    if not isinstance(record, dict) or set(record) != RECORD_FIELDS:
        raise RecoveryError(
            "RecordFormat", f"a recovery record has exactly {sorted(RECORD_FIELDS)}"
        )
    if not isinstance(record["shares"], dict) or not isinstance(record["secret_versions"], list):
        raise RecoveryError("RecordFormat", "shares must be an object, secret_versions a list")
    return record
