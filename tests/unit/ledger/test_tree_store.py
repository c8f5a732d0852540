"""The tree's history on disk: a flushed tree answers exactly as a tree held in memory, keeps
only the recent subtrees in memory, and notices a tampered or shrunk level file."""

from __future__ import annotations

from pathlib import Path

import pytest

from consortium_node.common.canonical import canonical_json
from consortium_node.ledger import merkle
from consortium_node.ledger.errors import LedgerError
from consortium_node.ledger.merkle import (
    Frontier,
    HistoryMismatchError,
    MerkleTree,
    RangeNotHeldError,
    frontier_sizes,
)
from consortium_node.ledger.tree_store import HASH_SIZE, TreeStore, held_base


def leaf(i: int) -> bytes:
    return f"leaf {i}".encode()


def whole(n: int) -> MerkleTree:
    tree = MerkleTree()
    for i in range(n):
        tree.append(leaf(i))
    return tree


def same_answers(tree: MerkleTree, reference: MerkleTree, first_leaf: int = 0) -> None:
    """Every root, proof and leaf hash ``tree`` holds equals the in-memory reference's."""
    assert tree.size == reference.size
    for size in range(max(first_leaf, 1), tree.size + 1):
        assert tree.root(size) == reference.root(size)
        for index in range(first_leaf, size):
            assert tree.inclusion_proof(index, size) == reference.inclusion_proof(index, size)
    for index in range(first_leaf, tree.size):
        assert tree.leaf_hash_at(index) == reference.leaf_hash_at(index)


def memory_hashes(tree: MerkleTree) -> int:
    return sum(len(level) for level in tree._levels) // HASH_SIZE


@pytest.mark.parametrize("flush_at", [[1], [7, 8], [5, 13, 40], [16, 17, 33, 64, 70]])
def test_a_flushed_tree_answers_as_the_whole_tree(tmp_path: Path, flush_at: list[int]) -> None:
    store = TreeStore(tmp_path / "tree")
    assert not store.usable  # nothing written yet
    tree, reference = MerkleTree(store), whole(75)
    for i in range(75):
        tree.append(leaf(i))
        if i + 1 in flush_at:
            tree.flush(i + 1)
            assert tree.flushed == i + 1 and store.flushed == i + 1 and store.start == 0
    same_answers(tree, reference)
    # The flushed part left memory: what remains is O(log n) plus the unflushed suffix.
    assert memory_hashes(tree) <= 2 * 7 + 2 * (75 - flush_at[-1])

    # Reopened, the state file says what is held; a resumed tree answers for all of it.
    store.close()
    again = TreeStore(tmp_path / "tree")
    assert again.usable and (again.start, again.flushed) == (0, flush_at[-1])
    # It holds the frontier at the flushed size, which a restart checks against a snapshot's.
    pieces = frontier_sizes(flush_at[-1])
    assert all(again.holds(level, position) for level, position in pieces)
    assert [again.read(*piece) for piece in pieces] == reference.frontier(flush_at[-1])
    resumed = MerkleTree.from_frontier(
        flush_at[-1], reference.frontier(flush_at[-1]), start=0, history=again
    )
    for i in range(flush_at[-1], 75):
        resumed.append(leaf(i))
    same_answers(resumed, reference)


def test_a_flushed_leaf_is_never_truncated(tmp_path: Path) -> None:
    tree = MerkleTree(TreeStore(tmp_path))
    for i in range(20):
        tree.append(leaf(i))
    tree.flush(12)
    tree.truncate(12)
    with pytest.raises(ValueError, match="flushed up to 12"):
        tree.truncate(11)
    for i in range(12, 30):
        tree.append(leaf(i))
    same_answers(tree, whole(30))


@pytest.mark.parametrize("start", [1, 6, 13, 32])
def test_a_tree_started_from_a_frontier_stores_what_it_holds(tmp_path: Path, start: int) -> None:
    reference = whole(60)
    store = TreeStore(tmp_path)
    tree = MerkleTree.from_frontier(start, reference.frontier(start), history=store)
    for i in range(start, 50):
        tree.append(leaf(i))
    tree.flush(50)
    assert (store.start, store.flushed) == (start, 50)
    for level in range(6):
        assert not store.holds(level, held_base(start, level) - 1)
    # Resumed from the stored frontier at 50, it still answers from ``start`` on, not below.
    resumed = MerkleTree.from_frontier(50, reference.frontier(50), start=start, history=store)
    for i in range(50, 60):
        resumed.append(leaf(i))
    same_answers(resumed, reference, first_leaf=start)
    with pytest.raises(RangeNotHeldError):
        resumed.inclusion_proof(start - 1, 60)


def test_a_tampered_level_file_is_a_history_mismatch(tmp_path: Path) -> None:
    store = TreeStore(tmp_path)
    tree = MerkleTree(store)
    for i in range(40):
        tree.append(leaf(i))
    tree.flush(40)
    path = tmp_path / "level_00.hashes"
    data = bytearray(path.read_bytes())
    data[3 * HASH_SIZE] ^= 1  # leaf 3's stored hash
    path.write_bytes(bytes(data))
    for index in (2, 3):  # leaf 2's proof uses leaf 3's hash as its sibling
        with pytest.raises(HistoryMismatchError, match=f"leaf {index}"):
            tree.leaf_hash_at(index)
    assert tree.leaf_hash_at(8) == whole(40).leaf_hash_at(8)  # elsewhere: untouched

    path.write_bytes(bytes(data[: 2 * HASH_SIZE]))  # the file shrank
    with pytest.raises(LedgerError, match="shrank"):
        tree.leaf_hash_at(5)


@pytest.mark.parametrize(
    "state",
    [
        b"",
        b"not json",
        canonical_json({"format": 2, "start": 0, "flushed": 8}),
        canonical_json({"format": 1, "start": 9, "flushed": 8}),
        canonical_json({"format": 1, "start": "0", "flushed": 8}),
        canonical_json({"format": 1, "flushed": 8}),
    ],
)
def test_an_unreadable_state_holds_nothing(tmp_path: Path, state: bytes) -> None:
    (tmp_path / "state.json").write_bytes(state)
    store = TreeStore(tmp_path)
    assert not store.usable and not store.holds(0, 0)


def test_reset_and_discard_forget_what_is_held(tmp_path: Path) -> None:
    store = TreeStore(tmp_path)
    tree = MerkleTree(store)
    for i in range(10):
        tree.append(leaf(i))
    tree.flush(10)
    assert store.holds(0, 9) and store.holds(3, 0)
    store.reset(4)
    assert TreeStore(tmp_path).flushed == 4 and not store.holds(0, 4)
    store.discard()
    assert not store.usable and not (tmp_path / "state.json").exists()
    assert not TreeStore(tmp_path).usable


@pytest.mark.parametrize("start", [0, 1, 6, 13, 32])
def test_a_frontier_grown_leaf_by_leaf_is_the_trees(start: int) -> None:
    reference = whole(70)
    frontier = Frontier(start, reference.frontier(start))
    for i in range(start, 70):
        assert frontier.size == i and frontier.pieces == reference.frontier(i)
        frontier.append_hash(reference.leaf_hash_at(i))
    assert frontier.pieces == reference.frontier(70)
    with pytest.raises(ValueError, match="3 frontier pieces"):
        Frontier(11, reference.frontier(8))


def test_leaves_read_back_a_block_at_a_time_are_checked_as_a_block(tmp_path: Path) -> None:
    n = 3 * (1 << merkle.LEAF_BLOCK) + 50
    reference = whole(n)
    tree = MerkleTree(TreeStore(tmp_path))
    for i in range(n):
        tree.append(leaf(i))
    tree.flush(n)
    assert [tree.leaf_hash_at(i) for i in range(n)] == [reference.leaf_hash_at(i) for i in range(n)]

    path = tmp_path / "level_00.hashes"
    data = bytearray(path.read_bytes())
    victim = (1 << merkle.LEAF_BLOCK) + 7  # in the second block
    data[victim * HASH_SIZE] ^= 1
    path.write_bytes(bytes(data))
    fresh = MerkleTree.from_frontier(n, reference.frontier(n), start=0, history=TreeStore(tmp_path))
    assert fresh.leaf_hash_at(3) == reference.leaf_hash_at(3)  # the first block is intact
    with pytest.raises(HistoryMismatchError):
        fresh.leaf_hash_at(victim + 100)  # any leaf of the damaged block: the block is refused
    assert fresh.leaf_hash_at(n - 1) == reference.leaf_hash_at(n - 1)  # (held in memory)
