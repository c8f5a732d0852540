"""Offline receipt verification: needs the receipt and the service certificate, nothing else.

Why offline: a receipt is a user's proof that a transaction is in the ledger, usable long after
the node that issued it is gone (``consortiumctl verify-receipt --service-cert``). It is valid
iff (DESIGN section 6):

1. ``leaf`` = SHA-256(canonical JSON of ``leaf_components``) and the components name ``txid``;
2. the proof has the shape of leaf ``index - 1`` in a tree of ``tree_size`` leaves, the
   signature sits at index ``tree_size + 1``, and folding the proof from
   ``SHA-256(0x00 || leaf)`` yields ``root``;
3. ``node_certificate`` was issued by the service certificate (no time check: receipts stay
   verifiable after the node certificate expires) and certifies the key of ``node_id``;
4. ``signature`` (ECDSA P-256/SHA-256, DER) verifies over the raw 32-byte ``root``.

Each failure raises ``ReceiptError(field, reason)`` naming the field to blame. When the proof
does not yield ``root`` but the signature covers what it does yield, ``root`` is blamed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from consortium_node.identity.certs import load_certificate, verify_node_certificate
from consortium_node.identity.errors import IdentityError
from consortium_node.identity.keys import PublicKey, verify
from consortium_node.ledger.entries import EntryKind, SignatureBody, TxId, leaf_of
from consortium_node.ledger.errors import ReceiptError
from consortium_node.ledger.merkle import ProofStep, leaf_hash, proof_sides, root_from_proof

RECEIPT_FIELDS = (
    "txid",
    "leaf",
    "leaf_components",
    "proof",
    "root",
    "tree_size",
    "signature",
    "signature_txid",
    "node_id",
    "node_certificate",
)
COMPONENT_FIELDS = ("txid", "kind", "write_set_sha256", "body_sha256")
_HEX = re.compile(r"(?:[0-9a-f]{2})+")


@dataclass(frozen=True)
class VerifiedReceipt:
    """What a valid receipt proves: ``leaf`` is at ``txid`` under ``root`` signed by ``node_id``."""

    txid: TxId
    root: bytes
    node_id: str
    leaf: bytes


def make_receipt(
    components: dict[str, Any], proof: list[ProofStep], body: SignatureBody, signature_txid: TxId
) -> dict[str, Any]:
    """The receipt JSON object for the leaf ``components``, proven into ``body``'s root."""
    return {
        "txid": components["txid"],
        "leaf": leaf_of(components).hex(),
        "leaf_components": components,
        "proof": [{side: sibling.hex()} for side, sibling in proof],
        "root": body.root.hex(),
        "tree_size": body.tree_size,
        "signature": body.signature.hex(),
        "signature_txid": str(signature_txid),
        "node_id": body.node_id,
        "node_certificate": body.node_certificate,
    }


def _hex(value: object, field: str, size: int | None = None) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise ReceiptError(field, "must be a non-empty lowercase hex string")
    data = bytes.fromhex(value)
    if size is not None and len(data) != size:
        raise ReceiptError(field, f"must be {size} bytes ({2 * size} hex digits), got {len(data)}")
    return data


def _txid(value: object, field: str) -> TxId:
    if not isinstance(value, str):
        raise ReceiptError(field, "must be a string like 2.15")
    try:
        return TxId.parse(value)
    except ValueError as exc:
        raise ReceiptError(field, str(exc)) from exc


def _exact_keys(value: object, field: str, names: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ReceiptError(field, "must be a JSON object")
    for key in value:
        if key not in names:
            raise ReceiptError(
                f"{field}.{key}" if field != "receipt" else str(key), "unknown field"
            )
    for name in names:
        if name not in value:
            raise ReceiptError(f"{field}.{name}" if field != "receipt" else name, "missing")
    return value


def _components(value: object) -> dict[str, Any]:
    comps = _exact_keys(value, "leaf_components", COMPONENT_FIELDS)
    _txid(comps["txid"], "leaf_components.txid")
    kind = comps["kind"]
    if type(kind) is not int or kind not in EntryKind._value2member_map_:
        raise ReceiptError("leaf_components.kind", f"{kind!r} is not 1, 2 or 3")
    _hex(comps["write_set_sha256"], "leaf_components.write_set_sha256", 32)
    _hex(comps["body_sha256"], "leaf_components.body_sha256", 32)
    return dict(comps)


def _proof(value: object) -> list[ProofStep]:
    if not isinstance(value, list):
        raise ReceiptError("proof", 'must be a list of {"left"|"right": hex}')
    steps: list[ProofStep] = []
    for number, item in enumerate(value):
        field = f"proof[{number}]"
        if not isinstance(item, Mapping) or len(item) != 1:
            raise ReceiptError(field, 'must be an object with exactly one of "left" or "right"')
        ((side, sibling),) = item.items()
        if side == "left":
            steps.append(("left", _hex(sibling, field, 32)))
        elif side == "right":
            steps.append(("right", _hex(sibling, field, 32)))
        else:
            raise ReceiptError(field, f'side {side!r} is not "left" or "right"')
    return steps


def node_certificate_key(
    pem: object, node_id: str, service_certificate: x509.Certificate
) -> PublicKey:
    """The key of a node certificate the service certificate issued to ``node_id``."""
    if not isinstance(pem, str):
        raise ReceiptError("node_certificate", "must be a PEM string")
    try:
        certificate = load_certificate(pem, "node certificate")
        certified_id = verify_node_certificate(certificate, service_certificate)
    except IdentityError as exc:
        raise ReceiptError(
            "node_certificate", f"is not a certificate issued by the service certificate ({exc})"
        ) from exc
    if certified_id != node_id:
        raise ReceiptError("node_id", f"{node_id} is not the certificate's node_id {certified_id}")
    key = certificate.public_key()
    assert isinstance(key, PublicKey)  # verify_node_certificate checked the key type
    return key


def verify_receipt(
    receipt: Mapping[str, Any], service_certificate: x509.Certificate
) -> VerifiedReceipt:
    """Check a receipt against the service certificate alone; ReceiptError names the field."""
    fields = _exact_keys(receipt, "receipt", RECEIPT_FIELDS)
    txid = _txid(fields["txid"], "txid")
    leaf = _hex(fields["leaf"], "leaf", 32)
    components = _components(fields["leaf_components"])
    proof = _proof(fields["proof"])
    root = _hex(fields["root"], "root", 32)
    tree_size = fields["tree_size"]
    if type(tree_size) is not int or tree_size < 1:
        raise ReceiptError("tree_size", f"{tree_size!r} is not a positive integer")
    signature = _hex(fields["signature"], "signature")
    signature_txid = _txid(fields["signature_txid"], "signature_txid")
    node_id = fields["node_id"]
    if not isinstance(node_id, str) or len(_hex(node_id, "node_id")) != 32:
        raise ReceiptError("node_id", "must be 64 lowercase hex digits")

    if leaf_of(components) != leaf:
        raise ReceiptError("leaf", "is not SHA-256 of the canonical JSON of leaf_components")
    if components["txid"] != str(txid):
        raise ReceiptError(
            "leaf_components.txid", f"{components['txid']} is not the receipt's txid {txid}"
        )
    if not 1 <= txid.index <= tree_size:
        raise ReceiptError("tree_size", f"a tree of {tree_size} leaves has no index {txid.index}")
    if signature_txid.index != tree_size + 1:
        raise ReceiptError(
            "signature_txid",
            f"a signature at index {signature_txid.index} signs {signature_txid.index - 1} "
            f"leaves, not tree_size {tree_size}",
        )
    if [side for side, _ in proof] != proof_sides(txid.index - 1, tree_size):
        raise ReceiptError(
            "proof", f"is not shaped like the path of index {txid.index} in {tree_size} leaves"
        )

    key = node_certificate_key(fields["node_certificate"], node_id, service_certificate)
    computed = root_from_proof(leaf_hash(leaf), proof)
    if computed != root:
        if verify(key, signature, computed):
            raise ReceiptError("root", f"is not the signed root {computed.hex()} the proof yields")
        raise ReceiptError("proof", f"yields root {computed.hex()}, not {root.hex()}")
    if not verify(key, signature, root):
        raise ReceiptError("signature", "does not verify over root with the node_certificate key")
    return VerifiedReceipt(txid, root, node_id, leaf)
