"""consortiumctl against a real node: each command's success path and its failures' exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import Consortium
from tests.support.harness import ctl, free_port


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
