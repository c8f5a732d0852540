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

Frontier: the *frontier* of ``D[0:n]`` is the list of those complete aligned subtrees that
``[0, n)`` splits into, one per set bit of ``n`` from the highest (``frontier``). It is all a
tree needs to go on from size ``n`` (``MerkleTree.from_frontier``): every root of a size
``>= n`` and every inclusion proof of a leaf ``>= n`` are built from it and the later leaves
(the left sibling of such a leaf that lies below ``n`` is always one of its pieces). A snapshot
carries it, so a node started from a snapshot holds no hash below it; asking it for a proof
of an earlier leaf raises ``RangeNotHeldError``.

History: a tree with a ``TreeStore`` (``tree_store``) writes the subtrees that lie wholly
below a committed size to it (``flush``) and keeps in memory only the frontier there and what
came after, so memory does not grow with the number of leaves. Hashes read back from the store
are untrusted (the host's disk): a leaf hash read from it is returned only after it hashes up,
with its siblings, to a node already trusted: a piece of the *anchor*, the frontier this tree
computed in memory at its latest flush or was started from (a verified snapshot's), or a node
checked that way before (a bounded cache, so reading leaves in order costs one hash each);
otherwise ``HistoryMismatchError``. Proofs built from it are folded to their signed root by
their user.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

from consortium_node.ledger.tree_store import TreeStore

HASH_SIZE = 32
CHECKED_NODES = 4_096  # hashes read back from the tree store and checked, kept to check others
LEAF_BLOCK = 8  # leaf hashes are read back from the tree store 2**LEAF_BLOCK at a time
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


class RangeNotHeldError(ValueError):
    """The tree started from a frontier and does not hold the hashes below it."""


class HistoryMismatchError(ValueError):
    """A hash read back from the tree store does not fold to the root it must (damage)."""


def frontier_sizes(size: int) -> list[tuple[int, int]]:
    """``(level, position)`` of each frontier piece of ``D[0:size]``, highest level first."""
    pieces = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            pieces.append((level, start >> level))
            start += 1 << level
    return pieces


def root_of_frontier(pieces: list[bytes]) -> bytes:
    """MTH of the tree whose frontier is ``pieces`` (highest level first): their right fold."""
    if not pieces:
        return EMPTY_ROOT
    result = pieces[-1]
    for piece in reversed(pieces[:-1]):
        result = node_hash(piece, result)
    return result


class Frontier:
    """Only the frontier of a growing tree (O(log n) hashes): enough to check that a run of
    leaves rebuilds a frontier signed elsewhere, without holding the tree."""

    __slots__ = ("_pieces", "size")

    def __init__(self, size: int = 0, pieces: Sequence[bytes] = ()) -> None:
        where = frontier_sizes(size)
        if len(pieces) != len(where):
            raise ValueError(f"a tree of size {size} has {len(where)} frontier pieces")
        self.size = size
        self._pieces = [(level, piece) for (level, _), piece in zip(where, pieces, strict=True)]

    def append_hash(self, hashed_leaf: bytes) -> None:
        """Add the next leaf hash; the last two pieces of one level become one of the next."""
        pieces = self._pieces
        pieces.append((0, hashed_leaf))
        while len(pieces) > 1 and pieces[-1][0] == pieces[-2][0]:
            (level, right), (_, left) = pieces.pop(), pieces.pop()
            pieces.append((level + 1, node_hash(left, right)))
        self.size += 1

    @property
    def pieces(self) -> list[bytes]:
        """The frontier of the leaves so far, highest level first (as ``MerkleTree.frontier``)."""
        return [piece for _, piece in self._pieces]


class MerkleTree:
    """An append-only RFC 6962 tree that answers roots and proofs for any past size (or, when
    started from a frontier, for every size and leaf from the frontier's size on)."""

    __slots__ = (
        "_anchor",
        "_bases",
        "_block",
        "_checked",
        "_flushed",
        "_history",
        "_levels",
        "_size",
        "_start",
    )

    def __init__(self, history: TreeStore | None = None) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._bases: list[int] = [0]  # position of the first hash in memory at each level
        self._size = 0
        self._start = 0  # the size of the frontier it started from (0: the whole tree)
        self._history = history  # the subtrees below ``_flushed`` (see the module docstring)
        self._flushed = 0
        # The frontier of the size flushed last, computed in memory (or verified by the
        # caller): what a hash read back from the store is checked against (``_check_stored``),
        # and the nodes already checked that way (a bounded cache: sequential reads check one
        # hash each).
        self._anchor: tuple[int, dict[tuple[int, int], bytes]] = (0, {})
        self._checked: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._block: tuple[int, bytes | None] | None = None  # the last block of leaves read

    @classmethod
    def from_frontier(
        cls,
        size: int,
        pieces: list[bytes],
        *,
        start: int | None = None,
        history: TreeStore | None = None,
    ) -> MerkleTree:
        """A tree of ``size`` leaves that holds in memory only the frontier ``pieces`` of
        ``D[0:size]`` (highest level first, as ``frontier`` returns them). With ``history``
        holding the subtrees below ``size`` from ``start`` on, it answers for those too."""
        where = frontier_sizes(size)
        if size < 0 or len(pieces) != len(where):
            raise ValueError(f"a tree of size {size} has {len(where)} frontier pieces")
        tree = cls()
        top = where[0][0] if where else 0
        tree._levels = [bytearray() for _ in range(top + 1)]
        # Level k holds positions from (size >> k) rounded down to even: its frontier piece
        # (if bit k of size is set) and the subtrees later leaves complete.
        tree._bases = [(size >> k) & ~1 for k in range(top + 1)]
        for (level, position), piece in zip(where, pieces, strict=True):
            if len(piece) != HASH_SIZE:
                raise ValueError(f"a frontier piece is {HASH_SIZE} bytes, got {len(piece)}")
            assert position == tree._bases[level]
            tree._levels[level] += piece
        tree._size = tree._start = tree._flushed = size
        tree._anchor = (size, dict(zip(where, pieces, strict=True)))
        if history is not None:
            tree._history, tree._start = history, size if start is None else start
        return tree

    @property
    def flushed(self) -> int:
        """The size below which complete subtrees are in the tree store, not in memory."""
        return self._flushed

    def flush(self, size: int) -> None:
        """Move every complete subtree wholly below ``size`` to the tree store and drop it
        from memory (``size`` must be committed: a flushed leaf is never truncated)."""
        history = self._history
        if history is None or size <= self._flushed:
            return
        if size > self._size:
            raise ValueError(f"cannot flush {size} leaves of a tree of {self._size}")
        anchor = (size, {piece: self._perfect(*piece) for piece in frontier_sizes(size)})
        for k, level in enumerate(self._levels):
            # every complete subtree below ``size``, including those kept in memory below
            count = (size >> k) - self._bases[k]
            if count > 0:
                history.write(k, self._bases[k], level[: count * HASH_SIZE])
        history.commit(self._start, size)
        for k, level in enumerate(self._levels):
            keep_from = (size >> k) & ~1
            count = keep_from - self._bases[k]
            if count > 0:
                del level[: count * HASH_SIZE]
                self._bases[k] = keep_from
        self._flushed, self._anchor = size, anchor

    @property
    def start(self) -> int:
        """The size of the frontier this tree started from (0: it holds every leaf)."""
        return self._start

    def frontier(self, size: int | None = None) -> list[bytes]:
        """The frontier pieces of ``D[0:size]`` (default: all), highest level first."""
        size = self._size if size is None else size
        if not self._start <= size <= self._size:
            raise RangeNotHeldError(
                f"the frontier of size {size} is outside {self._start}..{self._size}"
            )
        return [self._perfect(level, position) for level, position in frontier_sizes(size)]

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
                self._bases.append((self._size >> k) - 1)
            levels[k] += hashlib.sha256(b"\x01" + pair).digest()
            n >>= 1

    def truncate(self, size: int) -> None:
        """Drop every leaf at position ``>= size`` (Raft rolls back uncommitted suffixes)."""
        if not max(self._start, self._flushed) <= size <= self._size:
            raise ValueError(
                f"cannot truncate a tree of size {self._size} (held from {self._start}, "
                f"flushed up to {self._flushed}) to {size}"
            )
        for k, level in enumerate(self._levels):
            del level[max(0, (size >> k) - self._bases[k]) * HASH_SIZE :]
        while len(self._levels) > 1 and not self._levels[-1]:
            self._levels.pop()
            self._bases.pop()
        self._size = size

    def _perfect(self, level: int, position: int) -> bytes:
        offset = (position - self._bases[level]) * HASH_SIZE
        if offset < 0:
            history = self._history
            if history is not None and history.holds(level, position):
                return history.read(level, position)
            raise RangeNotHeldError(
                f"the subtree at level {level}, position {position} is below the frontier this "
                f"tree started from (size {self._start})"
            )
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
        if size < self._start:
            raise RangeNotHeldError(f"the root of size {size} is below {self._start}")
        return EMPTY_ROOT if size == 0 else self._range_hash(0, size)

    def leaf_hash_at(self, index: int) -> bytes:
        """The leaf hash at position ``index`` (0-based); one read back from the tree store
        is checked first (``_check_stored``: ``HistoryMismatchError``), a block of
        ``2**LEAF_BLOCK`` leaves at a time where the store holds the whole block."""
        _check_position(index, self._size)
        if index >= self._bases[0]:
            return self._perfect(0, index)
        block, offset = index >> LEAF_BLOCK, (index & ((1 << LEAF_BLOCK) - 1)) * HASH_SIZE
        if self._block is None or self._block[0] != block:
            self._block = (block, self._checked_block(block))
        leaves = self._block[1]
        if leaves is not None:
            return leaves[offset : offset + HASH_SIZE]
        leaf = self._perfect(0, index)
        self._check_stored(0, index, leaf)
        return leaf

    def _checked_block(self, block: int) -> bytes | None:
        """The leaf hashes of ``block`` read back in one piece and checked through the root
        of their subtree, or None if the store does not hold all of them below the anchor."""
        count = 1 << LEAF_BLOCK
        first, history = block * count, self._history
        if (
            history is None
            or first + count > min(self._anchor[0], self._bases[0])
            or not (history.holds(0, first) and history.holds(0, first + count - 1))
        ):
            return None
        leaves = history.read(0, first, count)
        level = leaves
        while len(level) > HASH_SIZE:
            level = b"".join(
                hashlib.sha256(b"\x01" + level[i : i + 2 * HASH_SIZE]).digest()
                for i in range(0, len(level), 2 * HASH_SIZE)
            )
        self._check_stored(LEAF_BLOCK, block, level)
        return leaves

    def _check_stored(self, level: int, position: int, value: bytes) -> None:
        """Hash ``value`` (read back at ``(level, position)``) up with its siblings until a
        node already trusted: a frontier piece of the anchor, computed in memory, or a node
        checked before. Every node on the way is then trusted too (SHA-256 binds both
        children), so reading leaves in order costs one hash each."""
        size, pieces = self._anchor
        checked, path = self._checked, []
        node, hashed = (level, position), value
        while True:
            trusted = pieces.get(node) or checked.get(node)
            if trusted is not None:
                if trusted != hashed:
                    raise HistoryMismatchError(
                        f"the tree store's hashes for leaf {position << level} do not fold to "
                        f"the tree of size {size} this node computed"
                    )
                break
            k, j = node
            if ((j >> 1) + 1) << (k + 1) > size:  # a frontier piece of size: not in the anchor
                raise HistoryMismatchError(
                    f"the subtree at level {k}, position {j} is not below the anchor ({size})"
                )
            sibling = self._perfect(k, j ^ 1)
            path += [(node, hashed), ((k, j ^ 1), sibling)]
            hashed = node_hash(hashed, sibling) if j % 2 == 0 else node_hash(sibling, hashed)
            node = (k + 1, j >> 1)
        for node, hashed in path:
            checked[node] = hashed
            checked.move_to_end(node)
        while len(checked) > CHECKED_NODES:
            checked.popitem(last=False)

    def _check_size(self, size: int) -> None:
        if size > self._size:
            raise ValueError(f"tree size {size} is larger than the tree ({self._size} leaves)")

    def inclusion_proof(self, index: int, size: int) -> list[ProofStep]:
        """Siblings of leaf ``index`` in the tree of the first ``size`` leaves, leaf to root."""
        self._check_size(size)
        if index < self._start:
            raise RangeNotHeldError(
                f"leaf {index} is below the frontier this tree started from ({self._start})"
            )
        return [
            (side, self._range_hash(start, count))
            for side, start, count in _sibling_ranges(index, size)
        ]

    def inclusion_path(self, index: int, size: int) -> list[bytes]:
        """RFC 6962 ``PATH(index, D[size])``: the proof's hashes without sides."""
        return [sibling for _, sibling in self.inclusion_proof(index, size)]
