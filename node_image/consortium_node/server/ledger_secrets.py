"""This node's ledger secrets: sealed at rest, unwrapped from rotation entries, bundled to joiners.

Why here: the ledger decides which secret version applies where (``ledger/secrets.py``) but
knows nothing of node keys, sealing or the join protocol; this module is that glue, and the one
place a fresh secret is generated and wrapped (a governance ``rotate_ledger_secret``).

At rest (sealed to this chip and code measurement, ``server/sealed.py``):

* ``ledger-secret``: version 1, the raw 32 bytes (as every node wrote it before rotation);
* ``ledger-secrets``: versions >= 2, canonical JSON ``{"<v>": {"secret": hex, "txid":
  "<term>.<index>"}}`` where ``txid`` is the rotation entry the version belongs to. Absent
  until the first rotation, so a data directory written before rotation existed still opens.

A joiner's bundle (inside the blob wrapped to its attested key, ``primary._join_answer``)
carries ``ledger_secret`` (version 1, hex, as before) and ``ledger_secrets`` (the same JSON
as the sealed file): every version, so the joiner reads history encrypted before it joined.
A bundle without ``ledger_secrets`` (an older primary) means version 1 only.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.common.canonical import canonical_json
from consortium_node.identity import keys
from consortium_node.identity.errors import IdentityError
from consortium_node.identity.wrap import unwrap, wrap
from consortium_node.ledger import (
    EntryFormatError,
    HeldSecret,
    LedgerSecrets,
    TxId,
    WriteSet,
    rotation_record,
)
from consortium_node.ledger.entries import SECRET_SIZE
from consortium_node.server.join_secrets import ledger_secret_context
from consortium_node.server.sealed import SealedStore

log = logging.getLogger("consortium_node.secrets")

FIRST = "ledger-secret"
LATER = "ledger-secrets"


class SecretBundleError(ValueError):
    """A sealed file or join bundle of ledger secrets is malformed."""


def encode_later(held: Sequence[HeldSecret]) -> dict[str, Any]:
    """``{"<v>": {"secret": hex, "txid": "t.i"}}`` for every held version >= 2."""
    return {
        str(h.version): {"secret": h.secret.hex(), "txid": str(h.origin)}
        for h in held
        if h.origin is not None
    }


def decode_later(value: object) -> list[HeldSecret]:
    """The inverse of ``encode_later``; SecretBundleError names what is wrong."""
    if not isinstance(value, dict):
        raise SecretBundleError("ledger_secrets must be an object of version → secret")
    out = []
    for version, item in value.items():
        try:
            if not isinstance(item, dict) or set(item) != {"secret", "txid"}:
                raise ValueError('each version needs exactly "secret" and "txid"')
            out.append(
                HeldSecret(int(version), bytes.fromhex(item["secret"]), TxId.parse(item["txid"]))
            )
        except (ValueError, TypeError) as exc:
            raise SecretBundleError(f"ledger_secrets[{version!r}]: {exc}") from exc
    return out


class SecretVault:
    """Seals this node's secret versions and opens its own copy in rotation entries."""

    def __init__(
        self, sealed: SealedStore, node_key: ec.EllipticCurvePrivateKey, consortium: str
    ) -> None:
        self._sealed = sealed
        self._key = node_key
        self._consortium = consortium
        self._node_id = keys.node_id_of(node_key)
        self._later: dict[int, HeldSecret] = {}

    def create(self, first: bytes, later: Sequence[HeldSecret] = ()) -> LedgerSecrets:
        """Seal secrets this node was just given (genesis, join) and return its keyring."""
        self._sealed.put(FIRST, first)
        self._later = {h.version: h for h in later}
        if self._later:
            self._seal_later()
        return self._keyring(first)

    def load(self) -> LedgerSecrets:
        """Unseal every version this node holds (restart)."""
        if self._sealed.exists(LATER):
            try:
                later = decode_later(json.loads(self._sealed.get(LATER)))
            except ValueError as exc:
                raise SecretBundleError(f"sealed {LATER}: {exc}") from exc
            self._later = {h.version: h for h in later}
        return self._keyring(self._sealed.get(FIRST))

    def _keyring(self, first: bytes) -> LedgerSecrets:
        return LedgerSecrets(first, self._later.values(), unwrap=self._unwrap, on_learn=self._learn)

    def _unwrap(self, version: int, wrapped: Mapping[str, str]) -> bytes | None:
        blob = wrapped.get(self._node_id)
        if blob is None:
            log.warning(
                "ledger secret version %d was not wrapped to this node: private entries "
                "from now on are unreadable here",
                version,
            )
            return None
        context = ledger_secret_context(self._consortium, self._node_id, version)
        try:
            secret = unwrap(self._key, base64.b64decode(blob, validate=True), context)
        except (IdentityError, binascii.Error) as exc:
            raise EntryFormatError(
                f"this node's copy of ledger secret version {version} does not open: {exc}"
            ) from exc
        if len(secret) != SECRET_SIZE:
            raise EntryFormatError(f"ledger secret version {version} is not {SECRET_SIZE} bytes")
        return secret

    def _learn(self, held: HeldSecret) -> None:
        self._later[held.version] = held
        self._seal_later()
        log.info(
            "now holding ledger secret version %d (rotation entry %s)", held.version, held.origin
        )

    def _seal_later(self) -> None:
        later = [self._later[v] for v in sorted(self._later)]
        self._sealed.put(LATER, canonical_json(encode_later(later)))


def rotation_writes(
    secrets: LedgerSecrets,
    recipients: Mapping[str, str],
    consortium: str,
    index: int,
    also: Callable[[dict[int, bytes]], WriteSet] | None = None,
) -> WriteSet:
    """The rotation entry to append at ``index``: a fresh secret, version current + 1, wrapped
    to each recipient (node_id → public key PEM); it applies from ``index + 1``. ``also``
    adds writes made from every version including the new one (the recovery record)."""
    version = secrets.current_version + 1
    secret = os.urandom(SECRET_SIZE)
    wrapped = {}
    for node_id, public_key_pem in sorted(recipients.items()):
        public = keys.load_public_key(public_key_pem.encode("ascii"))
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise ValueError(f"node {node_id[:16]}…: node keys must be P-256")
        blob = wrap(public, secret, ledger_secret_context(consortium, node_id, version))
        wrapped[node_id] = base64.b64encode(blob).decode("ascii")
    writes = rotation_record(version, index + 1, wrapped)
    if also is not None:
        writes = {**also({**secrets.by_version(), version: secret}), **writes}
    return writes
