"""Storage faults: told apart from torn writes by commit markers, set aside (never deleted),
and repaired by replicating the lost entries again, checked against what the node knew.

A "follower" ledger receives a leader's history, commits it, and is closed (its clean close
writes a commit marker). A fault is then injected into its chunk files; reopening it with
``repair`` must keep the intact prefix, set the rest aside, report what committed entries
are missing, refuse to truncate them, and become whole again from the leader's entries.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from consortium_node.identity.certs import ServiceIdentity
from consortium_node.ledger import (
    EntryKind,
    Ledger,
    LedgerConfig,
    LedgerCorruptionError,
    LedgerError,
    NodeKeySigner,
    StoredEntryDamagedError,
    TxId,
    verify_receipt,
)
from consortium_node.ledger.damage import DamageKind
from consortium_node.ledger.records import Position
from tests.support import storage_faults as sf

from .conftest import OpenLedger
from .helpers import fill

CONFIG = LedgerConfig(signature_interval_tx=5, signature_interval_ms=10**6, chunk_max_bytes=1500)
Fault = Callable[[Path, int], None]  # (ledger directory, index to damage)


def cut_inside(directory: Path, index: int) -> None:
    sf.cut(sf.entry(directory, index))


def flip_byte(directory: Path, index: int) -> None:
    sf.flip(sf.entry(directory, index))


def zero_range(directory: Path, index: int) -> None:
    sf.zero(sf.entry(directory, index))


def delete_chunk(directory: Path, index: int) -> None:
    sf.delete_chunk(sf.entry(directory, index).path)


def gaps(ledger: Ledger) -> tuple[Position | None, Position | None, Position | None]:
    """What a ledger still lacks or contradicts: (committed, vouched, diverged)."""
    return ledger.missing_committed, ledger.unvouched, ledger.diverged


FAULTS = [  # fault, where (index as a fraction of the log), kind of damage found
    pytest.param(cut_inside, 1.0, DamageKind.TRUNCATED, id="cut-last-committed-record"),
    pytest.param(cut_inside, 0.9, DamageKind.TRUNCATED, id="cut-inside-the-newest-chunk"),
    pytest.param(flip_byte, 0.3, DamageKind.CORRUPTED, id="flipped-byte-old-chunk"),
    pytest.param(flip_byte, 1.0, DamageKind.CORRUPTED, id="flipped-byte-last-record"),
    pytest.param(zero_range, 0.5, DamageKind.CORRUPTED, id="zeroed-record"),
    pytest.param(delete_chunk, 0.5, DamageKind.MISSING, id="deleted-middle-chunk"),
    pytest.param(delete_chunk, 1.0, DamageKind.MISSING, id="deleted-newest-chunk"),
    pytest.param(delete_chunk, 0.0, DamageKind.CORRUPTED, id="deleted-first-chunk"),
]


def history(open_ledger: OpenLedger, signer: NodeKeySigner, tmp_path: Path) -> Ledger:
    """The leader's committed history: private entries over two terms, signed."""
    leader = open_ledger(CONFIG, directory=tmp_path / "leader")
    fill(leader, signer, batches=4, batch_size=6)
    leader.term = 2
    fill(leader, signer, batches=4, batch_size=6, prefix="t2-")
    leader.append_signature(signer)
    leader.sync_and_commit()
    return leader


def follower_of(open_ledger: OpenLedger, leader: Ledger, tmp_path: Path) -> Path:
    """A follower that held and committed the whole history, closed cleanly."""
    directory = tmp_path / "follower"
    follower = open_ledger(CONFIG, directory=directory)
    for start in range(1, leader.last_index + 1, 7):
        follower.append_entries(leader.raw_entries(start, min(start + 6, leader.last_index)))
        follower.sync()
        follower.advance_commit(follower.durable_index)
    follower.close()
    assert len(list(directory.glob("ledger_*.chunk"))) >= 3
    return directory


@pytest.mark.parametrize(("fault", "where", "kind"), FAULTS)
def test_a_storage_fault_is_set_aside_and_repaired_from_the_leader(
    open_ledger: OpenLedger,
    signer: NodeKeySigner,
    service: ServiceIdentity,
    tmp_path: Path,
    fault: Fault,
    where: float,
    kind: DamageKind,
) -> None:
    leader = history(open_ledger, signer, tmp_path)
    directory = follower_of(open_ledger, leader, tmp_path)
    committed = Position(leader.commit_index, leader.term_at(leader.commit_index))
    damaged = max(1, round(leader.last_index * where))
    before = sum(p.stat().st_size for p in directory.iterdir())
    fault(directory, damaged)

    with pytest.raises(LedgerCorruptionError):  # without repair: refuses, as before
        open_ledger(CONFIG, directory=directory)
    follower = open_ledger(CONFIG, directory=directory, repair=True)
    damage = follower.damage
    assert damage is not None and damage.kind is kind
    assert follower.last_index == damage.first_lost - 1 <= damaged - 1
    assert follower.missing_committed == committed
    assert follower.known_commit == committed
    assert follower.unvouched == Position(leader.last_index, leader.term_at(leader.last_index))
    assert all(path.exists() for path in damage.aside)
    if fault in (flip_byte, zero_range):  # nothing is deleted: the bytes are moved aside
        assert sum(p.stat().st_size for p in directory.iterdir()) >= before
    if follower.last_index:
        with pytest.raises(LedgerError, match="known committed"):
            follower.truncate(follower.last_index - 1)

    kept = follower.last_index
    follower.close()  # still missing after a restart: the marker was written again
    follower = open_ledger(CONFIG, directory=directory, repair=True)
    assert follower.last_index == kept and follower.missing_committed == committed
    assert follower.damage is not None and follower.damage.kind is DamageKind.MISSING

    follower.append_entries(leader.raw_entries(follower.last_index + 1, leader.last_index))
    follower.sync()
    assert gaps(follower) == (None, None, None)
    assert follower.advance_commit(leader.commit_index) == leader.commit_index
    assert follower._log.tree.root() == leader._log.tree.root()
    for index in sorted({1, min(damaged, leader.commit_index - 1), leader.commit_index - 1}):
        txid = TxId(leader.term_at(index), index)
        assert follower.read(txid) == leader.read(txid)
        receipt = follower.receipt(txid)
        assert receipt == leader.receipt(txid)
        verify_receipt(receipt, service.certificate)


@pytest.mark.parametrize("fault", [cut_inside, flip_byte, zero_range])
def test_a_fault_at_every_committed_entry_is_found_and_repaired(
    open_ledger: OpenLedger, signer: NodeKeySigner, tmp_path: Path, fault: Fault
) -> None:
    """The sweep: the same fault at each entry of the log in turn, on a copy of one follower."""
    leader = history(open_ledger, signer, tmp_path)
    original = follower_of(open_ledger, leader, tmp_path)
    committed = Position(leader.commit_index, leader.term_at(leader.commit_index))
    for index in range(1, leader.commit_index + 1):
        directory = tmp_path / f"copy-{index}"
        shutil.copytree(original, directory)
        fault(directory, index)
        follower = open_ledger(CONFIG, directory=directory, repair=True)
        assert follower.damage is not None, index
        assert follower.last_index < index and follower.missing_committed == committed, index
        follower.append_entries(leader.raw_entries(follower.last_index + 1, leader.last_index))
        follower.sync()
        assert gaps(follower) == (None, None, None), index
        assert follower._log.tree.root() == leader._log.tree.root(), index
        follower.close()
        shutil.rmtree(directory)


def test_a_torn_tail_above_the_markers_is_still_a_torn_write(
    open_ledger: OpenLedger, signer: NodeKeySigner, tmp_path: Path
) -> None:
    ledger = open_ledger(CONFIG)
    fill(ledger, signer, batches=2, batch_size=4)
    (pending,) = ledger.append([{"app": {"late": 1}}], EntryKind.PRIVATE)
    ledger.sync()  # durable, never committed: the crash comes before any marker covers it
    ledger._store.close()  # a crash: no clean close, no marker for what was committed later
    cut_inside(tmp_path / "ledger", pending.index)
    reopened = open_ledger(CONFIG, repair=True)
    assert reopened.damage is None and reopened.recovered_torn_tail is not None
    assert reopened.last_index == pending.index - 1
    assert reopened.missing_committed is None


def test_history_that_contradicts_what_was_committed_is_reported(
    open_ledger: OpenLedger, signer: NodeKeySigner, tmp_path: Path
) -> None:
    leader = history(open_ledger, signer, tmp_path)
    directory = follower_of(open_ledger, leader, tmp_path)
    cut_inside(directory, leader.last_index - 3)
    follower = open_ledger(CONFIG, directory=directory, repair=True)
    other = open_ledger(CONFIG, directory=tmp_path / "other")
    other.append_entries(leader.raw_entries(1, follower.last_index))
    other.term = 9  # a history in which the lost entries were never written
    fill(other, signer, batches=2, batch_size=4, prefix="other-")
    follower.append_entries(other.raw_entries(follower.last_index + 1, other.last_index))
    assert follower.missing_committed is None
    assert follower.diverged == Position(leader.commit_index, leader.term_at(leader.commit_index))


def test_entries_replicated_again_must_match_the_signatures_set_aside(
    open_ledger: OpenLedger, signer: NodeKeySigner, tmp_path: Path
) -> None:
    leader = history(open_ledger, signer, tmp_path)
    directory = follower_of(open_ledger, leader, tmp_path)
    flip_byte(directory, 10)  # every later record stays intact, signatures included
    follower = open_ledger(CONFIG, directory=directory, repair=True)
    assert follower.last_index == 9
    other = open_ledger(CONFIG, directory=tmp_path / "other")
    other.append_entries(leader.raw_entries(1, 9))
    fill(other, signer, batches=3, batch_size=6, prefix="forged-")  # same term, other entries
    with pytest.raises(LedgerError, match="differs from the committed signature entry"):
        follower.append_entries(other.raw_entries(10, other.last_index))
    assert follower.last_index == 9 and follower.diverged is not None
    follower.append_entries(leader.raw_entries(10, leader.last_index))  # the true history
    assert follower._log.tree.root() == leader._log.tree.root()


# ---------------------------------------------------------------------- damage met while running


@pytest.mark.parametrize("fault", [sf.flip, sf.forge], ids=["checksum-fails", "forged-record"])
def test_an_entry_damaged_on_disk_while_running_is_named_and_reported(
    open_ledger: OpenLedger,
    signer: NodeKeySigner,
    tmp_path: Path,
    fault: Callable[[sf.Record], sf.Injected],
) -> None:
    """The disk changes under a running node: a read of that entry raises
    ``StoredEntryDamagedError`` naming it (never a wrong answer) and the node is told; every
    other entry still reads. (Replication sends payloads checked by their CRC: a forged
    record with a valid checksum is refused by the follower's signature check instead.)"""
    ledger = open_ledger()
    txids = fill(ledger, signer, batches=30)
    reported: list[StoredEntryDamagedError] = []
    ledger.on_read_damage(reported.append)
    damaged = txids[3]
    fault(sf.entry(tmp_path / "ledger", damaged.index))

    with pytest.raises(StoredEntryDamagedError, match=f"index {damaged.index} is damaged"):
        ledger.read(damaged)
    assert [e.index for e in reported] == [damaged.index]
    if fault is sf.flip:
        with pytest.raises(StoredEntryDamagedError):
            ledger.raw_entries(damaged.index, damaged.index)
        assert len(reported) == 2
    assert ledger.read(txids[4]).txid == txids[4]
    assert ledger.receipt(txids[4])["txid"] == str(txids[4])
