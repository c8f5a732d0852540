"""RFC 6962 Merkle tree over the ledger's leaves.

Why RFC 6962: a receipt is only useful if anyone can check it with an implementation they
already trust (Certificate Transparency, transparency-dev/merkle, CCF's receipts), so the
hashing, the split rule and the proof order are exactly the RFC's:

* ``leaf_hash(d)    = SHA-256(0x00 || d)``
* ``node_hash(l, r) = SHA-256(0x01 || l || r)``
* ``MTH({})         = SHA-256("")``; ``MTH(D[n]) = node_hash(MTH(D[0:k]), MTH(D[k:n]))`` where
  ``k`` is the largest power of two strictly smaller than ``n``.

Storage: for every level ``k`` the tree keeps, in one ``bytearray``, the 32-byte hashes of the
complete, aligned subtrees of ``2**k`` leaves ``[j * 2**k, (j + 1) * 2**k)`` that exist so far.
Every left subtree in the RFC recursion is such a subtree, and every right subtree is a run of
them (one per set bit of its size), so the root of any historical size costs O(log n) hashes
and an inclusion proof O(log² n) — never O(n). Appending is amortised O(1) and memory is about
64 bytes per leaf.
"""

from __future__ import annotations

import hashlib
from typing import Literal

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Side = Literal["left", "right"]
ProofStep = tuple[Side, bytes]


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_proof(leaf_hash: bytes, proof: list[ProofStep]) -> bytes:
    """Fold a leaf-to-root proof: a ``left`` sibling goes before the running hash."""
    current = leaf_hash
    for side, sibling in proof:
        current = node_hash(sibling, current) if side == "left" else node_hash(current, sibling)
    return current


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_position(index: int, size: int) -> None:
    if size < 1 or not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not inside a tree of size {size}")


def _sibling_ranges(index: int, size: int) -> list[tuple[Side, int, int]]:
    """The sibling subtrees on the path of leaf ``index`` in ``D[0:size]``, leaf to root.

    Each item is ``(side, start, count)``: the side the sibling is on and the leaves it covers.
    """
    _check_position(index, size)
    ranges: list[tuple[Side, int, int]] = []
    start, count, m = 0, size, index
    while count > 1:
        k = _split(count)
        if m < k:
            ranges.append(("right", start + k, count - k))
            count = k
        else:
            ranges.append(("left", start, k))
            start, count, m = start + k, count - k, m - k
    ranges.reverse()
    return ranges


def proof_sides(index: int, size: int) -> list[Side]:
    """The side of each sibling, leaf to root, that a proof for ``index`` in ``size`` has."""
    return [side for side, _, _ in _sibling_ranges(index, size)]


class MerkleTree:
    """An append-only RFC 6962 tree that answers roots and proofs for any past size."""

    __slots__ = ("_levels", "_size")

    def __init__(self) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0

    @property
    def size(self) -> int:
        """Number of leaves appended."""
        return self._size

    def append(self, leaf_data: bytes) -> None:
        """Append a leaf; the tree stores ``leaf_hash(leaf_data)``."""
        self.append_hash(leaf_hash(leaf_data))

    def append_hash(self, hashed_leaf: bytes) -> None:
        """Append an already hashed leaf (32 bytes) and close every completed subtree."""
        if len(hashed_leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, got {len(hashed_leaf)}")
        levels = self._levels
        levels[0] += hashed_leaf
        self._size += 1
        n, k = self._size, 0
        while n & 1 == 0:  # the last two subtrees of level k now form one of level k + 1
            pair = levels[k][-2 * HASH_SIZE :]
            k += 1
            if len(levels) == k:
                levels.append(bytearray())
            levels[k] += hashlib.sha256(b"\x01" + pair).digest()
            n >>= 1

    def truncate(self, size: int) -> None:
        """Drop every leaf at position ``>= size`` (Raft rolls back uncommitted suffixes)."""
        if not 0 <= size <= self._size:
            raise ValueError(f"cannot truncate a tree of size {self._size} to {size}")
        for k, level in enumerate(self._levels):
            del level[(size >> k) * HASH_SIZE :]
        while len(self._levels) > 1 and not self._levels[-1]:
            self._levels.pop()
        self._size = size

    def _perfect(self, level: int, position: int) -> bytes:
        offset = position * HASH_SIZE
        return bytes(self._levels[level][offset : offset + HASH_SIZE])

    def _range_hash(self, start: int, count: int) -> bytes:
        """MTH of ``count >= 1`` leaves from ``start``, a range the RFC recursion produces.

        Such a range splits into complete aligned subtrees, one per set bit of ``count`` from
        the highest; the RFC's MTH of it is their right fold with ``node_hash``.
        """
        parts: list[bytes] = []
        position = start
        for level in range(count.bit_length() - 1, -1, -1):
            if count >> level & 1:
                parts.append(self._perfect(level, position >> level))
                position += 1 << level
        result = parts.pop()
        while parts:
            result = node_hash(parts.pop(), result)
        return result

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all); the empty tree is SHA-256("")."""
        size = self._size if size is None else size
        if not 0 <= size <= self._size:
            raise ValueError(f"tree size {size} is not between 0 and {self._size}")
        return EMPTY_ROOT if size == 0 else self._range_hash(0, size)

    def leaf_hash_at(self, index: int) -> bytes:
        """The stored leaf hash at position ``index`` (0-based)."""
        _check_position(index, self._size)
        return self._perfect(0, index)

    def _check_size(self, size: int) -> None:
        if size > self._size:
            raise ValueError(f"tree size {size} is larger than the tree ({self._size} leaves)")

    def inclusion_proof(self, index: int, size: int) -> list[ProofStep]:
        """Siblings of leaf ``index`` in the tree of the first ``size`` leaves, leaf to root."""
        self._check_size(size)
        return [
            (side, self._range_hash(start, count))
            for side, start, count in _sibling_ranges(index, size)
        ]

    def inclusion_path(self, index: int, size: int) -> list[bytes]:
        """RFC 6962 ``PATH(index, D[size])``: the proof's hashes without sides."""
        return [sibling for _, sibling in self.inclusion_proof(index, size)]
