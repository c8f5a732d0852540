"""End-to-end tier: the chart installed with helm, the operator running in a pod."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.kube import ROOT


@pytest.fixture(scope="session")
def helm() -> Path:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts/install-helm.sh")], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])
