"""spec.backup: valid input parses to the right values and defaults; every invalid field is named
in ``SpecError.field`` (the Ready condition shows it, and nothing is built from such a spec)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from consortium_operator.api.spec import SpecError, parse_consortium

from .support import cached_certificate, full_spec, spec_with

CA = cached_certificate("p256", "backup-ca")[0]
CA2 = cached_certificate("ed25519", "backup-ca-2")[0]
BACKUP: dict[str, Any] = {
    "s3": {
        "endpoint": "https://minio.example:9000",
        "bucket": "consortium-backups",
        "credentialsSecret": "demo-backup",
    }
}


def parse(path: str | None = None, value: Any = None, name: str = "demo") -> Any:
    """The parsed spec.backup of full_spec() with BACKUP, and ``path`` (under spec.backup) set
    to ``value`` (``...`` deletes it)."""
    data = spec_with("backup", BACKUP)
    if path is not None:
        data = spec_with(f"backup.{path}", value, data)
    return parse_consortium(name, data).backup


def test_no_backup_section_is_none() -> None:
    assert parse_consortium("demo", full_spec()).backup is None


def test_minimal_backup_takes_defaults() -> None:
    backup = parse()
    assert backup.s3.endpoint == "https://minio.example:9000"
    assert backup.s3.bucket == "consortium-backups"
    assert backup.s3.prefix == "demo/"  # the Consortium's name
    assert backup.s3.region == "us-east-1"
    assert backup.s3.credentials_secret == "demo-backup"
    assert backup.s3.ca_bundle is None
    assert (backup.mode, backup.node_mode) == ("Continuous", "continuous")
    assert backup.max_lag == timedelta(seconds=60)
    assert backup.schedule is None
    assert backup.retention is None


def test_prefix_defaults_to_the_consortium_name() -> None:
    assert parse(name="ledger-a").s3.prefix == "ledger-a/"


def test_every_field_set() -> None:
    backup = parse_consortium(
        "demo",
        spec_with(
            "backup",
            {
                "s3": {
                    **BACKUP["s3"],
                    "prefix": "prod/ledger/",
                    "region": "eu-west-3",
                    "caBundle": CA + CA2,
                },
                "mode": "Scheduled",
                "schedule": "0  */6 * *   *",
                "retention": "30d",
            },
        ),
    ).backup
    assert backup is not None
    assert backup.s3.prefix == "prod/ledger/"
    assert backup.s3.region == "eu-west-3"
    assert backup.s3.ca_bundle == (CA + CA2).strip() + "\n"
    assert (backup.mode, backup.node_mode) == ("Scheduled", "schedule")
    assert backup.schedule == "0 */6 * * *"  # white space normalised
    assert backup.max_lag is None
    assert backup.retention == timedelta(days=30)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("s3.prefix", "", ""),
        ("s3.prefix", "a/", "a/"),
        ("s3.prefix", "x.y_z-1/2/", "x.y_z-1/2/"),
        ("s3.endpoint", "http://minio.minio.svc:9000", "http://minio.minio.svc:9000"),
        ("s3.endpoint", "https://s3.example/", "https://s3.example/"),
        ("s3.endpoint", "https://[fd00::1]:9000", "https://[fd00::1]:9000"),
        ("s3.bucket", "a.b-c.123", "a.b-c.123"),
        ("s3.bucket", "abc", "abc"),
        ("s3.bucket", "b" * 63, "b" * 63),
        ("s3.credentialsSecret", "backup.creds-1", "backup.creds-1"),
        ("maxLag", "5s", timedelta(seconds=5)),
        ("maxLag", "1h", timedelta(hours=1)),
        ("maxLag", "1m30s", timedelta(seconds=90)),
        ("retention", "1h", timedelta(hours=1)),
    ],
)
def test_accepted_values(path: str, value: Any, expected: Any) -> None:
    backup = parse(path, value)
    found = {
        "s3.prefix": backup.s3.prefix,
        "s3.endpoint": backup.s3.endpoint,
        "s3.bucket": backup.s3.bucket,
        "s3.credentialsSecret": backup.s3.credentials_secret,
        "maxLag": backup.max_lag,
        "retention": backup.retention,
    }[path]
    assert found == expected


PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"

INVALID = [
    # (path under spec.backup, value, field named)
    ("s3", ..., "spec.backup.s3"),
    ("s3", "bucket", "spec.backup.s3"),
    ("s3.endpoint", ..., "spec.backup.s3.endpoint"),
    ("s3.endpoint", "", "spec.backup.s3.endpoint"),
    ("s3.endpoint", "minio.example:9000", "spec.backup.s3.endpoint"),
    ("s3.endpoint", "ftp://minio.example", "spec.backup.s3.endpoint"),
    ("s3.endpoint", "https://", "spec.backup.s3.endpoint"),
    ("s3.endpoint", "https://key:secret@minio.example", "spec.backup.s3.endpoint"),
    ("s3.endpoint", "https://minio.example:99999", "spec.backup.s3.endpoint"),
    ("s3.endpoint", "https://minio.example/?x=1", "spec.backup.s3.endpoint"),
    ("s3.endpoint", "https://minio.example#top", "spec.backup.s3.endpoint"),
    ("s3.endpoint", "https://minio.example/bucket", "spec.backup.s3.endpoint"),
    ("s3.endpoint", "https://minio example", "spec.backup.s3.endpoint"),
    ("s3.endpoint", 9000, "spec.backup.s3.endpoint"),
    ("s3.bucket", ..., "spec.backup.s3.bucket"),
    ("s3.bucket", "ab", "spec.backup.s3.bucket"),
    ("s3.bucket", "b" * 64, "spec.backup.s3.bucket"),
    ("s3.bucket", "Backups", "spec.backup.s3.bucket"),
    ("s3.bucket", "my_backups", "spec.backup.s3.bucket"),
    ("s3.bucket", "-backups", "spec.backup.s3.bucket"),
    ("s3.bucket", "backups.", "spec.backup.s3.bucket"),
    ("s3.bucket", "my..backups", "spec.backup.s3.bucket"),
    ("s3.bucket", "my.-backups", "spec.backup.s3.bucket"),
    ("s3.bucket", "192.168.5.4", "spec.backup.s3.bucket"),
    ("s3.bucket", "xn--backups", "spec.backup.s3.bucket"),
    ("s3.bucket", "backups-s3alias", "spec.backup.s3.bucket"),
    ("s3.prefix", "prod", "spec.backup.s3.prefix"),
    ("s3.prefix", "/prod/", "spec.backup.s3.prefix"),
    ("s3.prefix", "prod//", "spec.backup.s3.prefix"),
    ("s3.prefix", "../", "spec.backup.s3.prefix"),
    ("s3.prefix", "a/./", "spec.backup.s3.prefix"),
    ("s3.prefix", "a b/", "spec.backup.s3.prefix"),
    ("s3.prefix", "a/" * 257, "spec.backup.s3.prefix"),
    ("s3.prefix", 7, "spec.backup.s3.prefix"),
    ("s3.region", "US-East-1", "spec.backup.s3.region"),
    ("s3.region", "", "spec.backup.s3.region"),
    ("s3.region", "us east", "spec.backup.s3.region"),
    ("s3.credentialsSecret", ..., "spec.backup.s3.credentialsSecret"),
    ("s3.credentialsSecret", "", "spec.backup.s3.credentialsSecret"),
    ("s3.credentialsSecret", "Backup", "spec.backup.s3.credentialsSecret"),
    ("s3.credentialsSecret", "backup_creds", "spec.backup.s3.credentialsSecret"),
    ("s3.credentialsSecret", "a" * 254, "spec.backup.s3.credentialsSecret"),
    ("s3.caBundle", "", "spec.backup.s3.caBundle"),
    ("s3.caBundle", "not pem", "spec.backup.s3.caBundle"),
    ("s3.caBundle", PRIVATE_KEY, "spec.backup.s3.caBundle"),
    ("s3.caBundle", CA + PRIVATE_KEY, "spec.backup.s3.caBundle"),
    (
        "s3.caBundle",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        "spec.backup.s3.caBundle",
    ),
    ("s3.caBundle", "x" * (256 * 1024 + 1), "spec.backup.s3.caBundle"),
    ("mode", "continuous", "spec.backup.mode"),
    ("mode", "Hourly", "spec.backup.mode"),
    ("maxLag", "4s", "spec.backup.maxLag"),
    ("maxLag", "61m", "spec.backup.maxLag"),
    ("maxLag", "soon", "spec.backup.maxLag"),
    ("maxLag", 60, "spec.backup.maxLag"),
    ("schedule", "0 */6 * * *", "spec.backup.schedule"),  # mode Continuous
    ("retention", "59m", "spec.backup.retention"),
    ("retention", "forever", "spec.backup.retention"),
]


@pytest.mark.parametrize(
    ("path", "value", "field"), INVALID, ids=[f"{p}={v!r}"[:50] for p, v, _ in INVALID]
)
def test_invalid_field_is_named(path: str, value: Any, field: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse(path, value)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert caught.value.message


SCHEDULED = {**BACKUP, "mode": "Scheduled", "schedule": "0 */6 * * *"}

INVALID_SCHEDULED = [
    ("schedule", ..., "spec.backup.schedule"),
    ("schedule", "", "spec.backup.schedule"),
    ("schedule", "@daily", "spec.backup.schedule"),
    ("schedule", "0 */6 * *", "spec.backup.schedule"),
    ("schedule", "0 0 */6 * * *", "spec.backup.schedule"),  # 6 fields (seconds)
    ("schedule", "61 * * * *", "spec.backup.schedule"),
    ("schedule", "a b c d e", "spec.backup.schedule"),
    ("schedule", "*/0 * * * *", "spec.backup.schedule"),
    ("schedule", "0 0 30 2 *", "spec.backup.schedule"),  # never fires
    ("schedule", 6, "spec.backup.schedule"),
    ("maxLag", "60s", "spec.backup.maxLag"),  # mode Scheduled: the schedule decides
]


@pytest.mark.parametrize(
    ("path", "value", "field"),
    INVALID_SCHEDULED,
    ids=[f"{p}={v!r}" for p, v, _ in INVALID_SCHEDULED],
)
def test_invalid_scheduled_field_is_named(path: str, value: Any, field: str) -> None:
    data = spec_with(f"backup.{path}", value, spec_with("backup", SCHEDULED))
    with pytest.raises(SpecError) as caught:
        parse_consortium("demo", data)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "schedule", ["* * * * *", "0 0 * * MON-FRI", "15 3 1 */2 *", "0 12 29 2 *"]
)
def test_valid_schedules(schedule: str) -> None:
    data = spec_with("backup.schedule", schedule, spec_with("backup", SCHEDULED))
    backup = parse_consortium("demo", data).backup
    assert backup is not None and backup.schedule == schedule


def test_backup_must_be_an_object() -> None:
    with pytest.raises(SpecError) as caught:
        parse_consortium("demo", spec_with("backup", "s3://bucket"))
    assert caught.value.field == "spec.backup"
    with pytest.raises(SpecError) as caught:
        parse_consortium("demo", spec_with("backup", {}))
    assert caught.value.field == "spec.backup.s3"


def test_a_key_in_the_ca_bundle_is_not_echoed() -> None:
    with pytest.raises(SpecError) as caught:
        parse("s3.caBundle", PRIVATE_KEY)
    assert "MIIB" not in str(caught.value)
