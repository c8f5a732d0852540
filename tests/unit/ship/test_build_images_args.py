"""``scripts/build-images.sh --node-variant NAME``: argument checks, which run before anything
is built (no buildah, no root, no output directory), so they are cheap to test here. The build
itself is exercised by the tests that call ``tests.support.kube.build_node_variant``."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts/build-images.sh"


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OUT_DIR": str(tmp_path / "out")},
        timeout=60,
    )


@pytest.mark.parametrize("name", ["", "Upper", "a_b", "a.b", "a/b", "a b", "é", "x" * 21, "ok\nrm"])
def test_bad_variant_names_are_refused_before_any_build(tmp_path: Path, name: str) -> None:
    done = run(tmp_path, "--load", "--node-variant", name, "node")
    assert done.returncode == 1
    assert f"--node-variant: bad NAME '{name}'" in done.stderr
    assert not (tmp_path / "out").exists()  # refused while parsing: nothing was set up


@pytest.mark.parametrize(
    "args",
    [["--node-variant"], ["--node-variant", "--load"], ["--node-variant", "-x"]],
)
def test_variant_option_needs_a_name(tmp_path: Path, args: list[str]) -> None:
    done = run(tmp_path, *args)
    assert done.returncode == 1
    assert "--node-variant needs a NAME ([a-z0-9-]{1,20})" in done.stderr
    assert not (tmp_path / "out").exists()


def test_equals_form_and_unknown_options_name_the_option(tmp_path: Path) -> None:
    equals = run(tmp_path, "--node-variant=abc")
    assert equals.returncode == 1
    assert "use --node-variant NAME" in equals.stderr
    unknown = run(tmp_path, "--node-variants", "abc")
    assert unknown.returncode == 1
    assert "unknown option '--node-variants'" in unknown.stderr
    assert "--node-variant NAME" in unknown.stderr


def test_usage_documents_the_option_and_its_outputs() -> None:
    header = re.match(r"(?:#.*\n)+", SCRIPT.read_text())
    assert header is not None
    usage = header.group(0)
    assert "[--node-variant NAME]" in usage
    assert "localhost/consortium-node:<version>-NAME" in usage
    for output in ("tar", "measurement", "stamp"):
        assert f"consortium-node-NAME.{output}" in usage
