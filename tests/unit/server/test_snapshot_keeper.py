"""The snapshot duty (``SnapshotKeeper``) with a real ledger: it encodes partial captures
(only the rows written since the previous one), and when one cannot be encoded (the encoder
that encoded the one before is gone) it skips it and the ledger captures the next one whole."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from consortium_node.identity.certs import ServiceIdentity
from consortium_node.ledger import Ledger, LedgerConfig
from consortium_node.ledger.kv import KVStore
from consortium_node.ledger.snapshot import decode_snapshot
from consortium_node.server import snapshots as snapshots_module
from consortium_node.server.snapshots import SnapshotKeeper
from tests.support.clock import FakeClock
from tests.unit.ledger.conftest import make_signer
from tests.unit.ledger.helpers import fill

# a snapshot every 25 entries, however few rows they write (the writes rule: test_snapshot_points)
CONFIG = LedgerConfig(
    signature_interval_tx=10,
    signature_interval_ms=10**6,
    snapshot_interval=25,
    snapshot_writes_percent=0,
)


async def _no_submit(*args: Any) -> None:
    raise AssertionError("a follower records no evidence")


def keeper(ledger: Ledger) -> SnapshotKeeper:
    return SnapshotKeeper(ledger, is_primary=lambda: False, submit=_no_submit)


async def test_a_capture_the_encoder_cannot_follow_is_skipped_and_the_next_is_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    signer = make_signer(ServiceIdentity.create("keeper-test"))
    ledger = Ledger.open(
        tmp_path / "ledger", ledger_secret=os.urandom(32), config=CONFIG, clock=FakeClock()
    )
    first = keeper(ledger)

    async def snapshot_round(duty: SnapshotKeeper, round_: int) -> int:
        fill(ledger, signer, batches=4, batch_size=7, prefix=f"r{round_}-")
        ledger.append_signature(signer)
        ledger.sync_and_commit()
        index = ledger.commit_index
        await duty.once()
        return index

    written = [await snapshot_round(first, 0), await snapshot_round(first, 1)]
    second = keeper(ledger)  # a new encoder: the next partial capture does not follow it
    with caplog.at_level(logging.WARNING, logger="consortium_node"):
        skipped = await snapshot_round(second, 2)
    assert "skipped" in caplog.text and "taken whole" in caplog.text
    written.append(await snapshot_round(second, 3))
    on_disk = sorted(ledger.snapshots.indices())
    assert len(on_disk) == 3 and skipped not in on_disk
    for stored in ledger.snapshots.list():
        state = decode_snapshot(stored.path.read_bytes(), ledger.secrets.aead)
        assert state.private is not None
        expected = KVStore()  # every private row written before the snapshot's index
        for round_ in range(4):
            for batch in range(4):
                for i in range(7):
                    key = f"r{round_}-{batch}-{i}"
                    row = ledger.kv.get("app", key)
                    if row is not None and row[1].index <= state.index:
                        expected.apply({"app": {key: row[0]}}, row[1])
        assert state.private == expected.copy_tables()[1]
    assert [i for i in written if i in on_disk] == written
    ledger.close()


class _Pair:
    """A primary and a backup ledger, the backup fed the primary's entries (as Raft would),
    each with its snapshot duty; the backup's ``fetch`` serves what ``serve`` says."""

    def __init__(self, tmp_path: Path) -> None:
        self.signer = make_signer(ServiceIdentity.create("keeper-test"))
        secret, clock = os.urandom(32), FakeClock()
        self.primary = Ledger.open(tmp_path / "p", ledger_secret=secret, config=CONFIG, clock=clock)
        self.backup = Ledger.open(tmp_path / "b", ledger_secret=secret, config=CONFIG, clock=clock)
        self.backup.own_snapshots(False)
        self.asked: list[int] = []
        self.serve: Any = self._primarys  # index → bytes | None
        self.written: list[int] = []

        async def submit(write_sets: Any, kind: Any) -> None:
            self.primary.append(write_sets, kind)

        async def fetch(index: int) -> bytes | None:
            self.asked.append(index)
            result: bytes | None = self.serve(index)
            return result

        self.leading = True  # the primary's role, as its duty sees it
        self.primary_duty = SnapshotKeeper(
            self.primary, is_primary=lambda: self.leading, submit=submit
        )
        self.backup_duty = SnapshotKeeper(
            self.backup,
            is_primary=lambda: False,
            submit=_no_submit,
            fetch=fetch,
            on_written=lambda index, size, seconds: self.written.append(index),
        )

    def _primarys(self, index: int) -> bytes | None:
        stored = self.primary.snapshots.get(index)
        return None if stored is None or not stored.committed else stored.path.read_bytes()

    def _commit_both(self) -> None:
        self.primary.append_signature(self.signer)
        self.primary.sync_and_commit()
        start = self.backup.last_index + 1
        self.backup.append_entries(self.primary.raw_entries(start, self.primary.last_index))
        self.backup.sync()
        self.backup.advance_commit(self.primary.commit_index)

    async def snapshot_round(self, round_: int) -> int:
        """Writes past a snapshot point, its evidence, and a signature over that: the
        evidence is committed and covered on both. Returns the snapshot's index."""
        fill(self.primary, self.signer, batches=4, batch_size=7, prefix=f"r{round_}-")
        self._commit_both()
        index = max(self.primary.snapshots.indices() | {0})
        await self.primary_duty.once()  # writes the snapshot, records its evidence
        assert max(self.primary.snapshots.indices()) > index
        self._commit_both()  # evidence committed, covered by this signature
        await self.primary_duty.once()  # commits its own
        await self.backup_duty.once()
        return max(self.primary.snapshots.indices())


async def test_a_backup_fetches_the_primarys_snapshot_instead_of_encoding_its_own(
    tmp_path: Path,
) -> None:
    pair = _Pair(tmp_path)
    for round_ in range(3):
        index = await pair.snapshot_round(round_)
        stored = pair.backup.snapshots.get(index)
        assert stored is not None and stored.committed
        assert stored.path.read_bytes() == pair.primary.snapshots.get(index).path.read_bytes()  # type: ignore[union-attr]
        assert pair.asked[-1] == index
    assert pair.written == []  # the backup encoded nothing
    assert pair.backup.snapshots.indices() == pair.primary.snapshots.indices()
    pair.backup.close()
    pair.primary.close()


async def test_bytes_that_are_not_the_evidences_are_not_kept_and_asked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(snapshots_module, "FETCH_RETRY", 0.0)
    pair = _Pair(tmp_path)
    genuine = pair._primarys
    pair.serve = lambda index: None  # nobody serves it yet
    with caplog.at_level(logging.INFO, logger="consortium_node"):
        index = await pair.snapshot_round(0)
    assert pair.backup.snapshots.get(index) is None and "asked again" in caplog.text
    pair.serve = lambda index: (genuine(index) or b"") + b"x"  # other bytes
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="consortium_node"):
        await pair.backup_duty.once()
    assert pair.backup.snapshots.get(index) is None and "not the committed evidence" in caplog.text
    pair.serve = genuine
    await pair.backup_duty.once()
    stored = pair.backup.snapshots.get(index)
    assert stored is not None and stored.committed
    assert pair.asked == [index, index, index]


async def test_a_snapshot_not_fetched_is_given_up_once_a_newer_one_is_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots_module, "FETCH_RETRY", 0.0)
    pair = _Pair(tmp_path)
    genuine = pair._primarys
    pair.serve = lambda index: None
    first = await pair.snapshot_round(0)
    pair.serve = lambda index: None if index == first else genuine(index)
    second = await pair.snapshot_round(1)
    assert pair.backup.snapshots.get(second) is not None
    asked = len(pair.asked)
    await pair.backup_duty.once()
    assert len(pair.asked) == asked  # the older one is not asked for any more
    assert pair.backup.snapshots.get(first) is None


async def test_a_backup_that_becomes_primary_encodes_its_next_snapshot_whole(
    tmp_path: Path,
) -> None:
    pair = _Pair(tmp_path)
    await pair.snapshot_round(0)
    pair.backup.own_snapshots(True)  # elected
    fill(pair.backup, pair.signer, batches=4, batch_size=7, prefix="new-")
    pair.backup.append_signature(pair.signer)
    pair.backup.sync_and_commit()
    captures = pair.backup.snapshot_captures()
    assert len(captures) == 1 and captures[0].changes is not None
    assert captures[0].changes.counts is None  # whole: no chain of encodings to follow
    state = captures[0].state
    assert state.private is not None and len(state.private["app"]) == 2 * 4 * 7


async def test_a_primary_that_becomes_backup_drops_its_pieces_and_encodes_whole_if_elected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pair = _Pair(tmp_path)
    first = await pair.snapshot_round(0)
    assert pair.primary_duty._encodings.holds_rows()
    pair.leading = False  # deposed: no snapshot point passes before it leads again
    pair.primary.own_snapshots(False)
    await pair.primary_duty.once()
    assert not pair.primary_duty._encodings.holds_rows()  # the state's size, released
    pair.leading = True
    pair.primary.own_snapshots(True)
    with caplog.at_level(logging.WARNING, logger="consortium_node"):
        second = await pair.snapshot_round(1)
    assert "skipped" not in caplog.text  # its capture was whole, not one that follows nothing
    assert second > first and pair.primary.snapshots.get(second) is not None
    stored = pair.primary.snapshots.get(second)
    assert stored is not None and stored.committed
    state = decode_snapshot(stored.path.read_bytes(), pair.primary.secrets.aead)
    assert state.private is not None and len(state.private["app"]) == 2 * 4 * 7
    fetched = pair.backup.snapshots.get(second)  # fetched by the backup: the same bytes
    assert fetched is not None and fetched.path.read_bytes() == stored.path.read_bytes()
