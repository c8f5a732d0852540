"""The backup store against a real S3-protocol server (moto, a separate process): a backup
uploaded through ``S3Store`` verifies from the bucket (``verify_backup`` and
``consortiumctl backup verify --bucket``), and the store's failures arrive as the reasons the
node and the CLI report: a wrong secret or an unknown key is ``InvalidCredentials``, a missing
bucket ``BucketNotFound``, nobody listening ``EndpointUnreachable``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from consortium_node.backup.s3 import StoreError
from consortium_node.backup.verify import verify_backup
from consortium_node.identity.certs import ServiceIdentity
from tests.support.backups import BuiltBackup, build_ledger, write_backup
from tests.support.harness import ctl, free_port
from tests.support.s3server import S3Server

PREFIX = "demo/"


@pytest.fixture(scope="module")
def service() -> ServiceIdentity:
    return ServiceIdentity.create("backup-store-test")


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, service: ServiceIdentity
) -> Iterator[BuiltBackup]:
    workdir = tmp_path_factory.mktemp("backup")
    ledger = build_ledger(workdir / "ledger", service)
    try:
        yield write_backup(ledger, service, workdir / "copy")
    finally:
        ledger.close()


@pytest.fixture(scope="module")
def cert_file(tmp_path_factory: pytest.TempPathFactory, service: ServiceIdentity) -> str:
    path = tmp_path_factory.mktemp("cert") / "service.pem"
    path.write_text(service.certificate_pem)
    return str(path)


def upload(server: S3Server, bucket: str, root: Path) -> int:
    """Every file of the local copy under ``PREFIX``; returns how many."""
    store = server.store(bucket, PREFIX)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        assert store.put_new(path.relative_to(root).as_posix(), path.read_bytes())
    return len(files)


def verify_cli(server: S3Server, bucket: str, cert_file: str, *extra: str) -> tuple[int, str, str]:
    result = ctl(
        "backup",
        "verify",
        "--service-cert",
        cert_file,
        "--bucket",
        bucket,
        "--endpoint",
        server.endpoint,
        *extra,
    )
    return result.returncode, result.stdout, result.stderr


def test_a_backup_in_the_bucket_verifies_from_it(
    s3_server: S3Server,
    built: BuiltBackup,
    service: ServiceIdentity,
    cert_file: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = s3_server.make_bucket()
    assert upload(s3_server, bucket, built.root) == len(built.manifest.objects) + 3
    store = s3_server.store(bucket, PREFIX)
    verified = verify_backup(store, service.certificate)
    assert verified.manifest_key == built.manifest_key
    assert verified.last_txid == built.manifest.last_txid

    for name, value in s3_server.credentials_env.items():
        monkeypatch.setenv(name, value)
    for prefix in (PREFIX, PREFIX.rstrip("/")):  # the trailing "/" is implied
        code, out, err = verify_cli(s3_server, bucket, cert_file, "--prefix", prefix)
        assert code == 0, err
        assert f"covers:      1.1 .. {built.manifest.last_txid}" in out
        assert f"location:    s3://{bucket}/{PREFIX}" in out

    code, _, err = verify_cli(s3_server, bucket, cert_file)  # the backup is under a prefix
    assert code == 1 and "backup verify failed: NoManifest" in err

    segment = built.manifest.ledger_objects[0].key
    data = bytearray(store.get(segment))
    data[10] ^= 0x01  # the store never overwrites: the tampering goes around it
    s3_server.client().put_object(Bucket=bucket, Key=PREFIX + segment, Body=bytes(data))
    code, out, err = verify_cli(s3_server, bucket, cert_file, "--prefix", PREFIX)
    assert (code, out) == (1, "")
    assert f"backup verify failed: ObjectDigest: {segment}" in err


def test_a_wrong_secret_or_unknown_key_is_invalid_credentials(s3_server: S3Server) -> None:
    bucket = s3_server.make_bucket()
    good = s3_server.store(bucket)
    assert good.put_new("probe", b"data") and good.get("probe") == b"data"
    good.check_bucket()
    for wrong in (
        {"secret_access_key": s3_server.secret_access_key[::-1]},
        {"access_key_id": "AKIAUNKNOWNUNKNOWN00"},
    ):
        store = s3_server.store(bucket, **wrong)
        for read in (
            store.check_bucket,
            lambda s=store: s.keys(""),
            lambda s=store: s.get("probe"),
        ):
            with pytest.raises(StoreError) as refused:
                read()
            assert refused.value.reason == "InvalidCredentials", refused.value


def test_a_missing_bucket_is_bucket_not_found(s3_server: S3Server) -> None:
    store = s3_server.store("no-such-bucket-here")
    for read in (store.check_bucket, lambda: store.keys("manifests/")):
        with pytest.raises(StoreError) as refused:
            read()
        assert refused.value.reason == "BucketNotFound"


def test_store_failures_exit_3_with_their_reason(
    s3_server: S3Server, cert_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_server.make_bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    code, _, err = verify_cli(s3_server, bucket, cert_file)
    assert code == 3 and "backup verify failed: InvalidCredentials" in err

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    code, _, err = verify_cli(s3_server, "no-such-bucket-here", cert_file)
    assert code == 3 and "backup verify failed: BucketNotFound" in err

    code, _, err = verify_cli(s3_server, bucket, cert_file)  # an empty bucket
    assert code == 1 and "backup verify failed: NoManifest" in err

    nobody = f"http://127.0.0.1:{free_port()}"
    result = ctl("backup", "verify", "--service-cert", cert_file, "--bucket", bucket,
                 "--endpoint", nobody)  # fmt: skip
    assert result.returncode == 3
    assert "backup verify failed: EndpointUnreachable" in result.stderr
