"""The snapshot files (``SnapshotStore``): written from parts without a joined copy, hashed as
written, and committed only if the file on disk is still the one with the committed digest."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from consortium_node.common.files import write_atomic
from consortium_node.ledger.snapshot_store import SnapshotStore

PARTS = [b"CLS1", b"\x88", b"head", os.urandom(100_000), b"", b"tail"]
JOINED = b"".join(PARTS)
DIGEST = hashlib.sha256(JOINED).digest()


def test_parts_are_written_one_after_the_other(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a", PARTS)
    write_atomic(tmp_path / "b", JOINED)
    assert (tmp_path / "a").read_bytes() == JOINED == (tmp_path / "b").read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("data", [PARTS, JOINED], ids=["parts", "bytes"])
def test_write_returns_the_digest_and_size_of_the_file(tmp_path: Path, data: object) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    assert store.write(7, data) == (DIGEST, len(JOINED))  # type: ignore[arg-type]
    stored = store.get(7)
    assert stored is not None and stored.path.read_bytes() == JOINED


def test_an_existing_file_is_kept_and_its_own_digest_returned(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    store.write(7, b"first")
    assert store.write(7, PARTS) == (hashlib.sha256(b"first").digest(), 5)
    assert store.commit(7, hashlib.sha256(b"first").digest(), {"txid": "2.9"})


def test_commit_of_what_this_store_wrote(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    digest, _ = store.write(7, PARTS)
    assert store.commit(7, digest, {"txid": "2.9"})
    stored = store.get(7)
    assert stored is not None and stored.committed and stored.receipt() == {"txid": "2.9"}


def test_commit_refuses_other_bytes_than_the_evidence(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    store.write(7, PARTS)
    assert not store.commit(7, hashlib.sha256(b"other").digest(), {"txid": "2.9"})
    assert store.get(7) is None
    assert (tmp_path / "snapshots" / f"snapshot_{7:020d}.mismatch").read_bytes() == JOINED


def test_a_file_replaced_after_writing_is_read_again(tmp_path: Path) -> None:
    """Same size, other bytes, put in place after the write: the digest taken when writing
    no longer describes the file, so commit hashes what is there and refuses it."""
    store = SnapshotStore(tmp_path / "snapshots")
    digest, size = store.write(7, PARTS)
    stored = store.get(7)
    assert stored is not None
    write_atomic(stored.path, bytes(size))
    assert not store.commit(7, digest, {"txid": "2.9"})
    assert store.get(7) is None


def test_another_store_on_the_directory_hashes_the_file(tmp_path: Path) -> None:
    """A restarted node: what the file holds decides, nothing remembered."""
    digest, _ = SnapshotStore(tmp_path / "snapshots").write(7, PARTS)
    again = SnapshotStore(tmp_path / "snapshots")
    assert not again.commit(7, hashlib.sha256(b"other").digest(), {"txid": "2.9"})
    digest, _ = SnapshotStore(tmp_path / "snapshots").write(8, PARTS)
    assert SnapshotStore(tmp_path / "snapshots").commit(8, digest, {"txid": "2.9"})
