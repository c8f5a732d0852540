"""Durable file replacement: a crash leaves either the old or the new content, never half."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | Sequence[bytes], mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (bytes, or parts written one after the other, so that a
    large file need not be joined in memory first): temp file, fsync, rename, fsync of the
    directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        for part in [data] if isinstance(data, bytes) else data:
            view = memoryview(part)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    fsync_directory(path.parent)
