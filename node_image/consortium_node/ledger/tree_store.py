"""The Merkle tree's history on disk, so that memory does not grow with the ledger's length.

Why: every receipt for an old transaction needs hashes of subtrees far below the newest
entries, and rebuilding them at each restart means reading every entry ever written (43 s and
~64 bytes of memory per entry at 1M entries). The tree writes its complete subtrees below the
committed index here (``MerkleTree.flush``) and keeps in memory only what later appends need;
a restart with a verified local snapshot then reads none of the entries the snapshot covers.

Files in ``<ledger>/tree/`` [``TreeStore``]:

* ``level_<k:02d>.hashes``: the 32-byte hashes of the complete, aligned subtrees of ``2**k``
  leaves, position ``j`` (leaves ``[j * 2**k, (j + 1) * 2**k)``) at byte offset ``32 * j``;
  sparse (positions the node never held read as zeros and are never used).
* ``state.json``: canonical JSON ``{"format": 1, "start": S, "flushed": F}``, replaced
  atomically after the level files are fdatasync'ed: every position ``j`` at level ``k`` with
  ``held_base(S, k) <= j`` and ``(j + 1) * 2**k <= F`` is written. ``S`` is the size of the
  frontier the tree started from (0: it holds every leaf; a node that joined from a snapshot
  holds nothing below it).

Trust: these files are on the host's disk like the chunks, so nothing read from them is taken
on faith. At open they are used only if their frontier at a snapshot's size equals the
frontier the verified snapshot carries; afterwards every leaf hash read from them is checked by
folding its inclusion proof (also read from them) to a root the node computed or verified
itself (``MerkleTree.leaf_hash_at``), and a receipt's proof is folded to the signed root
before it is served. A mismatch is a storage fault like a damaged chunk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from consortium_node.common.canonical import canonical_json
from consortium_node.common.files import fsync_directory, write_atomic
from consortium_node.ledger.errors import LedgerError

HASH_SIZE = 32
FORMAT = 1


def held_base(start: int, level: int) -> int:
    """The first position held at ``level`` by a tree that started from a frontier of
    ``start`` leaves: its frontier piece there (if bit ``level`` of ``start`` is set) and on."""
    return (start >> level) & ~1


class TreeStore:
    """The level files and state of one ledger's tree (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fds: dict[int, int] = {}
        self.start, self.flushed = 0, 0
        self.usable = False  # the state file was read and is consistent
        try:
            state = json.loads((directory / "state.json").read_bytes())
            start, flushed = state["start"], state["flushed"]
            if (
                state.get("format") == FORMAT
                and type(start) is int
                and type(flushed) is int
                and 0 <= start <= flushed
            ):
                self.start, self.flushed, self.usable = start, flushed, True
        except (OSError, ValueError, KeyError, TypeError):
            pass  # absent or unreadable: the tree is rebuilt from the chunks

    def _path(self, level: int) -> Path:
        return self.directory / f"level_{level:02d}.hashes"

    def _fd(self, level: int) -> int:
        fd = self._fds.get(level)
        if fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = self._fds[level] = os.open(self._path(level), os.O_RDWR | os.O_CREAT, 0o600)
        return fd

    def holds(self, level: int, position: int) -> bool:
        """Whether ``state.json`` says the subtree at ``(level, position)`` is written."""
        return (
            self.usable
            and held_base(self.start, level) <= position
            and (position + 1) << level <= self.flushed
        )

    def read(self, level: int, position: int, count: int = 1) -> bytes:
        """The ``count`` stored hashes from ``(level, position)`` on, concatenated (the caller
        checks ``holds``)."""
        try:
            data = os.pread(self._fd(level), count * HASH_SIZE, position * HASH_SIZE)
        except OSError as exc:
            raise LedgerError(f"{self._path(level)} does not read: {exc}") from exc
        if len(data) != count * HASH_SIZE:
            raise LedgerError(
                f"{self._path(level)} ends before position {position} (the file shrank)"
            )
        return data

    def write(self, level: int, position: int, hashes: bytes | bytearray) -> None:
        """Write consecutive hashes from ``position`` (made durable by ``commit``)."""
        view = memoryview(hashes)
        offset = position * HASH_SIZE
        try:
            fd = self._fd(level)
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
        except OSError as exc:
            raise LedgerError(f"{self._path(level)} write failed: {exc}") from exc

    def commit(self, start: int, flushed: int) -> None:
        """fdatasync every level file, then record ``(start, flushed)`` atomically."""
        try:
            for fd in self._fds.values():
                os.fdatasync(fd)
            write_atomic(
                self.directory / "state.json",
                canonical_json({"format": FORMAT, "start": start, "flushed": flushed}),
            )
        except OSError as exc:
            raise LedgerError(f"the tree store in {self.directory} failed: {exc}") from exc
        self.start, self.flushed, self.usable = start, flushed, True

    def reset(self, start: int) -> None:
        """Forget what is stored (a tree rebuilt from ``start`` rewrites it): the state says
        nothing is held before anything is written again."""
        self.commit(start, start)

    def discard(self) -> None:
        """Remove the state file: the next open rebuilds the tree from the chunks."""
        self.usable = False
        try:
            (self.directory / "state.json").unlink(missing_ok=True)
            if self.directory.exists():
                fsync_directory(self.directory)
        except OSError as exc:
            raise LedgerError(f"cannot discard the tree store in {self.directory}: {exc}") from exc

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
