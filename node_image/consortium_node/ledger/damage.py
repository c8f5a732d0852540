"""Damaged chunk bytes: what was found, and moving it aside (never deleting it).

Why: a node that finds a storage fault in its ledger should neither refuse to start (the
consortium loses a replica for good) nor drop the damaged entries as if they had never been
written (it may have acknowledged them). It sets the damaged suffix of its log aside, keeps
serving what precedes it, and gets the rest again from the replicas that hold it (the
Raft leader replicates it, checked like any replicated entry; see ``Ledger.open(repair=True)``
and ``replication.raft``). The bytes moved aside stay on the volume for forensics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from consortium_node.common.files import fsync_directory


class DamageKind(StrEnum):
    """Why entries were set aside; the ``reason`` label of ``consortium_ledger_repairs_total``."""

    TRUNCATED = "truncated"  # a record was cut short at or below the known commit index
    CORRUPTED = "corrupted"  # bad magic, checksum, entry format, tree or signature
    MISSING = "missing"  # a chunk file (or the records it held) is gone
    SEALED = "sealed"  # a sealed secret (service identity, ledger secret) is gone: re-joined


@dataclass(frozen=True)
class Damage:
    """The first damaged record of a ledger and what was done with it."""

    kind: DamageKind
    path: Path  # the chunk it was found in
    offset: int  # byte offset of the damaged record in that chunk
    first_lost: int  # index of the first entry no longer in the log
    reason: str
    aside: tuple[Path, ...]  # where the damaged bytes and the later chunks now are

    def describe(self) -> str:
        return (
            f"{self.kind} at {self.path.name} byte {self.offset} (from index {self.first_lost}): "
            f"{self.reason}"
        )


def _free_name(path: Path) -> Path:
    candidate, suffix = path, 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.{suffix}")
        suffix += 1
    return candidate


def cut_aside(path: Path, offset: int, tag: str, *, keep_empty: bool = False) -> Path | None:
    """Copy ``path``'s bytes from ``offset`` to ``<path>.<tag>-<offset>`` (fsynced), then cut
    ``path`` there (fsynced; unlinked if ``offset`` is 0 unless ``keep_empty``). Returns the
    copy (None: nothing after ``offset``). The directory is fsynced, so a crash leaves the copy
    or the original."""
    data = path.read_bytes()
    copy = None
    if offset < len(data):
        copy = _free_name(path.with_name(f"{path.name}.{tag}-{offset}"))
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)[offset:]
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_directory(path.parent)
    if offset == 0 and not keep_empty:
        path.unlink()
    else:
        with path.open("r+b") as handle:
            handle.truncate(offset)
            handle.flush()
            os.fsync(handle.fileno())
    fsync_directory(path.parent)
    return copy


def rename_aside(path: Path, tag: str) -> Path:
    """Rename a whole chunk to ``<path>.<tag>`` (kept, no longer read); the directory is
    fsynced."""
    target = _free_name(path.with_name(f"{path.name}.{tag}"))
    path.rename(target)
    fsync_directory(path.parent)
    return target
