"""Fixtures for the backup tests: a service identity, a real ledger built once, and a fresh
copy of its backup (the layout of a bucket prefix) for each test to verify or tamper with."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from consortium_node.identity.certs import ServiceIdentity
from consortium_node.ledger import Ledger
from tests.support.backups import BuiltBackup, build_ledger, write_backup


@pytest.fixture(scope="session")
def service() -> ServiceIdentity:
    return ServiceIdentity.create("backup-test")


@pytest.fixture(scope="session")
def other_service() -> ServiceIdentity:
    return ServiceIdentity.create("another-consortium")


@pytest.fixture(scope="session")
def ledger(tmp_path_factory: pytest.TempPathFactory, service: ServiceIdentity) -> Iterator[Ledger]:
    built = build_ledger(tmp_path_factory.mktemp("ledger"), service)
    yield built
    built.close()


@pytest.fixture
def backup(ledger: Ledger, service: ServiceIdentity, tmp_path: Path) -> BuiltBackup:
    return write_backup(ledger, service, tmp_path / "copy")
