"""Fixtures for the ledger tests: a service identity, a node signer, a fake clock."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

NODE_IMAGE = Path(__file__).resolve().parents[3] / "node_image"
if str(NODE_IMAGE) not in sys.path:  # the package may not be installed in the test venv
    sys.path.insert(0, str(NODE_IMAGE))

from consortium_node.common.timeutil import utcnow  # noqa: E402
from consortium_node.identity.certs import (  # noqa: E402
    ServiceIdentity,
    certificate_pem,
    issue_node_certificate,
)
from consortium_node.identity.keys import generate_key  # noqa: E402
from consortium_node.ledger import Ledger, LedgerConfig, NodeKeySigner  # noqa: E402
from tests.support.clock import FakeClock  # noqa: E402


def make_signer(service: ServiceIdentity, *, expired: bool = False) -> NodeKeySigner:
    key = generate_key("p256")
    now = utcnow()
    if expired:
        cert = issue_node_certificate(
            service,
            key.public_key(),
            subject_alt_names=["node-old"],
            not_before=now - timedelta(days=3),
            not_after=now - timedelta(days=1),
        )
    else:
        cert = issue_node_certificate(
            service, key.public_key(), subject_alt_names=["node-0"], not_after=now + timedelta(1)
        )
    return NodeKeySigner(key, certificate_pem(cert))


@pytest.fixture(scope="session")
def service() -> ServiceIdentity:
    return ServiceIdentity.create("ledger-test")


@pytest.fixture(scope="session")
def signer(service: ServiceIdentity) -> NodeKeySigner:
    return make_signer(service)


@pytest.fixture
def secret() -> bytes:
    return os.urandom(32)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


OpenLedger = Callable[..., Ledger]


@pytest.fixture
def open_ledger(tmp_path: Path, secret: bytes, clock: FakeClock) -> Iterator[OpenLedger]:
    """Open the ledger in ``tmp_path/ledger`` (closing every ledger opened at teardown)."""
    opened: list[Ledger] = []

    def _open(config: LedgerConfig | None = None, **kwargs: object) -> Ledger:
        ledger = Ledger.open(
            kwargs.pop("directory", tmp_path / "ledger"),  # type: ignore[arg-type]
            ledger_secret=kwargs.pop("ledger_secret", secret),  # type: ignore[arg-type]
            config=config or LedgerConfig(),
            clock=clock,
            repair=bool(kwargs.pop("repair", False)),
            service_certificate=kwargs.pop("service_certificate", None),  # type: ignore[arg-type]
        )
        assert not kwargs, f"unknown arguments {sorted(kwargs)}"
        opened.append(ledger)
        return ledger

    yield _open
    for ledger in opened:
        with contextlib.suppress(OSError):
            ledger._store.close()
