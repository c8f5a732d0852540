"""Snapshots on real node processes: every node writes the same snapshot at the same point,
the primary records its digest in the ledger, and the evidence receipt commits it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from consortium_node.identity.certs import load_certificate
from consortium_node.ledger.receipt import verify_receipt
from consortium_node.ledger.snapshot import verify_snapshot
from tests.support.cluster import Cluster
from tests.support.wait import wait_for

INTERVAL = 60


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster.start(tmp_path, 3, overrides={"ledger": {"snapshot_interval": INTERVAL}})
    try:
        yield c
    finally:
        c.stop()


def committed_snapshots(node_dir: Path) -> list[Path]:
    return sorted((node_dir / "ledger" / "snapshots").glob("snapshot_*.receipt"))


def test_every_node_commits_the_same_snapshot_recorded_in_the_ledger(cluster: Cluster) -> None:
    for batch in range(6):
        status, _ = cluster.write({f"k{batch}-{i}": batch for i in range(3)}, count=40)
        assert status == 200
    cluster.wait_converged()

    def all_committed() -> list[list[Path]] | None:
        found = [committed_snapshots(n.data_dir) for n in cluster.nodes]
        return found if all(found) else None

    found = wait_for("a committed snapshot on every node", all_committed, 30)
    index = min(max(int(p.name[9:29]) for p in paths) for paths in found)
    name = f"snapshot_{index:020d}.snap"
    snaps = [n.data_dir / "ledger" / "snapshots" / name for n in cluster.nodes]
    wait_for("snapshot on every node", lambda: all(p.exists() for p in snaps), 30)
    data = {p.read_bytes() for p in snaps}
    assert len(data) == 1, "nodes wrote different bytes for the same snapshot point"
    [snapshot] = data

    # An auditor with the service certificate only: the receipt of the evidence entry
    # verifies and names these bytes; the frontier is signed by a node of the service.
    service = load_certificate(cluster.nodes[0].service_cert.read_bytes())
    receipt = json.loads(snaps[1].with_suffix(".receipt").read_bytes())
    verify_receipt(receipt, service)
    state, verified = verify_snapshot(snapshot, receipt, service, None)
    assert state.index == index and state.private is None
    assert verified.txid.index > index
    # Any node lists and serves it, with the receipt, to a client without a certificate.
    for node in cluster.nodes:
        status, listed = node.get("/node/snapshots")
        assert status == 200
        entry = next(e for e in listed["snapshots"] if e["index"] == index)
        assert entry["sha256"] == hashlib.sha256(snapshot).hexdigest()
        assert entry["size"] == len(snapshot) and entry["evidence_txid"] == str(verified.txid)
        status, served = node.get(f"/node/snapshot?index={index}")
        assert status == 200 and served == snapshot
        status, served_receipt = node.get(f"/node/snapshot/receipt?index={index}")
        assert status == 200 and verify_receipt(served_receipt, service).txid == verified.txid
    status, body = cluster.nodes[0].get("/node/snapshot?index=1")
    assert status == 404 and "no committed snapshot at index 1" in json.dumps(body)
    status, body = cluster.nodes[0].get("/node/snapshot?index=x")
    assert status == 400
    # Metrics: written and committed.
    metrics = cluster.nodes[0].get("/metrics")[1]
    text = metrics if isinstance(metrics, str) else metrics.decode()
    assert "consortium_snapshots_written_total" in text
    committed_line = next(
        line for line in text.splitlines() if line.startswith("consortium_snapshot_committed_index")
    )
    assert float(committed_line.split()[-1]) >= index
