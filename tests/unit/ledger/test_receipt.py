"""Offline receipt verification: the service certificate suffices, and every tamper is named."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from consortium_node.common.canonical import canonical_json
from consortium_node.identity.certs import ServiceIdentity
from consortium_node.identity.keys import sign
from consortium_node.ledger import (
    EntryKind,
    NodeKeySigner,
    ReceiptError,
    TxId,
    verify_receipt,
)
from consortium_node.ledger.merkle import leaf_hash, node_hash

from .conftest import OpenLedger, make_signer


@pytest.fixture
def receipt(open_ledger: OpenLedger, signer: NodeKeySigner) -> dict[str, Any]:
    ledger = open_ledger()
    ledger.append([{"app": {f"k{i}": i}} for i in range(6)], EntryKind.PRIVATE)
    ledger.append_signature(signer)
    ledger.sync_and_commit()
    return ledger.receipt(TxId(1, 4))


def _flip_hex(value: str) -> str:
    return ("1" if value[0] == "0" else "0") + value[1:]


def _leaf_for(receipt: dict[str, Any]) -> None:
    receipt["leaf"] = hashlib.sha256(canonical_json(receipt["leaf_components"])).hexdigest()


def test_valid_receipt(
    receipt: dict[str, Any], service: ServiceIdentity, signer: NodeKeySigner
) -> None:
    verified = verify_receipt(receipt, service.certificate)
    assert verified.txid == TxId(1, 4)
    assert verified.node_id == signer.node_id
    assert verified.root.hex() == receipt["root"]
    assert verified.leaf.hex() == receipt["leaf"]
    assert set(receipt) == {
        "txid", "leaf", "leaf_components", "proof", "root", "tree_size", "signature",
        "signature_txid", "node_id", "node_certificate",
    }  # fmt: skip
    assert receipt["leaf_components"]["kind"] == int(EntryKind.PRIVATE)
    assert all(len(step) == 1 and set(step) <= {"left", "right"} for step in receipt["proof"])


def _tamper_signature(r: dict[str, Any]) -> None:
    r["signature"] = sign(make_signer(ServiceIdentity.create("x")).key, b"other").hex()


def _tamper_proof_sibling(r: dict[str, Any]) -> None:
    (side, value), = r["proof"][1].items()  # fmt: skip
    r["proof"][1] = {side: _flip_hex(value)}


def _tamper_proof_side(r: dict[str, Any]) -> None:
    (side, value), = r["proof"][0].items()  # fmt: skip
    r["proof"][0] = {"left" if side == "right" else "right": value}


def _tamper_components_txid(r: dict[str, Any]) -> None:
    r["leaf_components"]["txid"] = "1.5"
    _leaf_for(r)


def _tamper_root(r: dict[str, Any]) -> None:
    r["root"] = _flip_hex(r["root"])


def _tamper_node_id(r: dict[str, Any]) -> None:
    r["node_id"] = _flip_hex(r["node_id"])


TAMPERS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("leaf", lambda r: r.update(leaf=_flip_hex(r["leaf"])), "leaf"),
    (
        "components",
        lambda r: r["leaf_components"].update(
            body_sha256=_flip_hex(r["leaf_components"]["body_sha256"])
        ),
        "leaf",
    ),
    ("components-txid", _tamper_components_txid, "leaf_components.txid"),
    ("proof-sibling", _tamper_proof_sibling, "proof"),
    ("proof-side", _tamper_proof_side, "proof"),
    ("proof-extra", lambda r: r["proof"].append({"right": "00" * 32}), "proof"),
    ("root", _tamper_root, "root"),
    ("signature", _tamper_signature, "signature"),
    ("node-id", _tamper_node_id, "node_id"),
    ("tree-size", lambda r: r.update(tree_size=r["tree_size"] + 1), "signature_txid"),
    ("index-outside-tree", lambda r: r.update(tree_size=2, signature_txid="1.3"), "tree_size"),
    ("missing", lambda r: r.pop("signature"), "signature"),
    ("unknown", lambda r: r.update(extra=1), "extra"),
    ("tree-size-type", lambda r: r.update(tree_size="7"), "tree_size"),
    ("txid-format", lambda r: r.update(txid="1:4"), "txid"),
    ("hex-case", lambda r: r.update(root=r["root"].upper()), "root"),
    ("proof-shape", lambda r: r.update(proof=[{"up": "00" * 32}]), "proof[0]"),
    ("component-kind", lambda r: r["leaf_components"].update(kind=True), "leaf_components.kind"),
    ("component-extra", lambda r: r["leaf_components"].update(x=1), "leaf_components.x"),
    ("certificate", lambda r: r.update(node_certificate="not a pem"), "node_certificate"),
]


@pytest.mark.parametrize(("name", "tamper", "field"), TAMPERS, ids=[t[0] for t in TAMPERS])
def test_tampered_receipts_name_the_field(
    receipt: dict[str, Any],
    service: ServiceIdentity,
    name: str,
    tamper: Callable[[dict[str, Any]], None],
    field: str,
) -> None:
    forged = copy.deepcopy(receipt)
    tamper(forged)
    with pytest.raises(ReceiptError) as caught:
        verify_receipt(forged, service.certificate)
    assert caught.value.field == field, f"{name}: {caught.value}"
    assert str(caught.value).startswith(f"receipt {field}: ")


def test_other_service_certificate_is_rejected(receipt: dict[str, Any]) -> None:
    other = ServiceIdentity.create("another-consortium")
    with pytest.raises(ReceiptError) as caught:
        verify_receipt(receipt, other.certificate)
    assert caught.value.field == "node_certificate"


def test_not_a_mapping() -> None:
    with pytest.raises(ReceiptError) as caught:
        verify_receipt([], ServiceIdentity.create("x").certificate)  # type: ignore[arg-type]
    assert caught.value.field == "receipt"


def test_receipts_outlive_the_node_certificate(
    open_ledger: OpenLedger, service: ServiceIdentity
) -> None:
    expired = make_signer(service, expired=True)
    ledger = open_ledger()
    ledger.append([{"app": {"a": 1}}], EntryKind.PRIVATE)
    ledger.append_signature(expired)
    ledger.sync_and_commit()
    assert (
        verify_receipt(ledger.receipt(TxId(1, 1)), service.certificate).node_id == expired.node_id
    )


def test_single_leaf_tree_has_an_empty_proof(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity
) -> None:
    ledger = open_ledger()
    ledger.append([{"public:gov": {"a": 1}}], EntryKind.PUBLIC)
    ledger.append_signature(signer)
    ledger.sync_and_commit()
    receipt = ledger.receipt(TxId(1, 1))
    assert receipt["proof"] == [] and receipt["tree_size"] == 1
    assert receipt["root"] == leaf_hash(bytes.fromhex(receipt["leaf"])).hex()
    verify_receipt(receipt, service.certificate)
    # a second leaf appended later sits to the right of the first
    ledger.append([{"public:gov": {"b": 1}}], EntryKind.PUBLIC)
    ledger.append_signature(signer)
    ledger.sync_and_commit()
    second = ledger.receipt(TxId(1, 3))
    assert [next(iter(step)) for step in second["proof"]] == ["left"]
    assert (
        second["root"]
        == node_hash(
            bytes.fromhex(second["proof"][0]["left"]), leaf_hash(bytes.fromhex(second["leaf"]))
        ).hex()
    )
    verify_receipt(second, service.certificate)
