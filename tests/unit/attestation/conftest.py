"""Fixtures for the attestation unit tests: one platform per test module."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

try:  # until pytest's `pythonpath` (or an editable install) puts node_image on sys.path
    import consortium_node  # noqa: F401
except ModuleNotFoundError:  # pragma: no cover - depends on how the venv was set up
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "node_image"))

from attestation_support import Setup, make_setup

from consortium_node.attestation.insecure_virtual import VirtualPlatform


@pytest.fixture(scope="module")
def platform() -> VirtualPlatform:
    return VirtualPlatform.generate()


@pytest.fixture(scope="module")
def setup(platform: VirtualPlatform) -> Setup:
    return make_setup(platform)
