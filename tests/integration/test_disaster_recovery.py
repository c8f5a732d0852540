"""The disaster recovery ceremony on real node processes and a real S3-protocol server.

A consortium with three governors (recovery members, k = 2) writes private transactions
before and after a ledger secret rotation and ships its ledger to a bucket; then the disaster:
the node and its whole data directory (sealed state included) are gone. A recovery node
(mode ``recover``) verifies the bucket with the previous service certificate, starts a new
service identity and waits for shares; members submit theirs with ``consortiumctl recovery
submit-share`` (which checks the node's attestation and wraps the share to its key); a forged
share, a repeat and a non-governor are refused by name; one share leaves it waiting, the second
opens the secrets (the node restarts); the governors vote ``transition_service_to_open``. Then
every acknowledged write reads back, every receipt from before verifies (with the previous
certificate, and through the new identity's endorsement), new writes commit, and a new node
joins the recovered service and reads the whole history."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from consortium_node.attestation import measure_installed
from consortium_node.common.timeutil import rfc3339
from consortium_node.identity import keys
from consortium_node.identity.certs import certificate_sha256, load_certificate
from consortium_node.recovery.ceremony import seal_submission
from consortium_node.recovery.shares import Share
from tests.integration.test_backup_shipping import credentials
from tests.integration.test_recovery_record import member_id, propose, recovery_members
from tests.integration.test_rotation import Governed, reads, receipt
from tests.support.harness import LocalNode, ctl, make_identity, make_platform
from tests.support.s3server import S3Server
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow

WRITES = 40  # acknowledged writes before the disaster, half before the rotation
ONE_WRITE = {"transactions": [{"writes": {"x": "1"}}]}
# Snapshots every 20 entries on the recovered service: none may fall in the old identity's
# history (it would not verify with the new certificate); a joiner starts from one.
SNAPSHOTS = {"snapshot_interval": 20}


def _bucket_settings(workdir: Path, server: S3Server, bucket: str) -> dict[str, Any]:
    return {"endpoint": server.endpoint, "bucket": bucket, **credentials(workdir, server)}


@pytest.fixture
def lost(tmp_path: Path, s3_server: S3Server) -> Iterator[dict[str, Any]]:
    """A consortium that wrote, rotated, removed one of its four governors (gov3), backed up,
    and was then lost entirely."""
    ids = tmp_path / "ids"
    governors = [make_identity(ids, f"gov{i}", "governor") for i in range(4)]
    user = make_identity(ids, "user0", "user")
    members, private = recovery_members(ids, governors, user)
    bucket = s3_server.make_bucket()
    key, cert = make_platform(tmp_path / "platform")
    backup = {**_bucket_settings(tmp_path, s3_server, bucket), "max_lag": "5s"}
    genesis = LocalNode(tmp_path / "old", "node-0", [*governors, user], key, cert,
                        overrides={"members": members, "backup": backup})  # fmt: skip
    cluster = Governed(tmp_path / "old", [genesis], user=user, member=governors[0])
    cluster.governors = governors[:3]
    written: dict[str, str] = {}
    receipts: list[dict[str, Any]] = []
    try:
        genesis.start()
        _remove_member(cluster, governors[3], governors[:3])  # k: 3 of 4, then 2 of 3
        for i in range(WRITES):
            if i == WRITES // 2:
                assert _vote(cluster, [{"name": "rotate_ledger_secret", "args": {}}],
                             governors[:3])["state"] == "Accepted"  # fmt: skip
            status, body = cluster.write({f"k{i}": f"v{i}"})
            assert status == 200, body
            written[f"k{i}"] = f"v{i}"
            if i % 10 == 0:
                receipts.append(receipt(genesis, user, body["transactions"][0]["txid"]))
        commit = genesis.state()["commit_index"]

        def shipped() -> bool:
            status, body = genesis.get("/node/backup")
            return status == 200 and body["shipped_through"] >= commit

        wait_for("the backup to cover every acknowledged write", shipped, 60)
        previous = tmp_path / "previous_service_cert.pem"  # kept by the operator/members
        previous.write_bytes(genesis.service_cert.read_bytes())
    finally:
        cluster.stop()
    # The disaster: the node and all its state (sealed keys, ledger) are gone.
    _remove(genesis.data_dir)
    yield {
        "workdir": tmp_path,
        "governors": governors,
        "user": user,
        "private": private,
        "written": written,
        "receipts": receipts,
        "previous": previous,
        "bucket": _bucket_settings(tmp_path, s3_server, bucket),
        "platform": (key, cert),
    }


def _vote(cluster: Governed, actions: list[dict[str, Any]], voters: list[Any]) -> Any:
    proposal = {"type": "proposal", "created_at": rfc3339(datetime.now(UTC)), "actions": actions}
    pid = cluster.post_cose("/gov/proposals", cluster.sign(voters[0], proposal))["proposal_id"]
    decided: Any = {}
    for who in voters:
        ballot = {"type": "ballot", "proposal_id": pid, "vote": "approve"}
        decided = cluster.post_cose(f"/gov/proposals/{pid}/ballots", cluster.sign(who, ballot))
        if decided["state"] != "Open":
            break
    return decided


def _remove_member(cluster: Governed, gone: Any, voters: list[Any]) -> None:
    action = {"name": "remove_member", "args": {"member_id": member_id(gone)}}
    assert _vote(cluster, [action], voters)["state"] == "Accepted"


def _remove(path: Path) -> None:
    for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if child.is_dir() and not child.is_symlink():
            child.rmdir()
        else:
            child.unlink()
    path.rmdir()


def recovery_node(lost: dict[str, Any]) -> LocalNode:
    key, cert = lost["platform"]
    recovery = {
        "previous_service_certificate": str(lost["previous"]),
        "source": {"bucket": lost["bucket"]},
    }
    return LocalNode(lost["workdir"] / "new", "recovery-0", [], key, cert,
                     overrides={"mode": "recover", "members": [], "attestation": {},
                                "recovery": recovery, "ledger": SNAPSHOTS})  # fmt: skip


def submit_share(node: LocalNode, lost: dict[str, Any], who: Any, **extra: str) -> Any:
    _, cert = lost["platform"]
    measurement = extra.get("measurement", measure_installed())
    args = [
        "recovery", "submit-share", "--consortium", "test", "--cert", str(who.cert),
        "--key", str(who.key), "--recovery-key", str(lost["private"][who.name]),
        "--node", node.url, "--service-cert", str(node.service_cert),
        "--platform-root", str(cert), "--measurement", measurement,
    ]  # fmt: skip
    return ctl(*args)


def post_document(node: LocalNode, path: str, envelope: bytes) -> tuple[int, Any]:
    status, body, _ = node.request(
        "POST", path, envelope, None, {"Content-Type": "application/cose"}
    )
    return status, json.loads(body)


def test_members_recover_a_lost_consortium_from_its_backup(lost: dict[str, Any]) -> None:
    g0, g1, g2, g3 = lost["governors"]  # g3 was removed before the disaster
    user = lost["user"]
    previous_pem = lost["previous"].read_text()
    started = time.monotonic()
    node = recovery_node(lost).start(timeout=120)

    # A new identity, the history verified and copied, waiting for shares.
    assert certificate_sha256(load_certificate(node.service_cert.read_bytes())) != (
        certificate_sha256(load_certificate(previous_pem))
    )
    status, state = node.get("/recovery")
    assert status == 200, state
    assert state["phase"] == "WaitingForRecoveryShares" and state["service_status"] == "Recovering"
    assert state["recovery"]["previous_service_certificate_sha256"] == certificate_sha256(
        load_certificate(previous_pem)
    )
    assert state["shares"]["threshold"] == 2 and state["shares"]["submitted"] == []
    assert len(state["history"]) == 1 and state["history"][0]["certificate"] == previous_pem
    assert node.state()["service_phase"] == "WaitingForRecoveryShares"
    status, body = node.post_json(
        "/app/transactions", {"transactions": [{"writes": {"x": "1"}}]}, user
    )
    assert status == 503 and body["error"]["code"] == "ServiceNotOpen", body
    status, body = node.get("/app/kv/k0", user)
    assert status == 503, body  # private state is not readable before the shares

    # A member checks the node's attestation first: a measurement it does not allow → refused.
    refused = submit_share(node, lost, g0, measurement="0" * 64)
    assert refused.returncode != 0 and "quote refused" in refused.stderr, refused.stderr

    # One share: still waiting.
    first = submit_share(node, lost, g0)
    assert first.returncode == 0, first.stderr
    said = json.loads(first.stdout)
    assert said["submitted"] == [member_id(g0)] and not said["complete"]
    assert "share" not in first.stdout.replace('"shares"', "")  # the share is never printed
    again = submit_share(node, lost, g0)
    assert again.returncode != 0 and "AlreadySubmitted" in again.stderr, again.stderr

    # A forged share (a well-formed share the record did not commit to), properly wrapped and
    # signed by a real governor, is refused by name; so are a user's signature and a removed
    # member's (its old share cannot be submitted: it is no member of the recovered ledger).
    quote = node.get(f"/node/quote?nonce={os.urandom(32).hex()}")[1]
    node_key = keys.load_public_key(quote["public_key"].encode())
    _, record = node.get("/gov/recovery")
    epoch = record["record"]["epoch"]
    forged = Share(index=3, value=os.urandom(32))
    payload = {
        "type": "recovery_share", "epoch": epoch, "node_id": quote["node_id"],
        "share": seal_submission(node_key, forged, consortium="test", epoch=epoch,  # type: ignore[arg-type]
                                 member_id=member_id(g2), node_id=quote["node_id"]),
    }  # fmt: skip
    cluster = Governed(lost["workdir"] / "new", [node], user=user, member=g0)
    cluster.governors = lost["governors"][:3]
    status, body = post_document(node, "/recovery/shares", cluster.sign(g2, payload))
    assert status == 422 and body["error"]["field"] == "ShareDoesNotMatch", body
    for outsider in (user, g3):
        status, body = post_document(node, "/recovery/shares", cluster.sign(outsider, payload))
        assert status == 403 and body["error"]["code"] == "SignatureRefused", body
    removed = submit_share(node, lost, g3)
    assert removed.returncode != 0 and "NotARecoveryMember" in removed.stderr, removed.stderr
    wrapped_for_another = {**payload, "node_id": "ab" * 32}
    status, body = post_document(node, "/recovery/shares", cluster.sign(g2, wrapped_for_another))
    assert status == 422 and body["error"]["field"] == "ShareNotForThisNode", body
    assert node.get("/recovery")[1]["shares"]["submitted"] == [member_id(g0)]

    # The second share opens every ledger secret version; the node restarts to replay them.
    second = submit_share(node, lost, g1)
    assert second.returncode == 0, second.stderr
    done = json.loads(second.stdout)
    assert done["complete"] and done["restarting"], done
    wait_for("the recovery node to stop for its restart", lambda: not node.alive, 30)
    assert node.proc is not None and node.proc.returncode == 75
    node.start(timeout=120)
    assert node.get("/recovery")[1]["phase"] == "WaitingForOpen"
    status, body = node.post_json(
        "/app/transactions", {"transactions": [{"writes": {"x": "1"}}]}, user
    )
    assert status == 503 and body["error"]["code"] == "ServiceNotOpen", body

    # The governors open it: a fresh ledger secret and a new recovery record come with it.
    decided = propose(cluster, [{"name": "transition_service_to_open", "args": {}}])
    assert decided["state"] == "Accepted", decided
    wait_for("Open", lambda: node.get("/recovery")[1]["phase"] == "Open", 15)
    recovery_seconds = time.monotonic() - started
    record = wait_for(
        "a new recovery record",
        lambda: (r := node.get("/gov/recovery")[1]["record"])["epoch"] > epoch and r,
        15,
    )
    assert record["secret_versions"] == [1, 2, 3], record

    # Every acknowledged write reads back; new ones commit with receipts of the new identity.
    for key, value in lost["written"].items():
        assert reads(node, user, key) == value, key
    status, body = cluster.write({"after": "recovery"})
    assert status == 200, body
    fresh = receipt(node, user, body["transactions"][0]["txid"])
    _verify(fresh, node.service_cert)

    # Receipts from before the disaster: with the previous certificate, and through the
    # endorsement chain from the current one alone.
    history = lost["workdir"] / "history.json"
    history.write_text(json.dumps(node.get("/recovery")[1]))
    for old in lost["receipts"]:
        _verify(old, lost["previous"])
        checked = _verify(old, node.service_cert, history)
        assert checked["previous_identity"] is True
        wrong = _verify(old, node.service_cert, expect_ok=False)  # without the history: no
        assert "INVALID" in wrong
    new = _verify(fresh, node.service_cert, history)
    assert new["previous_identity"] is False

    # A new node joins the recovered service and reads the whole history.
    recovered_through = int(state["recovery"]["last_recovered_txid"].split(".")[1])
    newest = wait_for("a snapshot of the recovered service", lambda: node.state()["snapshot"], 30)
    assert newest["index"] > recovered_through, newest
    held = [x["index"] for x in node.get("/node/snapshots")[1]["snapshots"]]
    assert held and min(held) > recovered_through, held  # none in the old identity's history
    joiner = cluster.add(1, {"ledger": SNAPSHOTS}, wait=True)
    assert joiner.state()["held_from"] > recovered_through  # it started from that snapshot
    written = lost["written"]
    wait_for("the joiner to read the history",
             lambda: all(reads(joiner, user, k) == v for k, v in written.items()), 60)  # fmt: skip
    assert joiner.get("/recovery")[1]["phase"] == "Open"
    print(f"recovery of {WRITES} writes: {recovery_seconds:.1f} s from start to Open")
    cluster.stop()


def _verify(receipt_body: dict[str, Any], cert: Path, history: Path | None = None,
            expect_ok: bool = True) -> Any:  # fmt: skip
    path = cert.parent / f"receipt-{receipt_body['txid']}.json"
    path.write_text(json.dumps(receipt_body))
    args = ["verify-receipt", "--service-cert", str(cert), str(path)]
    if history is not None:
        args[1:1] = ["--service-history", str(history)]
    done = ctl(*args)
    if not expect_ok:
        assert done.returncode != 0
        return done.stderr
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_backup_without_recovery_members_is_refused_before_anything_starts(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """Recovering a ledger whose secrets no member can bring back would start a service
    whose private history is lost for good: the node refuses, naming why."""
    key, cert = make_platform(tmp_path / "platform")
    member = make_identity(tmp_path / "ids", "gov0", "governor")
    bucket = s3_server.make_bucket()
    backup = {**_bucket_settings(tmp_path, s3_server, bucket), "max_lag": "5s"}
    genesis = LocalNode(tmp_path / "old", "node-0", [member], key, cert,
                        overrides={"backup": backup})  # fmt: skip
    genesis.start()
    try:
        commit = genesis.state()["commit_index"]
        wait_for(
            "a backup", lambda: genesis.get("/node/backup")[1]["shipped_through"] >= commit, 60
        )
        previous = tmp_path / "previous.pem"
        previous.write_bytes(genesis.service_cert.read_bytes())
    finally:
        genesis.stop()
    lost = {"workdir": tmp_path, "previous": previous, "platform": (key, cert),
            "bucket": _bucket_settings(tmp_path, s3_server, bucket)}  # fmt: skip
    node = recovery_node(lost).start(wait=False)
    wait_for("the recovery node to exit", lambda: not node.alive, 60)
    assert node.proc is not None and node.proc.returncode == 1
    assert "holds no recovery record" in node.log(), node.log()[-2000:]
    assert not (node.data_dir / "sealed" / "service-identity.sealed").exists()
    assert not (node.data_dir / "ledger").exists()  # its partial copy is not left behind


def test_a_tampered_backup_is_refused_with_its_reason(
    lost: dict[str, Any], s3_server: S3Server
) -> None:
    """A byte changed in a backed-up segment: the recovery node names the object and stops."""
    bucket = lost["bucket"]["bucket"]
    store = s3_server.store(bucket, "test/")
    segment = sorted(k for k in store.keys("ledger/"))[0]
    data = bytearray(store.get(segment))
    data[len(data) // 2] ^= 1
    s3_server.client().put_object(Bucket=bucket, Key=f"test/{segment}", Body=bytes(data))
    node = recovery_node(lost).start(wait=False)
    wait_for("the recovery node to exit", lambda: not node.alive, 60)
    assert node.proc is not None and node.proc.returncode == 1
    assert "does not verify: ObjectDigest" in node.log(), node.log()[-2000:]


def test_a_backup_of_another_consortium_is_refused(lost: dict[str, Any]) -> None:
    """The bucket holds consortium "test"; a recovery node configured for "other" refuses it
    after verifying it, before creating or sealing anything."""
    node = recovery_node(lost)
    node.consortium = "other"
    node.overrides["recovery"]["source"]["bucket"]["prefix"] = "test/"  # the lost one's
    node.start(wait=False)
    wait_for("the recovery node to exit", lambda: not node.alive, 60)
    assert node.proc is not None and node.proc.returncode == 1
    assert "is consortium 'test', this node is configured for 'other'" in node.log()
    assert not (node.data_dir / "sealed" / "service-identity.sealed").exists()
