"""spec.recovery in the manifests: the node configuration's ``recovery:`` section (and the node's
own parser taking it in the pod that recovers, dropping it in every other), the previous
service certificate and CA bundle in the config ConfigMap, the lost bucket's credentials
Secret mount — and nothing of it without spec.recovery."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from consortium_node.identity.certs import ServiceIdentity
from consortium_node.server.config import parse_config
from consortium_node.server.kube import pod_settings
from consortium_operator.api.names import MOUNT_CONFIG, MOUNT_RECOVERY_CREDENTIALS
from consortium_operator.api.spec import ConsortiumSpec, parse_consortium
from consortium_operator.kube import builders

from .support import cached_certificate, consortium, full_spec, member, spec_with

NS = "ledgers"
UID = "0b7d9e6c-1111-2222-3333-444455556666"
DOMAIN = "cluster.local"
PREVIOUS = ServiceIdentity.create("demo").certificate_pem
CA = cached_certificate("p256", "recovery-ca")[0]
OPERATOR_PEM = cached_certificate("p256", "operator")[0]
MANIFEST = "manifests/00000000000000004242-00112233445566ff.cose"
S3 = {
    "endpoint": "https://minio.example:9000",
    "bucket": "lost-backups",
    "credentialsSecret": "lost-backup",
}
CREDENTIALS = "/etc/consortium/recovery-credentials"


def with_recovery(
    s3: dict[str, Any] | None = None, manifest: str | None = None, name: str = "demo"
) -> ConsortiumSpec:
    rec: dict[str, Any] = {
        "previousServiceCertificate": PREVIOUS,
        "source": {"s3": dict(S3) if s3 is None else s3},
    }
    if manifest is not None:
        rec["manifest"] = manifest
    return parse_consortium(name, spec_with("recovery", rec))


def _config(spec: ConsortiumSpec) -> dict[str, Any]:
    """node_config as a pod reads it, through the ConfigMap's YAML."""
    config = builders.node_config(spec, [member("alice")], OPERATOR_PEM)
    loaded: dict[str, Any] = yaml.safe_load(
        builders.config_map(spec, NS, UID, config)["data"]["node.yaml"]
    )
    assert loaded == config
    return loaded


def _pod(sts: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = sts["spec"]["template"]
    return pod


def _container(sts: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = _pod(sts)["spec"]["containers"][0]
    return container


# ---------------------------------------------------------------------------- node config


@pytest.mark.parametrize(
    ("s3", "manifest", "section"),
    [
        (
            dict(S3),
            None,
            {
                "previous_service_certificate": (
                    "/etc/consortium/config/previous-service-certificate.pem"
                ),
                "source": {
                    "bucket": {
                        "endpoint": "https://minio.example:9000",
                        "bucket": "lost-backups",
                        "prefix": "demo/",
                        "region": "us-east-1",
                        "access_key_id_file": f"{CREDENTIALS}/AWS_ACCESS_KEY_ID",
                        "secret_access_key_file": f"{CREDENTIALS}/AWS_SECRET_ACCESS_KEY",
                    }
                },
            },
        ),
        (
            {**S3, "prefix": "", "region": "eu-west-3", "caBundle": CA},
            MANIFEST,
            {
                "previous_service_certificate": (
                    "/etc/consortium/config/previous-service-certificate.pem"
                ),
                "source": {
                    "bucket": {
                        "endpoint": "https://minio.example:9000",
                        "bucket": "lost-backups",
                        "prefix": "",
                        "region": "eu-west-3",
                        "access_key_id_file": f"{CREDENTIALS}/AWS_ACCESS_KEY_ID",
                        "secret_access_key_file": f"{CREDENTIALS}/AWS_SECRET_ACCESS_KEY",
                        "ca_file": "/etc/consortium/config/recovery-ca.crt",
                    }
                },
                "manifest": MANIFEST,
            },
        ),
        (
            {**S3, "prefix": "prod/"},
            MANIFEST,
            {
                "previous_service_certificate": (
                    "/etc/consortium/config/previous-service-certificate.pem"
                ),
                "source": {
                    "bucket": {
                        "endpoint": "https://minio.example:9000",
                        "bucket": "lost-backups",
                        "prefix": "prod/",
                        "region": "us-east-1",
                        "access_key_id_file": f"{CREDENTIALS}/AWS_ACCESS_KEY_ID",
                        "secret_access_key_file": f"{CREDENTIALS}/AWS_SECRET_ACCESS_KEY",
                    }
                },
                "manifest": MANIFEST,
            },
        ),
    ],
    ids=["defaults", "everything", "manifest-without-ca"],
)
def test_recovery_section_is_the_contract(
    s3: dict[str, Any], manifest: str | None, section: dict[str, Any]
) -> None:
    config = _config(with_recovery(s3, manifest))
    assert config["recovery"] == section


def test_the_recovery_section_is_beside_a_backup_section() -> None:
    """A recovering Consortium that backs up too: each section names its own bucket and
    credentials directory."""
    data = spec_with("backup", {"s3": {**S3, "bucket": "new-backups", "credentialsSecret": "n"}})
    rec = {"previousServiceCertificate": PREVIOUS, "source": {"s3": dict(S3)}}
    config = _config(parse_consortium("demo", spec_with("recovery", rec, data)))
    assert config["backup"]["bucket"] == "new-backups"
    assert config["backup"]["access_key_id_file"].startswith("/etc/consortium/backup-credentials/")
    assert config["recovery"]["source"]["bucket"]["bucket"] == "lost-backups"


# ---------------------------------------------------------------------------- the node's view


def _env(ordinal: int) -> dict[str, str]:
    return {
        "POD_NAME": f"demo-{ordinal}",
        "POD_NAMESPACE": NS,
        "POD_IP": "10.1.2.3",
        "CONSORTIUM_SERVICE": "demo-nodes",
        "CLUSTER_DOMAIN": DOMAIN,
    }


RECOVERIES = [
    pytest.param(dict(S3), None, id="defaults"),
    pytest.param({**S3, "prefix": "", "caBundle": CA, "region": "eu-west-3"}, MANIFEST, id="all"),
    pytest.param({**S3, "endpoint": "http://minio.minio.svc:9000/"}, None, id="http-slash"),
]


@pytest.mark.parametrize(("s3", "manifest"), RECOVERIES)
def test_pod_0_recovers_while_no_service_certificate_is_published(
    s3: dict[str, Any], manifest: str | None, tmp_path: Path
) -> None:
    """What the operator renders for spec.recovery, the node's own parser accepts in the pod
    that recovers, with the same values."""
    spec = with_recovery(s3, manifest)
    assert spec.recovery is not None
    published = tmp_path / "service-certificate.pem"  # not mounted yet
    base = {**_config(spec), "kubernetes": {"service_certificate": str(published)}}
    parsed = parse_config(pod_settings(base, _env(0)), tmp_path)
    assert parsed.mode == "recover"
    assert parsed.join is None
    found = parsed.recovery
    assert found is not None
    assert str(found.previous_service_certificate) == (
        f"{MOUNT_CONFIG}/previous-service-certificate.pem"
    )
    assert found.directory is None
    assert found.manifest == manifest
    bucket = found.bucket
    assert bucket is not None
    assert bucket.endpoint == spec.recovery.s3.endpoint.rstrip("/")
    assert (bucket.bucket, bucket.prefix, bucket.region) == (
        spec.recovery.s3.bucket,
        spec.recovery.s3.prefix,
        spec.recovery.s3.region,
    )
    assert str(bucket.access_key_id_file) == f"{MOUNT_RECOVERY_CREDENTIALS}/AWS_ACCESS_KEY_ID"
    assert str(bucket.secret_access_key_file) == (
        f"{MOUNT_RECOVERY_CREDENTIALS}/AWS_SECRET_ACCESS_KEY"
    )
    expected_ca = f"{MOUNT_CONFIG}/recovery-ca.crt" if spec.recovery.s3.ca_bundle else None
    assert (None if bucket.ca_file is None else str(bucket.ca_file)) == expected_ca
    assert parsed.backup is None  # the lost bucket is read, never written


@pytest.mark.parametrize(
    ("ordinal", "published"),
    [
        pytest.param(1, None, id="pod-1"),
        pytest.param(2, "", id="pod-2-empty-file"),
        pytest.param(0, "CERT", id="pod-0-after-bootstrap"),
        pytest.param(1, "CERT", id="pod-1-after-bootstrap"),
    ],
)
def test_every_other_start_joins_without_the_recovery_section(
    ordinal: int, published: str | None, tmp_path: Path
) -> None:
    spec = with_recovery({**S3, "caBundle": CA}, MANIFEST)
    cert = tmp_path / "service-certificate.pem"
    if published is not None:
        cert.write_text(PREVIOUS if published == "CERT" else published)
    base = {**_config(spec), "kubernetes": {"service_certificate": str(cert)}}
    settings = pod_settings(base, _env(ordinal))
    assert settings["mode"] == "join"
    assert "recovery" not in settings
    parsed = parse_config(settings, tmp_path)
    assert (parsed.mode, parsed.recovery) == ("join", None)
    assert parsed.join is not None
    assert parsed.join.service_certificate == cert


def test_without_recovery_pod_0_is_genesis(tmp_path: Path) -> None:
    plain = consortium("demo")
    base = {**_config(plain), "kubernetes": {"service_certificate": str(tmp_path / "none.pem")}}
    parsed = parse_config(pod_settings(base, _env(0)), tmp_path)
    assert (parsed.mode, parsed.recovery) == ("genesis", None)


# ---------------------------------------------------------------------------- ConfigMap


@pytest.mark.parametrize(
    ("s3", "keys"),
    [
        (dict(S3), {"node.yaml", "previous-service-certificate.pem"}),
        (
            {**S3, "caBundle": CA},
            {"node.yaml", "previous-service-certificate.pem", "recovery-ca.crt"},
        ),
    ],
    ids=["no-ca", "ca"],
)
def test_config_map_carries_the_public_recovery_files(s3: dict[str, Any], keys: set[str]) -> None:
    spec = with_recovery(s3)
    data = builders.config_map(spec, NS, UID, {"a": 1})["data"]
    assert set(data) == keys
    assert data["previous-service-certificate.pem"] == PREVIOUS
    if "recovery-ca.crt" in keys:
        assert data["recovery-ca.crt"] == CA.strip() + "\n"
    assert all("PRIVATE KEY" not in value for value in data.values())


def test_recovery_and_backup_ca_bundles_are_separate_files() -> None:
    other = cached_certificate("ed25519", "backup-ca")[0]
    data = spec_with("backup", {"s3": {**S3, "bucket": "new-backups", "caBundle": other}})
    rec = {"previousServiceCertificate": PREVIOUS, "source": {"s3": {**S3, "caBundle": CA}}}
    spec = parse_consortium("demo", spec_with("recovery", rec, data))
    cm = builders.config_map(spec, NS, UID, {"a": 1})["data"]
    assert cm["backup-ca.crt"] == other.strip() + "\n"
    assert cm["recovery-ca.crt"] == CA.strip() + "\n"


def test_config_files_name_what_is_mounted() -> None:
    """Each path of the recovery section is a file of a mounted volume: the certificate and CA
    keys of the config ConfigMap, the credentials items of the Secret."""
    spec = with_recovery({**S3, "caBundle": CA})
    section = _config(spec)["recovery"]
    sts = builders.statefulset(spec, NS, UID, 1, DOMAIN)
    volumes = {v["name"]: v for v in _pod(sts)["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in _container(sts)["volumeMounts"]}
    cm = builders.config_map(spec, NS, UID, _config(spec))["data"]
    bucket = section["source"]["bucket"]
    for path in (section["previous_service_certificate"], bucket["ca_file"]):
        directory, name = path.rsplit("/", 1)
        assert mounts[directory] == "config" and name in cm
    items = {i["path"] for i in volumes["recovery-credentials"]["secret"]["items"]}
    for key in ("access_key_id_file", "secret_access_key_file"):
        directory, name = bucket[key].rsplit("/", 1)
        assert mounts[directory] == "recovery-credentials" and name in items


# ---------------------------------------------------------------------------- StatefulSet


def test_the_lost_buckets_credentials_are_mounted_read_only_and_optional() -> None:
    sts = builders.statefulset(with_recovery(), NS, UID, 1, DOMAIN)
    volumes = {v["name"]: v for v in _pod(sts)["spec"]["volumes"]}
    mounts = {m["name"]: m for m in _container(sts)["volumeMounts"]}
    assert volumes["recovery-credentials"] == {
        "name": "recovery-credentials",
        "secret": {
            "secretName": "lost-backup",
            "optional": True,  # the node names CredentialsMissing; kubelet adds it later
            "defaultMode": 0o440,
            "items": [
                {"key": "AWS_ACCESS_KEY_ID", "path": "AWS_ACCESS_KEY_ID"},
                {"key": "AWS_SECRET_ACCESS_KEY", "path": "AWS_SECRET_ACCESS_KEY"},
            ],
        },
    }
    assert mounts["recovery-credentials"] == {
        "name": "recovery-credentials",
        "mountPath": MOUNT_RECOVERY_CREDENTIALS,
        "readOnly": True,
    }
    assert set(mounts) == set(volumes) | {"ledger"}


def test_recovery_and_backup_credentials_are_two_volumes() -> None:
    data = spec_with(
        "backup", {"s3": {**S3, "prefix": "recovered/", "credentialsSecret": "new-backup"}}
    )
    rec = {"previousServiceCertificate": PREVIOUS, "source": {"s3": dict(S3)}}
    spec = parse_consortium("demo", spec_with("recovery", rec, data))
    sts = builders.statefulset(spec, NS, UID, 3, DOMAIN)
    secrets = {
        v["name"]: v["secret"]["secretName"] for v in _pod(sts)["spec"]["volumes"] if "secret" in v
    }
    assert secrets["backup-credentials"] == "new-backup"
    assert secrets["recovery-credentials"] == "lost-backup"
    paths = [m["mountPath"] for m in _container(sts)["volumeMounts"]]
    assert len(paths) == len(set(paths))


# ---------------------------------------------------------------------------- without recovery


def test_without_recovery_nothing_changes() -> None:
    """A Consortium without spec.recovery renders as before recoveries existed; with it, the
    only differences are the ones listed here."""
    plain = consortium("demo")
    assert plain.recovery is None
    config = builders.node_config(plain, [member("alice")], OPERATOR_PEM)
    assert "recovery" not in config
    assert builders.config_map(plain, NS, UID, config)["data"].keys() == {"node.yaml"}
    sts = builders.statefulset(plain, NS, UID, 3, DOMAIN)
    assert "recovery" not in str(sts)

    rec = {
        "previousServiceCertificate": PREVIOUS,
        "source": {"s3": {**S3, "caBundle": CA}},
        "manifest": MANIFEST,
    }
    recovering = parse_consortium("demo", spec_with("recovery", rec, full_spec()))
    with_sts = builders.statefulset(recovering, NS, UID, 3, DOMAIN)
    stripped = copy.deepcopy(with_sts)
    template = _pod(stripped)
    template["spec"]["volumes"] = [
        v for v in template["spec"]["volumes"] if v["name"] != "recovery-credentials"
    ]
    container = template["spec"]["containers"][0]
    container["volumeMounts"] = [
        m for m in container["volumeMounts"] if m["name"] != "recovery-credentials"
    ]
    assert stripped == sts
    assert with_sts != sts
    other = builders.node_config(recovering, [member("alice")], OPERATOR_PEM)
    assert {k: v for k, v in other.items() if k != "recovery"} == config
    data = builders.config_map(recovering, NS, UID, config)["data"]
    assert set(data) - {"previous-service-certificate.pem", "recovery-ca.crt"} == {"node.yaml"}


@pytest.mark.parametrize(
    "build",
    [
        lambda s: builders.statefulset(s, NS, UID, 1, DOMAIN),
        lambda s: builders.config_map(s, NS, UID, {"a": 1}),
        lambda s: builders.node_config(s, [], OPERATOR_PEM),
    ],
    ids=["statefulset", "config_map", "node_config"],
)
def test_recovery_builders_are_pure(build: Any) -> None:
    spec = with_recovery({**S3, "caBundle": CA}, MANIFEST)
    first, second = build(spec), build(spec)
    assert first == second and first is not second
