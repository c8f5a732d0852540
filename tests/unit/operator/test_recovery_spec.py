"""spec.recovery: a valid one parses to the previous service certificate (re-encoded), the lost
consortium's bucket (with spec.backup.s3's defaults) and an optional manifest; every invalid
field is named in ``SpecError.field`` under spec.recovery, never under spec.backup."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509

from consortium_node.identity.certs import ServiceIdentity
from consortium_operator.api.spec import SpecError, parse_consortium

from .support import cached_certificate, full_spec, spec_with

PREVIOUS = ServiceIdentity.create("demo").certificate_pem
CA = cached_certificate("p256", "recovery-ca")[0]
S3 = {
    "endpoint": "https://minio.example:9000",
    "bucket": "lost-backups",
    "credentialsSecret": "lost-backup",
}
MANIFEST = "manifests/00000000000000001234-0123456789abcdef.cose"
PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"
EC_PRIVATE_KEY = "-----BEGIN EC PRIVATE KEY-----\nMIIB\n-----END EC PRIVATE KEY-----\n"
PUBLIC_KEY = (
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"
)


def recovery(**overrides: Any) -> dict[str, Any]:
    """A valid spec.recovery; ``source__s3__bucket=...`` style overrides (``...`` deletes)."""
    data: dict[str, Any] = {"previousServiceCertificate": PREVIOUS, "source": {"s3": dict(S3)}}
    for path, value in overrides.items():
        *parents, last = path.split("__")
        target = data
        for part in parents:
            target = target.setdefault(part, {})
        if value is ...:
            target.pop(last, None)
        else:
            target[last] = value
    return data


def parse(rec: Any, name: str = "demo", base: dict[str, Any] | None = None) -> Any:
    return parse_consortium(name, spec_with("recovery", rec, base)).recovery


def test_no_recovery_section_is_none() -> None:
    assert parse_consortium("demo", full_spec()).recovery is None


def test_a_minimal_recovery_takes_the_backup_defaults() -> None:
    found = parse(recovery())
    assert found.previous_service_certificate == PREVIOUS
    assert found.s3.endpoint == "https://minio.example:9000"
    assert found.s3.bucket == "lost-backups"
    assert found.s3.prefix == "demo/"  # this Consortium's name, as for spec.backup
    assert found.s3.region == "us-east-1"
    assert found.s3.credentials_secret == "lost-backup"
    assert found.s3.ca_bundle is None
    assert found.manifest is None


def test_prefix_default_follows_the_consortium_name() -> None:
    assert parse(recovery(), name="ledger-b").s3.prefix == "ledger-b/"


def test_every_recovery_field_set() -> None:
    found = parse(
        recovery(
            source__s3__prefix="prod/ledger/",
            source__s3__region="eu-west-3",
            source__s3__caBundle=CA,
            manifest=MANIFEST,
        )
    )
    assert (found.s3.prefix, found.s3.region) == ("prod/ledger/", "eu-west-3")
    assert found.s3.ca_bundle == CA.strip() + "\n"
    assert found.manifest == MANIFEST


@pytest.mark.parametrize(
    "written",
    [
        pytest.param("\n\n" + PREVIOUS + "\n\n", id="padded"),
        pytest.param(PREVIOUS.replace("\n", "\r\n"), id="crlf"),
    ],
)
def test_the_previous_certificate_is_re_encoded(written: str) -> None:
    found = parse(recovery(previousServiceCertificate=written))
    assert found.previous_service_certificate == PREVIOUS
    assert x509.load_pem_x509_certificate(found.previous_service_certificate.encode())


def test_recovery_and_backup_are_independent() -> None:
    """A recovering Consortium may back up elsewhere: each section keeps its own bucket."""
    data = spec_with("backup", {"s3": {**S3, "bucket": "new-backups", "credentialsSecret": "new"}})
    spec = parse_consortium("demo", spec_with("recovery", recovery(), data))
    assert spec.backup is not None and spec.recovery is not None
    assert (spec.backup.s3.bucket, spec.recovery.s3.bucket) == ("new-backups", "lost-backups")
    assert spec.recovery.s3.credentials_secret == "lost-backup"


@pytest.mark.parametrize(
    ("backup", "refused"),
    [
        pytest.param({}, True, id="the-source-itself"),
        pytest.param({"endpoint": "https://minio.example:9000/"}, True, id="same-with-slash"),
        pytest.param({"prefix": "demo-recovered/"}, False, id="another-prefix"),
        pytest.param({"bucket": "new-backups"}, False, id="another-bucket"),
        pytest.param({"endpoint": "https://other.example"}, False, id="another-store"),
    ],
)
def test_the_recovered_service_does_not_back_up_into_its_source(
    backup: dict[str, str], refused: bool
) -> None:
    data = spec_with("backup", {"s3": {**S3, **backup}})
    if not refused:
        assert parse_consortium("demo", spec_with("recovery", recovery(), data)).backup
        return
    with pytest.raises(SpecError, match="is the recovery source") as caught:
        parse_consortium("demo", spec_with("recovery", recovery(), data))
    assert caught.value.field == "spec.backup.s3.prefix"


def test_several_certificates_are_refused() -> None:
    other = ServiceIdentity.create("demo").certificate_pem
    with pytest.raises(SpecError, match="exactly one PEM certificate") as caught:
        parse(recovery(previousServiceCertificate=PREVIOUS + other))
    assert caught.value.field == "spec.recovery.previousServiceCertificate"


def test_a_manifest_key_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(SpecError) as caught:
        parse(recovery(manifest=MANIFEST + "\n"))
    assert caught.value.field == "spec.recovery.manifest"


P = "spec.recovery.previousServiceCertificate"
R = "spec.recovery.source.s3"

INVALID = [
    # (spec.recovery as written, the field named)
    ("a certificate", "spec.recovery"),
    (recovery(previousServiceCertificate=...), P),
    (recovery(previousServiceCertificate=""), P),
    (recovery(previousServiceCertificate="  \n"), P),
    (recovery(previousServiceCertificate=7), P),
    (recovery(previousServiceCertificate=PRIVATE_KEY), P),
    (recovery(previousServiceCertificate=PREVIOUS + PRIVATE_KEY), P),
    (recovery(previousServiceCertificate=EC_PRIVATE_KEY), P),
    (recovery(previousServiceCertificate=PUBLIC_KEY), P),
    (recovery(previousServiceCertificate="not pem"), P),
    (recovery(previousServiceCertificate=(
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")), P),
    (recovery(source=...), R),
    (recovery(source={}), R),
    (recovery(source="s3://lost-backups"), "spec.recovery.source"),
    (recovery(source={"s3": {}}), R),
    (recovery(source={"s3": "lost-backups"}), R),
    (recovery(source={"directory": "/backups"}), R),
    (recovery(source__s3__endpoint=...), f"{R}.endpoint"),
    (recovery(source__s3__endpoint="ftp://minio.example"), f"{R}.endpoint"),
    (recovery(source__s3__endpoint="https://k:s@minio.example"), f"{R}.endpoint"),
    (recovery(source__s3__endpoint="https://minio.example/bucket"), f"{R}.endpoint"),
    (recovery(source__s3__bucket=...), f"{R}.bucket"),
    (recovery(source__s3__bucket="Lost_Backups"), f"{R}.bucket"),
    (recovery(source__s3__bucket="192.168.5.4"), f"{R}.bucket"),
    (recovery(source__s3__prefix="prod"), f"{R}.prefix"),
    (recovery(source__s3__region="US-East-1"), f"{R}.region"),
    (recovery(source__s3__credentialsSecret=...), f"{R}.credentialsSecret"),
    (recovery(source__s3__credentialsSecret="Lost_Creds"), f"{R}.credentialsSecret"),
    (recovery(source__s3__caBundle="not pem"), f"{R}.caBundle"),
    (recovery(source__s3__caBundle=PRIVATE_KEY), f"{R}.caBundle"),
    (recovery(manifest=""), "spec.recovery.manifest"),
    (recovery(manifest=7), "spec.recovery.manifest"),
    (recovery(manifest="00000000000000001234-0123456789abcdef.cose"), "spec.recovery.manifest"),
    (recovery(manifest="manifests/1234-0123456789abcdef.cose"), "spec.recovery.manifest"),
    (recovery(manifest="manifests/00000000000000001234-0123456789ABCDEF.cose"),
     "spec.recovery.manifest"),
    (recovery(manifest="manifests/00000000000000001234-0123456789abcde.cose"),
     "spec.recovery.manifest"),
    (recovery(manifest="manifests/00000000000000001234-0123456789abcdef.json"),
     "spec.recovery.manifest"),
    (recovery(manifest="prod/" + MANIFEST), "spec.recovery.manifest"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rec", "field"), INVALID, ids=[f"{i}-{f}" for i, (_, f) in enumerate(INVALID)]
)
def test_invalid_recovery_field_is_named(rec: Any, field: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse(rec)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert caught.value.message
    assert not caught.value.message.startswith(f"{field}:")  # named once, not twice


@pytest.mark.parametrize("key", [PRIVATE_KEY, PREVIOUS + PRIVATE_KEY])
def test_a_private_key_is_refused_and_not_echoed(key: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse(recovery(previousServiceCertificate=key))
    assert "private key" in caught.value.message
    assert "MIIB" not in str(caught.value)


def test_a_public_key_is_not_a_certificate() -> None:
    with pytest.raises(SpecError) as caught:
        parse(recovery(previousServiceCertificate=PUBLIC_KEY))
    assert "not a PEM X.509 certificate" in caught.value.message


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("bucket", "ab", "bucket"),
        ("endpoint", "minio.example:9000", "endpoint"),
        ("credentialsSecret", "", "credentialsSecret"),
        ("prefix", "/x/", "prefix"),
        ("region", "us east", "region"),
        ("caBundle", "", "caBundle"),
    ],
)
def test_backup_errors_still_name_spec_backup(path: str, value: Any, field: str) -> None:
    """The bucket checks are shared: each names the section the bad value is in."""
    bad = {**S3, path: value}
    with pytest.raises(SpecError) as caught:
        parse_consortium("demo", spec_with("backup", {"s3": bad}))
    assert caught.value.field == f"spec.backup.s3.{field}"
    with pytest.raises(SpecError) as caught:
        parse(recovery(source={"s3": bad}))
    assert caught.value.field == f"spec.recovery.source.s3.{field}"


@pytest.mark.parametrize(
    ("section", "base"), [("backup", "spec.backup.s3"), ("recovery", "spec.recovery.source.s3")]
)
def test_credentials_in_the_endpoint_point_at_the_sections_own_secret(
    section: str, base: str
) -> None:
    bad = {**S3, "endpoint": "https://key:secret@minio.example"}
    value = {"s3": bad} if section == "backup" else recovery(source={"s3": bad})
    with pytest.raises(SpecError) as caught:
        parse_consortium("demo", spec_with(section, value))
    assert caught.value.field == f"{base}.endpoint"
    assert caught.value.message.endswith(f"{base}.credentialsSecret")
    assert "secret" not in caught.value.message.replace("credentialsSecret", "")
