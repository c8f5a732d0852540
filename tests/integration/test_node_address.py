"""A node restarted on another address (as a pod restarts with a new IP) announces it: the
primary verifies a fresh quote over the same key, records the address in the next list and
re-issues the node's certificate with the new names — and clients reach it there.

Real node processes on loopback: the node moves from 127.0.0.1 to 127.0.0.2 (on Linux the
whole 127/8 is the loopback interface), keeping its port, data and identity.
"""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from consortium_node.identity.certs import subject_alt_names
from tests.support.cluster import Cluster
from tests.support.harness import LocalNode, ctl
from tests.support.wait import wait_for

NEW_HOST = "127.0.0.2"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster.start(tmp_path, 3)
    yield c
    c.stop()


def presented_names(node: LocalNode) -> list[str]:
    """The names in the certificate the node presents now (the chain is checked, not names)."""
    pem = ssl.get_server_certificate((node.host, node.port), ca_certs=str(node.service_cert))
    return subject_alt_names(x509.load_pem_x509_certificate(pem.encode()))


def listed_address(cluster: Cluster, name: str) -> str:
    status, body = cluster.leader().get("/node/trusted-list?format=json")
    assert status == 200, body
    return str(next(n["address"] for n in body["nodes"] if n["name"] == name))


def submit(cluster: Cluster, node: LocalNode, *extra: str) -> subprocess.CompletedProcess[str]:
    assert cluster.user is not None
    return ctl(
        "tx", "submit", "--node", node.url, "--service-cert", str(cluster.nodes[0].service_cert),
        "--cert", str(cluster.user.cert), "--key", str(cluster.user.key), *extra,
    )  # fmt: skip


def test_a_node_restarted_on_a_new_address_is_reachable_there(
    cluster: Cluster, tmp_path: Path
) -> None:
    leader = cluster.leader()
    moved = next(n for n in cluster.nodes if n is not leader)
    version = leader.state()["trusted_list_version"]
    moved.stop()
    moved.overrides = {
        **moved.overrides,
        "listen": {"host": NEW_HOST},
        "address": f"{NEW_HOST}:{moved.port}",
    }
    moved.start(wait=False)
    failures: list[tuple[int, str]] = []

    def reachable() -> bool:
        done = submit(cluster, moved, "--set", "moved=yes")
        if done.returncode != 0:
            failures.append((done.returncode, done.stderr.strip()))
        return done.returncode == 0

    wait_for(f"a write through {moved.url}", reachable, 30, interval=0.2)
    # Before the refresh a client saw either nothing listening yet (exit 3) or a certificate
    # for the old address, reported as such (exit 1), never as "unreachable".
    for code, message in failures:
        assert code in (1, 3), message
        if "not valid for" in message:
            assert code == 1 and f"'{NEW_HOST}'" in message and "127.0.0.1" in message
    assert NEW_HOST in presented_names(moved)
    assert listed_address(cluster, moved.name) == f"{NEW_HOST}:{moved.port}"
    assert cluster.leader().state()["trusted_list_version"] > version
    # It is a full member again: Raft reaches it at the new address, it catches up, and a
    # receipt fetched through it verifies.
    cluster.wait_converged(timeout=30)
    receipt = tmp_path / "receipt.json"
    through = submit(cluster, moved, "--set", "after=move", "--receipt-out", str(receipt))
    assert through.returncode == 0, through.stderr
    verified = ctl(
        "verify-receipt", "--service-cert", str(cluster.nodes[0].service_cert), str(receipt)
    )
    assert verified.returncode == 0, verified.stderr
    assert (
        json.loads(verified.stdout)["txid"] == json.loads(through.stdout)["transactions"][0]["txid"]
    )


def test_a_node_restarted_on_the_same_address_announces_nothing(cluster: Cluster) -> None:
    leader = cluster.leader()
    same = next(n for n in cluster.nodes if n is not leader)
    version = leader.state()["trusted_list_version"]
    same.stop()
    same.start()
    cluster.wait_converged(timeout=30)
    assert "refreshed" not in same.log() and "announcing" not in same.log()
    assert cluster.leader().state()["trusted_list_version"] == version
