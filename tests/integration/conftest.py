"""Integration tier: real ``consortium-node`` processes on 127.0.0.1, real TLS, real disks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.harness import Identity, LocalNode, make_identity, make_platform
from tests.support.s3server import S3Server, start_s3_server


@dataclass
class Consortium:
    node: LocalNode
    member: Identity
    user: Identity
    stranger: Identity
    operator: Identity
    workdir: Path


def start_consortium(workdir: Path, **overrides: object) -> Consortium:
    platform_key, platform_cert = make_platform(workdir / "platform")
    member = make_identity(workdir / "ids", "member0", "governor")
    user = make_identity(workdir / "ids", "user0", "user", kind="ed25519")
    stranger = make_identity(workdir / "ids", "stranger", "user")
    operator = make_identity(workdir / "ids", "operator0", "operator")
    node = LocalNode(
        workdir,
        "node-0",
        [member, user, operator],
        platform_key,
        platform_cert,
        overrides=dict(overrides),
    )
    node.start()
    return Consortium(node, member, user, stranger, operator, workdir)


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Consortium]:
    c = start_consortium(tmp_path_factory.mktemp("consortium"))
    yield c
    c.node.stop()


@pytest.fixture
def fresh_consortium(tmp_path: Path) -> Iterator[Callable[..., Consortium]]:
    """Start consortia private to one test; every node is stopped at teardown."""
    made: list[Consortium] = []

    def make(**overrides: object) -> Consortium:
        consortium = start_consortium(tmp_path / f"c{len(made)}", **overrides)
        made.append(consortium)
        return consortium

    yield make
    for consortium in made:
        if consortium.node.alive:
            consortium.node.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-protocol server (moto) that checks credentials like any store: ``endpoint``,
    ``port``, ``make_bucket()`` for a bucket no other test uses, the credentials it accepts
    (``access_key_id``/``secret_access_key``, ``credentials_env``) and ``settings``/``store``
    with them (``tests/support/s3server.py``)."""
    server = start_s3_server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()
