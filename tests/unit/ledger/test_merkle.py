"""RFC 6962 Merkle tree: reference vectors, proofs for every shape, and a naive reference."""

from __future__ import annotations

import hashlib
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium_node.ledger import merkle
from consortium_node.ledger.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    ProofStep,
    leaf_hash,
    node_hash,
    proof_sides,
    root_from_proof,
)

# Certificate Transparency reference vectors: google/certificate-transparency,
# cpp/merkletree/merkle_tree_test.cc (kInputs, kSHA256Roots, kSHA256Paths); the same values are
# in transparency-dev/merkle testonly/constants.go. The C++ test numbers leaves from 1; the
# indices below are 0-based (CT leaf 1 = index 0).
CT_INPUTS = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
CT_ROOTS = [  # root of the first n leaves, n = 1..8
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_PATHS = [  # (0-based index, tree size, PATH(index, D[size]))
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


def reference_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1 MTH, written as literally as possible."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + reference_mth(leaves[:k]) + reference_mth(leaves[k:])).digest()


def reference_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 section 2.1.1 PATH(m, D[n])."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*reference_path(m, leaves[:k]), reference_mth(leaves[k:])]
    return [*reference_path(m - k, leaves[k:]), reference_mth(leaves[:k])]


def tree_of(leaves: list[bytes]) -> MerkleTree:
    tree = MerkleTree()
    for leaf in leaves:
        tree.append(leaf)
    return tree


def test_hash_prefixes() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )


def test_ct_roots_for_every_size() -> None:
    tree = MerkleTree()
    assert tree.root().hex() == CT_EMPTY_ROOT == EMPTY_ROOT.hex()
    for n, leaf in enumerate(CT_INPUTS, start=1):
        tree.append(leaf)
        assert tree.size == n
        assert tree.root().hex() == CT_ROOTS[n - 1]
        # every historical size is still answerable after later appends
        for size in range(1, n + 1):
            assert tree.root(size).hex() == CT_ROOTS[size - 1]
        assert tree.root(0).hex() == CT_EMPTY_ROOT


@pytest.mark.parametrize(("index", "size", "path"), CT_PATHS)
def test_ct_inclusion_paths(index: int, size: int, path: list[str]) -> None:
    tree = tree_of(CT_INPUTS)
    assert [h.hex() for h in tree.inclusion_path(index, size)] == path
    proof = tree.inclusion_proof(index, size)
    assert root_from_proof(leaf_hash(CT_INPUTS[index]), proof).hex() == CT_ROOTS[size - 1]


def test_proof_sides_name_where_the_sibling_is() -> None:
    tree = tree_of(CT_INPUTS)
    # leaf 0 of 8: every sibling is to its right; leaf 5 of 8: left (4), right (6-7), left (0-3)
    assert [side for side, _ in tree.inclusion_proof(0, 8)] == ["right"] * 3
    assert proof_sides(5, 8) == ["left", "right", "left"]
    assert proof_sides(2, 3) == ["left"]


def test_wrong_position_or_leaf_does_not_verify() -> None:
    tree = tree_of(CT_INPUTS)
    proof = tree.inclusion_proof(5, 8)
    root = tree.root(8)
    assert root_from_proof(leaf_hash(CT_INPUTS[4]), proof) != root
    flipped: list[ProofStep] = [("right" if s == "left" else "left", h) for s, h in proof]
    assert root_from_proof(leaf_hash(CT_INPUTS[5]), flipped) != root


@pytest.mark.parametrize(("index", "size"), [(0, 0), (3, 3), (-1, 4), (0, 9)])
def test_out_of_range_requests_are_rejected(index: int, size: int) -> None:
    tree = tree_of(CT_INPUTS)
    with pytest.raises(ValueError, match="tree"):
        tree.inclusion_proof(index, size)


def test_root_beyond_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="not between 0 and 8"):
        tree_of(CT_INPUTS).root(9)


def test_append_hash_checks_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        MerkleTree().append_hash(b"short")


def test_truncate_matches_a_tree_built_to_that_size() -> None:
    leaves = [bytes([i]) for i in range(37)]
    for size in (0, 1, 5, 16, 17, 36):
        tree = tree_of(leaves)
        tree.truncate(size)
        assert tree.size == size
        assert tree.root() == reference_mth(leaves[:size])
        tree.append(b"again")
        assert tree.root() == reference_mth([*leaves[:size], b"again"])


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.integers(min_value=1, max_value=300))
def test_proofs_match_the_naive_reference(data: st.DataObject, n: int) -> None:
    leaves = [i.to_bytes(4, "big") * (i % 3) for i in range(n)]
    tree = tree_of(leaves)
    size = data.draw(st.integers(min_value=1, max_value=n), label="size")
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    root = tree.root(size)
    assert root == reference_mth(leaves[:size])
    assert tree.inclusion_path(index, size) == reference_path(index, leaves[:size])
    assert root_from_proof(leaf_hash(leaves[index]), tree.inclusion_proof(index, size)) == root


def test_a_million_leaves_stay_logarithmic() -> None:
    tree = MerkleTree()
    for i in range(1 << 20):
        tree.append_hash(i.to_bytes(32, "big"))
    started = time.perf_counter()
    for size in (1 << 20, (1 << 20) - 1, 777_777, 3):
        root = tree.root(size)
        for index in (0, size // 2, size - 1):
            proof = tree.inclusion_proof(index, size)
            assert root_from_proof(tree.leaf_hash_at(index), proof) == root
    assert time.perf_counter() - started < 0.5  # O(n) work would take seconds here


# -- a tree started from a frontier (a snapshot) ----------------------------------------------


def _full(n: int) -> MerkleTree:
    tree = MerkleTree()
    for i in range(n):
        tree.append(f"leaf {i}".encode())
    return tree


@pytest.mark.parametrize("start", [0, 1, 2, 3, 5, 8, 11, 16, 21, 32])
def test_a_tree_from_a_frontier_answers_as_the_whole_tree_from_there_on(start: int) -> None:
    whole = _full(45)
    pieces = whole.frontier(start)
    assert len(pieces) == bin(start).count("1")
    assert merkle.root_of_frontier(pieces) == whole.root(start)
    part = MerkleTree.from_frontier(start, pieces)
    assert part.start == start and part.size == start
    for i in range(start, 45):
        part.append(f"leaf {i}".encode())
        assert part.root() == whole.root(i + 1)
    for size in range(max(start, 1), 46):
        assert part.root(size) == whole.root(size)
        assert part.frontier(size) == whole.frontier(size)
        for leaf in range(start, size):
            assert part.inclusion_proof(leaf, size) == whole.inclusion_proof(leaf, size)
    if start:
        with pytest.raises(merkle.RangeNotHeldError):
            part.inclusion_proof(start - 1, 45)
        if start > 1:  # (an odd start keeps leaf start - 1: it is a frontier piece)
            with pytest.raises(merkle.RangeNotHeldError):
                part.leaf_hash_at((start & ~1) - 1)
            with pytest.raises(merkle.RangeNotHeldError):
                part.root(start - 1)
    # Truncation back to (not below) the frontier, then growing again, matches too.
    part.truncate(start)
    with pytest.raises(ValueError):
        part.truncate(start - 1) if start else part.truncate(-1)
    for i in range(start, 40):
        part.append(f"leaf {i}".encode())
    assert part.root() == whole.root(40)


def test_a_frontier_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="3 frontier pieces"):
        MerkleTree.from_frontier(11, [b"\0" * 32])
    with pytest.raises(ValueError, match="32 bytes"):
        MerkleTree.from_frontier(1, [b"\0" * 31])
