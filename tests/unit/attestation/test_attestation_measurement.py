"""measure_tree / measure_installed / host_data_for."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

import consortium_node
from consortium_node.attestation import host_data_for, measure_installed, measure_tree
from consortium_node.attestation.errors import MeasurementError
from consortium_node.attestation.measurement import measured_files

FILES = {
    "__init__.py": b'"""pkg"""\n',
    "py.typed": b"",
    "core.py": b"VALUE = 1\n",
    "sub/__init__.py": b"",
    "sub/deep/mod.py": b"def f() -> int:\n    return 2\n",
}
IGNORED = {
    "__pycache__/core.cpython-311.pyc": b"\x00compiled",
    "sub/__pycache__/mod.cpython-311.pyc": b"\x00compiled",
    "core.pyc": b"\x00stray bytecode",
    "README.txt": b"docs are not code",
    "data.json": b"{}",
}


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "pkg", {**FILES, **IGNORED})


def test_measurement_is_lowercase_sha256_hex_and_stable(tree: Path) -> None:
    first = measure_tree(tree)
    assert len(first) == 64
    assert first == first.lower()
    int(first, 16)
    assert measure_tree(tree) == first


def test_measurement_follows_the_documented_byte_format(tree: Path) -> None:
    digest = hashlib.sha256()
    for relative in sorted(FILES, key=lambda p: p.encode()):
        path = relative.encode()
        content = FILES[relative]
        digest.update(struct.pack(">I", len(path)) + path + struct.pack(">Q", len(content)))
        digest.update(content)
    assert measure_tree(tree) == digest.hexdigest()


def test_only_py_files_and_py_typed_are_measured(tree: Path) -> None:
    assert [relative for relative, _ in measured_files(tree)] == sorted(FILES)


@pytest.mark.parametrize("relative", sorted(FILES))
def test_changing_one_byte_of_one_file_changes_the_measurement(tree: Path, relative: str) -> None:
    before = measure_tree(tree)
    path = tree / relative
    content = bytearray(path.read_bytes() or b"\x00")
    content[0] ^= 0x01
    path.write_bytes(bytes(content))
    assert measure_tree(tree) != before


@pytest.mark.parametrize(
    ("old", "new"),
    [("core.py", "core2.py"), ("sub/deep/mod.py", "sub/mod.py"), ("py.typed", "sub/py.typed")],
)
def test_renaming_a_file_changes_the_measurement(tree: Path, old: str, new: str) -> None:
    before = measure_tree(tree)
    (tree / new).parent.mkdir(parents=True, exist_ok=True)
    (tree / old).rename(tree / new)
    assert measure_tree(tree) != before


@pytest.mark.parametrize("relative", ["extra.py", "sub/deep/__init__.py", "new/py.typed"])
def test_adding_a_measured_file_changes_the_measurement(tree: Path, relative: str) -> None:
    before = measure_tree(tree)
    write_tree(tree, {relative: b""})
    assert measure_tree(tree) != before


def test_removing_a_file_changes_the_measurement(tree: Path) -> None:
    before = measure_tree(tree)
    (tree / "core.py").unlink()
    assert measure_tree(tree) != before


@pytest.mark.parametrize(
    "relative",
    ["__pycache__/new.cpython-311.pyc", "sub/x.pyc", "notes.md", "sub/__pycache__/evil.py"],
)
def test_unmeasured_files_do_not_change_the_measurement(tree: Path, relative: str) -> None:
    before = measure_tree(tree)
    write_tree(tree, {relative: b"anything"})
    assert measure_tree(tree) == before


def test_moving_bytes_between_path_and_content_changes_the_measurement(tmp_path: Path) -> None:
    one = write_tree(tmp_path / "one", {"a.py": b"bc"})
    two = write_tree(tmp_path / "two", {"a.py": b"b", "c.py": b""})
    assert measure_tree(one) != measure_tree(two)


def test_measurement_is_independent_of_file_creation_order(tmp_path: Path) -> None:
    forward = write_tree(tmp_path / "forward", FILES)
    backward = write_tree(tmp_path / "backward", dict(reversed(list(FILES.items()))))
    assert measure_tree(forward) == measure_tree(backward)


def test_measurement_is_independent_of_the_root_location(tmp_path: Path) -> None:
    assert measure_tree(write_tree(tmp_path / "a", FILES)) == measure_tree(
        write_tree(tmp_path / "deeper" / "b", FILES)
    )


def test_symlinks_are_refused(tree: Path) -> None:
    (tree / "link.py").symlink_to(tree / "core.py")
    with pytest.raises(MeasurementError, match=r"link\.py is a symbolic link"):
        measure_tree(tree)


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MeasurementError, match="is not a directory"):
        measure_tree(tmp_path / "absent")


def test_measure_installed_measures_the_imported_package() -> None:
    assert measure_installed() == measure_tree(Path(consortium_node.__file__).parent)


def test_host_data_is_sha256_of_canonical_json() -> None:
    expected = hashlib.sha256(b'{"consortium":"demo","role":"node"}').hexdigest()
    assert host_data_for("demo", "node") == expected


@pytest.mark.parametrize(
    ("one", "two"),
    [
        (("demo", "node"), ("demo", "joiner")),
        (("demo", "node"), ("other", "node")),
        (("ab", "c"), ("a", "bc")),
    ],
)
def test_host_data_differs_with_consortium_or_role(
    one: tuple[str, str], two: tuple[str, str]
) -> None:
    assert host_data_for(*one) != host_data_for(*two)


@pytest.mark.parametrize(("consortium", "role"), [("", "node"), ("demo", ""), (None, "node")])
def test_host_data_rejects_empty_or_non_string(consortium: object, role: object) -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        host_data_for(consortium, role)  # type: ignore[arg-type]
