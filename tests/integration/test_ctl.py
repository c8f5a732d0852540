"""consortiumctl against real nodes: each command's success path and its failures' exit codes,
and the commands a user runs through a backup (a port-forward to one pod that is not the
primary): the receipt is waited for, reads wait for the backup to catch up, and governance
documents are forwarded by the node."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consortium_node.identity import keys
from consortium_node.identity.certs import certificate_der, load_certificate
from tests.integration.conftest import Consortium
from tests.support.cluster import Cluster
from tests.support.harness import Identity, LocalNode, ctl, free_port, make_identity


def node_args(c: Consortium, identity: bool = True) -> list[str]:
    args = ["--node", c.node.url, "--service-cert", str(c.node.service_cert)]
    if identity:
        args += ["--cert", str(c.user.cert), "--key", str(c.user.key)]
    return args


def test_keygen_writes_private_key_0600(tmp_path: Path) -> None:
    for kind in ("p256", "ed25519"):
        result = ctl("keygen", "--name", f"m-{kind}", "--out-dir", str(tmp_path), "--kind", kind)
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert len(out["member_id"]) == 64
        assert (tmp_path / f"m-{kind}_privk.pem").stat().st_mode & 0o777 == 0o600
    again = ctl("keygen", "--name", "m-p256", "--out-dir", str(tmp_path))
    assert again.returncode == 1 and "exists" in again.stderr


def test_submit_with_receipt_then_verify_offline(consortium: Consortium, tmp_path: Path) -> None:
    receipt = tmp_path / "receipt.json"
    result = ctl(
        "tx",
        "submit",
        *node_args(consortium),
        "--set",
        "city=Lyon",
        "--set",
        "n=1",
        "--receipt-out",
        str(receipt),
    )
    assert result.returncode == 0, result.stderr
    txid = json.loads(result.stdout)["transactions"][0]["txid"]
    verified = ctl(
        "verify-receipt", "--service-cert", str(consortium.node.service_cert), str(receipt)
    )
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["txid"] == txid
    got = ctl("tx", "get", *node_args(consortium), txid)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["writes"] == {"app": {"city": "Lyon", "n": "1"}}
    kv = ctl("kv", "get", *node_args(consortium), "city")
    assert kv.returncode == 0 and json.loads(kv.stdout)["value"] == "Lyon"


def test_tampered_receipt_fails_with_the_field(consortium: Consortium, tmp_path: Path) -> None:
    receipt = tmp_path / "receipt.json"
    assert (
        ctl(
            "tx", "submit", *node_args(consortium), "--set", "t=1", "--receipt-out", str(receipt)
        ).returncode
        == 0
    )
    data = json.loads(receipt.read_text())
    data["root"] = ("0" if data["root"][0] != "0" else "1") + data["root"][1:]
    receipt.write_text(json.dumps(data))
    result = ctl(
        "verify-receipt", "--service-cert", str(consortium.node.service_cert), str(receipt)
    )
    assert result.returncode == 1
    assert "receipt INVALID" in result.stderr and "root" in result.stderr


def test_verify_trusted_list_and_rollback(consortium: Consortium, tmp_path: Path) -> None:
    _, envelope, _ = consortium.node.request("GET", "/node/trusted-list")
    path = tmp_path / "list.cose"
    path.write_bytes(envelope)
    cert = str(consortium.node.service_cert)
    ok = ctl(
        "verify-trusted-list", "--service-cert", cert, "--list", str(path), "--consortium", "test"
    )
    assert ok.returncode == 0, ok.stderr
    version = json.loads(ok.stdout)["version"]
    rollback = ctl(
        "verify-trusted-list",
        "--service-cert",
        cert,
        "--list",
        str(path),
        "--min-version",
        str(version + 1),
    )
    assert rollback.returncode == 1 and "Rollback" in rollback.stderr
    tampered = bytearray(envelope)
    tampered[len(tampered) // 2] ^= 1
    path.write_bytes(bytes(tampered))
    bad = ctl("verify-trusted-list", "--service-cert", cert, "--list", str(path))
    assert bad.returncode == 1 and "refused" in bad.stderr


def test_quote_verify_live_and_wrong_measurement(consortium: Consortium) -> None:
    _, state = consortium.node.get("/node/state")
    root = str(consortium.workdir / "platform/platform-root.pem")
    ok = ctl(
        "quote",
        "verify",
        "--platform-root",
        root,
        "--measurement",
        state["measurement"],
        *node_args(consortium, identity=False),
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["node_id"] == state["node_id"]
    bad = ctl(
        "quote",
        "verify",
        "--platform-root",
        root,
        "--measurement",
        "0" * 64,
        *node_args(consortium, identity=False),
    )
    assert bad.returncode == 1 and "MeasurementNotAllowed" in bad.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            [
                "tx",
                "submit",
                "--node",
                "https://127.0.0.1:{port}",
                "--service-cert",
                "{cert}",
                "--set",
                "a=b",
            ],
            3,
            "cannot connect",
        ),
        (
            ["tx", "submit", "--node", "http://x", "--service-cert", "{cert}", "--set", "a=b"],
            2,
            "expected https",
        ),
        (
            ["tx", "submit", "--node", "{url}", "--service-cert", "{cert}", "--set", "novalue"],
            2,
            "expected KEY=VALUE",
        ),
        (
            ["tx", "submit", "--node", "{url}", "--service-cert", "{cert}", "--set", "a=b"],
            1,
            "HTTP 401",
        ),
        (["verify-receipt", "--service-cert", "{cert}", "/nonexistent"], 2, "cannot read"),
        (["verify-receipt", "--service-cert", "/nonexistent", "-"], 2, "cannot read"),
        (
            [
                "tx",
                "get",
                "--node",
                "{url}",
                "--service-cert",
                "{cert}",
                "--cert",
                "{ucert}",
                "--key",
                "{ukey}",
                "9.9",
            ],
            1,
            "HTTP 404",
        ),
        (
            ["quote", "verify", "--measurement", "0" * 64, "--node", "{url}"],
            2,
            "--platform-root is required with --platform",
        ),
        (
            ["quote", "verify", "--platform-root", "{ukey}", "--measurement", "0" * 64],
            2,
            "endorsements",  # a key file where the platform root certificate belongs
        ),
    ],
)
def test_failures_have_clear_messages_and_exit_codes(
    consortium: Consortium, args: list[str], code: int, message: str
) -> None:
    values = {
        "port": str(free_port()),
        "cert": str(consortium.node.service_cert),
        "url": consortium.node.url,
        "ucert": str(consortium.user.cert),
        "ukey": str(consortium.user.key),
    }
    result = ctl(*[a.format(**values) for a in args], stdin=b"{}")
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message in result.stderr
    assert result.stderr.startswith("consortiumctl: ")


# --- through a backup: three real nodes ---------------------------------------------------------


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster.start(tmp_path_factory.mktemp("three"), 3)
    yield cluster
    cluster.stop()


def cluster_args(cluster: Cluster, node: LocalNode, who: Identity | None = None) -> list[str]:
    identity = who or cluster.user
    assert identity is not None
    return [
        *["--node", node.url, "--service-cert", str(cluster.nodes[0].service_cert)],
        *["--cert", str(identity.cert), "--key", str(identity.key)],
    ]


def backups(cluster: Cluster) -> list[LocalNode]:
    leader = cluster.leader()
    return [n for n in cluster.alive() if n is not leader]


def test_submit_through_a_backup_waits_for_its_receipt(three: Cluster, tmp_path: Path) -> None:
    """The write commits on the primary; the backup learns it a heartbeat later. The client
    waits (404 NotCommittedYet, then 202) instead of failing, every time."""
    service = str(three.nodes[0].service_cert)
    for attempt in range(6):
        backup = backups(three)[attempt % 2]
        receipt = tmp_path / f"receipt-{attempt}.json"
        submitted = ctl(
            "tx", "submit", *cluster_args(three, backup), "--set", f"k{attempt}=v{attempt}",
            "--receipt-out", str(receipt),
        )  # fmt: skip
        assert submitted.returncode == 0, (backup.name, submitted.stderr)
        txid = json.loads(submitted.stdout)["transactions"][0]["txid"]
        verified = ctl("verify-receipt", "--service-cert", service, str(receipt))
        assert verified.returncode == 0, verified.stderr
        assert json.loads(verified.stdout)["txid"] == txid
        # The same backup now reflects the write; the other one may not yet: tx get waits.
        other = next(n for n in backups(three) if n is not backup)
        got = ctl("tx", "get", *cluster_args(three, other), txid)
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["writes"] == {"app": {f"k{attempt}": f"v{attempt}"}}
        kv = ctl("kv", "get", *cluster_args(three, backup), f"k{attempt}")
        assert kv.returncode == 0, kv.stderr
        assert json.loads(kv.stdout)["value"] == f"v{attempt}"


def test_receipt_waits_end_at_their_deadline_with_exit_1(three: Cluster, tmp_path: Path) -> None:
    leader, backup = three.leader(), backups(three)[0]
    commit = backup.state()["commit_index"]
    future = f"{backup.state()['term']}.{commit + 100_000}"
    started = time.monotonic()
    waited = ctl("tx", "get", *cluster_args(three, backup), future, "--receipt-timeout", "1")
    assert waited.returncode == 1, waited.stderr
    assert "NotCommittedYet" in waited.stderr and "within 1s" in waited.stderr
    assert time.monotonic() - started < 20
    # The primary holds every committed entry: a txid it lacks is final at once.
    final = ctl("tx", "get", *cluster_args(three, leader), future)
    assert final.returncode == 1 and "NotFound" in final.stderr, final.stderr
    # A receipt that could not be saved is a usage error found before anything is written.
    before = leader.state()["commit_index"]
    unwritable = ctl(
        "tx", "submit", *cluster_args(three, backup), "--set", "x=1",
        "--receipt-out", str(tmp_path / "no-such-dir" / "r.json"),
    )  # fmt: skip
    assert unwritable.returncode == 2 and "--receipt-out" in unwritable.stderr
    assert leader.state()["commit_index"] == before
    bad = ctl("tx", "get", *cluster_args(three, backup), "1.1", "--receipt-timeout", "soon")
    assert bad.returncode == 2


def test_governance_and_ack_through_backups_only(three: Cluster, tmp_path: Path) -> None:
    """A member who can reach one backup proposes, votes and acknowledges: each backup
    forwards the signed document to the primary (no redirect to an address it may not
    resolve), and the new member, Active, writes through a backup too."""
    assert three.member is not None
    first, second = backups(three)
    newbie = make_identity(tmp_path / "ids", "newbie", "user")
    governor = ["--consortium", "test", "--cert", str(three.member.cert)]
    governor += ["--key", str(three.member.key)]
    service = ["--service-cert", str(three.nodes[0].service_cert)]
    opened = ctl(
        "propose", *governor, "--add-member", f"{newbie.cert}:user", "--node", first.url, *service
    )
    assert opened.returncode == 0, opened.stderr
    pid = json.loads(opened.stdout)["proposal_id"]
    voted = ctl(
        "vote", *governor, "--proposal-id", pid, "--approve", "--node", second.url, *service
    )
    assert voted.returncode == 0, voted.stderr
    assert json.loads(voted.stdout)["state"] == "Accepted"
    # The raw API: a backup answers the ack itself (forwarded), not 503 NotLeader.
    ack = tmp_path / "ack.cose"
    signed = ctl(
        "ack", "--consortium", "test", "--cert", str(newbie.cert), "--key", str(newbie.key),
        "--out", str(ack),
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    status, body, _ = first.request(
        "POST", "/gov/members/ack", ack.read_bytes(), None, {"Content-Type": "application/cose"}
    )
    assert status == 200, body
    answer = json.loads(body)
    assert answer["status"] == "Active" and answer["member_id"] == member_id(newbie)
    # Again through the CLI, through the other backup: the ledger refuses a second ack.
    again = ctl(
        "ack", "--consortium", "test", "--cert", str(newbie.cert), "--key", str(newbie.key),
        "--node", second.url, *service,
    )  # fmt: skip
    assert again.returncode == 1 and "HTTP 403" in again.stderr, again.stderr
    wrote = ctl("tx", "submit", *cluster_args(three, second, newbie), "--set", "by=newbie")
    assert wrote.returncode == 0, wrote.stderr


def member_id(identity: Identity) -> str:
    return keys.member_id_of(certificate_der(load_certificate(identity.cert.read_bytes())))
