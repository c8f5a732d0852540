"""Node start-up in-process (no HTTP): genesis, restart, and crashes in between."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from consortium_node.attestation import measure_installed
from consortium_node.server import startup
from consortium_node.server.config import NodeConfig, parse_config
from consortium_node.server.errors import NodeStartError
from consortium_node.server.node import Node
from consortium_node.server.sealed import SealedStore
from tests.support.harness import make_identity, make_platform


@pytest.fixture
def config(tmp_path: Path) -> NodeConfig:
    key, cert = make_platform(tmp_path / "platform")
    member = make_identity(tmp_path / "ids", "m0", "governor")
    return parse_config(
        {
            "consortium": "unit",
            "name": "node-0",
            "mode": "genesis",
            "data_dir": "data",
            "platform": {"root_certificate": str(cert), "root_key": str(key)},
            "members": [{"certificate": str(member.cert), "role": "governor"}],
            "attestation": {"measurements": [measure_installed()]},
        },
        tmp_path,
    )


def test_genesis_then_restart_keeps_identity_and_waits_for_consensus(config: NodeConfig) -> None:
    node = Node.open(config)
    first = node.state()
    node.close()
    again = Node.open(config)
    state = again.state()
    again.close()
    assert state["node_id"] == first["node_id"]
    assert state["service_certificate_sha256"] == first["service_certificate_sha256"]
    assert state["trusted_list_version"] == first["trusted_list_version"] == 1
    assert state["last_index"] == first["commit_index"]  # replayed, durable
    assert state["commit_index"] == 0  # committed again only once consensus says so


def test_crash_before_sealing_the_service_identity_is_resumed(
    config: NodeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_put = SealedStore.put

    def crash_on_service(self: SealedStore, label: str, secret: bytes) -> None:
        if label == "service-identity":
            raise KeyboardInterrupt("simulated crash")
        real_put(self, label, secret)

    monkeypatch.setattr(SealedStore, "put", crash_on_service)
    with pytest.raises(KeyboardInterrupt):
        Node.open(config)
    monkeypatch.setattr(SealedStore, "put", real_put)
    node = Node.open(config)
    assert node.state()["trusted_list_version"] == 1
    node.close()
    data_dir = config.data_dir
    (aside,) = data_dir.glob("ledger.interrupted-genesis-*")
    assert any(aside.glob("*.chunk")), "the interrupted ledger is kept, not deleted"


def test_removed_sealed_identity_with_a_real_ledger_is_refused(config: NodeConfig) -> None:
    node = Node.open(config)
    node.close()
    data_dir = config.data_dir
    (data_dir / "sealed" / "service-identity.sealed").unlink()
    chunks_before = sorted(p.read_bytes() for p in (data_dir / "ledger").glob("*.chunk"))
    with pytest.raises(NodeStartError, match="refusing to start a second history"):
        Node.open(config)
    assert sorted(p.read_bytes() for p in (data_dir / "ledger").glob("*.chunk")) == chunks_before


def test_own_measurement_not_allowed_refuses_to_start(config: NodeConfig) -> None:
    bad = replace(config, attestation=replace(config.attestation, measurements=("0" * 64,)))
    with pytest.raises(NodeStartError, match="MeasurementNotAllowed"):
        Node.open(bad)


class _JoinStartedError(Exception):
    pass


def _other_code(monkeypatch: pytest.MonkeyPatch) -> str:
    other = "ab" * 32
    monkeypatch.setattr("consortium_node.server.startup.measure_installed", lambda: other)
    return other


def test_identity_sealed_by_other_code_is_set_aside_and_the_node_joins_afresh(
    config: NodeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A code upgrade: the new measurement cannot unseal the old identity (sealing keys derive
    from it), so the node keeps the old data aside and starts as a joiner with a new key."""
    node = Node.open(config)
    old_id = node.node_id
    node.close()
    data_dir = config.data_dir
    old_files = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*") if p.is_file())
    _other_code(monkeypatch)
    joiner = replace(config, mode="join")
    opened: list[Node] = []

    def join(node: Node) -> None:  # no primary to join here: stop where the join would start
        opened.append(node)
        raise _JoinStartedError

    monkeypatch.setattr(startup, "_join", join)
    with pytest.raises(_JoinStartedError):
        Node.open(joiner)
    (fresh,) = opened
    assert fresh.node_id != old_id
    (aside,) = data_dir.glob("retired-*-sealed-elsewhere")
    kept = sorted(p.relative_to(aside) for p in aside.rglob("*") if p.is_file())
    assert kept == old_files, "everything sealed by the old code is kept, nothing deleted"


def test_genesis_over_identity_sealed_by_other_code_is_refused(
    config: NodeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = Node.open(config)
    node.close()
    before = sorted(p.relative_to(config.data_dir) for p in config.data_dir.rglob("*"))
    _other_code(monkeypatch)
    with pytest.raises(NodeStartError, match="will not start a second network"):
        Node.open(config)
    assert sorted(p.relative_to(config.data_dir) for p in config.data_dir.rglob("*")) == before
