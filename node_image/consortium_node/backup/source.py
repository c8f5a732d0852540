"""Where a backup is read from: the bucket itself, or a local copy of its prefix.

Why a protocol: an auditor verifies either straight from the object store (``s3.S3Store``) or
from a copy taken with any tool (``aws s3 sync s3://BUCKET/PREFIX DIR``, ``mc mirror``,
``rclone copy``), offline and with no credentials. Verification needs two reads only, so both
are the same two methods:

* ``keys(sub)``: every key that starts with ``sub`` (relative to the prefix, ``/``-separated,
  sorted), like an S3 listing with a prefix;
* ``get(key)``: the object's bytes, ``KeyError`` if there is none.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Protocol


class BackupSource(Protocol):
    """Read access to the keys of one backup prefix (``S3Store`` and ``DirectorySource``)."""

    def keys(self, sub: str) -> list[str]: ...

    def get(self, key: str) -> bytes: ...


class DirectorySource:
    """A local copy of a backup prefix: the key ``a/b`` is the file ``<root>/a/b``.

    Keys that are not plain relative paths (absolute, ``..``, ``.`` or empty parts, a
    backslash) name no file here: ``get`` raises ``KeyError`` for them rather than reading
    outside ``root``.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} is not a directory")

    @property
    def location(self) -> str:
        return f"{self.root}/"

    def keys(self, sub: str) -> list[str]:
        """Every file whose key starts with ``sub`` (sorted), found under the deepest directory
        ``sub`` names so that a sync of a large bucket is not walked whole."""
        directory = sub.rpartition("/")[0]
        if directory and not _plain(directory):
            return []
        base = self.root / directory if directory else self.root
        if not base.is_dir():
            return []
        found = (
            path.relative_to(self.root).as_posix() for path in base.rglob("*") if path.is_file()
        )
        return sorted(key for key in found if key.startswith(sub))

    def get(self, key: str) -> bytes:
        if not _plain(key):
            raise KeyError(key)
        path = self.root / key
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise KeyError(key) from exc


def _plain(key: str) -> bool:
    """A relative ``/``-separated path of ordinary names (what bucket keys look like)."""
    parts = key.split("/")
    return (
        bool(key)
        and "\\" not in key
        and not PurePosixPath(key).is_absolute()
        and all(part not in ("", ".", "..") for part in parts)
    )
