"""``consortium-node kube``: one template plus the pod's env → the pod's node configuration.

Pod 0 is genesis only while no service certificate is published; everything else joins.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from consortium_node.server.config import ConfigError
from consortium_node.server.kube import REQUIRED_ENV, load_pod_config, pod_settings

M = "a" * 64
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def template(service_certificate: Path | str) -> dict[str, Any]:
    return {
        "consortium": "demo",
        "mode": "join",
        "listen": {"host": "0.0.0.0", "port": 8443},
        "data_dir": "/var/lib/consortium",
        "platform": {"root_certificate": "/p/root.pem", "root_key": "/p/root.key"},
        "members": [{"certificate": CERT, "role": "governor"}],
        "attestation": {"measurements": [M]},
        "join": {"trusted_list": "/etc/consortium/trusted-nodes/trusted-nodes.cose"},
        "kubernetes": {"service_certificate": str(service_certificate)},
    }


def env(pod: str = "demo-0", **overrides: str) -> dict[str, str]:
    values = {
        "POD_NAME": pod,
        "POD_NAMESPACE": "ledgers",
        "POD_IP": "10.1.2.3",
        "CONSORTIUM_SERVICE": "demo-nodes",
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v != "<unset>"}


@pytest.mark.parametrize("variable", REQUIRED_ENV)
@pytest.mark.parametrize("value", ["<unset>", ""])
def test_missing_env_is_named(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"environment: {variable} is required"):
        pod_settings(template(tmp_path / "svc.pem"), env(**{variable: value}))


def test_required_env_list() -> None:
    assert set(REQUIRED_ENV) == {"POD_NAME", "POD_NAMESPACE", "POD_IP", "CONSORTIUM_SERVICE"}


@pytest.mark.parametrize("pod", ["demo", "demo-", "-0", "demo-x", "Demo-0", "demo_0", "demo-0a"])
def test_bad_pod_name(tmp_path: Path, pod: str) -> None:
    with pytest.raises(ConfigError, match=r"environment: POD_NAME .* is not <set>-<ordinal>"):
        pod_settings(template(tmp_path / "svc.pem"), env(pod))


@pytest.mark.parametrize(
    ("kubernetes", "present"),
    [(..., False), (None, True), ("path", True), ({}, True), ({"service_certificate": 5}, True)],
)
def test_kubernetes_section_required(tmp_path: Path, kubernetes: Any, present: bool) -> None:
    base = template(tmp_path / "svc.pem")
    if present:
        base["kubernetes"] = kubernetes
    else:
        del base["kubernetes"]
    with pytest.raises(ConfigError, match=r"kubernetes\.service_certificate: required"):
        pod_settings(base, env())


@pytest.mark.parametrize(
    ("pod", "published", "mode"),
    [
        ("demo-0", None, "genesis"),  # nothing mounted yet
        ("demo-0", "", "genesis"),  # an empty file is not a published certificate
        ("demo-0", CERT, "join"),  # pod 0 replaced after bootstrap
        ("demo-1", None, "join"),
        ("demo-2", None, "join"),
        ("demo-2", CERT, "join"),
        ("demo-10", "", "join"),
        ("my-ledger-0", None, "genesis"),
    ],
)
def test_mode(tmp_path: Path, pod: str, published: str | None, mode: str) -> None:
    cert = tmp_path / "service-certificate.pem"
    if published is not None:
        cert.write_text(published)
    settings = pod_settings(template(cert), env(pod))
    assert settings["mode"] == mode
    assert "kubernetes" not in settings
    if mode == "genesis":
        assert "join" not in settings
    else:
        assert settings["join"] == {
            "trusted_list": "/etc/consortium/trusted-nodes/trusted-nodes.cose",
            "service_certificate": str(cert),
        }


def test_published_path_that_is_a_directory_is_not_published(tmp_path: Path) -> None:
    settings = pod_settings(template(tmp_path), env("demo-0"))
    assert settings["mode"] == "genesis"


def test_join_without_join_section_gets_one(tmp_path: Path) -> None:
    base = template(tmp_path / "svc.pem")
    del base["join"]
    settings = pod_settings(base, env("demo-1"))
    assert settings["join"] == {"service_certificate": str(tmp_path / "svc.pem")}


@pytest.mark.parametrize(
    ("overrides", "port", "fqdn"),
    [
        ({}, 8443, "demo-1.demo-nodes.ledgers.svc.cluster.local"),
        ({"CLUSTER_DOMAIN": ""}, 8443, "demo-1.demo-nodes.ledgers.svc.cluster.local"),
        ({"CLUSTER_DOMAIN": "corp.internal"}, 8443, "demo-1.demo-nodes.ledgers.svc.corp.internal"),
        (
            {"POD_NAMESPACE": "prod", "CONSORTIUM_SERVICE": "x"},
            8443,
            "demo-1.x.prod.svc.cluster.local",
        ),
        ({"listen_port": "9443"}, 9443, "demo-1.demo-nodes.ledgers.svc.cluster.local"),
    ],
)
def test_address_and_names(tmp_path: Path, overrides: dict[str, str], port: int, fqdn: str) -> None:
    base = template(tmp_path / "svc.pem")
    overrides = dict(overrides)
    if "listen_port" in overrides:
        base["listen"]["port"] = int(overrides.pop("listen_port"))
    settings = pod_settings(base, env("demo-1", **overrides))
    assert settings["name"] == "demo-1"
    assert settings["address"] == f"{fqdn}:{port}"
    assert settings["subject_alt_names"][0] == fqdn
    assert "10.1.2.3" in settings["subject_alt_names"]
    short = fqdn.split(".svc.", maxsplit=1)[0]
    assert f"{short}.svc" in settings["subject_alt_names"]
    # Every node also answers to the headless Service's names (scrapes and clients by Service).
    service = fqdn.split(".", maxsplit=1)[1]
    assert service in settings["subject_alt_names"]
    assert service.split(".svc.", maxsplit=1)[0] + ".svc" in settings["subject_alt_names"]
    assert settings["platform"]["chip_id"] == "demo-1"
    assert settings["platform"]["root_key"] == "/p/root.key"


def test_default_port_without_listen_section(tmp_path: Path) -> None:
    base = template(tmp_path / "svc.pem")
    del base["listen"], base["platform"]
    settings = pod_settings(base, env("demo-3"))
    assert settings["address"].endswith(".svc.cluster.local:8443")
    assert settings["platform"] == {"chip_id": "demo-3"}


def test_template_is_not_modified(tmp_path: Path) -> None:
    base = template(tmp_path / "svc.pem")
    before = copy.deepcopy(base)
    pod_settings(base, env("demo-0"))
    pod_settings(base, env("demo-1"))
    assert base == before


@pytest.mark.parametrize(("pod", "mode"), [("demo-0", "genesis"), ("demo-1", "join")])
def test_load_pod_config(tmp_path: Path, pod: str, mode: str) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(template(tmp_path / "missing.pem")))
    config = load_pod_config(path, env(pod))
    assert config.mode == mode
    assert config.name == pod
    assert config.platform.chip_id == pod
    assert config.address == f"{pod}.demo-nodes.ledgers.svc.cluster.local:8443"
    assert "10.1.2.3" in config.subject_alt_names
    assert (config.join is None) is (mode == "genesis")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (": : :\n  - [", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_load_pod_config_errors(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "node.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_pod_config(path, env())


@pytest.mark.parametrize(
    ("key", "value"), [("listen", None), ("listen", "8443"), ("platform", None), ("platform", [])]
)
def test_malformed_sections_raise_config_error(tmp_path: Path, key: str, value: Any) -> None:
    base = template(tmp_path / "svc.pem")
    base[key] = value
    try:
        settings = pod_settings(base, env("demo-1"))
    except ConfigError:
        return
    assert settings["address"].endswith(":8443")
