"""Measurements: what code is running, and with which security-relevant launch config.

A real TEE measures the memory it launches (SEV-SNP ``MEASUREMENT``, TDX ``MRTD``/``RTMR``).
The virtual TEE instead hashes the installed ``consortium_node`` package, so a modified image
measures differently and a node running it cannot join a consortium that did not approve it.
``host_data`` plays the role of SEV-SNP ``HOST_DATA``: a digest of launch configuration that is
not code but still decides what the node may do (which consortium, which role).
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import consortium_node
from consortium_node.attestation.errors import MeasurementError
from consortium_node.common.canonical import canonical_json

_MARKER_FILE = "py.typed"
_SKIPPED_DIRS = frozenset({"__pycache__"})


def _is_measured_name(name: str) -> bool:
    return name.endswith(".py") or name == _MARKER_FILE


def measured_files(root: Path) -> list[tuple[str, Path]]:
    """The files ``measure_tree`` hashes: ``(posix relative path, path)`` sorted by path.

    Included: every file whose name ends in ``.py`` and every ``py.typed``, in any
    subdirectory except ``__pycache__`` (so ``*.pyc`` and data files never count).
    Symbolic links are refused (``MeasurementError``) rather than followed or skipped: following
    could escape the tree and skipping would leave importable code unmeasured.
    """
    root = Path(root)
    if not root.is_dir():
        raise MeasurementError(f"measure_tree: {root} is not a directory")
    found: list[tuple[str, Path]] = []
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(directory)
        dirnames[:] = [d for d in dirnames if d not in _SKIPPED_DIRS]
        for name in [*dirnames, *filenames]:
            if (here / name).is_symlink():
                rel = (here / name).relative_to(root).as_posix()
                raise MeasurementError(
                    f"measure_tree: {rel} is a symbolic link; refusing to measure"
                )
        for name in filenames:
            if _is_measured_name(name):
                path = here / name
                found.append((path.relative_to(root).as_posix(), path))
    found.sort(key=lambda item: item[0].encode("utf-8"))
    return found


def file_record(relative_path: str, content: bytes) -> bytes:
    """One file's contribution to the measurement (byte format in ``measure_tree``)."""
    encoded = relative_path.encode("utf-8")
    return struct.pack(">I", len(encoded)) + encoded + struct.pack(">Q", len(content)) + content


def measure_tree(root: Path) -> str:
    """Lowercase hex SHA-256 measurement of the Python package rooted at ``root``.

    Byte format hashed: the concatenation, over the files chosen by ``measured_files`` in
    ascending order of their UTF-8 POSIX relative path (``pkg/mod.py``, no leading ``./``), of::

        u32be(len(path_utf8)) || path_utf8 || u64be(len(content)) || content

    Both lengths are big-endian, so no two different trees produce the same byte stream:
    renaming, adding, removing or editing any measured file changes the result, while the
    order in which files were created on disk does not.
    """
    digest = hashlib.sha256()
    for relative_path, path in measured_files(root):
        digest.update(file_record(relative_path, path.read_bytes()))
    return digest.hexdigest()


def installed_package_root() -> Path:
    """Directory of the ``consortium_node`` package this process imports its code from."""
    return Path(consortium_node.__file__).resolve().parent


def measure_installed() -> str:
    """Measurement of the installed ``consortium_node`` package (what this node runs)."""
    return measure_tree(installed_package_root())


def host_data_for(consortium: str, role: str) -> str:
    """Lowercase hex SHA-256 of ``canonical_json({"consortium": ..., "role": ...})``."""
    for name, value in (("consortium", consortium), ("role", role)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"host_data_for: {name} must be a non-empty string, got {value!r}")
    return hashlib.sha256(canonical_json({"consortium": consortium, "role": role})).hexdigest()
