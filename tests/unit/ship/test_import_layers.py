"""The operator's layers are enforced, not only drawn: ``lint-imports`` (the project's own
contracts in pyproject.toml) fails on a new module that is in no layer, on a module other
than ``kube/k8s.py`` importing ``kubernetes``, and on one other than the handlers importing
``kopf``. Each case is a copy of the packages with one scratch module added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(tmp_path: Path, scratch: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """lint-imports over copies of both packages, with ``scratch`` files (path → source)."""
    for package in ("operator/consortium_operator", "node_image/consortium_node"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for path, source in scratch.items():
        (tmp_path / path).write_text(source)
    env = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path / 'operator'}{os.pathsep}{tmp_path / 'node_image'}",
    }
    return subprocess.run(
        [str(LINT), "--no-cache"],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )


def test_the_tree_as_it_is_keeps_every_contract(tmp_path: Path) -> None:
    result = _lint(tmp_path, {})
    assert result.returncode == 0, result.stdout
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("path", "source", "broken"),
    [
        (
            "operator/consortium_operator/backup.py",  # a new top-level module, in no layer
            '"""scratch"""\n',
            "Operator layers",
        ),
        (
            "operator/consortium_operator/consortium/backup.py",  # a new pass step, unplaced
            '"""scratch"""\n',
            "The pass's steps",
        ),
        (
            "operator/consortium_operator/api/leaky.py",
            '"""scratch"""\nimport kubernetes  # noqa: F401\n',
            "Only kube.k8s talks to the Kubernetes client",
        ),
        (
            "operator/consortium_operator/consortium/leaky.py",
            '"""scratch"""\nimport kopf  # noqa: F401\n',
            "kopf stays in the registration layer",
        ),
        (
            "operator/consortium_operator/kube/upward.py",  # a lower layer importing a higher
            '"""scratch"""\nfrom consortium_operator import handlers  # noqa: F401\n',
            "Operator layers",
        ),
    ],
    ids=[
        "module-in-no-layer",
        "step-in-no-layer",
        "kubernetes-outside-k8s",
        "kopf-outside-handlers",
        "upward-import",
    ],
)
def test_lint_imports_fails_on(tmp_path: Path, path: str, source: str, broken: str) -> None:
    result = _lint(tmp_path, {path: source})
    assert result.returncode != 0, result.stdout
    assert "Broken contracts" in result.stdout, result.stdout
    assert broken in result.stdout.split("Broken contracts", 1)[1], result.stdout
