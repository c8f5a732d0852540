"""``consortiumctl backup verify --dir``: the summary of a genuine backup and exit 0; the reason
of a refusal on stderr and exit 1; usage problems exit 2 and missing credentials 3 before
anything is read. (``--bucket`` against a real S3 server:
tests/integration/test_backup_store.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consortium_node.ctl.main import main
from consortium_node.identity.certs import ServiceIdentity
from tests.support.backups import BuiltBackup


@pytest.fixture
def cert_file(service: ServiceIdentity, tmp_path: Path) -> str:
    path = tmp_path / "service.pem"
    path.write_text(service.certificate_pem)
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["backup", "verify", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_genuine_copy_prints_its_range_and_exits_0(
    backup: BuiltBackup, cert_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "--service-cert", cert_file, "--dir", str(backup.root))
    last = backup.manifest.last_txid
    assert code == 0, err
    assert out.startswith("backup verified\n")
    assert f"covers:      1.1 .. {last}" in out
    assert f"manifest:    {backup.manifest_key}" in out
    assert "consortium:  backup-test" in out
    assert f"entries:     {last.index} (" in out
    snapshots = ", ".join(str(o.first_index) for o in backup.manifest.snapshot_objects)
    assert f"{len(backup.manifest.snapshot_objects)} verified (at {snapshots})" in out

    code, out, _ = run(capsys, "--service-cert", cert_file, "--dir", str(backup.root), "--json")
    report = json.loads(out)
    assert code == 0 and report["verified"] is True
    assert (report["first_txid"], report["last_txid"]) == ("1.1", str(last))
    assert report["manifest"] == backup.manifest_key
    assert report["snapshots"] == [o.first_index for o in backup.manifest.snapshot_objects]


def test_a_tampered_copy_exits_1_with_the_reason(
    backup: BuiltBackup, cert_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    segment = backup.manifest.ledger_objects[1].key
    data = bytearray((backup.root / segment).read_bytes())
    data[-1] ^= 0x01
    (backup.root / segment).write_bytes(bytes(data))
    code, out, err = run(capsys, "--service-cert", cert_file, "--dir", str(backup.root))
    assert (code, out) == (1, "")
    assert f"backup verify failed: ObjectDigest: {segment}" in err


def test_an_older_manifest_is_verified_when_named(
    backup: BuiltBackup, cert_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = "manifests/00000000000000000001-0123456789abcdef.cose"
    code, _, err = run(
        capsys, "--service-cert", cert_file, "--dir", str(backup.root), "--manifest", absent
    )
    assert code == 1 and f"backup verify failed: NoManifest: {absent}" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dir", "{absent}"], "--dir"),
        (["--dir", "{root}", "--endpoint", "http://127.0.0.1:9"], "--endpoint goes with --bucket"),
        (["--bucket", "b"], "--bucket needs --endpoint"),
    ],
)
def test_usage_errors_exit_2(
    backup: BuiltBackup,
    cert_file: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    values = {"absent": str(tmp_path / "absent"), "root": str(backup.root)}
    code, _, err = run(capsys, "--service-cert", cert_file, *(a.format(**values) for a in argv))
    assert code == 2 and message in err


def test_missing_credentials_for_a_bucket_exit_3_before_any_request(
    cert_file: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    code, _, err = run(
        capsys, "--service-cert", cert_file, "--bucket", "b", "--endpoint", "http://127.0.0.1:9"
    )
    assert code == 3
    assert "backup verify failed: CredentialsMissing: set AWS_ACCESS_KEY_ID" in err


def test_help_names_the_credential_variables(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["backup", "verify", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment variables" in out
