"""The snapshot files of one ledger directory (format and naming: ``snapshot``).

Why files beside the chunks and not in them: a snapshot is derived data, rewritten never and
deleted when newer ones are committed, while chunks are the history itself. Writes are atomic
(temp file, fsync, rename), so a crash leaves a snapshot whole or absent; a receipt file is
written only for a snapshot whose bytes match the committed evidence, so a snapshot with a
receipt (*committed*) is one a node may start from or serve.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consortium_node.common.canonical import canonical_json
from consortium_node.common.files import write_atomic
from consortium_node.ledger.errors import LedgerError

log = logging.getLogger("consortium_node.ledger")

SNAPSHOT_NAME = re.compile(r"snapshot_(\d{20})\.snap")
KEEP_COMMITTED = 2  # committed snapshots kept; older snapshot files are removed


def snapshot_name(index: int) -> str:
    return f"snapshot_{index:020d}.snap"


@dataclass(frozen=True)
class StoredSnapshot:
    """A snapshot file: its index, path, and receipt (None until committed)."""

    index: int
    path: Path

    @property
    def receipt_path(self) -> Path:
        return self.path.with_suffix(".receipt")

    @property
    def committed(self) -> bool:
        return self.receipt_path.exists()

    def receipt(self) -> dict[str, Any]:
        try:
            value = json.loads(self.receipt_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise LedgerError(f"{self.receipt_path} does not read: {exc}") from exc
        if not isinstance(value, dict):
            raise LedgerError(f"{self.receipt_path} is not a JSON object")
        return value


class SnapshotStore:
    """``<ledger dir>/snapshots``: write snapshots, commit them with their evidence receipt."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.protected = 0  # the snapshot the log starts from: never pruned
        # index → (SHA-256 of the bytes this store wrote, the file's identity after writing)
        self._written: dict[int, tuple[bytes, tuple[int, int, int, int]]] = {}

    def list(self) -> list[StoredSnapshot]:
        """Every snapshot file, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = SNAPSHOT_NAME.fullmatch(path.name)
            if match and path.is_file():
                found.append(StoredSnapshot(int(match.group(1)), path))
        return sorted(found, key=lambda s: s.index)

    def indices(self) -> set[int]:
        return {s.index for s in self.list()}

    def newest_committed(self) -> StoredSnapshot | None:
        committed = [s for s in self.list() if s.committed]
        return committed[-1] if committed else None

    def get(self, index: int) -> StoredSnapshot | None:
        path = self.directory / snapshot_name(index)
        return StoredSnapshot(index, path) if path.is_file() else None

    def write(self, index: int, data: bytes | Sequence[bytes]) -> tuple[bytes, int]:
        """Write snapshot ``index`` (atomically; bytes, or parts written one after the other)
        and return the SHA-256 and size of the bytes now on disk. An existing file is kept as
        it is, and its own digest returned (read back); bytes written here are hashed as they
        are written, not read back."""
        path = self.directory / snapshot_name(index)
        if path.exists():
            stored = path.read_bytes()
            return hashlib.sha256(stored).digest(), len(stored)
        parts = [data] if isinstance(data, bytes) else data
        write_atomic(path, parts)
        sha = hashlib.sha256()
        for part in parts:
            sha.update(part)
        self._written[index] = (sha.digest(), _identity(path))
        return sha.digest(), sum(len(part) for part in parts)

    def commit(self, index: int, digest: bytes, receipt: dict[str, Any]) -> bool:
        """Record the evidence receipt of snapshot ``index`` whose committed digest is
        ``digest``. False (nothing written) if this node has no such snapshot; a local file
        with other bytes is refused (renamed ``.mismatch``: never used or served)."""
        stored = self.get(index)
        if stored is None:
            return False
        actual = self._digest(stored)
        if actual != digest:
            self._written.pop(index, None)
            aside = stored.path.with_suffix(".mismatch")
            stored.path.rename(aside)
            log.error(
                "snapshot %d: this node's bytes (sha256 %s) are not the committed evidence "
                "(sha256 %s); moved to %s",
                index,
                actual.hex(),
                digest.hex(),
                aside.name,
            )
            return False
        if not stored.committed:
            write_atomic(stored.receipt_path, canonical_json(receipt))
        self._prune()
        return True

    def _digest(self, stored: StoredSnapshot) -> bytes:
        """The SHA-256 of a snapshot file: the one taken when this store wrote it, if the file
        is still the one written then (same inode, size and times), else read and hashed.
        (What a node starts from or serves is hashed again where it is used: a snapshot is
        only ever installed with its digest checked against its evidence receipt.)"""
        written = self._written.get(stored.index)
        if written is not None and written[1] == _identity(stored.path):
            return written[0]
        return hashlib.sha256(stored.path.read_bytes()).digest()

    def _prune(self) -> None:
        """Keep the newest ``KEEP_COMMITTED`` committed snapshots and anything newer."""
        snapshots = self.list()
        committed = [s.index for s in snapshots if s.committed]
        if len(committed) <= KEEP_COMMITTED:
            return
        oldest_kept = committed[-KEEP_COMMITTED]
        for stored in snapshots:
            if stored.index < oldest_kept and stored.index != self.protected:
                stored.receipt_path.unlink(missing_ok=True)
                stored.path.unlink(missing_ok=True)
                self._written.pop(stored.index, None)


def _identity(path: Path) -> tuple[int, int, int, int]:
    """What tells a file written once from one put in its place: inode, size, times."""
    st = path.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
