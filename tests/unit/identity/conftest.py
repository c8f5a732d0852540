"""Shared fixtures for identity tests: service identities, node keys and list builders."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

try:  # the package is normally installed into the venv; fall back to the source tree
    import consortium_node  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the venv was set up
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "node_image"))

from consortium_node.identity.certs import ServiceIdentity
from consortium_node.identity.keys import PrivateKey, generate_key
from consortium_node.identity.trusted_list import (
    NodeEntry,
    NodeStatus,
    TrustedNodeList,
    sign_trusted_list,
)
from consortium_node.identity.trusted_list_store import TrustedListStore

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
MEASUREMENT = "ab" * 32
OLD_MEASUREMENT = "0f" * 32
HOST_DATA = "cd" * 32

ListFactory = Callable[..., TrustedNodeList]


@pytest.fixture(scope="session")
def service() -> ServiceIdentity:
    return ServiceIdentity.create("demo")


@pytest.fixture(scope="session")
def other_service() -> ServiceIdentity:
    """Another service identity with the same consortium name (same certificate subject)."""
    return ServiceIdentity.create("demo")


@pytest.fixture(scope="session")
def node_keys() -> list[PrivateKey]:
    return [generate_key("p256") for _ in range(3)]


def entry_for(
    key: PrivateKey, name: str, status: NodeStatus = NodeStatus.TRUSTED, hours: int = 24
) -> NodeEntry:
    return NodeEntry.for_key(
        key.public_key(),
        name=name,
        address=f"{name}.demo-nodes.default.svc",
        measurement=MEASUREMENT,
        host_data=HOST_DATA,
        status=status,
        attested_at=T0,
        attestation_expires_at=T0 + timedelta(hours=hours),
    )


@pytest.fixture
def make_entry() -> Callable[..., NodeEntry]:
    """``make_entry(key, name, status=Trusted, hours=24)``: attested at T0, expiring hours later."""
    return entry_for


@pytest.fixture
def make_list(service: ServiceIdentity, node_keys: list[PrivateKey]) -> ListFactory:
    """Build a list of the three nodes (demo-0 Trusted, demo-1 Pending, demo-2 Retired)."""

    def build(
        version: int = 1,
        *,
        consortium: str = "demo",
        svc: ServiceIdentity | None = None,
        status_1: NodeStatus = NodeStatus.PENDING,
    ) -> TrustedNodeList:
        nodes = (
            entry_for(node_keys[2], "demo-2", NodeStatus.RETIRED),
            entry_for(node_keys[0], "demo-0", NodeStatus.TRUSTED),
            entry_for(node_keys[1], "demo-1", status_1),
        )
        return TrustedNodeList(
            consortium=consortium,
            version=version,
            issued_at="2026-01-02T03:04:05Z",
            service_certificate_sha256=(svc or service).certificate_sha256,
            allowed_measurements=(MEASUREMENT, OLD_MEASUREMENT),
            nodes=nodes,
        )

    return build


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where a store persists its list."""
    return tmp_path / "state" / "trusted-nodes.cose"


@pytest.fixture
def store(path: Path, service: ServiceIdentity) -> TrustedListStore:
    return TrustedListStore(path, service.certificate, "demo")


@pytest.fixture
def signed(make_list: ListFactory, service: ServiceIdentity) -> Callable[..., bytes]:
    """``signed(version, **make_list kwargs)``: an envelope signed by ``service``."""

    def sign(version: int, **kwargs: object) -> bytes:
        return sign_trusted_list(make_list(version, **kwargs), service)

    return sign
