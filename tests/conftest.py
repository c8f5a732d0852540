"""Fixtures shared by the tiers that need the real local Kubernetes (integration/operator, e2e).

The cluster is brought up once per test session — whichever tier asks first — and torn down
at the end if this session started it (``tests/support/kube.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.kube import Cluster, bring_up, tear_down


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    c = bring_up()
    yield c
    tear_down(c)
