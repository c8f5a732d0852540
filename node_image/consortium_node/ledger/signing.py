"""Signature entries: producing them with a node identity, and checking them on replay.

Why a separate module: signing and checking must agree exactly (what is signed: the raw
32-byte root; which key: the one in ``node_certificate``; which node: SHA-256 of that key), and
both need the same certificate cache, since parsing a certificate costs far more than
verifying one ECDSA signature and a ledger repeats the same certificate in every signature.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

from consortium_node.identity.certs import load_certificate
from consortium_node.identity.errors import IdentityError
from consortium_node.identity.keys import (
    PrivateKey,
    PublicKey,
    check_key_type,
    node_id_of,
    sign,
    verify,
)
from consortium_node.ledger.entries import Entry, SignatureBody
from consortium_node.ledger.errors import EntryFormatError, LedgerError


class LedgerSigner(Protocol):
    """The node identity that signs Merkle roots (its key never leaves the enclave)."""

    @property
    def node_id(self) -> str: ...

    @property
    def certificate_pem(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


@dataclass(frozen=True)
class NodeKeySigner:
    """A LedgerSigner from a node private key and its certificate issued by the service."""

    key: PrivateKey
    certificate_pem: str
    node_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "node_id", node_id_of(self.key))

    def sign(self, data: bytes) -> bytes:
        return sign(self.key, data)


class CertificateCache:
    """``(public key, node_id)`` of node certificates, parsed once per distinct PEM; the
    ``size`` most recently used are kept (certificates are renewed: the history of them is
    not held in memory)."""

    def __init__(self, size: int = 256) -> None:
        self._keys: OrderedDict[str, tuple[PublicKey, str]] = OrderedDict()
        self._size = size

    def key_for(self, pem: str) -> tuple[PublicKey, str]:
        """Key and node_id of a certificate; IdentityError if it does not parse."""
        cached = self._keys.get(pem)
        if cached is None:
            public = load_certificate(pem, "node certificate").public_key()
            check_key_type(public)
            assert isinstance(public, PublicKey)
            cached = self._keys[pem] = (public, node_id_of(public))
            if len(self._keys) > self._size:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(pem)
        return cached


def sign_root(
    signer: LedgerSigner, root: bytes, tree_size: int, term: int, cache: CertificateCache
) -> SignatureBody:
    """Sign ``root`` and check the result verifies: a bad signature entry on disk would make
    the ledger refuse to open, so it must never be written."""
    try:
        key, node_id = cache.key_for(signer.certificate_pem)
    except IdentityError as exc:
        raise LedgerError(f"signer certificate: {exc}") from exc
    if node_id != signer.node_id:
        raise LedgerError(f"signer node_id {signer.node_id} is not its certificate's {node_id}")
    signature = signer.sign(root)
    if not verify(key, signature, root):
        raise LedgerError("the signer's signature does not verify with its certificate")
    return SignatureBody(node_id, root, tree_size, signature, signer.certificate_pem, term)


def check_signature(
    entry: Entry, body: SignatureBody, root: bytes, cache: CertificateCache
) -> None:
    """A replayed signature entry must sign ``root``, the root recomputed over the entries
    before it, with the key of its own certificate; EntryFormatError says what is wrong."""
    if body.tree_size != entry.index - 1 or body.term != entry.term:
        raise EntryFormatError(
            f"signature claims tree_size {body.tree_size} and term {body.term}, "
            f"but it is entry {entry.term}.{entry.index}"
        )
    if body.root != root:
        raise EntryFormatError(
            f"signed root {body.root.hex()} is not the Merkle root {root.hex()} "
            f"of indices 1..{body.tree_size}"
        )
    try:
        key, node_id = cache.key_for(body.node_certificate)
    except IdentityError as exc:
        raise EntryFormatError(f"signature node_certificate: {exc}") from exc
    if node_id != body.node_id:
        raise EntryFormatError(f"signature node_id {body.node_id} is not the certificate's")
    if not verify(key, body.signature, body.root):
        raise EntryFormatError("signature does not verify with its node_certificate")
