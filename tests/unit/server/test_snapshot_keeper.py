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
