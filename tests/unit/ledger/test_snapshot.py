"""Snapshots: taken at the same signature points on every node, byte-identical, committed by
their evidence receipt, and refused with a named reason when anything does not match."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from consortium_node.identity.certs import ServiceIdentity
from consortium_node.ledger import EntryKind, Ledger, LedgerConfig, NodeKeySigner, TxId
from consortium_node.ledger.entries import decode_entry
from consortium_node.ledger.errors import (
    HistoryNotHeldError,
    LedgerCorruptionError,
    StoredEntryDamagedError,
)
from consortium_node.ledger.kv import KVStore
from consortium_node.ledger.receipt import verify_receipt
from consortium_node.ledger.secrets import PartsCipher
from consortium_node.ledger.snapshot import (
    MAGIC,
    T_SNAPSHOTS,
    SnapshotError,
    SnapshotState,
    check_state,
    decode_snapshot,
    encode_snapshot,
    evidence_write_set,
    verify_snapshot,
)
from consortium_node.ledger.snapshot_rows import PartialCaptureError, RowEncodings, _piece
from tests.unit.ledger.conftest import OpenLedger
from tests.unit.ledger.helpers import fill, find_record, rewrite_record

CONFIG = LedgerConfig(signature_interval_tx=10, signature_interval_ms=10**6, snapshot_interval=25)


def write_captures(ledger: Ledger) -> list[tuple[TxId, bytes, int]]:
    """Encode and write what the ledger captured; ``(txid, sha256, size)`` of each."""
    out = []
    for capture in ledger.snapshot_captures():
        data = encode_snapshot(capture.state, capture.cipher)
        digest, size = ledger.snapshots.write(capture.state.index, data)
        assert digest == hashlib.sha256(data).digest()
        out.append((capture.state.txid, digest, size))
    return out


def record_evidence(ledger: Ledger, signer: NodeKeySigner, taken: list[tuple[TxId, bytes, int]]):
    for txid, digest, size in taken:
        ledger.append([evidence_write_set(txid, digest, size)], EntryKind.PUBLIC)
    ledger.append_signature(signer)
    ledger.sync_and_commit()


def state_at(ledger: Ledger, index: int) -> KVStore:
    """The committed KV state after ``index``, rebuilt from the ledger's own reads."""
    kv = KVStore()
    for i in range(1, index + 1):
        view = ledger.read(TxId(ledger.term_at(i), i))
        if view.kind is not EntryKind.SIGNATURE:
            kv.apply(view.writes, view.txid)
    return kv


def build(open_ledger: OpenLedger, signer: NodeKeySigner, **kwargs: Any) -> Ledger:
    ledger = open_ledger(kwargs.pop("config", CONFIG), **kwargs)
    ledger.append([{"public:consortium.info": {"name": {"v": 1}}}], EntryKind.PUBLIC)
    fill(ledger, signer, batches=8, batch_size=7)
    ledger.append_signature(signer)
    ledger.sync_and_commit()
    return ledger


def test_snapshots_are_taken_at_the_first_signature_after_each_interval(
    open_ledger: OpenLedger, signer: NodeKeySigner
) -> None:
    ledger = build(open_ledger, signer)
    signatures = [
        i
        for i in range(1, ledger.commit_index + 1)
        if ledger.read(TxId(ledger.term_at(i), i)).kind is EntryKind.SIGNATURE
    ]
    expected, point = [], 0
    for index in signatures:
        if index >= point + 25:
            expected.append(index)
            point = index
    taken = write_captures(ledger)
    assert [txid.index for txid, _, _ in taken] == expected and len(expected) >= 2
    assert ledger.snapshot_captures() == []  # handed out once
    for txid, _, _ in taken:
        capture_kv = state_at(ledger, txid.index)
        data = ledger.snapshots.get(txid.index)
        assert data is not None
        state = _decode(data.path.read_bytes(), ledger)
        assert KVStore.from_tables(state.public, state.private or {}).copy_tables() == (
            capture_kv.copy_tables()
        )
        assert state.txid == txid


def _points_of(ledger: Ledger, interval: int, percent: int) -> list[int]:
    """The points ``SnapshotPoints`` documents, reckoned again from the committed log alone:
    signatures ``interval`` entries apart after which the rows written since the previous
    point reach ``percent`` % of the rows the state held there."""
    kv, written, point, at, out = KVStore(), 0, 0, (0, 0), []
    for i in range(1, ledger.commit_index + 1):
        view = ledger.read(TxId(ledger.term_at(i), i))
        if view.kind is not EntryKind.SIGNATURE:
            kv.apply(view.writes, view.txid)
            written += sum(len(rows) for rows in view.writes.values())
        elif i >= point + interval and (written - at[0]) * 100 >= percent * at[1]:
            point, at = i, (written, kv.rows())
            out.append(i)
    return out


@pytest.mark.parametrize("from_snapshot", [False, True], ids=["replayed", "from-snapshot"])
def test_a_ledger_takes_its_points_by_interval_and_rows_written_across_a_restart(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity, from_snapshot: bool
) -> None:
    """Every transaction writes a new key, so the state grows: a point needs 25 entries and
    writes of half the rows the previous one held. A restart (replaying the log, or starting
    from its newest committed snapshot) counts again from where it starts and takes the same
    points after its newest file."""
    config = dataclasses.replace(CONFIG, snapshot_writes_percent=50)
    ledger = open_ledger(config)
    fill(ledger, signer, batches=60, batch_size=7)
    ledger.append_signature(signer)
    ledger.sync_and_commit()
    written = write_captures(ledger)
    taken = [txid.index for txid, _, _ in written]
    assert taken == _points_of(ledger, 25, 50)
    assert len(taken) >= 4 and len(_points_of(ledger, 25, 0)) >= 2 * len(taken)
    if from_snapshot:
        record_evidence(ledger, signer, written)
        for r in ledger.snapshot_receipts():
            assert ledger.snapshots.commit(r.index, r.digest, r.receipt)
    ledger.close()
    reopened = open_ledger(config, service_certificate=service.certificate)
    assert reopened.commit_index == (taken[-1] if from_snapshot else 0)
    reopened.advance_commit(reopened.durable_index)
    assert reopened.snapshot_captures() == []  # nothing up to its newest file again
    fill(reopened, signer, batches=30, batch_size=7, prefix="after-")
    reopened.append_signature(signer)
    reopened.sync_and_commit()
    later = [c.state.index for c in reopened.snapshot_captures()]
    assert later and later == [i for i in _points_of(reopened, 25, 50) if i > taken[-1]]


def _decode(data: bytes, ledger: Ledger) -> SnapshotState:
    return decode_snapshot(data, ledger.secrets.aead)


def test_two_nodes_write_the_same_bytes_and_the_evidence_commits_them(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity, tmp_path: Path
) -> None:
    a = build(open_ledger, signer)
    b = build(open_ledger, signer, directory=tmp_path / "other")
    taken_a, taken_b = write_captures(a), write_captures(b)
    assert [(t, d) for t, d, _ in taken_a] != []
    # Same log content except salts and nonces of private entries: the public parts agree
    # and each node's snapshot is deterministic given its own state (re-encoding is equal).
    for capture_txid, digest, _ in taken_a:
        stored = a.snapshots.get(capture_txid.index)
        assert stored is not None
        state = _decode(stored.path.read_bytes(), a)
        again = encode_snapshot(state, a.secrets.parts_cipher(state.secret_version))
        assert hashlib.sha256(again).digest() == digest
    assert [t for t, _, _ in taken_a] == [t for t, _, _ in taken_b]

    record_evidence(a, signer, taken_a)
    receipts = a.snapshot_receipts()
    assert [r.index for r in receipts] == [t.index for t, _, _ in taken_a]
    for r in receipts:
        assert a.snapshots.commit(r.index, r.digest, r.receipt)
    newest = a.snapshots.newest_committed()
    assert newest is not None and newest.index == taken_a[-1][0].index
    state, verified = verify_snapshot(
        newest.path.read_bytes(), newest.receipt(), service.certificate, a.secrets.aead
    )
    assert state.index == newest.index and verified.txid.index > newest.index
    assert a.public_get(T_SNAPSHOTS, str(newest.index)) is not None

    # b's bytes differ (its private entries have other salts): b's evidence for a's digest
    # finds a mismatch and sets b's file aside instead of committing it.
    index, digest = receipts[-1].index, receipts[-1].digest
    assert not b.snapshots.commit(index, digest, receipts[-1].receipt)
    assert b.snapshots.get(index) is None
    assert (b.snapshots.directory / f"snapshot_{index:020d}.mismatch").exists()


@pytest.fixture
def committed(
    open_ledger: OpenLedger, signer: NodeKeySigner
) -> tuple[Ledger, bytes, dict[str, Any]]:
    ledger = build(open_ledger, signer)
    taken = write_captures(ledger)
    record_evidence(ledger, signer, taken)
    for r in ledger.snapshot_receipts():
        ledger.snapshots.commit(r.index, r.digest, r.receipt)
    newest = ledger.snapshots.newest_committed()
    assert newest is not None
    return ledger, newest.path.read_bytes(), newest.receipt()


def _reencode(data: bytes, edit: Any) -> bytes:
    body = cbor2.loads(data[4:])
    edit(body)
    return MAGIC + cbor2.dumps(body, canonical=True)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "digest"),
        (lambda d: d + b"\0", "digest"),
        (lambda d: b"XXXX" + d[4:], "format"),
        (lambda d: _reencode(d, lambda b: b[5].update({"public:x": {"k": [1, 1, 1]}})), "digest"),
        (lambda d: _reencode(d, lambda b: b[4].__setitem__(0, b"\1" * 32)), "digest"),
    ],
)
def test_a_tampered_snapshot_is_refused_with_a_named_reason(
    committed: tuple[Ledger, bytes, dict[str, Any]],
    service: ServiceIdentity,
    tamper: Any,
    reason: str,
) -> None:
    ledger, data, receipt = committed
    with pytest.raises(SnapshotError) as caught:
        verify_snapshot(tamper(data), receipt, service.certificate, ledger.secrets.aead)
    assert caught.value.reason == reason


def test_a_snapshot_whose_frontier_the_signature_does_not_sign_is_refused(
    committed: tuple[Ledger, bytes, dict[str, Any]], service: ServiceIdentity
) -> None:
    """Even with matching evidence (a forged receipt is refused separately), the snapshot's
    own signature entry must sign its frontier's root."""
    ledger, data, _ = committed
    state = decode_snapshot(data, ledger.secrets.aead)
    forged = dataclasses.replace(state, frontier=[b"\2" * 32, *state.frontier[1:]])
    with pytest.raises(SnapshotError) as caught:
        check_state(forged, service.certificate)
    assert caught.value.reason == "signature"
    other = ServiceIdentity.create("another service")
    with pytest.raises(SnapshotError) as caught:
        check_state(state, other.certificate)
    assert caught.value.reason == "signature"


def test_private_tables_open_only_with_their_secret(
    committed: tuple[Ledger, bytes, dict[str, Any]],
) -> None:
    _, data, _ = committed
    with pytest.raises(SnapshotError) as caught:
        decode_snapshot(data, lambda version: AESGCM(os.urandom(32)))
    assert caught.value.reason == "private"
    assert b"batch" not in data  # private values are not in clear


def test_a_receipt_from_another_service_or_another_entry_is_refused(
    committed: tuple[Ledger, bytes, dict[str, Any]], service: ServiceIdentity
) -> None:
    ledger, data, receipt = committed
    other = ServiceIdentity.create("another service")
    with pytest.raises(SnapshotError) as caught:
        verify_snapshot(data, receipt, other.certificate, ledger.secrets.aead)
    assert caught.value.reason == "receipt"
    not_evidence = ledger.receipt(TxId(ledger.term_at(2), 2))
    with pytest.raises(SnapshotError) as caught:
        verify_snapshot(data, not_evidence, service.certificate, ledger.secrets.aead)
    assert caught.value.reason == "digest"


def test_old_snapshots_are_pruned_and_restarts_do_not_retake_them(
    open_ledger: OpenLedger, signer: NodeKeySigner, tmp_path: Path
) -> None:
    ledger = open_ledger(
        LedgerConfig(signature_interval_tx=5, signature_interval_ms=10**6, snapshot_interval=10)
    )
    for round_ in range(4):
        fill(ledger, signer, batches=3, batch_size=5, prefix=f"r{round_}-")
        ledger.append_signature(signer)
        ledger.sync_and_commit()
        record_evidence(ledger, signer, write_captures(ledger))
        for r in ledger.snapshot_receipts():
            assert ledger.snapshots.commit(r.index, r.digest, r.receipt)
    committed = [s.index for s in ledger.snapshots.list() if s.committed]
    assert len(committed) == 2  # KEEP_COMMITTED
    assert all(s.index >= committed[0] for s in ledger.snapshots.list())
    ledger.close()
    reopened = open_ledger(
        LedgerConfig(signature_interval_tx=5, signature_interval_ms=10**6, snapshot_interval=10)
    )
    reopened.advance_commit(reopened.durable_index)
    assert reopened.snapshot_captures() == []  # points up to the newest file are not retaken
    fill(reopened, signer, batches=3, batch_size=5, prefix="after-")
    reopened.append_signature(signer)
    reopened.sync_and_commit()
    assert [c.state.index > committed[-1] for c in reopened.snapshot_captures()] == [True]


# -- opening from snapshots -------------------------------------------------------------------


def _committed_ledger(open_ledger: OpenLedger, signer: NodeKeySigner, **kwargs: Any) -> Ledger:
    ledger = build(open_ledger, signer, **kwargs)
    record_evidence(ledger, signer, write_captures(ledger))
    for r in ledger.snapshot_receipts():
        assert ledger.snapshots.commit(r.index, r.digest, r.receipt)
    fill(ledger, signer, batches=2, batch_size=5, prefix="after-")
    ledger.append_signature(signer)
    ledger.sync_and_commit()
    return ledger


def _reopen(open_ledger: OpenLedger, service: ServiceIdentity, **kwargs: Any) -> Ledger:
    return open_ledger(CONFIG, service_certificate=service.certificate, **kwargs)


def test_a_restart_takes_the_committed_state_from_its_newest_snapshot(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity
) -> None:
    ledger = _committed_ledger(open_ledger, signer)
    newest = ledger.snapshots.newest_committed()
    assert newest is not None
    everything = ledger.kv.copy_tables()
    last, old, new = ledger.last_index, TxId(1, 3), ledger.last_txid
    ledger.close()

    again = _reopen(open_ledger, service)
    assert again.commit_index == newest.index  # committed at once: from the snapshot
    assert again.last_index == last
    assert again.get("public:consortium.info", "name") is not None
    again.advance_commit(again.durable_index)
    assert again.kv.copy_tables() == everything
    # Receipts before and after the snapshot still verify (the log holds the whole tree).
    for txid in (old, TxId(again.term_at(newest.index + 1), newest.index + 1)):
        verify_receipt(again.receipt(txid), service.certificate)
    assert again.read(new).txid == new
    plain = open_ledger(CONFIG, directory=again._store.directory)  # without the certificate
    assert plain.commit_index == 0  # snapshots unused: the old replay from index 1


def _flip_body(payload: bytes) -> bytes:
    entry = decode_entry(payload)
    body = entry.body[:-1] + bytes([entry.body[-1] ^ 1])
    return entry._replace(body=body).encode()


def test_a_chunk_edited_below_the_snapshot_is_found_when_read_and_then_checked_whole(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity
) -> None:
    ledger = _committed_ledger(open_ledger, signer)
    directory = ledger._store.directory
    ledger.close()
    rewrite_record(*find_record(directory, 5), _flip_body)

    # The restart resumes from the tree store: it reads none of the entries below the snapshot.
    again = _reopen(open_ledger, service)
    assert again._log.resumed == again.snapshots.newest_committed().index  # type: ignore[union-attr]
    reported: list[StoredEntryDamagedError] = []
    again.on_read_damage(reported.append)
    verify_receipt(again.receipt(TxId(1, 4)), service.certificate)  # its neighbour is intact
    with pytest.raises(StoredEntryDamagedError) as caught:
        again.read(TxId(1, 5))
    assert caught.value.index == 5 and reported == [caught.value]
    with pytest.raises(StoredEntryDamagedError):
        again.receipt(TxId(1, 5))
    again.close()
    assert (directory / "check-all").exists()

    # The read left ``check-all``: the next open replays every entry and names the edited one.
    with pytest.raises(LedgerCorruptionError) as refused:
        _reopen(open_ledger, service)
    assert "entry 1.5" in str(refused.value)


def test_a_chunk_edited_below_the_snapshot_is_not_skimmed_over(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity
) -> None:
    ledger = _committed_ledger(open_ledger, signer)
    directory = ledger._store.directory
    ledger.close()
    shutil.rmtree(directory / "tree")  # no tree store: the tree is rebuilt from every entry
    rewrite_record(*find_record(directory, 5), _flip_body)
    with pytest.raises(LedgerCorruptionError) as caught:
        _reopen(open_ledger, service)
    assert "entry 1.5" in str(caught.value)  # the full replay names the edited entry


def test_a_node_with_an_empty_volume_starts_from_a_snapshot_and_follows_the_leader(
    open_ledger: OpenLedger,
    signer: NodeKeySigner,
    service: ServiceIdentity,
    tmp_path: Path,
    secret: bytes,
) -> None:
    leader = _committed_ledger(open_ledger, signer)
    newest = leader.snapshots.newest_committed()
    assert newest is not None
    s = newest.index
    follower_dir = tmp_path / "follower"
    snapshots = follower_dir / "snapshots"
    snapshots.mkdir(parents=True)
    for source in (newest.path, newest.receipt_path):
        (snapshots / source.name).write_bytes(source.read_bytes())

    follower = _reopen(open_ledger, service, directory=follower_dir)
    assert (follower.last_index, follower.commit_index) == (s, s)
    assert follower.term_at(s) == leader.term_at(s)
    follower.append_entries(leader.raw_entries(s + 1, leader.last_index))
    follower.sync()
    follower.advance_commit(leader.commit_index)
    assert follower.kv.copy_tables() == leader.kv.copy_tables()
    after = TxId(leader.term_at(s + 1), s + 1)
    assert follower.receipt(after)["root"] == leader.receipt(after)["root"]
    verify_receipt(follower.receipt(after), service.certificate)
    with pytest.raises(HistoryNotHeldError) as caught:
        follower.receipt(TxId(1, 3))
    assert caught.value.held_from == s + 1
    with pytest.raises(HistoryNotHeldError):
        follower.raw_entries(s - 1, s + 1)
    last = follower.last_index
    follower.close()

    # Restarted: its chunks start after the snapshot, which is used again (and kept).
    again = _reopen(open_ledger, service, directory=follower_dir)
    assert again.last_index == last and again.commit_index >= s
    again.close()
    newest_copy = snapshots / newest.path.name
    newest_copy.unlink()
    with pytest.raises(LedgerCorruptionError) as missing:
        _reopen(open_ledger, service, directory=follower_dir)
    assert missing.value.kind == "missing" and f"after a snapshot at {s}" in str(missing.value)


def test_a_snapshot_that_does_not_verify_is_not_started_from(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity, tmp_path: Path
) -> None:
    leader = _committed_ledger(open_ledger, signer)
    newest = leader.snapshots.newest_committed()
    assert newest is not None
    snapshots = tmp_path / "empty" / "snapshots"
    snapshots.mkdir(parents=True)
    data = bytearray(newest.path.read_bytes())
    data[-5] ^= 1
    (snapshots / newest.path.name).write_bytes(bytes(data))
    (snapshots / newest.receipt_path.name).write_bytes(newest.receipt_path.read_bytes())
    fresh = _reopen(open_ledger, service, directory=tmp_path / "empty")
    assert (fresh.last_index, fresh.commit_index) == (0, 0)  # refused: an empty log


# --- row encodings reused across snapshots give the library's canonical bytes ----------------

_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**64 - 1, 2**64, -(2**64), -(2**64) - 1, 23, 24, -24, -25])
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
_KEYS = st.sampled_from(["", "a", "b", "aa", "é", "k" * 23, "k" * 24, "z" * 300]) | st.text()
_WRITES = st.dictionaries(
    st.sampled_from(["app", "b", "zz", "é", "a" * 30, "public:t"]),
    st.dictionaries(_KEYS, st.none() | _VALUE, max_size=8),
    max_size=3,
)


def _reference(tables: dict[str, dict[str, tuple[Any, int, int]]]) -> bytes:
    rows = {table: {key: list(row) for key, row in rows.items()} for table, rows in tables.items()}
    return cbor2.dumps(rows, canonical=True)


@pytest.mark.parametrize("chunk", [1, 2, 3, 1024])
@given(
    rounds=st.lists(
        st.tuples(
            st.lists(_WRITES, max_size=4),
            st.sampled_from(["changes", "none", "skip", "partial"]),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_row_encodings_equal_cbor2_canonical_across_snapshots(
    chunk: int,
    rounds: list[tuple[list[dict[str, dict[str, Any]]], str]],
) -> None:
    """Writes (new keys, rewrites, deletions, whole tables emptied) between captures of a KV
    store; each capture encoded with its changes (incremental), without them (in full), not
    at all (the next one cannot follow it), or partial (only the changed rows captured:
    encoded if it follows the last encoding, else refused): always the library's canonical
    bytes, with chunks of a few pieces (split, emptied, joined again) as with the default."""
    kv, encodings, index = KVStore(track_changes=True), RowEncodings(chunk), 0
    follows = True  # the next capture follows the last encoding (or is the store's first)
    for write_sets, how in rounds:
        for writes in write_sets:
            index += 1
            kv.apply(writes, TxId(1 + index // 3, 2**33 + index))
        _, whole = kv.copy_tables()
        _, private, changes = kv.capture(partial=how == "partial")
        if how == "skip":
            follows = False
            continue
        if how == "partial" and not follows:
            with pytest.raises(PartialCaptureError):
                encodings.encode_parts(private, changes)
            continue  # and the encodings start again from a whole capture
        parts = encodings.encode_parts(private, changes if how != "none" else None)
        assert b"".join(parts) == _reference(whole)
        follows = how != "none"


_HEAD_EDGES = [0, 1, 23, 24, 255, 256, 0xFFFF, 0x10000, 2**32 - 1, 2**32, 2**64 - 1]


@given(
    key=_KEYS,
    value=st.text() | st.sampled_from(["", "x" * 23, "x" * 24, "x" * 255, "x" * 256]) | _VALUE,
    term=st.sampled_from(_HEAD_EDGES) | st.integers(min_value=0, max_value=2**64 - 1),
    index=st.sampled_from(_HEAD_EDGES) | st.integers(min_value=0, max_value=2**64 - 1),
)
def test_a_piece_is_the_canonical_key_and_row(key: str, value: Any, term: int, index: int) -> None:
    """The piece builder's fast path (heads looked up or packed in place) and its fallback
    give cbor2's canonical bytes, at every head width's edges."""
    expected = cbor2.dumps(key, canonical=True) + cbor2.dumps([value, term, index], canonical=True)
    assert _piece(key, (value, term, index)) == expected


def test_a_partial_capture_holds_the_changed_rows_and_the_sizes() -> None:
    kv = KVStore(track_changes=True)
    kv.apply({"app": {"a": 1, "b": 2}, "public:t": {"p": 1}, "gone": {"x": 1}}, TxId(1, 1))
    _, private, changes = kv.capture(partial=True)  # a store's first capture: whole
    assert private == {"app": {"a": (1, 1, 1), "b": (2, 1, 1)}, "gone": {"x": (1, 1, 1)}}
    assert changes.counts is None
    kv.apply({"app": {"b": None, "c": 3}, "gone": {"x": None}}, TxId(1, 2))
    public, private, changes = kv.capture(partial=True)
    assert public == {"public:t": {"p": (1, 1, 1)}}  # public tables: whole
    assert private == {"app": {"c": (3, 1, 2)}}  # b deleted: absent; a unchanged: absent
    assert changes.counts == {"app": 2} and changes.keys == {"app": {"b", "c"}, "gone": {"x"}}
    untracked = KVStore()
    untracked.apply({"app": {"a": 1}}, TxId(1, 1))
    untracked.capture()
    assert untracked.capture(partial=True)[2].counts is None  # no chain: whole


def test_row_encodings_chunks_stay_bounded_as_a_table_grows_and_shrinks() -> None:
    """Many keys in few rounds, then most deleted: chunks split past twice their size and
    small neighbours are joined again, so the parts stay about rows / chunk."""
    kv, encodings = KVStore(track_changes=True), RowEncodings(8)
    for step in range(10):
        kv.apply({"app": {f"k{n:04d}": n for n in range(step, 2000, 10)}}, TxId(1, step + 1))
        _, private, changes = kv.capture()
        parts = encodings.encode_parts(private, changes)
        assert b"".join(parts) == _reference(private)
    assert 3 + 2000 // 16 <= len(parts) <= 3 + 2000 // 4  # heads, then chunks of 4 to 16
    kv.apply({"app": {f"k{n:04d}": None for n in range(2000) if n % 50}}, TxId(2, 20))
    _, private, changes = kv.capture()
    parts = encodings.encode_parts(private, changes)
    assert b"".join(parts) == _reference(private)
    assert len(parts) <= 3 + 40 // 4 + 1  # 40 keys left: small chunks joined
    with pytest.raises(ValueError, match="positive"):
        RowEncodings(0)


def test_a_ledger_captures_partially_once_told_and_whole_after_a_lost_encoding(
    open_ledger: OpenLedger, signer: NodeKeySigner
) -> None:
    """The snapshot duty encodes every capture: the ledger then copies only the rows written
    since the previous capture; the bytes are those of whole captures encoded in full."""
    ledger = open_ledger(dataclasses.replace(CONFIG, snapshot_writes_percent=0))  # each round
    ledger.capture_partially()
    encodings, whole = RowEncodings(), []
    for round_ in range(4):
        if round_ == 2:
            ledger.snapshot_encoding_lost()
        fill(ledger, signer, batches=4, batch_size=7, prefix=f"r{round_}-")
        ledger.append_signature(signer)
        ledger.sync_and_commit()
        [capture] = ledger.snapshot_captures()
        whole.append(capture.changes.counts is None)
        data = encode_snapshot(capture.state, capture.cipher, encodings, capture.changes)
        _, private = state_at(ledger, capture.state.index).copy_tables()
        full = dataclasses.replace(capture.state, private=private)
        assert data == encode_snapshot(full, ledger.secrets.parts_cipher(full.secret_version))
    assert whole == [True, False, True, False]


def test_row_encodings_patch_only_what_changed_and_fall_back_when_the_chain_breaks() -> None:
    kv, encodings = KVStore(track_changes=True), RowEncodings()
    kv.apply({"app": {f"k{n:03d}": "v" * n for n in range(200)}}, TxId(1, 1))
    _, private, changes = kv.capture()
    assert encodings.encode(private, changes) == _reference(private)
    kv.apply({"app": {"k005": None, "k010": 7, "new": [1, {"b": 2, "a": None}]}}, TxId(1, 2))
    _, private, changes = kv.capture()
    assert changes.keys == {"app": {"k005", "k010", "new"}}
    assert encodings.encode(private, changes) == _reference(private)
    # A store replaced (a snapshot install) starts another chain: its changes do not follow.
    restored = KVStore.from_tables({}, private, track_changes=True)
    restored.apply({"app": {"k011": "x"}}, TxId(2, 3))
    _, private, changes = restored.capture()
    assert changes.keys == {"app": {"k011"}}  # the restored rows are not in them ...
    assert encodings.encode(private, changes) == _reference(private)  # ... so encoded in full
    # Changes that miss a new key are caught by the count check and encoded in full.
    restored.apply({"app": {"brand-new": "y"}}, TxId(2, 4))
    _, private, changes = restored.capture()
    forged = dataclasses.replace(changes, keys={})
    assert encodings.encode(private, forged) == _reference(private)


def test_a_snapshot_with_reused_encodings_is_the_same_bytes() -> None:
    """Encoded incrementally, in chunks, hashed and encrypted by parts: the same bytes as
    encoded in full, and as the documented format built by cbor2 and encrypted in one piece."""
    aead, by_parts = AESGCM(bytes(32)), PartsCipher(bytes(32))
    kv = KVStore(track_changes=True)
    for n in range(50):
        kv.apply({"app": {f"k{n}": n, f"s{n}": "v" * n}}, TxId(1, n + 1))
    encodings = RowEncodings(4)
    for step in range(3):
        kv.apply({"app": {"k1": step, "new": [step]}, "other": {"x": None}}, TxId(2, 60 + step))
        _, private, changes = kv.capture()
        state = SnapshotState(2, 60 + step, b"sig", [], {}, private, 1)
        again = encode_snapshot(state, by_parts, encodings, changes)
        assert again == encode_snapshot(state, by_parts) == _reference_snapshot(state, aead)


@given(parts=st.lists(st.binary(max_size=40), max_size=6), aad=st.binary(max_size=20))
def test_parts_cipher_is_aes_gcm_of_the_joined_parts(parts: list[bytes], aad: bytes) -> None:
    key, nonce = bytes(range(32)), bytes(range(12))
    sealed = PartsCipher(key).encrypt_parts(nonce, parts, aad)
    assert b"".join(sealed) == AESGCM(key).encrypt(nonce, b"".join(parts), aad)


def _reference_snapshot(state: SnapshotState, aead: AESGCM) -> bytes:
    """The byte format of the ``snapshot`` module docstring, built by cbor2 in one piece."""
    assert state.private is not None
    plaintext = _reference(state.private)
    aad = MAGIC + struct.pack(">QQI", state.term, state.index, state.secret_version)
    digest = hashlib.sha256(plaintext).digest()
    nonce = hashlib.sha256(MAGIC + b" nonce" + aad + digest).digest()[:12]
    public = {t: {k: list(row) for k, row in rows.items()} for t, rows in state.public.items()}
    body = [1, state.term, state.index, state.signature_entry, state.frontier, public]
    body += [state.secret_version, nonce + aead.encrypt(nonce, plaintext, aad)]
    return MAGIC + cbor2.dumps(body, canonical=True)


_U64 = st.integers(min_value=0, max_value=2**64 - 1)
_ROWS = st.dictionaries(_KEYS, st.tuples(_VALUE, _U64, _U64), max_size=5)


@given(
    txid=st.tuples(_U64, _U64),
    frontier=st.lists(st.binary(min_size=32, max_size=32), max_size=3),
    public=st.dictionaries(st.sampled_from(["public:a", "public:é"]), _ROWS, max_size=2),
    private=st.dictionaries(st.sampled_from(["app", "b", "z" * 30]), _ROWS, max_size=3),
    version=st.integers(min_value=0, max_value=2**32 - 1),
    signature=st.binary(max_size=40),
)
def test_encode_snapshot_writes_the_documented_bytes(
    txid: tuple[int, int],
    frontier: list[bytes],
    public: dict[str, dict[str, tuple[Any, int, int]]],
    private: dict[str, dict[str, tuple[Any, int, int]]],
    version: int,
    signature: bytes,
) -> None:
    state = SnapshotState(*txid, signature, frontier, public, private, version)
    aead = AESGCM(bytes(range(32)))
    assert encode_snapshot(state, PartsCipher(bytes(range(32)))) == _reference_snapshot(state, aead)
