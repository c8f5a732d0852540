"""Snapshots on real node processes: the primary writes a snapshot at each point and records
its digest in the ledger, the backups fetch those bytes once the evidence is committed, and
the evidence receipt commits the same snapshot on every node."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consortium_node.identity.certs import load_certificate
from consortium_node.ledger.receipt import verify_receipt
from consortium_node.ledger.snapshot import verify_snapshot
from tests.support.cluster import Cluster
from tests.support.harness import LocalNode
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
        # What the operator shows as status.ledger.lastSnapshot: the newest one listed
        # (compared in one order: a newer snapshot may commit between two requests).
        shown = node.state()["snapshot"]
        listed_after = {e["index"]: e["txid"] for e in node.get("/node/snapshots")[1]["snapshots"]}
        assert shown["index"] >= index and listed_after.get(shown["index"]) == shown["txid"]
        assert max(listed_after) >= shown["index"], (shown, listed_after)
        assert node.state()["held_from"] == 1  # it replayed the ledger from the start
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


def _txids(body: Any) -> list[str]:
    return [t["txid"] for t in body["transactions"]]


def test_a_joining_node_starts_from_the_newest_snapshot(cluster: Cluster) -> None:
    early: list[str] = []
    for batch in range(6):
        status, body = cluster.write({f"k{batch}-{i}": batch for i in range(3)}, count=40)
        assert status == 200
        early += _txids(body)
    wait_for(
        "a committed snapshot on every node",
        lambda: all(committed_snapshots(n.data_dir) for n in cluster.nodes),
        30,
    )
    newest = max(int(p.name[9:29]) for p in committed_snapshots(cluster.nodes[0].data_dir))

    joiner = cluster.add(3, {"ledger": {"snapshot_interval": INTERVAL}})
    cluster.wait_converged()
    assert "fetched from" in joiner.log() and "verified" in joiner.log()
    status, body = cluster.write({"after-join": 1}, count=3)
    assert status == 200
    late = _txids(body)
    cluster.wait_converged()
    state = joiner.state()
    assert state["commit_index"] >= int(late[-1].split(".")[1])

    service = load_certificate(joiner.service_cert.read_bytes())
    status, receipt = joiner.get(f"/app/receipt?txid={late[0]}", cluster.user)
    assert status == 200, receipt
    verify_receipt(receipt, service)
    # History before the snapshot: the joiner says which range it holds; others serve it.
    old = early[0]
    status, body = joiner.get(f"/app/receipt?txid={old}", cluster.user)
    assert status == 404 and body["error"]["code"] == "HistoryNotHeld", body
    base = body["error"]["held_from"] - 1  # the snapshot it fetched: the newest at its join
    assert base >= newest
    assert joiner.state()["held_from"] == base + 1  # /node/state says the same
    assert (joiner.data_dir / "ledger" / "snapshots" / f"snapshot_{base:020d}.receipt").exists()
    assert min(int(p.name[7:27]) for p in (joiner.data_dir / "ledger").glob("ledger_*.chunk")) == (
        base + 1
    )
    status, receipt = cluster.nodes[1].get(f"/app/receipt?txid={old}", cluster.user)
    assert status == 200
    verify_receipt(receipt, service)
    # The joiner reads the state the snapshot brought (keys written before it).
    status, value = joiner.get("/app/kv/k0-0", cluster.user)
    assert status == 200, value

    # Restarted, it starts from that snapshot again (its chunks begin after it).
    joiner.stop()
    joiner.start()
    cluster.wait_converged()
    assert joiner.get("/app/kv/after-join", cluster.user)[0] == 200


def test_a_restart_skips_replaying_what_its_snapshot_covers(cluster: Cluster) -> None:
    for batch in range(6):
        assert cluster.write({f"r{batch}-{i}": batch for i in range(3)}, count=40)[0] == 200
    cluster.wait_converged()
    node = cluster.nodes[2]
    wait_for("a committed snapshot", lambda: committed_snapshots(node.data_dir), 30)
    newest = max(int(p.name[9:29]) for p in committed_snapshots(node.data_dir))
    node.stop()
    node.start()
    cluster.wait_converged()
    restarted = node.log().rsplit("restarted: ", 1)[1].splitlines()[0]
    started_at = int(restarted.split("from the snapshot at ")[1].split(";")[0])
    assert started_at >= newest, restarted
    status, value = node.get("/app/kv/r0-0", cluster.user)
    assert status == 200 and value["value"] == 0
    status, value = node.get("/app/kv/r5-2", cluster.user)
    assert status == 200 and value["value"] == 5


def _grow(cluster: Cluster, batch: int) -> None:
    """40 transactions, each writing 3 keys of its own: the state grows by 120 rows."""
    leader = cluster.leader()
    body = {
        "transactions": [{"writes": {f"g{batch}-{t}-{i}": t for i in range(3)}} for t in range(40)]
    }
    status, reply = leader.post_json("/app/transactions", body, cluster.user)
    assert status == 200, reply


def _committed_indices(node_dir: Path) -> set[int]:
    return {int(p.name[9:29]) for p in committed_snapshots(node_dir)}


def _indices(node_dir: Path) -> set[int]:
    return {int(p.name[9:29]) for p in (node_dir / "ledger" / "snapshots").glob("*.snap")}


def _metric(node: LocalNode, name: str) -> float:
    status, text = node.get("/metrics")
    assert status == 200
    lines = (text if isinstance(text, str) else text.decode()).splitlines()
    return float(next(line for line in lines if line.startswith(name + " ")).split()[-1])


def test_backups_fetch_the_primarys_snapshots_and_a_new_primary_encodes_its_own(
    cluster: Cluster,
) -> None:
    """The backups encode no snapshot: each fetches the primary's once its evidence is
    committed and keeps the same bytes. When the primary stops, the new primary encodes the
    next snapshot itself (whole: it encoded none before) and the remaining backup fetches
    that one from it."""
    primary = cluster.leader()
    backups = [n for n in cluster.nodes if n is not primary]
    batch = 0

    def fetched_by_both() -> bool:
        nonlocal batch
        batch += 1
        _grow(cluster, batch)
        return all(_metric(b, "consortium_snapshots_fetched_total") >= 1 for b in backups)

    wait_for("both backups to fetch a snapshot", fetched_by_both, 60)
    assert _metric(primary, "consortium_snapshots_written_total") >= 1
    assert _metric(primary, "consortium_snapshots_fetched_total") == 0
    for backup in backups:
        assert _metric(backup, "consortium_snapshots_written_total") == 0
        assert "fetched (" in backup.log()
        for index in _committed_indices(backup.data_dir):
            name = f"snapshot_{index:020d}.snap"
            assert (backup.data_dir / "ledger" / "snapshots" / name).read_bytes() == (
                primary.data_dir / "ledger" / "snapshots" / name
            ).read_bytes()

    primary.stop()
    new = cluster.leader(timeout=30)
    assert new in backups
    other = next(b for b in backups if b is not new)
    before = _committed_indices(other.data_dir)

    def new_snapshot_fetched() -> set[int]:
        nonlocal batch
        batch += 1
        _grow(cluster, batch)
        return (_committed_indices(other.data_dir) - before) & _committed_indices(new.data_dir)

    index = max(wait_for("the other backup to fetch the new primary's", new_snapshot_fetched, 90))
    assert _metric(new, "consortium_snapshots_written_total") >= 1
    name = f"snapshot_{index:020d}.snap"
    data = (new.data_dir / "ledger" / "snapshots" / name).read_bytes()
    assert (other.data_dir / "ledger" / "snapshots" / name).read_bytes() == data
    service = load_certificate(new.service_cert.read_bytes())
    receipt = json.loads(
        (other.data_dir / "ledger" / "snapshots" / name).with_suffix(".receipt").read_bytes()
    )
    state, _ = verify_snapshot(data, receipt, service, None)
    assert state.index == index
    # The stopped primary, restarted, is a backup: it fetches what it missed.
    primary.start()
    cluster.wait_converged()

    def caught_up() -> bool:
        nonlocal batch
        batch += 1
        _grow(cluster, batch)
        shared = _committed_indices(primary.data_dir) & _committed_indices(new.data_dir)
        return bool(shared - before)

    wait_for("the restarted node to fetch the new primary's snapshot", caught_up, 90)


def test_a_node_whose_snapshot_settings_differed_takes_up_the_primarys_points(
    tmp_path: Path,
) -> None:
    """Two nodes take a snapshot every 60 entries once half the rows the previous one held
    were written again (the default rule); a third was started with the interval alone (as in
    a roll that changed the setting). The state grows, so its points soon differ from the
    primary's and none of its snapshots there is committed; at the primary's evidence for a
    point it did not take it says so and takes up the primary's points. Rolled to the same
    settings, it commits the primary's next snapshots, with the same bytes."""
    same = {"ledger": {"snapshot_interval": INTERVAL}}
    cluster = Cluster.start(tmp_path, 2, overrides=same)
    try:
        odd = cluster.add(
            2, {"ledger": {"snapshot_interval": INTERVAL, "snapshot_writes_percent": 0}}
        )
        batch = 0

        def taken_up() -> bool:
            nonlocal batch
            batch += 1
            _grow(cluster, batch)
            return "the primary took a snapshot at" in odd.log()

        wait_for("the odd node to take up the primary's points", taken_up, 60)
        primary = cluster.nodes[0].data_dir
        # A backup encodes none of its own (it fetches the primary's): its differing points
        # left no file; every file it holds is one the evidence committed (a receipt beside it).
        snaps = odd.data_dir / "ledger" / "snapshots"
        wait_for(
            "every snapshot file of the odd node committed",
            lambda: all(p.with_suffix(".receipt").exists() for p in snaps.glob("*.snap")),
            15,
        )
        assert re.search(r"snapshot at \S+ written \(", odd.log()) is None
        odd.stop()
        odd.overrides = dict(same)
        odd.start()
        before = _committed_indices(odd.data_dir)

        def shared() -> set[int]:
            nonlocal batch
            batch += 1
            _grow(cluster, batch)
            return (_committed_indices(odd.data_dir) - before) & _committed_indices(primary)

        index = max(wait_for("the odd node to commit the primary's next snapshot", shared, 120))
        name = f"snapshot_{index:020d}.snap"
        assert (odd.data_dir / "ledger" / "snapshots" / name).read_bytes() == (
            primary / "ledger" / "snapshots" / name
        ).read_bytes()
        for node in cluster.nodes[:2]:  # their points never differed from the primary's
            assert "the primary took a snapshot at" not in node.log()
    finally:
        cluster.stop()
