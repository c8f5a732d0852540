"""The recovery record on a real node process: written after genesis for the governors that
have recovery keys (made with ``consortiumctl keygen --recovery``), written again in the ledger
secret rotation's own entry; each member checks its share on its own machine with ``consortiumctl
recovery check-share``; any two members' shares (2 of 3) decrypt private entries read
straight from the ledger files, from before and after the rotation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consortium_node.common.timeutil import rfc3339
from consortium_node.identity import keys
from consortium_node.identity.certs import certificate_der, load_certificate
from consortium_node.ledger.entries import decode_entry, open_entry
from consortium_node.recovery.record import open_share, recover_secrets
from tests.integration.test_rotation import Governed
from tests.support import storage_faults as sf
from tests.support.harness import Identity, LocalNode, ctl, make_identity, make_platform
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow


def recovery_key(directory: Path, who: Identity) -> Path:
    made = ctl("keygen", "--recovery", "--name", who.name, "--out-dir", str(directory))
    assert made.returncode == 0, made.stderr
    return Path(json.loads(made.stdout)["recovery_private_key"])


def recovery_members(
    ids: Path, governors: list[Identity], user: Identity
) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """Genesis ``members`` (each governor with a recovery key made by ``consortiumctl keygen
    --recovery``, and the user) and each governor's recovery private key file, by name."""
    private = {g.name: recovery_key(ids, g) for g in governors}
    members = [
        {
            "certificate": str(g.cert),
            "role": "governor",
            "recovery_key": (ids / f"{g.name}_recovery_pubk.pem").read_text(),
        }
        for g in governors
    ] + [{"certificate": str(user.cert), "role": "user"}]
    return members, private


@pytest.fixture
def governed(tmp_path: Path) -> Iterator[tuple[Governed, dict[str, Path]]]:
    ids = tmp_path / "ids"
    governors = [make_identity(ids, f"gov{i}", "governor") for i in range(3)]
    user = make_identity(ids, "user0", "user")
    members, private = recovery_members(ids, governors, user)
    key, cert = make_platform(tmp_path / "platform")
    genesis = LocalNode(tmp_path, "node-0", [*governors, user], key, cert,
                        overrides={"members": members})  # fmt: skip
    cluster = Governed(tmp_path, [genesis], user=user, member=governors[0])
    cluster.governors = governors
    try:
        genesis.start()
        yield cluster, private
    finally:
        cluster.stop()


def record_at(node: LocalNode, epoch: int) -> dict[str, Any]:
    def written() -> dict[str, Any] | None:
        status, body = node.get("/gov/recovery")
        return body if status == 200 and body["record"]["epoch"] >= epoch else None

    found: dict[str, Any] = wait_for(f"recovery record {epoch}", written, 30)
    return found


def member_id(who: Identity) -> str:
    return keys.member_id_of(certificate_der(load_certificate(who.cert.read_bytes())))


def check_share(node: LocalNode, who: Identity, key: Path) -> Any:
    return ctl(
        "recovery", "check-share", "--consortium", "test", "--cert", str(who.cert),
        "--recovery-key", str(key), "--node", node.url, "--service-cert", str(node.service_cert),
    )  # fmt: skip


def private_value(node: LocalNode, txid: str, secrets: dict[int, bytes], version: int) -> Any:
    """The value an entry holds, decrypted from the ledger file with a recovered secret."""
    record = sf.entry(node.data_dir / "ledger", int(txid.split(".")[1]))
    data = record.path.read_bytes()[record.offset + 12 : record.offset + record.size]
    _, writes = open_entry(AESGCM(secrets[version]), decode_entry(data))
    return writes


def test_members_shares_recover_every_ledger_secret(
    governed: tuple[Governed, dict[str, Path]],
) -> None:
    cluster, private = governed
    node = cluster.nodes[0]
    g0, g1, g2 = cluster.governors
    first = record_at(node, 1)["record"]
    assert first["threshold"] == 2 and first["secret_versions"] == [1]
    assert set(first["shares"]) == {member_id(g) for g in (g0, g1, g2)}

    assert recovery_metrics(node) == {
        "consortium_recovery_record_epoch": 1.0,
        "consortium_recovery_members": 3.0,
        "consortium_recovery_threshold": 2.0,
        "consortium_recovery_record_stale": 0.0,
        "consortium_recovery_shares_submitted": 0.0,  # no ceremony on an open service
    }

    summary = {"epoch": 1, "threshold": 2, "members": 3, "stale": False}
    assert node.state()["recovery"] == summary  # what status.recovery shows

    checked = check_share(node, g1, private["gov1"])
    assert checked.returncode == 0, checked.stderr
    said = json.loads(checked.stdout)
    assert said["ok"] and said["epoch"] == 1 and said["threshold"] == 2
    shares = {member_id(g): open_share(first, "test", member_id(g), _key(private[g.name]))
              for g in (g0, g1, g2)}  # fmt: skip
    for share in shares.values():
        assert share.value.hex() not in checked.stdout
    wrong = check_share(node, g1, private["gov0"])  # another member's recovery key
    assert wrong.returncode == 1 and "ShareDoesNotDecrypt" in wrong.stderr, wrong.stderr

    status, body = cluster.write({"before": "secret-one"})
    assert status == 200, body
    before = body["transactions"][0]["txid"]
    decided = cluster.rotate()
    assert decided["state"] == "Accepted", decided
    written = record_at(node, 2)
    assert written["txid"] == decided["txid"], "the rotation entry itself carries the record"
    second = written["record"]
    assert second["secret_versions"] == [1, 2]
    status, body = cluster.write({"after": "secret-two"})
    assert status == 200, body
    after = body["transactions"][0]["txid"]

    # Any two members' shares of the newest record open every version; old shares do not.
    two = {member_id(g): open_share(second, "test", member_id(g), _key(private[g.name]))
           for g in (g0, g2)}  # fmt: skip
    secrets = recover_secrets(second, "test", two)
    assert sorted(secrets) == [1, 2]
    assert private_value(node, before, secrets, 1)["app"]["before"] == "secret-one"
    assert private_value(node, after, secrets, 2)["app"]["after"] == "secret-two"
    old = {m: shares[m] for m in list(two)}
    with pytest.raises(Exception, match="ShareDoesNotMatch"):
        recover_secrets(second, "test", old)

    # gov2 stops being a recovery member (a proposal): the primary writes record 3 for the
    # two left, 2 of 2 (a majority); gov2's share of it does not exist.
    drop = {"member_id": member_id(g2), "recovery_key": None}
    decided = propose(cluster, [{"name": "set_recovery_key", "args": drop}])
    assert decided["state"] == "Accepted", decided
    third = record_at(node, 3)["record"]
    assert set(third["shares"]) == {member_id(g0), member_id(g1)} and third["threshold"] == 2
    assert recovery_metrics(node)["consortium_recovery_members"] == 2.0
    gone = check_share(node, g2, private["gov2"])
    assert gone.returncode == 1 and "NotARecoveryMember" in gone.stderr, gone.stderr
    assert check_share(node, g0, private["gov0"]).returncode == 0


def recovery_metrics(node: LocalNode) -> dict[str, float]:
    status, text = node.get("/metrics")
    assert status == 200
    lines = (text.decode() if isinstance(text, bytes) else str(text)).splitlines()
    found = [line.split(" ", 1) for line in lines if line.startswith("consortium_recovery_")]
    return {name: float(value) for name, value in found}


def propose(cluster: Governed, actions: list[dict[str, Any]]) -> dict[str, Any]:
    """Propose ``actions`` as gov0 and approve them with gov0 and gov1 (2 of 3)."""
    g0, g1, _ = cluster.governors
    proposal = {"type": "proposal", "created_at": rfc3339(datetime.now(UTC)), "actions": actions}
    pid = cluster.post_cose("/gov/proposals", cluster.sign(g0, proposal))["proposal_id"]
    decided: dict[str, Any] = {}
    for who in (g0, g1):
        ballot = {"type": "ballot", "proposal_id": pid, "vote": "approve"}
        decided = cluster.post_cose(f"/gov/proposals/{pid}/ballots", cluster.sign(who, ballot))
    return decided


def _key(path: Path) -> Any:
    return keys.load_private_key(path.read_bytes())
