"""Every builder's manifest as data: ownership, labels, the pod's security and wiring, and a
node configuration that the node's own parser accepts for genesis and join pods."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.attestation import host_data_for
from consortium_node.recovery.record import recovery_key_pem
from consortium_node.server.config import parse_config
from consortium_node.server.kube import pod_settings
from consortium_operator.api.names import (
    API_VERSION,
    DATA_DIR,
    LABEL_CLIENT,
    LABEL_COMPONENT,
    LABEL_CONSORTIUM,
    MOUNT_CONFIG,
    MOUNT_LIST,
    MOUNT_PEERS,
    MOUNT_PLATFORM,
    MOUNT_SERVICE,
    NODE_PORT,
    NODE_UID,
    Names,
)
from consortium_operator.api.spec import ConsortiumSpec, MemberSpec, SpecError
from consortium_operator.kube import builders

from .support import M1, M2, cached_certificate, consortium, member

NS = "ledgers"
UID = "0b7d9e6c-1111-2222-3333-444455556666"
DOMAIN = "cluster.local"
KEY = b"-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\ncert\n-----END CERTIFICATE-----\n"
PLATFORM_FILES = {"root.key": KEY, "root.pem": CERT}  # the default platform's endorsement files
ENVELOPE = b"\xd2\x84\x00\xffsigned list bytes"
PAYLOAD = {"version": 7, "consortium": "demo", "nodes": []}


@pytest.fixture(scope="module")
def spec() -> ConsortiumSpec:
    return consortium("demo")


@pytest.fixture(scope="module")
def members() -> list[MemberSpec]:
    return [member("carol", "user"), member("alice"), member("bob", kind="ed25519")]


@pytest.fixture(scope="module")
def operator_pem() -> str:
    return cached_certificate("p256", "operator")[0]


Builder = Callable[[ConsortiumSpec, Any], dict[str, Any]]

OWNED: dict[str, Builder] = {
    "platform_secret": lambda s, uid: builders.platform_secret(s, NS, uid, PLATFORM_FILES),
    "operator_secret": lambda s, uid: builders.operator_secret(s, NS, uid, KEY, CERT),
    "config_map": lambda s, uid: builders.config_map(s, NS, uid, {"a": 1}),
    "headless_service": lambda s, uid: builders.headless_service(s, NS, uid),
    "statefulset": lambda s, uid: builders.statefulset(s, NS, uid, 3, DOMAIN),
    "pod_disruption_budget": lambda s, uid: builders.pod_disruption_budget(s, NS, uid, "policy/v1"),
    "network_policy": lambda s, uid: builders.network_policy(s, NS, uid),
    "trusted_nodes_config_map": lambda s, uid: builders.trusted_nodes_config_map(
        s, NS, uid, ENVELOPE, PAYLOAD
    ),
    "service_identity_config_map": lambda s, uid: builders.service_identity_config_map(
        s, NS, uid, CERT.decode(), "ab" * 32
    ),
    "peers_config_map": lambda s, uid: builders.peers_config_map(
        s, NS, uid, {"demo-0": "10.0.0.1"}, DOMAIN
    ),
}

EXPECTED_IDENTITY = {
    "platform_secret": ("v1", "Secret", "demo-platform-root", "platform-root"),
    "operator_secret": ("v1", "Secret", "demo-operator-identity", "operator-identity"),
    "config_map": ("v1", "ConfigMap", "demo-config", "config"),
    "headless_service": ("v1", "Service", "demo-nodes", "ledger-node"),
    "statefulset": ("apps/v1", "StatefulSet", "demo", "ledger-node"),
    "pod_disruption_budget": ("policy/v1", "PodDisruptionBudget", "demo", "ledger-node"),
    "network_policy": ("networking.k8s.io/v1", "NetworkPolicy", "demo-nodes", "ledger-node"),
    "trusted_nodes_config_map": ("v1", "ConfigMap", "demo-trusted-nodes", "trusted-nodes"),
    "service_identity_config_map": (
        "v1",
        "ConfigMap",
        "demo-service-identity",
        "service-identity",
    ),
    "peers_config_map": ("v1", "ConfigMap", "demo-peers", "peers"),
}


def _container(sts: dict[str, Any]) -> dict[str, Any]:
    containers = sts["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


# ---------------------------------------------------------------------------- all builders


@pytest.mark.parametrize("builder", sorted(OWNED))
def test_metadata_owner_and_labels(spec: ConsortiumSpec, builder: str) -> None:
    manifest = OWNED[builder](spec, UID)
    api_version, kind, name, component = EXPECTED_IDENTITY[builder]
    assert (manifest["apiVersion"], manifest["kind"]) == (api_version, kind)
    meta = manifest["metadata"]
    assert (meta["name"], meta["namespace"]) == (name, NS)
    assert meta["ownerReferences"] == [
        {
            "apiVersion": API_VERSION,
            "kind": "Consortium",
            "name": "demo",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["labels"] == {
        "app.kubernetes.io/name": "consortium",
        "app.kubernetes.io/instance": "demo",
        "app.kubernetes.io/managed-by": "consortium-operator",
        LABEL_CONSORTIUM: "demo",
        LABEL_COMPONENT: component,
    }


@pytest.mark.parametrize("builder", sorted(OWNED))
def test_builders_are_pure(spec: ConsortiumSpec, builder: str) -> None:
    first = OWNED[builder](spec, UID)
    second = OWNED[builder](spec, UID)
    assert first == second
    assert first is not second
    first["metadata"]["labels"]["mutated"] = "yes"
    assert "mutated" not in OWNED[builder](spec, UID)["metadata"]["labels"]


def test_retained_platform_secret_has_no_owner(spec: ConsortiumSpec) -> None:
    manifest = builders.platform_secret(spec, NS, None, PLATFORM_FILES)
    assert "ownerReferences" not in manifest["metadata"]
    assert manifest["metadata"]["name"] == "demo-platform-root"


def test_secrets_carry_base64_key_and_certificate(spec: ConsortiumSpec) -> None:
    for manifest, files in [
        (builders.platform_secret(spec, NS, UID, PLATFORM_FILES), PLATFORM_FILES),
        (builders.operator_secret(spec, NS, UID, KEY, CERT), {"tls.key": KEY, "tls.crt": CERT}),
    ]:
        assert {k: base64.b64decode(v) for k, v in manifest["data"].items()} == files


def test_operator_secret_is_tls_typed(spec: ConsortiumSpec) -> None:
    assert builders.operator_secret(spec, NS, UID, KEY, CERT)["type"] == "kubernetes.io/tls"
    assert builders.platform_secret(spec, NS, UID, PLATFORM_FILES)["type"] == "Opaque"


# ---------------------------------------------------------------------------- service


def test_headless_service_publishes_not_ready_pods(spec: ConsortiumSpec) -> None:
    svc = builders.headless_service(spec, NS, UID)["spec"]
    assert svc["clusterIP"] == "None"
    assert svc["publishNotReadyAddresses"] is True
    assert svc["selector"] == Names("demo").selector()
    assert svc["ports"] == [
        {"name": "api", "port": NODE_PORT, "targetPort": "api", "protocol": "TCP"}
    ]


# ---------------------------------------------------------------------------- statefulset


@pytest.mark.parametrize("replicas", [0, 1, 3, 4, 7])
def test_statefulset_replicas_passed_through(spec: ConsortiumSpec, replicas: int) -> None:
    sts = builders.statefulset(spec, NS, UID, replicas, DOMAIN)
    assert sts["spec"]["replicas"] == replicas


def test_statefulset_shape(spec: ConsortiumSpec) -> None:
    sts = builders.statefulset(spec, NS, UID, 5, DOMAIN)["spec"]
    selector = Names("demo").selector()
    # Parallel since d284fe7 (a lost pod must come back while others are not Ready); the
    # operator keeps genesis order itself by running one replica until the service exists
    assert sts["podManagementPolicy"] == "Parallel"
    assert sts["serviceName"] == "demo-nodes"
    assert sts["selector"] == {"matchLabels": selector}
    labels = sts["template"]["metadata"]["labels"]
    assert labels.items() >= selector.items()  # the template matches its own selector
    assert labels[LABEL_COMPONENT] == "ledger-node"
    container = _container({"spec": sts})
    assert container["image"] == spec.image
    assert container["imagePullPolicy"] == "Always"
    assert container["args"] == ["kube", "--config", f"{MOUNT_CONFIG}/node.yaml"]
    assert container["ports"] == [{"name": "api", "containerPort": NODE_PORT, "protocol": "TCP"}]


def test_statefulset_restricted_security(spec: ConsortiumSpec) -> None:
    pod = builders.statefulset(spec, NS, UID, 3, DOMAIN)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] == NODE_UID == 10001
    assert ctx["runAsGroup"] == NODE_UID
    assert ctx["fsGroup"] == NODE_UID
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    cctx = _container({"spec": {"template": {"spec": pod}}})["securityContext"]
    assert cctx["runAsNonRoot"] is True
    assert cctx["readOnlyRootFilesystem"] is True
    assert cctx["allowPrivilegeEscalation"] is False
    assert cctx["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in cctx


@pytest.mark.parametrize(
    ("probe", "path"),
    [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")],
)
def test_probes_use_https_on_api_port(spec: ConsortiumSpec, probe: str, path: str) -> None:
    container = _container(builders.statefulset(spec, NS, UID, 3, DOMAIN))
    get = container[probe]["httpGet"]
    assert get == {"path": path, "scheme": "HTTPS", "port": "api"}
    assert container[probe]["periodSeconds"] > 0
    assert container[probe]["failureThreshold"] >= 1


@pytest.mark.parametrize("domain", ["cluster.local", "corp.internal"])
def test_statefulset_env(spec: ConsortiumSpec, domain: str) -> None:
    env = {e["name"]: e for e in _container(builders.statefulset(spec, NS, UID, 3, domain))["env"]}
    for name, path in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_IP", "status.podIP"),
    ]:
        assert env[name] == {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
    assert env["CONSORTIUM_SERVICE"] == {"name": "CONSORTIUM_SERVICE", "value": "demo-nodes"}
    assert env["CLUSTER_DOMAIN"] == {"name": "CLUSTER_DOMAIN", "value": domain}


def test_statefulset_volumes_cover_every_mount(spec: ConsortiumSpec) -> None:
    sts = builders.statefulset(spec, NS, UID, 3, DOMAIN)
    pod = sts["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    claims = {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m for m in _container(sts)["volumeMounts"]}
    assert set(mounts) == set(volumes) | claims
    assert mounts["ledger"]["mountPath"] == DATA_DIR
    assert mounts["ledger"].get("readOnly") is not True
    for name in ("config", "platform", "service-identity", "trusted-nodes", "peers"):
        assert mounts[name]["readOnly"] is True
    assert volumes["config"] == {"name": "config", "configMap": {"name": "demo-config"}}
    assert volumes["platform"]["secret"]["secretName"] == "demo-platform-root"
    assert volumes["tmp"]["emptyDir"]["medium"] == "Memory"


@pytest.mark.parametrize(
    ("volume", "config_map"),
    [
        ("service-identity", "demo-service-identity"),
        ("trusted-nodes", "demo-trusted-nodes"),
        ("peers", "demo-peers"),
    ],
)
def test_statefulset_optional_config_maps(
    spec: ConsortiumSpec, volume: str, config_map: str
) -> None:
    pod = builders.statefulset(spec, NS, UID, 3, DOMAIN)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[volume] == {"name": volume, "configMap": {"name": config_map, "optional": True}}


@pytest.mark.parametrize(
    ("size", "storage_class"),
    [("2Gi", "fast"), ("10Gi", ""), ("500Mi", ...)],
)
def test_volume_claim_template(size: str, storage_class: Any) -> None:
    spec = consortium(storage__size=size, storage__storageClassName=storage_class)
    claims = builders.statefulset(spec, NS, UID, 3, DOMAIN)["spec"]["volumeClaimTemplates"]
    assert len(claims) == 1
    claim = claims[0]
    assert claim["metadata"]["name"] == "ledger"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"] == {"requests": {"storage": size}}
    if storage_class in ("", ...):
        assert "storageClassName" not in claim["spec"]
    else:
        assert claim["spec"]["storageClassName"] == storage_class
    assert "ownerReferences" not in claim["metadata"]  # PVCs outlive the StatefulSet


@pytest.mark.parametrize(
    "resources",
    [{}, {"limits": {"memory": "1Gi"}}, {"requests": {"cpu": "250m"}, "limits": {"cpu": "1"}}],
)
def test_resources_only_when_set(resources: dict[str, Any]) -> None:
    spec = consortium(resources=resources)
    container = _container(builders.statefulset(spec, NS, UID, 3, DOMAIN))
    if resources:
        assert container["resources"] == resources
    else:
        assert "resources" not in container


# ---------------------------------------------------------------------------- PDB


@pytest.mark.parametrize(
    ("nodes", "majority"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)]
)
@pytest.mark.parametrize("api_version", ["policy/v1", "policy/v1beta1"])
def test_pdb_keeps_a_majority(nodes: int, majority: int, api_version: str) -> None:
    pdb = builders.pod_disruption_budget(consortium(nodes=nodes), NS, UID, api_version)
    assert pdb["apiVersion"] == api_version
    assert pdb["spec"]["minAvailable"] == majority
    assert majority * 2 > nodes
    assert pdb["spec"]["selector"] == {"matchLabels": Names("demo").selector()}


# ---------------------------------------------------------------------------- NetworkPolicy


@pytest.mark.parametrize(
    ("client_selector", "expected_clients"),
    [
        (..., {"matchLabels": {LABEL_CLIENT: "demo"}}),
        ({}, {"matchLabels": {LABEL_CLIENT: "demo"}}),
        ({"matchLabels": {"team": "ledger"}}, {"matchLabels": {"team": "ledger"}}),
        (
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["app"]}]},
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["app"]}]},
        ),
    ],
)
def test_network_policy(client_selector: Any, expected_clients: dict[str, Any]) -> None:
    spec = consortium(clientSelector=client_selector)
    policy = builders.network_policy(spec, NS, UID)["spec"]
    selector = Names("demo").selector()
    assert LABEL_CLIENT == "consortium.tee.dev/client"
    assert policy["podSelector"] == {"matchLabels": selector}
    assert policy["policyTypes"] == ["Ingress"]
    assert "egress" not in policy
    [rule] = policy["ingress"]
    assert rule["ports"] == [{"port": 8443, "protocol": "TCP"}]
    peers, clients, operator, scrapers = rule["from"]
    assert scrapers == {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"consortium.tee.dev/scrape": "true"}},
    }
    assert peers == {"podSelector": {"matchLabels": selector}}
    assert clients == {"podSelector": expected_clients}
    assert operator["namespaceSelector"] == {}
    assert operator["podSelector"] == {"matchLabels": {"consortium.tee.dev/operator": "true"}}


# ---------------------------------------------------------------------------- ConfigMaps


@pytest.mark.parametrize(
    ("envelope", "version"),
    [(ENVELOPE, 7), (b"", 1), (bytes(range(256)), 123456)],
)
def test_trusted_nodes_config_map(spec: ConsortiumSpec, envelope: bytes, version: int) -> None:
    payload = {**PAYLOAD, "version": version}
    cm = builders.trusted_nodes_config_map(spec, NS, UID, envelope, payload)
    assert base64.b64decode(cm["binaryData"]["trusted-nodes.cose"]) == envelope
    assert json.loads(cm["data"]["trusted-nodes.json"]) == payload
    assert cm["metadata"]["annotations"] == {
        "consortium.tee.dev/list-version": str(version),
        "consortium.tee.dev/list-sha256": hashlib.sha256(envelope).hexdigest(),
    }


def test_service_identity_config_map(spec: ConsortiumSpec) -> None:
    cm = builders.service_identity_config_map(spec, NS, UID, CERT.decode(), "ab" * 32)
    assert cm["data"] == {"service-certificate.pem": CERT.decode(), "sha256": "ab" * 32}


@pytest.mark.parametrize(
    ("pod_ips", "domain", "expected"),
    [
        ({}, "cluster.local", {}),
        (
            {"demo-1": "10.0.0.2", "demo-0": "10.0.0.1"},
            "cluster.local",
            {
                "demo-0.demo-nodes.ledgers.svc.cluster.local": "10.0.0.1",
                "demo-1.demo-nodes.ledgers.svc.cluster.local": "10.0.0.2",
            },
        ),
        (
            {"demo-0": "fd00::1"},
            "corp.internal",
            {"demo-0.demo-nodes.ledgers.svc.corp.internal": "fd00::1"},
        ),
    ],
)
def test_peers_config_map(
    spec: ConsortiumSpec, pod_ips: dict[str, str], domain: str, expected: dict[str, str]
) -> None:
    cm = builders.peers_config_map(spec, NS, UID, pod_ips, domain)
    assert json.loads(cm["data"]["hosts.json"]) == {"names": expected}


def test_config_map_renders_yaml(spec: ConsortiumSpec) -> None:
    body = {"b": [1, 2], "a": {"nested": "x"}}
    cm = builders.config_map(spec, NS, UID, body)
    assert yaml.safe_load(cm["data"]["node.yaml"]) == body


# ---------------------------------------------------------------------------- node_config


def _pod_env(spec: ConsortiumSpec, ordinal: int, domain: str = DOMAIN) -> dict[str, str]:
    """The env the StatefulSet gives pod ``ordinal`` (downward API values filled in)."""
    pod = Names(spec.name).pod(ordinal)
    downward = {"metadata.name": pod, "metadata.namespace": NS, "status.podIP": "10.1.2.3"}
    env: dict[str, str] = {}
    for item in _container(builders.statefulset(spec, NS, UID, 3, domain))["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            env[item["name"]] = downward[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def _node_yaml(
    spec: ConsortiumSpec, members: list[MemberSpec], operator_pem: str, **kwargs: Any
) -> dict[str, Any]:
    """node_config as a pod reads it: through the ConfigMap's YAML."""
    config = builders.node_config(spec, members, operator_pem, **kwargs)
    text = builders.config_map(spec, NS, UID, config)["data"]["node.yaml"]
    loaded: dict[str, Any] = yaml.safe_load(text)
    assert loaded == config
    return loaded


def test_node_config_genesis_pod_parses(
    spec: ConsortiumSpec, members: list[MemberSpec], operator_pem: str, tmp_path: Path
) -> None:
    base = _node_yaml(spec, members, operator_pem)
    assert base["kubernetes"] == {"service_certificate": f"{MOUNT_SERVICE}/service-certificate.pem"}
    # not yet published: the mounted file does not exist (the optional ConfigMap is absent)
    base["kubernetes"]["service_certificate"] = str(tmp_path / "service-certificate.pem")
    config = parse_config(pod_settings(base, _pod_env(spec, 0)), tmp_path)
    assert config.mode == "genesis"
    assert config.join is None
    assert config.name == "demo-0"
    assert config.consortium == "demo"
    assert config.platform.chip_id == "demo-0"
    assert config.platform.name == spec.attestation.platform
    assert config.platform.endorsements == {
        file: Path(f"{MOUNT_PLATFORM}/{file}") for file in PLATFORM_FILES
    }
    assert config.address == f"demo-0.demo-nodes.{NS}.svc.{DOMAIN}:{NODE_PORT}"
    assert "10.1.2.3" in config.subject_alt_names
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", NODE_PORT)
    assert config.data_dir == Path(DATA_DIR)
    assert config.attestation.measurements == tuple(sorted([M1, M2]))
    assert set(config.attestation.host_data) == set(spec.allowed_host_data())
    assert host_data_for("demo", "genesis") in config.attestation.host_data
    assert config.attestation.validity == spec.attestation.validity
    assert config.attestation.renew_before == spec.attestation.renew_before
    assert config.constitution.threshold == "2"
    assert config.constitution.auto_trust_nodes is False
    assert config.ledger.signature_interval_tx == 50
    assert config.ledger.signature_interval_ms == 250
    assert config.trusted_list_path == Path(f"{MOUNT_LIST}/trusted-nodes.cose")
    assert config.peer_hosts_file == Path(f"{MOUNT_PEERS}/hosts.json")
    assert config.insecure_test_faults_file is None


@pytest.mark.parametrize("ordinal", [0, 1, 4])
def test_node_config_join_pod_parses(
    spec: ConsortiumSpec,
    members: list[MemberSpec],
    operator_pem: str,
    tmp_path: Path,
    ordinal: int,
) -> None:
    published = tmp_path / "service-certificate.pem"
    published.write_text(CERT.decode())  # pod 0 replaced after bootstrap joins too
    base = _node_yaml(spec, members, operator_pem)
    base["kubernetes"]["service_certificate"] = str(published)
    config = parse_config(pod_settings(base, _pod_env(spec, ordinal)), tmp_path)
    assert config.mode == "join"
    assert config.name == f"demo-{ordinal}"
    assert config.join is not None
    assert config.join.service_certificate == published
    assert config.join.trusted_list == f"{MOUNT_LIST}/trusted-nodes.cose"


def test_node_config_ordinal_1_joins_before_bootstrap(
    spec: ConsortiumSpec, members: list[MemberSpec], operator_pem: str, tmp_path: Path
) -> None:
    base = _node_yaml(spec, members, operator_pem)
    assert base["kubernetes"]["service_certificate"] == f"{MOUNT_SERVICE}/service-certificate.pem"
    config = parse_config(pod_settings(base, _pod_env(spec, 1)), tmp_path)
    assert config.mode == "join"
    assert config.join is not None
    assert config.join.service_certificate == Path(f"{MOUNT_SERVICE}/service-certificate.pem")


@pytest.mark.parametrize("domain", ["cluster.local", "corp.internal"])
def test_node_address_matches_peers_map(
    spec: ConsortiumSpec, members: list[MemberSpec], operator_pem: str, domain: str
) -> None:
    base = _node_yaml(spec, members, operator_pem)
    settings = pod_settings(base, _pod_env(spec, 2, domain))
    peers = builders.peers_config_map(spec, NS, UID, {"demo-2": "10.1.2.3"}, domain)
    host, port = settings["address"].rsplit(":", 1)
    assert json.loads(peers["data"]["hosts.json"])["names"] == {host: "10.1.2.3"}
    assert int(port) == NODE_PORT


def test_recovery_keys_and_threshold_reach_the_genesis_node(
    spec: ConsortiumSpec, members: list[MemberSpec], operator_pem: str, tmp_path: Path
) -> None:
    key = recovery_key_pem(ec.generate_private_key(ec.SECP256R1()).public_key())
    governor = next(m for m in members if m.role == "governor")
    holder = replace(governor, recovery_key_pem=key)
    spec = replace(spec, recovery_threshold=1)
    others = [m for m in members if m is not governor]
    base = _node_yaml(spec, [holder, *others], operator_pem)
    base["kubernetes"]["service_certificate"] = str(tmp_path / "service-certificate.pem")
    config = parse_config(pod_settings(base, _pod_env(spec, 0)), tmp_path)
    assert config.constitution.recovery_threshold == 1
    [found] = [m for m in config.members if m.recovery_key_pem]
    assert found.recovery_key_pem == key and found.certificate_pem == holder.certificate_pem


def test_node_config_members_sorted_with_operator_last(
    spec: ConsortiumSpec, members: list[MemberSpec], operator_pem: str
) -> None:
    config = builders.node_config(spec, members, operator_pem)
    ordered = sorted(members, key=lambda m: m.member_id)
    assert config["members"] == [
        *({"certificate": m.certificate_pem, "role": m.role} for m in ordered),
        {"certificate": operator_pem, "role": "operator"},
    ]
    assert builders.node_config(spec, list(reversed(members)), operator_pem) == config


def test_node_config_paths_match_mounted_keys(
    spec: ConsortiumSpec, members: list[MemberSpec], operator_pem: str
) -> None:
    """Every file the config names is a key of the object mounted at that directory."""
    config = builders.node_config(spec, members, operator_pem, test_faults=True)
    mounted = {
        MOUNT_PLATFORM: set(builders.platform_secret(spec, NS, UID, PLATFORM_FILES)["data"]),
        MOUNT_SERVICE: set(builders.service_identity_config_map(spec, NS, UID, "x", "y")["data"]),
        MOUNT_LIST: set(
            builders.trusted_nodes_config_map(spec, NS, UID, ENVELOPE, PAYLOAD)["binaryData"]
        ),
        MOUNT_PEERS: set(builders.peers_config_map(spec, NS, UID, {}, DOMAIN)["data"]),
    }
    paths = [
        config["platform"]["root_certificate"],
        config["platform"]["root_key"],
        config["kubernetes"]["service_certificate"],
        config["join"]["trusted_list"],
        config["trusted_list_path"],
        config["peer_hosts_file"],
    ]
    for path in paths:
        directory, name = path.rsplit("/", 1)
        assert name in mounted[directory], path
    assert config["insecure_test_faults_file"].startswith(f"{DATA_DIR}/")


@pytest.mark.parametrize("test_faults", [False, True])
def test_node_config_test_faults_file(
    spec: ConsortiumSpec,
    members: list[MemberSpec],
    operator_pem: str,
    tmp_path: Path,
    test_faults: bool,
) -> None:
    config = builders.node_config(spec, members, operator_pem, test_faults=test_faults)
    assert ("insecure_test_faults_file" in config) is test_faults
    base = {**config, "kubernetes": {"service_certificate": str(tmp_path / "none.pem")}}
    parsed = parse_config(pod_settings(base, _pod_env(spec, 0)), tmp_path)
    expected = Path(builders.TEST_FAULTS_FILE) if test_faults else None
    assert parsed.insecure_test_faults_file == expected


@pytest.mark.parametrize(
    ("overrides", "validity", "renew_before", "interval_ms"),
    [
        ({}, "43200s", "14400s", 250),
        (
            {"attestation__validity": "1h30m", "attestation__renewBefore": "90s"},
            "5400s",
            "90s",
            250,
        ),
        (
            {"attestation__validity": "90500ms", "attestation__renewBefore": "30500ms"},
            "90500ms",
            "30500ms",
            250,
        ),
        ({"ledger__signatureInterval": "1s"}, "43200s", "14400s", 1000),
        ({"ledger__signatureInterval": "1h"}, "43200s", "14400s", 3_600_000),
    ],
)
def test_node_config_durations(
    members: list[MemberSpec],
    operator_pem: str,
    tmp_path: Path,
    overrides: dict[str, Any],
    validity: str,
    renew_before: str,
    interval_ms: int,
) -> None:
    spec = consortium(**overrides)
    config = builders.node_config(spec, members, operator_pem)
    assert config["attestation"]["validity"] == validity
    assert config["attestation"]["renew_before"] == renew_before
    assert config["ledger"]["signature_interval_ms"] == interval_ms
    base = {**config, "kubernetes": {"service_certificate": str(tmp_path / "none.pem")}}
    parsed = parse_config(pod_settings(base, _pod_env(spec, 0)), tmp_path)
    assert parsed.attestation.validity == spec.attestation.validity
    assert parsed.attestation.renew_before == spec.attestation.renew_before
    assert timedelta(milliseconds=parsed.ledger.signature_interval_ms) == spec.signature_interval
    assert parsed.ledger.snapshot_interval == spec.snapshot_interval == 10_000  # the default
    assert parsed.ledger.snapshot_writes_percent == spec.snapshot_writes_percent == 50


def test_snapshot_interval_reaches_every_node_config(
    members: list[MemberSpec], operator_pem: str, tmp_path: Path
) -> None:
    spec = consortium(ledger__snapshotInterval=500, ledger__snapshotWritesPercent=0)
    config = builders.node_config(spec, members, operator_pem)
    base = {**config, "kubernetes": {"service_certificate": str(tmp_path / "none.pem")}}
    for ordinal in range(spec.nodes):  # the same value for every node: the same points
        parsed = parse_config(pod_settings(base, _pod_env(spec, ordinal)), tmp_path)
        assert parsed.ledger.snapshot_interval == 500
        assert parsed.ledger.snapshot_writes_percent == 0


@pytest.mark.parametrize("threshold", ["majority", 1, 3, "2"])
def test_node_config_threshold(
    members: list[MemberSpec], operator_pem: str, tmp_path: Path, threshold: Any
) -> None:
    spec = consortium(governance__threshold=threshold)
    config = builders.node_config(spec, members, operator_pem)
    base = {**config, "kubernetes": {"service_certificate": str(tmp_path / "none.pem")}}
    parsed = parse_config(pod_settings(base, _pod_env(spec, 0)), tmp_path)
    assert parsed.constitution.threshold == str(threshold)


@pytest.mark.parametrize(
    "overrides",
    [
        {"ledger__signatureIntervalTx": 1},
        {"ledger__signatureIntervalTx": 1_000_000},
        {"ledger__signatureInterval": "1ms"},
        {"ledger__signatureInterval": "1h"},
        {"attestation__validity": "1m", "attestation__renewBefore": "30s"},
        {"nodes": 9},
    ],
)
def test_the_spec_limits_render_a_node_config_the_node_accepts(
    members: list[MemberSpec], operator_pem: str, tmp_path: Path, overrides: dict[str, Any]
) -> None:
    """At each edge the operator accepts, the node accepts what the operator renders (so a
    spec the operator takes never becomes a node that refuses to start)."""
    spec = consortium(**overrides)
    config = builders.node_config(spec, members, operator_pem)
    base = {**config, "kubernetes": {"service_certificate": str(tmp_path / "none.pem")}}
    parsed = parse_config(pod_settings(base, _pod_env(spec, 0)), tmp_path)
    assert parsed.consortium == spec.name


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"ledger__signatureIntervalTx": 1_000_001}, "spec.ledger.signatureIntervalTx"),
        ({"ledger__signatureInterval": "2h"}, "spec.ledger.signatureInterval"),
    ],
)
def test_beyond_the_limits_the_operator_refuses_the_spec(
    overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(SpecError) as refused:
        consortium(**overrides)
    assert refused.value.field == field
