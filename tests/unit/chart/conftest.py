"""The ``helm_bin`` fixture: helm v3 from scripts/install-helm.sh (cached after the first run)."""

from __future__ import annotations

import pytest

from tests.unit.chart.support import install_helm


@pytest.fixture(scope="module")
def helm_bin() -> str:
    return install_helm()
