"""spec.backup in the manifests: the node configuration's ``backup:`` section exactly as the
backup contract has it (and as the node's own parser accepts it), the credentials Secret mount,
the CA bundle in the config ConfigMap, the pod-template digest that rolls the pods on a change,
and nothing of it at all without spec.backup."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from consortium_node.server.config import parse_config
from consortium_node.server.kube import pod_settings
from consortium_operator.api.names import (
    ANNOTATION_BACKUP_CONFIG,
    ANNOTATION_LEDGER_CONFIG,
    MOUNT_BACKUP_CREDENTIALS,
    MOUNT_CONFIG,
    Names,
)
from consortium_operator.api.spec import ConsortiumSpec, parse_consortium
from consortium_operator.kube import builders

from .support import cached_certificate, consortium, full_spec, member, spec_with

NS = "ledgers"
UID = "0b7d9e6c-1111-2222-3333-444455556666"
DOMAIN = "cluster.local"
CA = cached_certificate("p256", "backup-ca")[0]
S3 = {
    "endpoint": "https://minio.example:9000",
    "bucket": "consortium-backups",
    "credentialsSecret": "demo-backup",
}


def with_backup(backup: dict[str, Any] | None = None, name: str = "demo") -> ConsortiumSpec:
    return parse_consortium(name, spec_with("backup", backup or {"s3": dict(S3)}))


def _container(sts: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = sts["spec"]["template"]["spec"]["containers"][0]
    return container


def _pod(sts: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = sts["spec"]["template"]
    return pod


OPERATOR_PEM = cached_certificate("p256", "operator")[0]


def _config(spec: ConsortiumSpec) -> dict[str, Any]:
    """node_config as a pod reads it, through the ConfigMap's YAML."""
    config = builders.node_config(spec, [member("alice")], OPERATOR_PEM)
    loaded: dict[str, Any] = yaml.safe_load(
        builders.config_map(spec, NS, UID, config)["data"]["node.yaml"]
    )
    assert loaded == config
    return loaded


# ---------------------------------------------------------------------------- the contract


@pytest.mark.parametrize(
    ("backup", "section"),
    [
        (
            {"s3": dict(S3)},
            {
                "endpoint": "https://minio.example:9000",
                "bucket": "consortium-backups",
                "prefix": "demo/",
                "region": "us-east-1",
                "access_key_id_file": "/etc/consortium/backup-credentials/AWS_ACCESS_KEY_ID",
                "secret_access_key_file": (
                    "/etc/consortium/backup-credentials/AWS_SECRET_ACCESS_KEY"
                ),
                "mode": "continuous",
                "max_lag": "60s",
            },
        ),
        (
            {
                "s3": {**S3, "prefix": "", "region": "eu-west-3", "caBundle": CA},
                "mode": "Continuous",
                "maxLag": "1m30s",
                "retention": "30d",
            },
            {
                "endpoint": "https://minio.example:9000",
                "bucket": "consortium-backups",
                "prefix": "",
                "region": "eu-west-3",
                "access_key_id_file": "/etc/consortium/backup-credentials/AWS_ACCESS_KEY_ID",
                "secret_access_key_file": (
                    "/etc/consortium/backup-credentials/AWS_SECRET_ACCESS_KEY"
                ),
                "ca_file": "/etc/consortium/config/backup-ca.crt",
                "mode": "continuous",
                "max_lag": "90s",
                "retention": "2592000s",
            },
        ),
        (
            {
                "s3": {**S3, "prefix": "prod/"},
                "mode": "Scheduled",
                "schedule": "0 */6 * * *",
                "retention": "1h",
            },
            {
                "endpoint": "https://minio.example:9000",
                "bucket": "consortium-backups",
                "prefix": "prod/",
                "region": "us-east-1",
                "access_key_id_file": "/etc/consortium/backup-credentials/AWS_ACCESS_KEY_ID",
                "secret_access_key_file": (
                    "/etc/consortium/backup-credentials/AWS_SECRET_ACCESS_KEY"
                ),
                "mode": "schedule",
                "schedule": "0 */6 * * *",
                "retention": "3600s",
            },
        ),
    ],
    ids=["defaults", "continuous-everything", "scheduled"],
)
def test_backup_section_is_the_contract(backup: dict[str, Any], section: dict[str, Any]) -> None:
    config = _config(with_backup(backup))
    assert config["backup"] == section


@pytest.mark.parametrize(
    "backup",
    [
        {"s3": dict(S3)},
        {"s3": {**S3, "prefix": "", "caBundle": CA}, "maxLag": "5s", "retention": "30d"},
        {"s3": {**S3, "endpoint": "http://minio.minio.svc:9000/"}, "maxLag": "1h"},
        {"s3": dict(S3), "mode": "Scheduled", "schedule": "15 3 * * MON-FRI"},
    ],
)
@pytest.mark.parametrize("ordinal", [0, 2])
def test_the_node_accepts_the_backup_section(
    backup: dict[str, Any], ordinal: int, tmp_path: Path
) -> None:
    """What the operator renders for a spec it accepts, the node's own parser accepts, with
    the same values (a spec the operator takes never becomes a node that refuses to start)."""
    spec = with_backup(backup)
    assert spec.backup is not None
    base = {**_config(spec), "kubernetes": {"service_certificate": str(tmp_path / "none.pem")}}
    pod = f"demo-{ordinal}"
    env = {
        "POD_NAME": pod,
        "POD_NAMESPACE": NS,
        "POD_IP": "10.1.2.3",
        "CONSORTIUM_SERVICE": "demo-nodes",
        "CLUSTER_DOMAIN": DOMAIN,
    }
    parsed = parse_config(pod_settings(base, env), tmp_path).backup
    assert parsed is not None
    assert parsed.bucket == spec.backup.s3.bucket
    assert parsed.prefix == spec.backup.s3.prefix
    assert parsed.endpoint == spec.backup.s3.endpoint.rstrip("/")
    assert parsed.mode == spec.backup.node_mode
    assert parsed.schedule == spec.backup.schedule
    assert parsed.retention == spec.backup.retention
    if spec.backup.max_lag is not None:
        assert parsed.max_lag == spec.backup.max_lag
    assert str(parsed.access_key_id_file).startswith(MOUNT_BACKUP_CREDENTIALS + "/")
    assert (parsed.ca_file is not None) is (spec.backup.s3.ca_bundle is not None)


# ---------------------------------------------------------------------------- mounts


def test_credentials_secret_is_mounted_read_only_and_optional() -> None:
    sts = builders.statefulset(with_backup(), NS, UID, 3, DOMAIN)
    volumes = {v["name"]: v for v in _pod(sts)["spec"]["volumes"]}
    mounts = {m["name"]: m for m in _container(sts)["volumeMounts"]}
    assert volumes["backup-credentials"] == {
        "name": "backup-credentials",
        "secret": {
            "secretName": "demo-backup",
            "optional": True,  # a node starts without it and reports CredentialsMissing
            "defaultMode": 0o440,  # owner root, group fsGroup (the node's): nobody else
            "items": [
                {"key": "AWS_ACCESS_KEY_ID", "path": "AWS_ACCESS_KEY_ID"},
                {"key": "AWS_SECRET_ACCESS_KEY", "path": "AWS_SECRET_ACCESS_KEY"},
            ],
        },
    }
    assert mounts["backup-credentials"] == {
        "name": "backup-credentials",
        "mountPath": MOUNT_BACKUP_CREDENTIALS,
        "readOnly": True,
    }
    assert set(mounts) == set(volumes) | {"ledger"}


def test_config_files_name_what_is_mounted() -> None:
    """The credential files are the Secret's items under its mount; the CA file is a key of the
    config ConfigMap, mounted at MOUNT_CONFIG."""
    spec = with_backup({"s3": {**S3, "caBundle": CA}})
    section = _config(spec)["backup"]
    sts = builders.statefulset(spec, NS, UID, 3, DOMAIN)
    volumes = {v["name"]: v for v in _pod(sts)["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in _container(sts)["volumeMounts"]}
    items = {i["path"] for i in volumes["backup-credentials"]["secret"]["items"]}
    for key in ("access_key_id_file", "secret_access_key_file"):
        directory, name = section[key].rsplit("/", 1)
        assert mounts[directory] == "backup-credentials" and name in items
    directory, name = section["ca_file"].rsplit("/", 1)
    assert directory == MOUNT_CONFIG and mounts[directory] == "config"
    config_map = builders.config_map(spec, NS, UID, _config(spec))
    assert spec.backup is not None
    assert config_map["data"][name] == spec.backup.s3.ca_bundle
    assert config_map["metadata"]["name"] == Names("demo").config


def test_ca_bundle_goes_into_the_config_map_only_when_set() -> None:
    spec = with_backup({"s3": {**S3, "caBundle": CA}})
    data = builders.config_map(spec, NS, UID, {"a": 1})["data"]
    assert set(data) == {"node.yaml", "backup-ca.crt"}
    assert data["backup-ca.crt"] == CA.strip() + "\n"
    assert "PRIVATE KEY" not in data["backup-ca.crt"]
    assert set(builders.config_map(with_backup(), NS, UID, {"a": 1})["data"]) == {"node.yaml"}


# ---------------------------------------------------------------------------- rolling


def test_a_backup_change_is_a_new_pod_template() -> None:
    """The node reads its configuration at start: every change of what it reads of spec.backup
    changes the pod template (a new StatefulSet revision, rolled one pod at a time)."""

    def digest(spec: ConsortiumSpec) -> str:
        sts = builders.statefulset(spec, NS, UID, 3, DOMAIN)
        found: str = _pod(sts)["metadata"]["annotations"][ANNOTATION_BACKUP_CONFIG]
        return found

    base = digest(with_backup())
    assert digest(with_backup()) == base  # stable
    changed = [
        {"s3": {**S3, "bucket": "other-bucket"}},
        {"s3": {**S3, "endpoint": "https://minio.example:9443"}},
        {"s3": {**S3, "prefix": ""}},
        {"s3": {**S3, "region": "eu-west-3"}},
        {"s3": {**S3, "caBundle": CA}},
        {"s3": dict(S3), "maxLag": "30s"},
        {"s3": dict(S3), "retention": "2h"},
        {"s3": dict(S3), "mode": "Scheduled", "schedule": "0 * * * *"},
    ]
    digests = [digest(with_backup(b)) for b in changed]
    assert base not in digests and len(set(digests)) == len(digests)

    def ledger_digest(spec: ConsortiumSpec) -> str:
        sts = builders.statefulset(spec, NS, UID, 3, DOMAIN)
        found: str = _pod(sts)["metadata"]["annotations"][ANNOTATION_LEDGER_CONFIG]
        return found

    unchanged = {ledger_digest(with_backup(b)) for b in changed}
    assert unchanged == {ledger_digest(with_backup())}, "the ledger digest stays as it is"


def test_a_ledger_settings_change_is_a_new_pod_template() -> None:
    """spec.ledger is read by each node at start: each of its settings changes the pod
    template (rolled one pod at a time); nothing else of the spec changes that digest."""

    def digest(spec: ConsortiumSpec) -> str:
        sts = builders.statefulset(spec, NS, UID, 3, DOMAIN)
        found: str = _pod(sts)["metadata"]["annotations"][ANNOTATION_LEDGER_CONFIG]
        return found

    base = digest(consortium("demo"))
    assert digest(consortium("demo")) == base
    changed = [
        consortium("demo", ledger={"snapshotInterval": 5000}),
        consortium("demo", ledger={"snapshotInterval": 0}),
        consortium("demo", ledger={"snapshotWritesPercent": 25}),
        consortium("demo", ledger={"signatureIntervalTx": 50}),
        consortium("demo", ledger={"signatureInterval": "250ms"}),
    ]
    digests = [digest(spec) for spec in changed]
    assert base not in digests and len(set(digests)) == len(digests)
    assert digest(consortium("demo", nodes=5)) == base
    assert digest(with_backup()) == base
    # The Secret's name changes the volume (so the template) by itself.
    renamed = with_backup({"s3": {**S3, "credentialsSecret": "other"}})
    assert builders.statefulset(renamed, NS, UID, 3, DOMAIN) != builders.statefulset(
        with_backup(), NS, UID, 3, DOMAIN
    )


# ---------------------------------------------------------------------------- without backup


def test_without_backup_nothing_changes() -> None:
    """Pods of a Consortium without spec.backup render exactly as before backups existed; with
    it, the only differences are the ones listed here."""
    plain = consortium("demo")
    assert plain.backup is None
    config = builders.node_config(plain, [member("alice")], OPERATOR_PEM)
    assert "backup" not in config
    assert builders.config_map(plain, NS, UID, config)["data"].keys() == {"node.yaml"}
    sts = builders.statefulset(plain, NS, UID, 3, DOMAIN)
    assert set(_pod(sts)["metadata"]["annotations"]) == {ANNOTATION_LEDGER_CONFIG}
    assert "backup-credentials" not in str(sts)

    backed = parse_consortium("demo", spec_with("backup", {"s3": dict(S3)}, full_spec()))
    with_sts = builders.statefulset(backed, NS, UID, 3, DOMAIN)
    stripped = copy.deepcopy(with_sts)
    template = _pod(stripped)
    del template["metadata"]["annotations"][ANNOTATION_BACKUP_CONFIG]
    template["spec"]["volumes"] = [
        v for v in template["spec"]["volumes"] if v["name"] != "backup-credentials"
    ]
    container = template["spec"]["containers"][0]
    container["volumeMounts"] = [
        m for m in container["volumeMounts"] if m["name"] != "backup-credentials"
    ]
    assert stripped == sts
    other = builders.node_config(backed, [member("alice")], OPERATOR_PEM)
    assert {k: v for k, v in other.items() if k != "backup"} == config


@pytest.mark.parametrize(
    "build",
    [
        lambda s: builders.statefulset(s, NS, UID, 3, DOMAIN),
        lambda s: builders.config_map(s, NS, UID, {"a": 1}),
        lambda s: builders.node_config(s, [], OPERATOR_PEM),
    ],
    ids=["statefulset", "config_map", "node_config"],
)
def test_backup_builders_are_pure(build: Any) -> None:
    spec = with_backup({"s3": {**S3, "caBundle": CA}})
    first, second = build(spec), build(spec)
    assert first == second and first is not second
