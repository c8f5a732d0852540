"""Chunk files: record framing, rotation, one write per chunk, torn tails and corruption."""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import pytest

from consortium_node.ledger import storage
from consortium_node.ledger.entries import public_entry
from consortium_node.ledger.errors import LedgerCorruptionError, LedgerError
from consortium_node.ledger.records import Marker, Position, read_commit_file
from consortium_node.ledger.storage import ChunkStore, chunk_name, encode_record


def payloads(first: int, count: int, size: int = 40) -> list[bytes]:
    return [
        public_entry(1, index, {"public:t": {"k": "x" * size}}).encode()
        for index in range(first, first + count)
    ]


def record_offsets(data: bytes) -> list[int]:
    """Start offset of every complete record in a chunk's bytes."""
    offsets, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos + 4)
        offsets.append(pos)
        pos += 12 + length
    return offsets


def open_store(
    directory: Path, chunk_max_bytes: int = 1 << 20
) -> tuple[ChunkStore, list[tuple[bytes, Path, int]]]:
    store = ChunkStore(directory, chunk_max_bytes)
    return store, list(store.replay())


def write(directory: Path, batches: list[list[bytes]], chunk_max_bytes: int = 1 << 20) -> None:
    store, replayed = open_store(directory, chunk_max_bytes)
    index = len(replayed) + 1
    for batch in batches:
        store.append(batch, index)
        store.sync()
        index += len(batch)
    store.close()


def test_record_bytes() -> None:
    assert (
        encode_record(b"abc")
        == b"CLE1" + b"\x00\x00\x00\x03" + zlib.crc32(b"abc").to_bytes(4, "big") + b"abc"
    )
    assert chunk_name(42) == "ledger_00000000000000000042.chunk"


def test_round_trip_and_random_access(tmp_path: Path) -> None:
    data = payloads(1, 10)
    write(tmp_path, [data[:3], data[3:]])
    store, replayed = open_store(tmp_path)
    assert [payload for payload, _, _ in replayed] == data
    path = tmp_path / chunk_name(1)
    assert {p for _, p, _ in replayed} == {path}
    assert [offset for _, _, offset in replayed] == record_offsets(path.read_bytes())
    assert store.read(7) == data[6]
    store.append(payloads(11, 1), 11)
    assert store.read(11) == payloads(11, 1)[0]
    store.close()


def test_rotation_is_at_entry_boundaries_with_one_write_per_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(fd)
        return real_write(fd, data)

    store, _ = open_store(tmp_path, chunk_max_bytes=500)
    monkeypatch.setattr(os, "write", counting_write)
    data = payloads(1, 40)
    store.append(data, 1)
    store.sync()
    monkeypatch.undo()
    paths = store.chunk_paths
    assert len(paths) > 3
    assert len(writes) == len(paths)  # one os.write per chunk touched by the batch
    store.close()

    store, replayed = open_store(tmp_path, chunk_max_bytes=500)
    assert [payload for payload, _, _ in replayed] == data
    for path in paths[:-1]:
        size = path.stat().st_size
        assert size >= 500
        assert size - len(encode_record(data[0])) < 500  # closed at the first boundary past it
    firsts = [int(path.name[7:27]) for path in paths]
    assert firsts[0] == 1
    starts = [i + 1 for i, (_, path, offset) in enumerate(replayed) if offset == 0]
    assert starts == firsts
    assert store.read(40) == data[-1]
    store.close()


def test_append_requires_replay_and_the_next_index(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, 1000)
    with pytest.raises(LedgerError, match="replay"):
        store.append(payloads(1, 1), 1)
    list(store.replay())
    store.append(payloads(1, 2), 1)
    with pytest.raises(LedgerError, match="next index is 3"):
        store.append(payloads(5, 1), 5)
    store.close()


def test_torn_tail_is_moved_aside_and_truncated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = payloads(1, 5)
    write(tmp_path, [data])
    path = tmp_path / chunk_name(1)
    whole = path.read_bytes()
    last = record_offsets(whole)[-1]
    os.truncate(path, len(whole) - 3)  # the last record was only partly written

    with caplog.at_level(logging.WARNING, logger="consortium_node.ledger"):
        store, replayed = open_store(tmp_path)
    assert [payload for payload, _, _ in replayed] == data[:4]
    assert store.recovered_torn_tail == (path, last, len(whole) - 3 - last)
    torn = tmp_path / f"{path.name}.torn-{last}"
    assert torn.read_bytes() == whole[last:-3]
    assert path.read_bytes() == whole[:last]
    assert str(path) in caplog.text and f"byte {last}" in caplog.text
    store.append(data[4:], 5)  # the log continues where the torn record was
    store.sync()
    store.close()
    store, replayed = open_store(tmp_path)
    assert [payload for payload, _, _ in replayed] == data
    assert store.recovered_torn_tail is None
    store.close()


def test_torn_header_only(tmp_path: Path) -> None:
    write(tmp_path, [payloads(1, 2)])
    path = tmp_path / chunk_name(1)
    size = path.stat().st_size
    with path.open("ab") as handle:
        handle.write(b"CLE1\x00")
    store, replayed = open_store(tmp_path)
    assert len(replayed) == 2
    assert store.recovered_torn_tail == (path, size, 5)
    store.close()


def test_flipped_byte_is_corruption_at_its_record(tmp_path: Path) -> None:
    write(tmp_path, [payloads(1, 9)])
    path = tmp_path / chunk_name(1)
    data = bytearray(path.read_bytes())
    offsets = record_offsets(bytes(data))
    target = offsets[4] + 30  # inside the payload of the fifth record
    data[target] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(LedgerCorruptionError) as caught:
        open_store(tmp_path)
    assert caught.value.path == path
    assert caught.value.offset == offsets[4]
    assert "CRC" in caught.value.reason
    assert (
        str(caught.value) == f"ledger corrupt: {path} at byte {offsets[4]}: {caught.value.reason}"
    )


def test_bad_magic(tmp_path: Path) -> None:
    write(tmp_path, [payloads(1, 3)])
    path = tmp_path / chunk_name(1)
    data = bytearray(path.read_bytes())
    second = record_offsets(bytes(data))[1]
    data[second : second + 4] = b"XXXX"
    path.write_bytes(bytes(data))
    with pytest.raises(LedgerCorruptionError, match=f"at byte {second}: bad record magic"):
        open_store(tmp_path)


def test_length_damage_in_the_last_chunk_is_not_mistaken_for_a_torn_tail(tmp_path: Path) -> None:
    write(tmp_path, [payloads(1, 6)])
    path = tmp_path / chunk_name(1)
    data = bytearray(path.read_bytes())
    third = record_offsets(bytes(data))[2]
    data[third + 4 : third + 8] = (10_000).to_bytes(4, "big")  # now it "overruns" the file
    path.write_bytes(bytes(data))
    with pytest.raises(LedgerCorruptionError, match="a complete record follows") as caught:
        open_store(tmp_path)
    assert caught.value.offset == third
    assert not list(tmp_path.glob("*.torn-*"))


def test_truncated_non_last_chunk_is_corruption(tmp_path: Path) -> None:
    write(tmp_path, [payloads(1, 30)], chunk_max_bytes=400)
    chunks = sorted(tmp_path.glob("ledger_*.chunk"))
    assert len(chunks) >= 3
    first = chunks[0]
    whole = first.read_bytes()
    os.truncate(first, len(whole) - 5)
    last_record = record_offsets(whole)[-1]
    with pytest.raises(LedgerCorruptionError, match="not the last") as caught:
        open_store(tmp_path, 400)
    assert (caught.value.path, caught.value.offset) == (first, last_record)
    assert not list(tmp_path.glob("*.torn-*"))


def test_missing_chunk_is_an_index_gap(tmp_path: Path) -> None:
    write(tmp_path, [payloads(1, 30)], chunk_max_bytes=400)
    chunks = sorted(tmp_path.glob("ledger_*.chunk"))
    chunks[1].unlink()
    with pytest.raises(LedgerCorruptionError, match="expected") as caught:
        open_store(tmp_path, 400)
    assert caught.value.path == chunks[2]


def test_record_with_the_wrong_index(tmp_path: Path) -> None:
    write(tmp_path, [payloads(1, 2)])
    path = tmp_path / chunk_name(1)
    with path.open("ab") as handle:
        handle.write(encode_record(payloads(7, 1)[0]))
    with pytest.raises(LedgerCorruptionError, match="entry index 7 is not the next index 3"):
        open_store(tmp_path)


def test_undecodable_payload_header(tmp_path: Path) -> None:
    write(tmp_path, [payloads(1, 2)])
    path = tmp_path / chunk_name(1)
    size = path.stat().st_size
    with path.open("ab") as handle:
        handle.write(encode_record(b"not cbor at all"))
    with pytest.raises(LedgerCorruptionError, match=f"at byte {size}: payload is not"):
        open_store(tmp_path)


def test_empty_last_chunk_is_reused(tmp_path: Path) -> None:
    write(tmp_path, [payloads(1, 2)])
    (tmp_path / chunk_name(3)).touch()  # created, then the process died before writing
    (tmp_path / "unrelated.txt").write_text("ignored")
    store, replayed = open_store(tmp_path)
    assert len(replayed) == 2
    store.append(payloads(3, 1), 3)
    store.sync()
    assert store.chunk_paths[-1].name == chunk_name(3)
    assert store.read(3) == payloads(3, 1)[0]
    store.close()


def _chunk_firsts(directory: Path) -> list[int]:
    return sorted(int(path.name[7:27]) for path in directory.glob("ledger_*.chunk"))


@pytest.mark.parametrize("where", ["mid-chunk", "chunk-start", "everything", "nothing"])
def test_truncate_removes_a_suffix_durably(tmp_path: Path, where: str) -> None:
    data = payloads(1, 30)
    write(tmp_path, [data[:10], data[10:]], chunk_max_bytes=400)
    store, _ = open_store(tmp_path, 400)
    firsts = _chunk_firsts(tmp_path)
    assert len(firsts) >= 4
    store.read(2)  # opens a read fd on the first chunk, which truncation must not leak
    last_kept = {
        "mid-chunk": firsts[1] + 1,  # cut inside the second chunk, later chunks deleted
        "chunk-start": firsts[2] - 1,  # the third chunk would be empty: it is deleted
        "everything": 0,
        "nothing": 30,
    }[where]
    store.truncate(last_kept)
    assert store.next_index == last_kept + 1 and store.last_index == last_kept
    assert all(first <= last_kept for first in _chunk_firsts(tmp_path))
    assert store.chunk_paths == sorted(tmp_path.glob("ledger_*.chunk"))
    for index in range(1, last_kept + 1):
        assert store.read(index) == data[index - 1]
    with pytest.raises(LedgerError, match="not stored"):
        store.read(last_kept + 1)
    with pytest.raises(LedgerError, match=f"next index is {last_kept + 1}"):
        store.append(payloads(last_kept + 2, 1), last_kept + 2)
    other = payloads(last_kept + 1, 6, size=55)  # a different history continues the prefix
    store.append(other, last_kept + 1)
    store.sync()
    assert store.read(last_kept + 1) == other[0]
    store.close()

    store, replayed = open_store(tmp_path, 400)
    assert [payload for payload, _, _ in replayed] == data[:last_kept] + other
    assert store.recovered_torn_tail is None and not list(tmp_path.glob("*.torn-*"))
    store.close()


def test_truncate_needs_a_replayed_healthy_store(tmp_path: Path) -> None:
    write(tmp_path, [payloads(1, 3)])
    store = ChunkStore(tmp_path, 1000)
    with pytest.raises(LedgerError, match="replay"):
        store.truncate(1)
    list(store.replay())
    store.close()
    with pytest.raises(LedgerError, match="closed"):
        store.truncate(1)


def test_replay_from_an_index_reads_only_the_chunks_from_there(tmp_path: Path) -> None:
    data = payloads(1, 60)
    write(tmp_path, [data[:20], data[20:]], chunk_max_bytes=400)
    firsts = _chunk_firsts(tmp_path)
    assert len(firsts) >= 6
    # An early chunk becomes garbage (same length): a replay from a later index never reads it.
    early = tmp_path / chunk_name(firsts[1])
    early.write_bytes(b"\xff" * early.stat().st_size)
    start = firsts[3] + 2
    store = ChunkStore(tmp_path, 400)
    replayed = list(store.replay(start=start))
    assert [payload for payload, _, _ in replayed] == data[start - 1 :]
    assert store.read(firsts[0]) == data[firsts[0] - 1]  # a skipped, intact chunk reads back
    assert store.read(start - 1) == data[start - 2]  # the rest of a replayed chunk too
    with pytest.raises(LedgerCorruptionError, match="does not chain"):
        store.read(firsts[1])  # the garbage is found when one of its entries is read
    store.append(payloads(61, 3), 61)
    store.sync()
    assert store.read(62) == payloads(62, 1)[0]
    store.close()


def test_a_skipped_chunk_missing_its_last_records_is_a_gap(tmp_path: Path) -> None:
    data = payloads(1, 40)
    write(tmp_path, [data], chunk_max_bytes=400)
    firsts = _chunk_firsts(tmp_path)
    path = tmp_path / chunk_name(firsts[0])
    raw = path.read_bytes()
    path.write_bytes(raw[: record_offsets(raw)[-1]])  # its last record is gone
    store = ChunkStore(tmp_path, 400)
    list(store.replay(start=firsts[2]))
    with pytest.raises(LedgerCorruptionError, match="next index on disk"):
        store.read(1)
    store.close()


def test_record_offsets_of_only_a_few_chunks_stay_in_memory(tmp_path: Path) -> None:
    data = payloads(1, 200)
    write(tmp_path, [data], chunk_max_bytes=300)
    firsts = _chunk_firsts(tmp_path)
    assert len(firsts) > storage.CACHED_CHUNKS + 10
    store, _ = open_store(tmp_path, 300)
    assert len(store._offsets) <= storage.CACHED_CHUNKS + 1  # after replay, too
    for _ in range(2):  # every chunk read twice: each walk re-finds evicted offsets
        for index in range(1, 201):
            assert store.read(index) == data[index - 1]
            assert len(store._offsets) <= storage.CACHED_CHUNKS + 1
    assert firsts[-1] in store._offsets  # the last chunk's (appends use it) are kept
    store.truncate(firsts[2] + 1)  # into a chunk whose offsets were evicted
    store.append(payloads(firsts[2] + 2, 5, size=70), firsts[2] + 2)
    store.sync()
    for index in range(1, firsts[2] + 2):
        assert store.read(index) == data[index - 1]
    assert store.read(firsts[2] + 3) == payloads(firsts[2] + 3, 1, size=70)[0]
    store.close()


def test_the_commit_file_never_loses_a_known_commit(tmp_path: Path) -> None:
    """A reopened node commits from 0: its first commit file (its state, commit 0) must not
    lower the commit the file recorded before (a truncation may have cut the marker that
    also said so from the chunks). Only a truncation lowers it, and only the durable part."""
    store, _ = open_store(tmp_path)
    store.write_commit_file(Marker(Position(5, 1), Position(7, 1)))
    store.close()
    reopened, _ = open_store(tmp_path)
    assert reopened.known.commit == Position(5, 1)
    reopened.write_commit_file(Marker(Position(0, 0), Position(9, 2)))
    assert read_commit_file(reopened.commit_file) == Marker(Position(5, 1), Position(9, 2))
    reopened.write_commit_file(Marker(Position(5, 1), Position(6, 1)), lower=True)
    assert read_commit_file(reopened.commit_file) == Marker(Position(5, 1), Position(6, 1))
    reopened.close()
