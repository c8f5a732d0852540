"""Raft's persistent state: durable, monotonic term, one vote per term, never reset."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from consortium_node.common.canonical import canonical_json
from consortium_node.replication.state import PersistentState, RaftStateError

NODE_A = "aa" * 32
NODE_B = "bb" * 32


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "raft-state.json"


def test_missing_file_is_term_zero_without_vote(path: Path) -> None:
    state = PersistentState(path)
    assert (state.current_term, state.voted_for) == (0, None)
    assert not path.exists()


def test_save_persists_across_instances(path: Path) -> None:
    state = PersistentState(path)
    state.save(3, None)
    assert (state.current_term, state.voted_for) == (3, None)
    again = PersistentState(path)
    assert (again.current_term, again.voted_for) == (3, None)


def test_file_is_canonical_json_and_private(path: Path) -> None:
    PersistentState(path).save(7, NODE_A)
    assert path.read_bytes() == canonical_json({"current_term": 7, "voted_for": NODE_A})
    assert path.read_bytes() == b'{"current_term":7,"voted_for":"' + NODE_A.encode() + b'"}'
    assert path.stat().st_mode & 0o777 == 0o600
    assert not list(path.parent.glob(".*.tmp"))


def test_vote_survives_restart(path: Path) -> None:
    PersistentState(path).save(2, NODE_A)
    restarted = PersistentState(path)
    assert (restarted.current_term, restarted.voted_for) == (2, NODE_A)
    with pytest.raises(ValueError, match="already has a vote"):
        restarted.save(2, NODE_B)  # the restart did not free the vote
    restarted.save(3, NODE_B)
    assert (PersistentState(path).current_term, PersistentState(path).voted_for) == (3, NODE_B)


def test_term_never_decreases(path: Path) -> None:
    state = PersistentState(path)
    state.save(5, NODE_A)
    with pytest.raises(ValueError, match="term: 4 is lower than the current term 5"):
        state.save(4, NODE_B)
    with pytest.raises(ValueError, match="lower"):
        state.save(-1, None)
    assert (state.current_term, state.voted_for) == (5, NODE_A)
    reloaded = PersistentState(path)
    assert (reloaded.current_term, reloaded.voted_for) == (5, NODE_A)
    with pytest.raises(ValueError, match="lower"):
        reloaded.save(0, None)


def test_vote_within_the_term_may_be_cast_once(path: Path) -> None:
    state = PersistentState(path)
    state.save(1, None)
    state.save(1, NODE_A)
    assert state.voted_for == NODE_A
    with pytest.raises(ValueError, match="already has a vote"):
        state.save(1, None)
    state.save(2, None)  # a new term clears the vote
    reloaded = PersistentState(path)
    assert (reloaded.current_term, reloaded.voted_for) == (2, None)


def test_no_write_when_unchanged(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = PersistentState(path)
    state.save(4, NODE_A)
    before = path.stat()

    def no_fsync(fd: int) -> None:
        raise AssertionError("save() of an unchanged state must not fsync")

    monkeypatch.setattr(os, "fsync", no_fsync)
    state.save(4, NODE_A)
    PersistentState(path).save(4, NODE_A)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_no_write_for_fresh_state(path: Path) -> None:
    PersistentState(path).save(0, None)
    assert not path.exists()


def test_each_change_replaces_the_file(path: Path) -> None:
    state = PersistentState(path)
    state.save(1, None)
    first = path.stat().st_ino
    state.save(1, NODE_A)
    assert path.stat().st_ino != first  # written to a temp file and renamed over


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not valid JSON"),
        (b'{"current_term": 3, "voted_for": nul', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[3, null]", "expected a JSON object, got list"),
        (b'{"current_term": 3}', "missing \\['voted_for'\\]"),
        (b'{"current_term": 3, "voted_for": null, "x": 1}', "unexpected \\['x'\\]"),
        (b'{"current_term": "3", "voted_for": null}', "current_term: '3'"),
        (b'{"current_term": -1, "voted_for": null}', "current_term: -1"),
        (b'{"current_term": true, "voted_for": null}', "current_term: True"),
        (b'{"current_term": 3.0, "voted_for": null}', "current_term: 3.0"),
        (b'{"current_term": 3, "voted_for": 7}', "voted_for: 7"),
        (b'{"current_term": 3, "current_term": 9, "voted_for": null}', "duplicate key"),
    ],
)
def test_corrupt_file_raises_and_is_not_reset(path: Path, content: bytes, reason: str) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(RaftStateError, match=reason) as caught:
        PersistentState(path)
    assert caught.value.path == path
    assert str(caught.value).startswith(f"{path}: ")
    assert path.read_bytes() == content  # left for an operator to inspect


def test_unreadable_path_raises(path: Path) -> None:
    path.mkdir(parents=True)  # a directory where the file should be
    with pytest.raises(RaftStateError, match="cannot read"):
        PersistentState(path)


def test_error_pickles(path: Path) -> None:
    error = RaftStateError(path, "not valid JSON")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, str(copy)) == (path, "not valid JSON", str(error))
