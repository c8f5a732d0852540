"""A restart that resumes from a verified snapshot and the tree store: it reads none of the
entries the snapshot covers, yet answers every question about them as a full replay would, and
a tampered tree store is either refused at open or found (and healed) at the first read."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from consortium_node.identity.certs import ServiceIdentity
from consortium_node.ledger import Ledger, NodeKeySigner, TxId
from consortium_node.ledger.errors import LedgerCorruptionError, StoredEntryDamagedError
from consortium_node.ledger.merkle import frontier_sizes
from consortium_node.ledger.receipt import verify_receipt
from consortium_node.ledger.tree_store import HASH_SIZE
from tests.unit.ledger.conftest import OpenLedger
from tests.unit.ledger.helpers import fill, find_record, rewrite_record
from tests.unit.ledger.test_snapshot import (
    CONFIG,
    _committed_ledger,
    _flip_body,
    _reopen,
    record_evidence,
    write_captures,
)


def answers(ledger: Ledger, service: ServiceIdentity) -> list[object]:
    """Everything a ledger says about each entry it holds."""
    out: list[object] = []
    for index in range(ledger._log.base + 1, ledger.last_index + 1):
        txid = TxId(ledger.term_at(index), index)
        signed = index < ledger.signature_through(ledger.commit_index)
        receipt = ledger.receipt(txid) if signed else None
        if receipt is not None:
            verify_receipt(receipt, service.certificate)
        out.append(
            (
                txid,
                ledger.read(txid),
                receipt,
                ledger.signature_after(index),
                ledger.signature_through(index),
            )
        )
    return out


def test_a_resumed_restart_answers_as_a_full_replay(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity, tmp_path: Path
) -> None:
    ledger = _committed_ledger(open_ledger, signer)
    directory, newest = ledger._store.directory, ledger.snapshots.newest_committed()
    assert newest is not None
    ledger.close()
    copy = tmp_path / "without-tree"
    shutil.copytree(directory, copy)
    shutil.rmtree(copy / "tree")

    resumed = _reopen(open_ledger, service)
    replayed = _reopen(open_ledger, service, directory=copy)
    assert resumed._log.resumed == newest.index and replayed._log.resumed == 0
    assert resumed.commit_index == replayed.commit_index == newest.index
    for ledger in (resumed, replayed):
        ledger.advance_commit(ledger.durable_index)
    assert answers(resumed, service) == answers(replayed, service)
    assert resumed.kv.copy_tables() == replayed.kv.copy_tables()
    # The full replay rebuilt the tree store: its next restart resumes too.
    replayed.close()
    assert _reopen(open_ledger, service, directory=copy)._log.resumed == newest.index


def test_a_tampered_tree_hash_is_found_at_the_receipt_and_healed_by_the_next_open(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity
) -> None:
    ledger = _committed_ledger(open_ledger, signer)
    directory = ledger._store.directory
    good = ledger.receipt(TxId(1, 3))
    ledger.close()
    level_0 = directory / "tree" / "level_00.hashes"
    data = bytearray(level_0.read_bytes())
    data[2 * HASH_SIZE + 7] ^= 0x10  # leaf 2 (entry 3), inside the snapshot's frontier pieces
    level_0.write_bytes(bytes(data))

    again = _reopen(open_ledger, service)  # the frontier pieces are intact: it resumes
    assert again._log.resumed > 3
    reported: list[StoredEntryDamagedError] = []
    again.on_read_damage(reported.append)
    for index in (3, 4):  # entry 3's leaf; entry 4's proof holds it as a sibling
        with pytest.raises(StoredEntryDamagedError) as caught:
            again.receipt(TxId(1, index))
        assert caught.value.index == index
    assert [error.index for error in reported] == [3, 4]
    verify_receipt(again.receipt(TxId(1, 9)), service.certificate)  # elsewhere: served
    again.close()

    healed = _reopen(open_ledger, service)  # check-all: every entry replayed, tree rewritten
    assert healed._log.resumed == 0 and not (directory / "check-all").exists()
    assert healed.receipt(TxId(1, 3)) == good
    healed.close()
    assert _reopen(open_ledger, service)._log.resumed > 3  # and resumes again after


def test_a_tree_store_that_disagrees_with_the_snapshot_is_not_resumed_from(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity
) -> None:
    ledger = _committed_ledger(open_ledger, signer)
    directory, newest = ledger._store.directory, ledger.snapshots.newest_committed()
    assert newest is not None
    good = ledger.receipt(TxId(1, 5))
    ledger.close()
    level, position = frontier_sizes(newest.index - 1)[-1]
    path = directory / "tree" / f"level_{level:02d}.hashes"
    data = bytearray(path.read_bytes())
    data[position * HASH_SIZE] ^= 1
    path.write_bytes(bytes(data))

    again = _reopen(open_ledger, service)
    assert again._log.resumed == 0  # the frontier did not match: a full replay instead
    assert again.commit_index == newest.index and again.receipt(TxId(1, 5)) == good
    again.close()
    assert _reopen(open_ledger, service)._log.resumed == newest.index  # rewritten by it


def test_a_node_that_joined_from_a_snapshot_resumes_from_its_next_one(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity, tmp_path: Path
) -> None:
    leader = _committed_ledger(open_ledger, signer)
    first = leader.snapshots.newest_committed()
    assert first is not None
    follower_dir = tmp_path / "follower"
    (follower_dir / "snapshots").mkdir(parents=True)
    for source in (first.path, first.receipt_path):
        (follower_dir / "snapshots" / source.name).write_bytes(source.read_bytes())
    follower = _reopen(open_ledger, service, directory=follower_dir)

    # The leader passes more snapshot points; the follower takes and commits its own.
    fill(leader, signer, batches=6, batch_size=6, prefix="later-")
    leader.append_signature(signer)
    leader.sync_and_commit()
    follower.append_entries(leader.raw_entries(first.index + 1, leader.last_index))
    follower.sync()
    follower.advance_commit(leader.commit_index)
    taken = write_captures(follower)
    assert taken and write_captures(leader) == taken  # byte-identical on both
    record_evidence(leader, signer, taken)
    follower.append_entries(leader.raw_entries(follower.last_index + 1, leader.last_index))
    follower.sync()
    follower.advance_commit(leader.commit_index)
    for r in follower.snapshot_receipts():  # (evidence of the leader's older ones: not held)
        assert follower.snapshots.commit(r.index, r.digest, r.receipt) == (r.index >= first.index)
    second = follower.snapshots.newest_committed()
    assert second is not None and second.index > first.index
    expected = answers(follower, service)
    follower.close()

    again = _reopen(open_ledger, service, directory=follower_dir)
    assert again._log.base == first.index and again._log.resumed == second.index
    assert again.unscrubbed == second.index - first.index - 1  # its own entries, not before
    while again.scrub(5):
        pass
    again.advance_commit(again.durable_index)
    assert answers(again, service) == expected
    assert again.kv.copy_tables() == leader.kv.copy_tables()


def test_a_ledger_opened_without_the_certificate_replays_and_rebuilds_the_tree(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity
) -> None:
    ledger = _committed_ledger(open_ledger, signer)
    directory = ledger._store.directory
    receipt = ledger.receipt(TxId(1, 7))
    ledger.close()
    plain = open_ledger(CONFIG, directory=directory)
    plain.advance_commit(plain.durable_index)  # (Raft's job: it knows no snapshot)
    assert plain._log.resumed == 0 and plain.receipt(TxId(1, 7)) == receipt
    plain.close()
    assert _reopen(open_ledger, service).receipt(TxId(1, 7)) == receipt


def test_the_entries_a_resumed_open_did_not_read_are_checked_in_slices(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity
) -> None:
    ledger = _committed_ledger(open_ledger, signer)
    ledger.close()
    again = _reopen(open_ledger, service)
    resumed = again._log.resumed
    assert again.unscrubbed == resumed - 1
    slices = 0
    while again.scrub(7):
        slices += 1
        assert again.unscrubbed == max(0, resumed - 1 - 7 * slices)
    assert again.unscrubbed == 0 and not again.scrub(7)  # done, and idempotent
    assert slices == (resumed - 1) // 7
    assert not (again._store.directory / "check-all").exists()


@pytest.mark.parametrize("fault", ["flipped", "forged"])
def test_damage_before_the_snapshot_is_found_by_the_check(
    open_ledger: OpenLedger, signer: NodeKeySigner, service: ServiceIdentity, fault: str
) -> None:
    small_chunks = dataclasses.replace(CONFIG, chunk_max_bytes=2048)  # 9: not in the last one
    ledger = _committed_ledger(open_ledger, signer, config=small_chunks)
    directory = ledger._store.directory
    ledger.close()
    path, offset = find_record(directory, 9)
    assert path != sorted(directory.glob("ledger_*.chunk"))[-1]
    if fault == "flipped":  # the checksum no longer matches
        data = bytearray(path.read_bytes())
        data[offset + 40] ^= 1
        path.write_bytes(bytes(data))
    else:  # rewritten with a valid checksum: only the Merkle frontier tells
        rewrite_record(path, offset, _flip_body)

    again = _reopen(open_ledger, service)
    resumed = again._log.resumed
    reported: list[StoredEntryDamagedError] = []
    again.on_read_damage(reported.append)
    with pytest.raises(StoredEntryDamagedError) as caught:
        while again.scrub(4):
            pass
    assert reported == [caught.value]
    assert caught.value.index == (9 if fault == "flipped" else resumed)
    if fault == "forged":
        assert "do not rebuild the Merkle frontier" in caught.value.reason
    again.close()
    assert (directory / "check-all").exists()
    with pytest.raises(LedgerCorruptionError) as refused:  # the next open reads every entry
        _reopen(open_ledger, service)
    named = f"at byte {offset}: record CRC-32" if fault == "flipped" else "entry 1.9"
    assert named in str(refused.value)
