"""The Ledger: durable vs committed, KV state, signature cadence, receipts, replay and damage."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from consortium_node.identity.certs import ServiceIdentity
from consortium_node.identity.keys import generate_key, sign
from consortium_node.ledger import (
    EntryKind,
    LedgerConfig,
    LedgerCorruptionError,
    LedgerError,
    NodeKeySigner,
    ReceiptNotReadyError,
    TxId,
    UnknownTransactionError,
    WriteSetError,
    verify_receipt,
)
from consortium_node.ledger.entries import SignatureBody, decode_entry, signature_entry
from tests.support.clock import FakeClock

from .conftest import OpenLedger
from .helpers import fill, find_record, record_offsets, rewrite_record


def test_appends_commit_only_when_committed(open_ledger: OpenLedger) -> None:
    ledger = open_ledger()
    assert (ledger.last_index, ledger.durable_index, ledger.commit_index, ledger.term) == (
        0, 0, 0, 1,
    )  # fmt: skip
    public, private = ledger.append(
        [{"public:gov": {"rule": "x"}}], EntryKind.PUBLIC
    ) + ledger.append([{"app": {"alice": 10}}], EntryKind.PRIVATE)
    assert (str(public), str(private)) == ("1.1", "1.2")
    assert ledger.last_txid == TxId(1, 2)
    assert ledger.commit_index == 0
    assert ledger.get("app", "alice") is None  # not committed yet
    with pytest.raises(UnknownTransactionError):
        ledger.read(private)
    assert ledger.sync() == 2 == ledger.durable_index
    assert ledger.commit_index == 0  # durable, not committed
    assert ledger.get("app", "alice") is None
    with pytest.raises(UnknownTransactionError):
        ledger.read(private)
    assert ledger.advance_commit(5) == 2  # capped at the durable index
    assert ledger.commit_txid == TxId(1, 2)
    assert ledger.get("app", "alice") == (10, private)
    assert ledger.get("public:gov", "rule") == ("x", public)
    view = ledger.read(private)
    assert (view.kind, view.writes, len(view.salt)) == (
        EntryKind.PRIVATE,
        {"app": {"alice": 10}},
        32,
    )
    assert ledger.read(public).salt == ""
    ledger.append([{"app": {"alice": None}}], EntryKind.PRIVATE)
    assert ledger.sync_and_commit() == 3
    assert ledger.get("app", "alice") is None


def test_invalid_batch_appends_nothing(open_ledger: OpenLedger) -> None:
    ledger = open_ledger()
    with pytest.raises(WriteSetError) as caught:
        ledger.append([{"app": {"a": 1}}, {"public:gov": {"b": 2}}], EntryKind.PRIVATE)
    assert caught.value.field == "writes.public:gov"
    assert ledger.last_index == 0
    with pytest.raises(WriteSetError, match="append_signature"):
        ledger.append([{}], EntryKind.SIGNATURE)


def test_private_values_are_not_on_disk_and_need_the_secret(
    open_ledger: OpenLedger, tmp_path: Path
) -> None:
    ledger = open_ledger()
    ledger.append([{"public:gov": {"motto": "public-motto"}}], EntryKind.PUBLIC)
    ledger.append([{"app": {"pin": "very-secret-4711"}}], EntryKind.PRIVATE)
    ledger.close()
    chunk = (tmp_path / "ledger" / "ledger_00000000000000000001.chunk").read_bytes()
    assert b"public-motto" in chunk
    assert b"very-secret-4711" not in chunk and b"pin" not in chunk
    second = record_offsets(chunk)[1]
    with pytest.raises(LedgerCorruptionError, match="does not decrypt") as caught:
        open_ledger(ledger_secret=b"\x00" * 32)
    assert caught.value.offset == second


def test_signature_due_by_count(open_ledger: OpenLedger, signer: NodeKeySigner) -> None:
    ledger = open_ledger(LedgerConfig(signature_interval_tx=10, signature_interval_ms=10_000))
    assert not ledger.signature_due()
    assert ledger.append_signature(signer) is None  # nothing to sign
    ledger.append([{"app": {str(i): i}} for i in range(9)], EntryKind.PRIVATE)
    assert ledger.unsigned_count == 9 and not ledger.signature_due()
    ledger.append([{"app": {"x": 1}}], EntryKind.PRIVATE)
    assert ledger.signature_due()
    assert ledger.append_signature(signer) == TxId(1, 11)
    assert (ledger.last_signed_index, ledger.unsigned_count) == (11, 0)
    assert not ledger.signature_due()
    assert ledger.append_signature(signer) is None


def test_signature_due_by_time(
    open_ledger: OpenLedger, signer: NodeKeySigner, clock: FakeClock
) -> None:
    ledger = open_ledger(LedgerConfig(signature_interval_tx=100, signature_interval_ms=100))
    clock.advance_ms(500)
    assert not ledger.signature_due()  # time alone does not make an empty signature due
    ledger.append([{"app": {"a": 1}}], EntryKind.PRIVATE)
    assert ledger.signature_due()
    ledger.append_signature(signer)
    ledger.append([{"app": {"b": 2}}], EntryKind.PRIVATE)
    clock.advance_ms(99)
    assert not ledger.signature_due()
    clock.advance_ms(1)
    assert ledger.signature_due()


def test_receipts_for_every_index_across_signatures_and_chunks(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity
) -> None:
    config = LedgerConfig(
        signature_interval_tx=7, signature_interval_ms=10**6, chunk_max_bytes=1500
    )
    ledger = open_ledger(config)
    fill(ledger, signer, batches=12, batch_size=5)
    ledger.append_signature(signer)
    ledger.sync_and_commit()
    assert len(ledger.chunk_paths) > 3
    signatures = [i for i in range(1, ledger.last_index + 1) if ledger.read(TxId(1, i)).signature]
    assert len(signatures) >= 5
    for index in range(1, ledger.last_index):
        receipt = json.loads(json.dumps(ledger.receipt(TxId(1, index))))  # survives JSON
        verified = verify_receipt(receipt, service.certificate)
        assert verified.txid == TxId(1, index)
        assert verified.node_id == signer.node_id
        covering = min(s for s in signatures if s > index)  # the NEXT signature covers it
        assert receipt["signature_txid"] == f"1.{covering}"
        assert receipt["tree_size"] == covering - 1
    with pytest.raises(ReceiptNotReadyError, match=rf"1\.{ledger.last_index}"):
        ledger.receipt(TxId(1, ledger.last_index))  # the last signature is not covered yet


def test_receipt_errors_name_the_txid_and_commit(
    open_ledger: OpenLedger, signer: NodeKeySigner
) -> None:
    ledger = open_ledger()
    ledger.append([{"app": {"a": 1}}, {"app": {"b": 1}}], EntryKind.PRIVATE)
    ledger.sync_and_commit()
    with pytest.raises(ReceiptNotReadyError, match=r"1\.2 is committed but no signature"):
        ledger.receipt(TxId(1, 2))
    ledger.append_signature(signer)
    ledger.append([{"app": {"c": 1}}], EntryKind.PRIVATE)  # pending, not committed
    with pytest.raises(UnknownTransactionError, match=r"1\.4 is unknown.*committed up to 1\.2"):
        ledger.receipt(TxId(1, 4))
    ledger.sync()  # durable: the signature at 3 is not committed, so 1.2 has no receipt yet
    with pytest.raises(ReceiptNotReadyError, match="last committed signature at index 0"):
        ledger.receipt(TxId(1, 2))
    ledger.advance_commit(ledger.durable_index)
    with pytest.raises(UnknownTransactionError, match=r"2\.1 is unknown: index 1 has term 1"):
        ledger.receipt(TxId(2, 1))
    with pytest.raises(UnknownTransactionError):
        ledger.receipt(TxId(1, 0))
    assert ledger.receipt(TxId(1, 2))["signature_txid"] == "1.3"


def test_terms(open_ledger: OpenLedger, signer: NodeKeySigner) -> None:
    ledger = open_ledger()
    ledger.append([{"app": {"a": 1}}], EntryKind.PRIVATE)
    ledger.term = 3
    (txid,) = ledger.append([{"app": {"a": 2}}], EntryKind.PRIVATE)
    assert txid == TxId(3, 2)
    signature = ledger.append_signature(signer)
    assert signature == TxId(3, 3)
    ledger.close()
    with pytest.raises(LedgerError, match="must be an integer >= the current term 3"):
        ledger.term = 2
    reopened = open_ledger()
    assert reopened.term == 3 and reopened.term_at(1) == 1
    reopened.advance_commit(reopened.durable_index)
    assert reopened.receipt(TxId(1, 1))["signature_txid"] == "3.3"
    assert reopened.read(TxId(3, 3)).signature is not None


def test_reopen_replays_everything_and_receipts_are_stable(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity
) -> None:
    config = LedgerConfig(signature_interval_tx=9, chunk_max_bytes=2000)
    ledger = open_ledger(config)
    txids = fill(ledger, signer, batches=10, batch_size=6)
    ledger.append_signature(signer)
    ledger.sync_and_commit()
    before = {txid: ledger.receipt(txid) for txid in txids}
    state = {txid: ledger.get("app", f"k{i // 6}-{i % 6}") for i, txid in enumerate(txids)}
    raw = ledger.raw_entries(1, ledger.last_index)
    summary = (ledger.last_txid, ledger.commit_txid, ledger.last_signed_index)
    ledger.close()

    reopened = open_ledger(config)
    assert (reopened.last_txid, reopened.last_signed_index) == (summary[0], summary[2])
    assert reopened.unsigned_count == 0 and reopened.recovered_torn_tail is None
    assert reopened.raw_entries(1, reopened.last_index) == raw
    # consensus, not the disk, says what is committed: nothing until advance_commit
    assert (reopened.durable_index, reopened.commit_index) == (reopened.last_index, 0)
    assert list(reopened.kv.tables()) == [] and reopened.get("app", "k0-0") is None
    with pytest.raises(UnknownTransactionError, match=r"committed up to 0\.0"):
        reopened.receipt(txids[0])
    assert reopened.advance_commit(txids[10].index) == txids[10].index  # part of the way
    assert reopened.get("app", "k9-0") is None and reopened.get("app", "k0-0") is not None
    assert reopened.advance_commit(reopened.durable_index) == reopened.last_index
    assert reopened.commit_txid == summary[1]
    for i, txid in enumerate(txids):
        assert reopened.get("app", f"k{i // 6}-{i % 6}") == state[txid]
        assert reopened.receipt(txid) == before[txid]
        verify_receipt(before[txid], service.certificate)
    fill(reopened, signer, batches=2, prefix="after")  # and the log continues
    assert reopened.commit_index == reopened.last_index > summary[0].index


def test_raw_entries_include_pending(open_ledger: OpenLedger) -> None:
    ledger = open_ledger()
    ledger.append([{"app": {"a": 1}}], EntryKind.PRIVATE)
    ledger.sync()
    ledger.append([{"public:g": {"b": 2}}], EntryKind.PUBLIC)
    first, second = ledger.raw_entries(1, 2)
    assert decode_entry(first).index == 1 and decode_entry(second).kind is EntryKind.PUBLIC
    with pytest.raises(LedgerError, match="outside"):
        ledger.raw_entries(1, 3)


def test_torn_tail_loses_only_the_unsynced_entry(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity, tmp_path: Path
) -> None:
    ledger = open_ledger()
    txids = fill(ledger, signer, batches=3)
    ledger.append_signature(signer)
    ledger.sync_and_commit()
    receipts = [ledger.receipt(txid) for txid in txids]
    (torn,) = ledger.append([{"app": {"torn": "never acked"}}], EntryKind.PRIVATE)
    ledger.sync()
    ledger._store.close()  # a crash while that write was in flight: no clean close
    path, offset = find_record(tmp_path / "ledger", torn.index)
    (length,) = struct.unpack_from(">I", path.read_bytes(), offset + 4)
    cut = offset + 12 + length - 4  # the crash cut the last write short (and what followed)
    with path.open("r+b") as handle:
        handle.truncate(cut)

    reopened = open_ledger()
    assert reopened.last_index == torn.index - 1
    assert reopened.recovered_torn_tail == (path, offset, cut - offset)
    assert (path.parent / f"{path.name}.torn-{offset}").stat().st_size == cut - offset
    assert reopened.advance_commit(torn.index) == torn.index - 1
    assert reopened.get("app", "torn") is None
    for txid, receipt in zip(txids, receipts, strict=True):
        assert reopened.receipt(txid) == receipt
        verify_receipt(receipt, service.certificate)


def test_forged_signature_root_is_corruption(
    open_ledger: OpenLedger, signer: NodeKeySigner, tmp_path: Path
) -> None:
    ledger = open_ledger()
    fill(ledger, signer, batches=2)
    signature = ledger.append_signature(signer)
    assert signature is not None
    fill(ledger, signer, batches=1)
    ledger.close()

    def forge(payload: bytes) -> bytes:
        entry = decode_entry(payload)
        original = SignatureBody.from_json(entry.body)
        root = bytes(32)  # a different root, validly signed by the node key
        body = SignatureBody(
            original.node_id, root, original.tree_size, signer.sign(root),
            original.node_certificate, original.term,
        )  # fmt: skip
        return signature_entry(entry.term, entry.index, body).encode()

    path, offset = find_record(tmp_path / "ledger", signature.index)
    rewrite_record(path, offset, forge)
    with pytest.raises(LedgerCorruptionError, match="signed root 0000") as caught:
        open_ledger()
    assert (caught.value.path, caught.value.offset) == (path, offset)
    assert str(signature) in caught.value.reason


def test_signature_not_made_by_its_certificate_is_corruption(
    open_ledger: OpenLedger, signer: NodeKeySigner, tmp_path: Path
) -> None:
    ledger = open_ledger()
    fill(ledger, signer, batches=1)
    signature = ledger.append_signature(signer)
    assert signature is not None
    ledger.close()
    impostor = generate_key()

    def forge(payload: bytes) -> bytes:
        entry = decode_entry(payload)
        old = SignatureBody.from_json(entry.body)
        body = SignatureBody(
            old.node_id, old.root, old.tree_size, sign(impostor, old.root),
            old.node_certificate, old.term,
        )  # fmt: skip
        return signature_entry(entry.term, entry.index, body).encode()

    path, offset = find_record(tmp_path / "ledger", signature.index)
    rewrite_record(path, offset, forge)
    with pytest.raises(LedgerCorruptionError, match="does not verify with its node_certificate"):
        open_ledger()


def test_signer_must_match_its_certificate(open_ledger: OpenLedger, signer: NodeKeySigner) -> None:
    ledger = open_ledger()
    ledger.append([{"app": {"a": 1}}], EntryKind.PRIVATE)
    mismatched = NodeKeySigner(generate_key(), signer.certificate_pem)
    with pytest.raises(LedgerError, match="is not its certificate's"):
        ledger.append_signature(mismatched)
    assert ledger.last_index == 1  # nothing was appended


def test_secret_and_config_are_checked(open_ledger: OpenLedger) -> None:
    with pytest.raises(LedgerError, match="32 bytes"):
        open_ledger(ledger_secret=b"short")
    with pytest.raises(ValueError, match="signature_interval_tx"):
        LedgerConfig(signature_interval_tx=0)
