"""Node configuration: every invalid field is named; valid files parse to the right values."""

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from consortium_node.attestation import platforms
from consortium_node.server.config import ConfigError, load_config, parse_config

M = "a" * 64
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def base() -> dict[str, Any]:
    return {
        "consortium": "demo",
        "name": "node-0",
        "mode": "genesis",
        "data_dir": "data",
        "platform": {"root_certificate": "root.pem", "root_key": "root.key"},
        "members": [{"certificate": CERT, "role": "governor"}],
        "attestation": {"measurements": [M]},
    }


def with_(path: str, value: Any) -> dict[str, Any]:
    data = base()
    *parents, last = path.split(".")
    target = data
    for part in parents:
        target = target.setdefault(part, {})
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return data


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    config = parse_config(base(), tmp_path)
    assert config.data_dir == tmp_path / "data"
    assert config.platform.chip_id == "node-0"
    assert config.address == "127.0.0.1:8443"
    assert config.attestation.validity == timedelta(hours=24)
    assert config.ledger.signature_interval_tx == 100
    assert (config.ledger.snapshot_interval, config.ledger.snapshot_writes_percent) == (10_000, 50)
    assert config.constitution.threshold == "majority"
    assert config.members[0].role == "governor"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("consortium", ..., "consortium: required"),
        ("consortium", "Bad_Name", "consortium: 'Bad_Name' does not match"),
        ("mode", "leader", "mode: 'leader' is not one of genesis, join"),
        ("listen.port", 70000, "listen.port: 70000 is outside 0..65535"),
        ("listen.port", "80", "listen.port: expected an integer"),
        ("attestation.measurements", [], "attestation.measurements: list at least one"),
        ("attestation.measurements", ["XYZ"], r"attestation.measurements\[0\]: 'XYZ' must match"),
        ("attestation.validity", "1 day", "attestation.validity: '1 day' is not a duration"),
        ("attestation.renew_before", "48h", "renew_before: must be shorter"),
        ("attestation.colour", "blue", "attestation: unknown key"),
        ("ledger.signature_interval_tx", 0, "ledger.signature_interval_tx: 0 is outside"),
        ("ledger.snapshot_writes_percent", -1, "ledger.snapshot_writes_percent: -1 is outside"),
        ("ledger.snapshot_writes_percent", "50", "ledger.snapshot_writes_percent: expected an"),
        ("members", [{"certificate": CERT, "role": "user"}], "needs at least one member"),
        ("members", [{"certificate": CERT, "role": "king"}], r"members\[0\].role: 'king'"),
        ("members", [{"certificate": "missing.pem"}], r"members\[0\].certificate: cannot read"),
        ("constitution.threshold", 0, "constitution.threshold: must be"),
        ("surprise", 1, "<root>: unknown key"),
        ("platform", ..., "platform.root_certificate: required"),
        ("platform.tcb_version", True, "platform.tcb_version: expected an integer"),
        ("platform.name", "sev-snp-typo", "platform.name: 'sev-snp-typo' is not one of"),
        ("platform.root_key", ..., "platform.root_key: required"),
        ("platform.vcek", "v.pem", "platform: unknown key"),
    ],
)
def test_invalid_fields_are_named(tmp_path: Path, path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(with_(path, value), tmp_path)


def test_the_platform_decides_which_endorsement_files_are_read(tmp_path: Path) -> None:
    config = parse_config(base(), tmp_path)
    assert config.platform.name == platforms.DEFAULT
    tee = platforms.by_name(config.platform.name)
    assert config.platform.endorsements == {
        e.file: tmp_path / base()["platform"][e.config_key] for e in tee.endorsements
    }
    named = parse_config(with_("platform.name", platforms.DEFAULT), tmp_path)
    assert named.platform == config.platform


def snp(**section: Any) -> dict[str, Any]:
    data = base()
    data["platform"] = {"name": "sev-snp", "sev_snp": section}
    data["attestation"] = {"measurements": ["ab" * 48]}
    return data


def test_a_sev_snp_node_reads_its_section_and_optional_endorsements(tmp_path: Path) -> None:
    config = parse_config(snp(), tmp_path)
    assert config.platform.name == "sev-snp"
    assert config.platform.endorsements == {}  # every sev-snp file is optional
    assert config.platform.options == {
        "device": "auto",
        "sev_guest_path": "/dev/sev-guest",
        "configfs_path": "/sys/kernel/config/tsm/report",
        "vmpl": 0,
    }
    assert config.platform.policy == {"minimum_tcb": {}, "allow_debug": False, "vmpl": 0,
                                      "products": ["Genoa", "Milan", "Turin"]}  # fmt: skip
    data = snp(device="insecure-emulator", emulator={"report_version": 5, "derived_keys": False},
               policy={"minimum_tcb": {"Genoa": {"snp": 23}}})  # fmt: skip
    data["platform"] |= {"insecure_emulator_chain": "c.pem", "vceks": "v.pem"}
    config = parse_config(data, tmp_path)
    assert config.platform.options["report_version"] == 5
    assert config.platform.options["derived_keys"] is False
    assert config.platform.endorsements == {
        "insecure-emulator-chain.pem": tmp_path / "c.pem", "vceks.pem": tmp_path / "v.pem",
    }  # fmt: skip
    assert config.platform.policy["minimum_tcb"] == {"Genoa": {"snp": 23}}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"device": "tpm"}, "platform.sev_snp.device: 'tpm' is not one of"),
        ({"vmpl": 4}, "platform.sev_snp.vmpl: 4 is outside 0..3"),
        ({"policy": {"vmpl": 9}}, "platform.sev_snp.policy.vmpl"),
        ({"policy": {"minimum_tcb": {"Milan": {"fmc": 1}}}}, "minimum_tcb.Milan.fmc"),
        (
            {"device": "insecure-emulator", "emulator": {"report_version": 6}},
            "platform.sev_snp.emulator.report_version: 6 is outside 2..5",
        ),
        (
            {"device": "insecure-emulator", "emulator": {"tcb": {"ucode": 1}}},
            "platform.sev_snp.emulator.tcb",
        ),
        ({"emulator": {"report_version": 3}}, "platform.sev_snp.emulator: unknown key"),
        ({"colour": "red"}, "platform.sev_snp: unknown key"),
    ],
)
def test_invalid_sev_snp_fields_are_named(
    tmp_path: Path, section: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(snp(**section), tmp_path)


def test_a_sev_snp_measurement_is_96_hex_digits(tmp_path: Path) -> None:
    data = snp()
    data["attestation"] = {"measurements": ["ab" * 40]}
    with pytest.raises(ConfigError, match=r"attestation.measurements\[0\]"):
        parse_config(data, tmp_path)


def test_member_certificate_from_file_and_yaml(tmp_path: Path) -> None:
    (tmp_path / "m.pem").write_text(CERT)
    (tmp_path / "node.yaml").write_text(
        "consortium: demo\nname: n\nmode: genesis\ndata_dir: d\n"
        "platform: {root_certificate: r.pem, root_key: r.key}\n"
        f"members: [{{certificate: m.pem}}]\nattestation: {{measurements: ['{M}']}}\n"
    )
    config = load_config(tmp_path / "node.yaml")
    assert config.members[0].certificate_pem == CERT


def test_yaml_errors_are_reported(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("consortium: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


BACKUP = {
    "endpoint": "https://s3.example:9000/",
    "bucket": "ledger-backups",
    "access_key_id_file": "creds/AWS_ACCESS_KEY_ID",
    "secret_access_key_file": "/creds/AWS_SECRET_ACCESS_KEY",
}


def with_backup(**changes: Any) -> dict[str, Any]:
    backup = {**BACKUP, **changes}
    return with_("backup", {k: v for k, v in backup.items() if v is not ...})


def test_backup_is_off_unless_configured_and_gets_defaults(tmp_path: Path) -> None:
    assert parse_config(base(), tmp_path).backup is None
    backup = parse_config(with_backup(), tmp_path).backup
    assert backup is not None
    assert backup.endpoint == "https://s3.example:9000"
    assert backup.prefix == "demo/"  # the consortium's name
    assert backup.region == "us-east-1"
    assert backup.mode == "continuous"
    assert backup.max_lag == timedelta(seconds=60)
    assert backup.schedule is None
    assert backup.retention is None
    assert backup.access_key_id_file == tmp_path / "creds/AWS_ACCESS_KEY_ID"
    assert backup.secret_access_key_file == Path("/creds/AWS_SECRET_ACCESS_KEY")
    scheduled = parse_config(
        with_backup(mode="schedule", schedule="0 */6 * * *", retention="30d", prefix=""), tmp_path
    ).backup
    assert scheduled is not None
    assert (scheduled.schedule, scheduled.retention, scheduled.prefix) == (
        "0 */6 * * *",
        timedelta(days=30),
        "",
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"endpoint": ...}, "backup.endpoint: required"),
        ({"endpoint": "s3.example:9000"}, "backup.endpoint: 's3.example:9000' does not match"),
        ({"endpoint": "ftp://s3.example"}, "backup.endpoint: 'ftp://s3.example' does not match"),
        ({"bucket": "Bad_Bucket"}, "backup.bucket: 'Bad_Bucket' does not match"),
        ({"bucket": "ab"}, "backup.bucket: 'ab' does not match"),
        ({"prefix": "no-slash"}, "backup.prefix: must be empty or path segments"),
        ({"prefix": "/abs/"}, "backup.prefix: must be empty or path segments"),
        ({"access_key_id_file": ...}, "backup.access_key_id_file: required"),
        ({"mode": "hourly"}, "backup.mode: 'hourly' is not one of continuous, schedule"),
        ({"max_lag": "1s"}, "backup.max_lag: must be between 5s and 1h"),
        ({"max_lag": "2h"}, "backup.max_lag: must be between 5s and 1h"),
        ({"mode": "schedule"}, "backup.schedule: required"),
        ({"mode": "schedule", "schedule": "every day"}, "backup.schedule: 'every day' is not"),
        ({"mode": "schedule", "schedule": "0 0 * * * *"}, "is not a 5-field cron expression"),
        ({"schedule": "0 * * * *"}, "backup.schedule: only for mode schedule"),
        ({"retention": "30m"}, "backup.retention: must be at least 1h"),
        ({"retention": "a month"}, "backup.retention: 'a month' is not a duration"),
        ({"secret": "hunter2"}, "backup: unknown key"),
    ],
)
def test_invalid_backup_fields_are_named(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(with_backup(**changes), tmp_path)


# ------------------------------------------------------------------------ mode recover
DIRECTORY_SOURCE = {"previous_service_certificate": "prev.pem", "source": {"directory": "copy"}}


def recover(recovery: Any = ..., mode: str = "recover") -> dict[str, Any]:
    """``base()`` in ``mode`` with a ``recovery:`` section (``...``: none)."""
    data = with_("mode", mode)
    if recovery is not ...:
        data["recovery"] = recovery
    return data


def bucket_source(**changes: Any) -> dict[str, Any]:
    bucket = {k: v for k, v in {**BACKUP, **changes}.items() if v is not ...}
    return {"previous_service_certificate": "/etc/prev.pem", "source": {"bucket": bucket}}


def test_recover_from_a_directory(tmp_path: Path) -> None:
    config = parse_config(recover(DIRECTORY_SOURCE), tmp_path)
    assert config.mode == "recover"
    assert (config.join, config.backup) == (None, None)
    recovery = config.recovery
    assert recovery is not None
    assert recovery.previous_service_certificate == tmp_path / "prev.pem"
    assert recovery.directory == tmp_path / "copy"
    assert (recovery.bucket, recovery.manifest) == (None, None)
    assert parse_config(base(), tmp_path).recovery is None


def test_recover_from_a_bucket_reads_the_backup_settings(tmp_path: Path) -> None:
    recovery = parse_config(recover(bucket_source()), tmp_path).recovery
    assert recovery is not None and recovery.directory is None
    assert recovery.previous_service_certificate == Path("/etc/prev.pem")
    bucket = recovery.bucket
    assert bucket is not None
    assert bucket.endpoint == "https://s3.example:9000"
    assert bucket.bucket == "ledger-backups"
    assert bucket.prefix == "demo/"  # the consortium's name
    assert bucket.region == "us-east-1"
    assert bucket.access_key_id_file == tmp_path / "creds/AWS_ACCESS_KEY_ID"
    assert bucket.secret_access_key_file == Path("/creds/AWS_SECRET_ACCESS_KEY")
    assert bucket.ca_file is None
    custom = parse_config(
        recover(bucket_source(prefix="prod/ledger/", region="eu-west-1", ca_file="ca.pem")),
        tmp_path,
    ).recovery
    assert custom is not None and custom.bucket is not None
    assert (custom.bucket.prefix, custom.bucket.region, custom.bucket.ca_file) == (
        "prod/ledger/",
        "eu-west-1",
        tmp_path / "ca.pem",
    )


def test_recover_manifest_is_optional(tmp_path: Path) -> None:
    key = "demo/manifests/00000000000000000120.json"
    recovery = parse_config(recover({**DIRECTORY_SOURCE, "manifest": key}), tmp_path).recovery
    assert recovery is not None and recovery.manifest == key
    default = parse_config(recover(DIRECTORY_SOURCE), tmp_path).recovery
    assert default is not None and default.manifest is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(
            recover({**DIRECTORY_SOURCE, "source": {"directory": "copy", "bucket": BACKUP}}),
            "recovery.source: name exactly one of directory or bucket",
            id="both-sources",
        ),
        pytest.param(
            recover({**DIRECTORY_SOURCE, "source": {}}),
            "recovery.source: name exactly one of directory or bucket",
            id="neither-source",
        ),
        pytest.param(
            recover({"previous_service_certificate": "prev.pem"}),
            "recovery.source: name exactly one of directory or bucket",
            id="no-source-section",
        ),
        pytest.param(
            recover({"source": {"directory": "copy"}}),
            "recovery.previous_service_certificate: required",
            id="no-previous-certificate",
        ),
        pytest.param(
            recover({**DIRECTORY_SOURCE, "colour": "blue"}),
            "recovery: unknown key(s) 'colour'",
            id="unknown-recovery-key",
        ),
        pytest.param(
            recover({**DIRECTORY_SOURCE, "source": {"directory": "copy", "url": "x"}}),
            "recovery.source: unknown key(s) 'url'",
            id="unknown-source-key",
        ),
        pytest.param(
            recover(bucket_source(max_lag="60s")),
            "recovery.source.bucket: unknown key(s) 'max_lag'",
            id="unknown-bucket-key",
        ),
        pytest.param(
            recover(bucket_source(endpoint=...)),
            "recovery.source.bucket.endpoint: required",
            id="bucket-without-endpoint",
        ),
        pytest.param(
            recover(bucket_source(prefix="no-slash")),
            "recovery.source.bucket.prefix: must be empty or path segments",
            id="bucket-bad-prefix",
        ),
        pytest.param(
            recover({**DIRECTORY_SOURCE, "source": {"bucket": "ledger-backups"}}),
            "recovery.source.bucket: expected a mapping",
            id="bucket-not-a-mapping",
        ),
        pytest.param(
            recover({**DIRECTORY_SOURCE, "source": {"directory": ""}}),
            "recovery.source.directory: expected a non-empty string",
            id="empty-directory",
        ),
        pytest.param(
            recover({**DIRECTORY_SOURCE, "manifest": ""}),
            "recovery.manifest: expected a manifest key",
            id="empty-manifest",
        ),
        pytest.param(
            recover({**DIRECTORY_SOURCE, "manifest": 120}),
            "recovery.manifest: expected a manifest key",
            id="manifest-not-a-string",
        ),
        pytest.param(
            recover(DIRECTORY_SOURCE, mode="genesis"),
            "recovery: only for mode recover",
            id="genesis-with-recovery",
        ),
        pytest.param(
            {
                **recover(DIRECTORY_SOURCE, mode="join"),
                "join": {"trusted_list": "trusted.cose", "service_certificate": "svc.pem"},
            },
            "recovery: only for mode recover",
            id="join-with-recovery",
        ),
        pytest.param(
            recover(), "recovery.previous_service_certificate: required", id="no-recovery-section"
        ),
    ],
)
def test_invalid_recovery_fields_are_named(
    tmp_path: Path, data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(data, tmp_path)


def test_the_join_control_case_parses(tmp_path: Path) -> None:
    """The join-with-recovery case above fails for the recovery section, not the join one."""
    data = with_("mode", "join")
    data["join"] = {"trusted_list": "trusted.cose", "service_certificate": "svc.pem"}
    config = parse_config(data, tmp_path)
    assert config.join is not None and config.recovery is None
