"""Fixtures of the Raft cluster tests (``test_raft.py``, ``test_raft_election.py``)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from consortium_node.identity.certs import ServiceIdentity

from .raft_harness import Cluster, quiet_unretrieved_errors


@pytest.fixture(scope="module")
def service() -> ServiceIdentity:
    return ServiceIdentity.create("raft-test")


@pytest.fixture
async def unretrieved_errors() -> AsyncIterator[None]:
    """Use with ``pytest.mark.usefixtures``: see ``raft_harness.quiet_unretrieved_errors``."""
    quiet_unretrieved_errors(asyncio.get_running_loop())
    yield
    gc.collect()  # report this test's garbage now, not in the middle of a later ast.parse


@pytest.fixture
async def cluster(tmp_path: Path, service: ServiceIdentity) -> AsyncIterator[Cluster]:
    """A cluster with the harness timings; election safety is checked at teardown."""
    cluster = Cluster(tmp_path, service)
    try:
        yield cluster
        cluster.check_safety()
    finally:
        await cluster.close()
