"""The ledger as the Raft log: durable vs committed, follower append, truncation, reads."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from consortium_node.identity.certs import ServiceIdentity
from consortium_node.ledger import (
    EntryFormatError,
    EntryKind,
    Ledger,
    LedgerConfig,
    LedgerError,
    NodeKeySigner,
    ReceiptNotReadyError,
    TxId,
    UnknownTransactionError,
    verify_receipt,
)
from consortium_node.ledger.entries import (
    SignatureBody,
    decode_entry,
    public_entry,
    signature_entry,
)

from .conftest import OpenLedger
from .helpers import fill

SMALL_CHUNKS = LedgerConfig(
    signature_interval_tx=6, signature_interval_ms=10**6, chunk_max_bytes=1200
)


def build_history(ledger: Ledger, signer: NodeKeySigner) -> None:
    """Public and private entries over three terms, signed, some overwritten and deleted."""
    ledger.append([{"public:cfg": {"voters": ["n0"], "motto": "one"}}], EntryKind.PUBLIC)
    fill(ledger, signer, batches=3, batch_size=4)
    ledger.term = 2
    ledger.append([{"public:cfg": {"voters": ["n0", "n1"], "motto": None}}], EntryKind.PUBLIC)
    ledger.append([{"app": {"k0-0": "changed"}}, {"app": {"k0-1": None}}], EntryKind.PRIVATE)
    ledger.append_signature(signer)
    ledger.term = 4
    fill(ledger, signer, batches=2, batch_size=3, prefix="t4-")
    ledger.append_signature(signer)
    ledger.sync_and_commit()


def kv_state(ledger: Ledger) -> dict[str, dict[str, Any]]:
    return {
        table: {key: ledger.get(table, key) for key in ledger.kv.keys(table)}
        for table in ledger.kv.tables()
    }


def public_state(ledger: Ledger, tables: tuple[str, ...] = ("public:cfg",)) -> dict[str, Any]:
    return {t: {k: ledger.public_get(t, k) for k in ledger.public_keys(t)} for t in tables}


def root(ledger: Ledger) -> bytes:
    return ledger._log.tree.root()


# -- durable vs committed -------------------------------------------------------------------


def test_sync_makes_durable_and_advance_commit_commits(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity
) -> None:
    ledger = open_ledger()
    txids = ledger.append([{"app": {"a": 1}}, {"app": {"b": 2}}], EntryKind.PRIVATE)
    signature = ledger.append_signature(signer)
    assert signature == TxId(1, 3)
    assert ledger.sync() == 3 == ledger.durable_index
    assert ledger.commit_index == 0 and ledger.get("app", "a") is None
    assert list(ledger.kv.tables()) == []
    with pytest.raises(UnknownTransactionError, match=r"committed up to 0\.0"):
        ledger.receipt(txids[0])
    assert ledger.advance_commit(1) == 1
    assert ledger.get("app", "a") == (1, txids[0]) and ledger.get("app", "b") is None
    with pytest.raises(ReceiptNotReadyError):  # the covering signature is not committed yet
        ledger.receipt(txids[0])
    assert ledger.advance_commit(0) == 1  # never backwards
    ledger.append([{"app": {"c": 3}}], EntryKind.PRIVATE)  # pending: not even durable
    assert ledger.advance_commit(100) == 3  # capped at the durable index
    assert ledger.get("app", "c") is None
    verify_receipt(ledger.receipt(txids[1]), service.certificate)
    with pytest.raises(LedgerError, match="non-negative"):
        ledger.advance_commit(-1)
    assert ledger.sync_and_commit() == 4 and ledger.get("app", "c") is not None


def test_close_syncs_but_does_not_commit(open_ledger: OpenLedger) -> None:
    ledger = open_ledger()
    ledger.append([{"app": {"a": 1}}], EntryKind.PRIVATE)
    ledger.close()
    assert (ledger.durable_index, ledger.commit_index) == (1, 0)
    reopened = open_ledger()
    assert (reopened.last_index, reopened.durable_index, reopened.commit_index) == (1, 1, 0)


def test_open_commits_nothing_and_commit_restores_everything(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity
) -> None:
    ledger = open_ledger(SMALL_CHUNKS)
    build_history(ledger, signer)
    assert len(ledger.chunk_paths) > 2
    committed = [TxId(ledger.term_at(i), i) for i in range(1, ledger.commit_index + 1)]
    receipts = {}
    for txid in committed:
        try:
            receipts[txid] = ledger.receipt(txid)
        except ReceiptNotReadyError:
            assert txid.index == ledger.last_signed_index
    state, public, tree_root = kv_state(ledger), public_state(ledger), root(ledger)
    views = {txid: ledger.read(txid) for txid in committed}
    ledger.close()

    reopened = open_ledger(SMALL_CHUNKS)
    assert (reopened.last_index, reopened.durable_index) == (len(committed), len(committed))
    assert reopened.commit_index == 0 and kv_state(reopened) == {}
    assert reopened.last_signed_index == len(committed) and reopened.term == 4
    assert public_state(reopened) == public and root(reopened) == tree_root  # speculative
    assert reopened._log._recent == []  # replayed write sets are not kept in memory
    with pytest.raises(UnknownTransactionError):
        reopened.read(committed[0])
    assert reopened.advance_commit(reopened.durable_index) == len(committed)
    assert reopened._log._recent == []
    assert kv_state(reopened) == state
    assert {txid: reopened.read(txid) for txid in committed} == views
    for txid, receipt in receipts.items():
        assert reopened.receipt(txid) == receipt
    verify_receipt(receipts[committed[3]], service.certificate)


# -- follower append ------------------------------------------------------------------------


def test_follower_append_in_batches_matches_the_leader(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity, tmp_path: Path
) -> None:
    leader = open_ledger(SMALL_CHUNKS)
    build_history(leader, signer)
    leader.append([{"public:cfg": {"pending": True}}], EntryKind.PUBLIC)  # not yet durable
    follower = open_ledger(SMALL_CHUNKS, directory=tmp_path / "follower")
    start = 1
    while start <= leader.last_index:
        batch = leader.entries_from(start, 7, 10**6)
        assert follower.append_entries(batch) == start + len(batch) - 1
        assert root(follower) == leader._log.tree.root(follower.last_index)
        start += len(batch)
    assert follower.append_entries([]) == leader.last_index
    assert follower.last_txid == leader.last_txid and follower.term == 4
    assert follower.last_signed_index == leader.last_signed_index
    assert root(follower) == root(leader)
    assert public_state(follower) == public_state(leader)
    assert follower.public_get("public:cfg", "pending") == (True, leader.last_txid)
    assert follower.public_get("public:cfg", "motto") is None  # deleted at term 2
    assert (follower.durable_index, follower.commit_index) == (0, 0)
    assert follower.raw_entries(1, follower.last_index) == leader.raw_entries(1, leader.last_index)

    follower.sync()
    follower.advance_commit(leader.commit_index)
    assert kv_state(follower) == kv_state(leader)
    for index in range(1, leader.commit_index):
        txid = TxId(leader.term_at(index), index)
        receipt = follower.receipt(txid)
        assert receipt == leader.receipt(txid)
        assert verify_receipt(receipt, service.certificate).txid == txid
    follower.close()
    reopened = open_ledger(SMALL_CHUNKS, directory=tmp_path / "follower")
    assert root(reopened) == root(leader) and reopened.last_txid == leader.last_txid


def _forge_root(payload: bytes, signer: NodeKeySigner) -> bytes:
    entry = decode_entry(payload)
    old = SignatureBody.from_json(entry.body)
    root = bytes(32)  # a different root, validly signed by the node key
    body = SignatureBody(
        old.node_id, root, old.tree_size, signer.sign(root), old.node_certificate, old.term
    )
    return signature_entry(entry.term, entry.index, body).encode()


BadBatch = Callable[[list[bytes], NodeKeySigner], list[bytes]]
BAD_BATCHES: list[tuple[str, BadBatch, str]] = [
    ("gap", lambda p, s: p[:3] + p[4:], r"expected index 5\).*index 6 does not follow 4"),
    (
        "lower-term",
        lambda p, s: [*p[:3], public_entry(1, 5, {"public:x": {"a": 1}}).encode()],
        r"entry 1\.5 .*term 1 is lower than the previous entry's term 2",
    ),
    ("forged-root", lambda p, s: [*p[:5], _forge_root(p[5], s)], "signed root 0000"),
    ("garbage", lambda p, s: [*p[:2], b"\x86\x01garbage"], r"entry \? .*not CBOR"),
    (
        "not-canonical",  # the term as a one-byte extended integer: same entry, other bytes
        lambda p, s: [*p[:2], p[2][:2] + b"\x18" + p[2][2:]],
        "not the canonical CBOR",
    ),
]


@pytest.mark.parametrize(("name", "bad", "reason"), BAD_BATCHES, ids=[b[0] for b in BAD_BATCHES])
def test_append_entries_is_all_or_nothing(
    open_ledger: OpenLedger,
    signer: NodeKeySigner,
    tmp_path: Path,
    name: str,
    bad: BadBatch,
    reason: str,
) -> None:
    leader = open_ledger()
    leader.append([{"public:cfg": {"v": 1}}], EntryKind.PUBLIC)
    leader.term = 2
    leader.append([{"public:cfg": {"v": i}} for i in range(2, 5)], EntryKind.PUBLIC)
    leader.append_signature(signer)  # index 5
    leader.append([{"public:cfg": {"v": 6}}], EntryKind.PUBLIC)
    leader.append_signature(signer)  # index 7
    payloads = leader.raw_entries(1, 7)
    follower = open_ledger(directory=tmp_path / "follower")
    follower.append_entries(payloads[:1])
    before = (follower.last_txid, root(follower), public_state(follower), follower.term)

    with pytest.raises(EntryFormatError, match=reason) as caught:
        follower.append_entries(bad(payloads[1:], signer))
    assert "nothing appended" in str(caught.value)
    assert (follower.last_txid, root(follower), public_state(follower), follower.term) == before
    assert follower.last_signed_index == 0
    assert follower.append_entries(payloads[1:]) == 7  # the genuine batch still fits
    assert root(follower) == root(leader) and follower.last_signed_index == 7


def test_append_entries_needs_the_ledger_secret(open_ledger: OpenLedger, tmp_path: Path) -> None:
    leader = open_ledger()
    leader.append([{"app": {"a": 1}}], EntryKind.PRIVATE)
    follower = open_ledger(directory=tmp_path / "other", ledger_secret=os.urandom(32))
    with pytest.raises(EntryFormatError, match=r"entry 1\.1 .*does not decrypt"):
        follower.append_entries(leader.raw_entries(1, 1))
    assert follower.last_index == 0


# -- truncation -----------------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["mid-chunk", "chunk-start"])
def test_truncate_an_uncommitted_suffix_across_chunks(
    open_ledger: OpenLedger,
    signer: NodeKeySigner,
    service: ServiceIdentity,
    tmp_path: Path,
    cut: str,
) -> None:
    ledger = open_ledger(SMALL_CHUNKS)
    build_history(ledger, signer)
    committed = ledger.commit_index
    chunks_before = len(ledger.chunk_paths)
    voters_before = ledger.public_get("public:cfg", "voters")
    assert voters_before is not None and voters_before[0] == ["n0", "n1"]
    ledger.append([{"public:cfg": {"voters": ["n0", "n1", "n9"], "doomed": 1}}], EntryKind.PUBLIC)
    fill_index = ledger.last_index
    ledger.append([{"app": {f"doomed-{i}": "x" * 60}} for i in range(20)], EntryKind.PRIVATE)
    ledger.append_signature(signer)
    ledger.sync()
    ledger.append([{"app": {"pending-doomed": 1}}], EntryKind.PRIVATE)  # not durable
    chunk_firsts = [int(path.name[7:27]) for path in ledger.chunk_paths]
    assert len(chunk_firsts) >= chunks_before + 2
    later = [first for first in chunk_firsts if first > fill_index]
    last_kept = later[0] + 2 if cut == "mid-chunk" else later[0] - 1
    assert committed < fill_index <= last_kept < later[1]
    assert ledger.public_get("public:cfg", "voters") == (
        ["n0", "n1", "n9"],
        TxId(4, fill_index),
    )

    ledger.truncate(last_kept)
    assert ledger.last_index == ledger.durable_index == last_kept
    assert ledger.commit_index == committed and ledger.term == 4
    assert ledger.last_signed_index == committed  # the doomed signature is gone
    assert all(int(p.name[7:27]) <= last_kept for p in tmp_path.glob("ledger/ledger_*.chunk"))
    assert ledger.public_get("public:cfg", "voters") == (["n0", "n1", "n9"], TxId(4, fill_index))
    ledger.truncate(fill_index - 1)  # and the public write in the suffix disappears too
    assert ledger.public_get("public:cfg", "voters") == voters_before
    assert ledger.public_get("public:cfg", "doomed") is None
    assert "doomed" not in ledger.public_keys("public:cfg")
    assert ledger.unsigned_count == fill_index - 1 - committed

    ledger.term = 5
    new = ledger.append([{"app": {"new": i}} for i in range(5)], EntryKind.PRIVATE)
    ledger.append([{"public:cfg": {"voters": ["n2"]}}], EntryKind.PUBLIC)
    ledger.append_signature(signer)
    ledger.sync_and_commit()
    assert ledger.get("app", "doomed-0") is None and ledger.get("app", "new") == (4, new[-1])
    history = ledger.raw_entries(1, ledger.last_index)
    ledger.close()

    reopened = open_ledger(SMALL_CHUNKS)
    assert reopened.raw_entries(1, reopened.last_index) == history
    fresh = open_ledger(SMALL_CHUNKS, directory=tmp_path / "fresh")
    fresh.append_entries(history)
    assert root(reopened) == root(fresh)
    assert public_state(reopened) == public_state(fresh)
    assert reopened.public_get("public:cfg", "voters") == (["n2"], TxId(5, new[-1].index + 1))
    reopened.advance_commit(reopened.durable_index)
    assert verify_receipt(reopened.receipt(new[0]), service.certificate).txid == new[0]


def test_truncate_below_commit_is_refused(open_ledger: OpenLedger, signer: NodeKeySigner) -> None:
    ledger = open_ledger()
    fill(ledger, signer, batches=2, batch_size=3)
    ledger.append([{"public:cfg": {"v": 1}}], EntryKind.PUBLIC)
    ledger.sync()
    before = (
        ledger.last_txid, ledger.durable_index, ledger.commit_index, root(ledger),
        public_state(ledger), ledger.raw_entries(1, ledger.last_index), ledger.chunk_paths,
    )  # fmt: skip
    with pytest.raises(LedgerError, match=rf"committed up to 1\.{ledger.commit_index}"):
        ledger.truncate(ledger.commit_index - 1)
    with pytest.raises(LedgerError, match="non-negative"):
        ledger.truncate(-1)
    ledger.truncate(ledger.last_index)  # nothing after it: a no-op
    ledger.truncate(ledger.last_index + 5)
    after = (
        ledger.last_txid, ledger.durable_index, ledger.commit_index, root(ledger),
        public_state(ledger), ledger.raw_entries(1, ledger.last_index), ledger.chunk_paths,
    )  # fmt: skip
    assert after == before
    ledger.truncate(ledger.commit_index)  # exactly the committed prefix is allowed
    assert ledger.last_index == ledger.durable_index == ledger.commit_index


def test_truncate_replayed_entries_then_follow_a_new_leader(
    open_ledger: OpenLedger, signer: NodeKeySigner, tmp_path: Path
) -> None:
    source = open_ledger(SMALL_CHUNKS, directory=tmp_path / "source")
    build_history(source, signer)
    old = open_ledger(SMALL_CHUNKS)
    old.append_entries(source.raw_entries(1, source.last_index))
    old.sync()
    old.advance_commit(10)  # this follower knew 10 committed, the rest only durable
    old.close()
    replica = open_ledger(SMALL_CHUNKS)  # nothing committed after a restart, 10 known
    assert (replica.commit_index, replica.known_commit.index) == (0, 10)
    with pytest.raises(LedgerError, match="index 10 is known committed"):
        replica.truncate(9)
    replica.advance_commit(10)
    replica.truncate(12)  # entries 13.. were replayed, never held in memory
    new_leader = open_ledger(SMALL_CHUNKS, directory=tmp_path / "leader")
    new_leader.append_entries(replica.raw_entries(1, 12))
    new_leader.term = 7
    new_leader.append([{"public:cfg": {"voters": ["n7"]}}], EntryKind.PUBLIC)
    new_leader.append_signature(signer)
    replica.append_entries(new_leader.entries_from(13, 100, 10**6))
    assert replica.term == 7 and root(replica) == root(new_leader)
    replica.sync()
    assert replica.advance_commit(replica.durable_index) == 14
    assert replica.get("public:cfg", "voters") == (["n7"], TxId(7, 13))


# -- replication reads ----------------------------------------------------------------------


def test_entries_from_respects_count_and_bytes(open_ledger: OpenLedger) -> None:
    ledger = open_ledger()
    ledger.append([{"public:t": {"k": "x" * (10 * i)}} for i in range(1, 7)], EntryKind.PUBLIC)
    ledger.sync()
    ledger.append([{"public:t": {"k": "y"}}], EntryKind.PUBLIC)  # pending
    everything = ledger.raw_entries(1, 7)
    sizes = [len(payload) for payload in everything]
    assert ledger.entries_from(1, 100, 10**6) == everything
    assert ledger.entries_from(2, 3, 10**6) == everything[1:4]
    assert ledger.entries_from(1, 100, sizes[0] + sizes[1]) == everything[:2]
    assert ledger.entries_from(1, 100, sizes[0] + sizes[1] - 1) == everything[:1]
    assert ledger.entries_from(3, 100, 1) == [everything[2]]  # at least one entry
    assert ledger.entries_from(7, 5, 0) == [everything[6]]
    assert ledger.entries_from(8, 5, 10**6) == []
    assert ledger.term_at(0) == 0 and ledger.term_at(7) == 1
    with pytest.raises(LedgerError, match="start"):
        ledger.entries_from(0, 5, 100)
    with pytest.raises(LedgerError, match="max_count"):
        ledger.entries_from(1, 0, 100)
    with pytest.raises(UnknownTransactionError):
        ledger.term_at(8)


def test_public_view_is_speculative_and_private_tables_are_not_in_it(
    open_ledger: OpenLedger,
) -> None:
    ledger = open_ledger()
    (first,) = ledger.append([{"public:cfg": {"a": 1, "b": 2}}], EntryKind.PUBLIC)
    ledger.append([{"app": {"secret": 1}}], EntryKind.PRIVATE)
    (second,) = ledger.append([{"public:cfg": {"a": None, "c": 3}}], EntryKind.PUBLIC)
    assert ledger.public_get("public:cfg", "b") == (2, first)  # visible before sync
    assert ledger.public_get("public:cfg", "a") is None
    assert ledger.public_keys("public:cfg") == ["b", "c"]
    assert ledger.public_keys("public:none") == [] and ledger.public_keys("app") == []
    assert ledger.public_get("app", "secret") is None
    assert ledger.get("public:cfg", "b") is None  # not committed
    ledger.sync_and_commit()
    assert ledger.get("public:cfg", "c") == ledger.public_get("public:cfg", "c") == (3, second)


def test_public_position_names_the_public_view_state(open_ledger: OpenLedger) -> None:
    ledger = open_ledger()
    assert ledger.public_position is None
    (first,) = ledger.append([{"public:t": {"k": 1}}], EntryKind.PUBLIC)
    assert ledger.public_position == first
    ledger.append([{"app": {"a": 1}}], EntryKind.PRIVATE)
    assert ledger.public_position == first, "private entries do not change the public view"
    (second,) = ledger.append([{"public:t": {"k": 2}}], EntryKind.PUBLIC)
    assert ledger.public_position == second
    ledger.truncate(second.index - 1)
    assert ledger.public_position == first
    ledger.term = 2
    (rewritten,) = ledger.append([{"public:t": {"k": 3}}], EntryKind.PUBLIC)
    assert rewritten.index == second.index and rewritten != second
    assert ledger.public_position == rewritten
    assert ledger.public_get("public:t", "k") == (3, rewritten)


def test_committed_public_entries_are_settled_and_truncation_still_rolls_back(
    open_ledger: OpenLedger,
) -> None:
    ledger = open_ledger()
    for n in range(50):
        ledger.append(
            [{"public:t": {f"k{n % 5}": n, "gone": None if n % 2 else n}}], EntryKind.PUBLIC
        )
    ledger.sync_and_commit()
    assert ledger._log.public._entries == []  # committed: folded into the base, not kept
    settled = ledger.public_position
    (pending,) = ledger.append([{"public:t": {"k1": "new", "gone": "back"}}], EntryKind.PUBLIC)
    assert ledger.public_get("public:t", "k1") == ("new", pending)
    ledger.truncate(pending.index - 1)
    assert ledger.public_position == settled
    assert ledger.public_get("public:t", "k1") == (46, TxId(1, 47))
    assert ledger.public_get("public:t", "gone") is None  # deleted by the last settled one
    assert ledger.public_keys("public:t") == list(ledger.kv.keys("public:t"))
