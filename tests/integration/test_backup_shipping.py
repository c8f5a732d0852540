"""Backups shipped by real node processes to a real S3-protocol server (moto's standalone
server): the bucket catches up within max_lag and verifies with only the service certificate;
a primary killed in the middle of an upload leaves nothing torn and the next one resumes; bad
settings are named in the status while the ledger keeps committing; on-demand backups."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from consortium_node.backup import format as fmt
from consortium_node.backup.s3 import S3Store
from consortium_node.backup.verify import verify_backup
from consortium_node.identity.certs import load_certificate
from consortium_node.ledger import TxId
from tests.support.cluster import Cluster
from tests.support.s3server import S3Server
from tests.support.stall_proxy import StallProxy
from tests.support.wait import wait_for
from tests.support.writer import Writer

MAX_LAG = 5.0
CONSORTIUM = "test"  # the harness's consortium name: the default prefix is "test/"


def credentials(workdir: Path, server: S3Server) -> dict[str, str]:
    creds = workdir / "creds"
    creds.mkdir(parents=True, exist_ok=True)
    (creds / "AWS_ACCESS_KEY_ID").write_text(server.access_key_id)
    (creds / "AWS_SECRET_ACCESS_KEY").write_text(server.secret_access_key)
    return {
        "access_key_id_file": str(creds / "AWS_ACCESS_KEY_ID"),
        "secret_access_key_file": str(creds / "AWS_SECRET_ACCESS_KEY"),
    }


def overrides(workdir: Path, server: S3Server, bucket: str, **backup: Any) -> dict[str, Any]:
    settings = {
        "endpoint": server.endpoint,
        "bucket": bucket,
        "max_lag": f"{int(MAX_LAG)}s",
        **credentials(workdir, server),
        **backup,
    }
    return {"backup": settings, "ledger": {"snapshot_interval": 150}}


def store_for(server: S3Server, bucket: str, prefix: str = f"{CONSORTIUM}/") -> S3Store:
    return server.store(bucket, prefix)


def backup_status(cluster: Cluster) -> dict[str, Any]:
    status, body = cluster.leader().get("/node/backup")
    assert status == 200, body
    return dict(body)


def wait_covered(cluster: Cluster, index: int, timeout: float) -> dict[str, Any]:
    def covered() -> dict[str, Any] | None:
        body = backup_status(cluster)
        return body if body["shipped_through"] >= index else None

    found: dict[str, Any] = wait_for(f"a backup manifest covering {index}", covered, timeout)
    return found


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(size: int, extra: dict[str, Any]) -> Cluster:
        cluster = Cluster.start(tmp_path / f"c{len(made)}", size, overrides=extra)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


def test_the_bucket_catches_up_within_max_lag_and_verifies_offline(
    s3_server: S3Server, cluster_factory: Any, tmp_path: Path
) -> None:
    bucket = s3_server.make_bucket()
    cluster = cluster_factory(3, overrides(tmp_path, s3_server, bucket))
    acknowledged: list[TxId] = []
    for batch in range(12):
        status, body = cluster.write({f"k{batch}-{i}": batch for i in range(4)}, count=40)
        assert status == 200, body
        acknowledged += [TxId.parse(t["txid"]) for t in body["transactions"]]
    last_ack = max(t.index for t in acknowledged)
    acked_at = time.monotonic()
    # Covered by a manifest within max_lag of the last acknowledgement (plus the signature
    # interval and one upload round); the lag the node reports never exceeds it either.
    status = wait_covered(cluster, last_ack, MAX_LAG + 5)
    took = time.monotonic() - acked_at
    assert took <= MAX_LAG + 5, took
    assert status["last_error"] is None
    assert status["shipper"] is True and status["mode"] == "continuous"
    success = status["last_success"]
    assert TxId.parse(success["txid"]).index >= last_ack

    service = load_certificate(cluster.nodes[0].service_cert.read_bytes())
    verified = verify_backup(store_for(s3_server, bucket), service)
    assert verified.first_txid.index == 1
    assert verified.last_txid.index >= last_ack
    assert verified.snapshots, "committed snapshots are shipped with the ledger"
    assert verified.objects == success["objects"] or verified.last_txid.index > last_ack
    # A backup (follower) node reports but does not ship.
    follower = next(n for n in cluster.alive() if n is not cluster.leader())
    code, body = follower.get("/node/backup")
    assert code == 200 and body["shipper"] is False and body["configured"] is True
    # The metrics say the same as the status.
    code, text, _ = cluster.leader().request("GET", "/metrics")
    assert code == 200
    metrics = dict(
        line.rsplit(" ", 1)
        for line in text.decode().splitlines()
        if line.startswith("consortium_backup_") and "{" not in line
    )
    assert float(metrics["consortium_backup_shipped_index"]) >= last_ack
    assert float(metrics["consortium_backup_max_lag_seconds"]) == MAX_LAG
    assert float(metrics["consortium_backup_last_success_timestamp_seconds"]) > 0


def test_a_primary_killed_mid_upload_leaves_nothing_torn_and_the_next_resumes(
    s3_server: S3Server, cluster_factory: Any, tmp_path: Path
) -> None:
    bucket = s3_server.make_bucket()
    proxy = StallProxy(s3_server.port).start()
    try:
        extra = overrides(tmp_path, s3_server, bucket, endpoint=proxy.endpoint)
        cluster = cluster_factory(3, extra)
        with Writer(cluster) as writer:
            wait_for("a first manifest", lambda: backup_status(cluster)["last_success"], 30)
            first = backup_status(cluster)["shipped_through"]
            proxy.arm()  # the next PUT (a segment, snapshot or manifest) freezes half-way
            assert proxy.stalled.wait(MAX_LAG * 4), "the shipper uploaded nothing more"
            shipper = cluster.leader()
            shipper.kill()
            print("killed while uploading:", proxy.stalled_request.decode())
            proxy.release()
            wait_for("a new primary", lambda: cluster.leader() is not shipper, 30)
            wait_for(
                "the new primary to ship beyond the old one",
                lambda: backup_status(cluster)["shipped_through"] > first,
                MAX_LAG * 6,
            )
        assert writer.acknowledged, writer.errors
        last_ack = max(TxId.parse(t).index for t in writer.acknowledged)
        status = wait_covered(cluster, last_ack, MAX_LAG * 4)
        assert status["last_error"] is None, status
    finally:
        proxy.stop()

    store = store_for(s3_server, bucket)
    # Nothing torn: every object in the bucket is whole (segments decode entry by entry,
    # manifests verify), whether or not a manifest lists it.
    service = load_certificate(cluster.nodes[0].service_cert.read_bytes())
    for key in store.keys(fmt.LEDGER_DIR):
        first_index, last_index = fmt.parse_segment_key(key) or (0, -1)
        payloads = fmt.decode_segment(store.get(key), key)
        assert len(payloads) == last_index - first_index + 1, key
    for key in store.keys(fmt.MANIFEST_DIR):
        fmt.open_manifest(store.get(key), service)
    verified = verify_backup(store, service)
    assert verified.last_txid.index >= last_ack
    # Resumed, not restarted: no range was uploaded twice under different keys.
    ranges = sorted(fmt.parse_segment_key(k) or (0, 0) for k in store.keys(fmt.LEDGER_DIR))
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges)), ranges


def _other_consortium_marker(server: S3Server, bucket: str) -> bytes:
    marker = fmt.encode_marker("someone-else", "ab" * 32, "2026-01-01T00:00:00Z")
    store_for(server, bucket).put_new(fmt.MARKER_KEY, marker)
    return marker


BAD_SETTINGS = [
    ("missing bucket", "BucketNotFound"),
    ("another consortium's bucket", "BucketOwnedByAnotherConsortium"),
    ("unreachable endpoint", "EndpointUnreachable"),
    ("no credentials", "CredentialsMissing"),
    ("wrong secret key", "InvalidCredentials"),
]


@pytest.mark.parametrize(("case", "reason"), BAD_SETTINGS)
def test_bad_settings_are_named_and_the_ledger_keeps_committing(
    s3_server: S3Server, cluster_factory: Any, tmp_path: Path, case: str, reason: str
) -> None:
    bucket = s3_server.make_bucket()
    extra = overrides(tmp_path, s3_server, bucket)
    backup = extra["backup"]
    marker = b""
    if case == "missing bucket":
        backup["bucket"] = "no-such-bucket"
    elif case == "another consortium's bucket":
        marker = _other_consortium_marker(s3_server, bucket)
    elif case == "unreachable endpoint":
        backup["endpoint"] = "http://127.0.0.1:9"  # discard port: connection refused
    elif case == "no credentials":
        backup["access_key_id_file"] = str(tmp_path / "absent")
    else:
        Path(backup["secret_access_key_file"]).write_text("not-the-secret")
    cluster = cluster_factory(1, extra)
    for batch in range(3):
        status, body = cluster.write({f"k{batch}": batch}, count=20)
        assert status == 200, body  # the ledger keeps committing

    def failed() -> dict[str, Any] | None:
        error = backup_status(cluster)["last_error"]
        return error if error is not None else None

    error = wait_for(f"the backup to report {reason}", failed, MAX_LAG * 4)
    assert error["reason"] == reason, error
    assert error["message"]
    status = backup_status(cluster)
    assert status["shipped_through"] == 0 and status["last_success"] is None
    if marker:
        store = store_for(s3_server, bucket)
        assert store.get(fmt.MARKER_KEY) == marker  # never overwritten
        assert store.keys("") == [fmt.MARKER_KEY]  # nothing else written there
    _code, text, _ = cluster.leader().request("GET", "/metrics")
    assert f'consortium_backup_failures_total{{reason="{reason}"}}' in text.decode()


def test_a_fixed_setting_recovers_without_a_restart(
    s3_server: S3Server, cluster_factory: Any, tmp_path: Path
) -> None:
    bucket = s3_server.make_bucket()
    extra = overrides(tmp_path, s3_server, bucket)
    secret = Path(extra["backup"]["secret_access_key_file"])
    secret.write_text("not-the-secret")
    cluster = cluster_factory(1, extra)
    status, _ = cluster.write({"k": 1}, count=5)
    assert status == 200
    wait_for("InvalidCredentials", lambda: backup_status(cluster)["last_error"], MAX_LAG * 4)
    secret.write_text(s3_server.secret_access_key)  # a rotated Secret is re-read every round
    status = wait_for(
        "the backup to work again",
        lambda: (s := backup_status(cluster))["last_error"] is None and s["last_success"] and s,
        60,
    )
    assert status["shipped_through"] >= 1


def test_on_demand_backup_and_who_may_ask(
    s3_server: S3Server, cluster_factory: Any, tmp_path: Path
) -> None:
    bucket = s3_server.make_bucket()
    # A long max_lag: only the request makes the round happen now.
    cluster = cluster_factory(3, overrides(tmp_path, s3_server, bucket, max_lag="1h"))
    status, body = cluster.write({"k": "v"}, count=10)
    assert status == 200
    written = max(TxId.parse(t["txid"]).index for t in body["transactions"])
    leader = cluster.leader()
    code, body = leader.post_json("/node/backup", {}, cluster.user)
    assert code == 403, body  # users do not run backups
    follower = next(n for n in cluster.alive() if n is not leader)
    code, body = follower.post_json("/node/backup", {}, cluster.member)
    assert code == 503 and body["error"]["code"] == "NotLeader", body
    code, body = leader.post_json("/node/backup", {}, cluster.member)
    assert code == 202, body
    requested = body["requested_through"]  # the last committed signature when asked
    assert requested >= written
    status_body = wait_covered(cluster, requested, 30)
    assert status_body["requested_through"] is None
    assert TxId.parse(status_body["last_success"]["txid"]).index >= requested


def test_a_node_without_backup_settings_says_so(cluster_factory: Any) -> None:
    cluster = cluster_factory(1, {})
    code, body = cluster.leader().get("/node/backup")
    assert (code, body) == (200, {"configured": False})
    code, body = cluster.leader().post_json("/node/backup", {}, cluster.member)
    assert code == 409 and "BackupNotConfigured" in body["error"]["reason"], body


def test_a_scheduled_backup_ships_at_its_cron_time_and_not_between(
    s3_server: S3Server, cluster_factory: Any, tmp_path: Path
) -> None:
    """mode schedule: nothing committed is shipped until the next cron time (every minute
    here), then one round covers everything committed and verifies offline; the lag it
    promises is the schedule's period plus a minute."""
    bucket = s3_server.make_bucket()
    cluster = cluster_factory(
        1, overrides(tmp_path, s3_server, bucket, mode="schedule", schedule="* * * * *")
    )
    status, body = cluster.write({"scheduled": 1}, count=50)
    assert status == 200, body
    written = max(TxId.parse(t["txid"]).index for t in body["transactions"])
    after_write = time.time()
    cron_time = (int(after_write) // 60 + 1) * 60  # the first cron time after the write
    before = backup_status(cluster)
    assert before["mode"] == "schedule" and before["max_lag_seconds"] == 120.0, before
    if cron_time - time.time() > 2:  # not shipped between cron times
        assert before["shipped_through"] < written, before
        assert before["lag_entries"] > 0, before

    found = wait_covered(cluster, written, cron_time - time.time() + 30)
    shipped_at = fmt_time(found["last_success"]["time"])
    assert cron_time <= shipped_at <= cron_time + 20, (cron_time, found["last_success"])
    service = load_certificate(cluster.nodes[0].service_cert.read_bytes())
    verified = verify_backup(store_for(s3_server, bucket), service)
    assert verified.first_txid.index == 1 and verified.last_txid.index >= written


def fmt_time(text: str) -> float:
    """An RFC 3339 time of a node's status as a POSIX timestamp."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
