"""Pure builders: (validated spec, a few observed facts) → whole manifests.

Each function returns the complete desired object, applied with server-side apply under one
field manager; nothing here reads the cluster, so every manifest is unit-tested as data.
Everything a Consortium owns carries an ownerReference to it (garbage collection removes
it with the Consortium), except the ledger PVCs (StatefulSet claims, handled by the
finalizer according to ``spec.storage.retainOnDelete``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from consortium_operator.api.names import (
    ANNOTATION_BACKUP_CONFIG,
    ANNOTATION_LEDGER_CONFIG,
    API_VERSION,
    BACKUP_CA_KEY,
    BACKUP_CREDENTIAL_KEYS,
    DATA_DIR,
    LABEL_CLIENT,
    LABEL_OPERATOR,
    LABEL_SCRAPE,
    MOUNT_BACKUP_CREDENTIALS,
    MOUNT_CONFIG,
    MOUNT_LIST,
    MOUNT_PEERS,
    MOUNT_SERVICE,
    NODE_PORT,
    NODE_UID,
    Names,
)
from consortium_operator.api.spec import ConsortiumSpec, MemberSpec
from consortium_operator.kube import platform, recovery
from consortium_operator.kube.recovery import recovery_config

Manifest = dict[str, Any]
TEST_FAULTS_FILE = f"{DATA_DIR}/insecure-test-faults"


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Consortium",
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(
    names: Names, name: str, namespace: str, uid: str | None, component: str
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": names.labels(component),
    }
    if uid is not None:
        meta["ownerReferences"] = [owner_reference(names.consortium, uid)]
    return meta


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _secret(
    names: Names,
    name: str,
    namespace: str,
    uid: str | None,
    *,
    component: str,
    type_: str,
    data: Mapping[str, bytes],
) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(names, name, namespace, uid, component),
        "type": type_,
        "data": {key: _b64(value) for key, value in data.items()},
    }


def platform_secret(
    spec: ConsortiumSpec, namespace: str, uid: str | None, data: Mapping[str, bytes]
) -> Manifest:
    """The TEE platform's endorsement material for the pods (file → content, as the platform
    declares it; it may hold private material, hence a Secret). ``uid`` None = retained."""
    names = Names(spec.name)
    return _secret(
        names,
        names.platform_secret,
        namespace,
        uid,
        component="platform-root",
        type_="Opaque",
        data=data,
    )


def operator_secret(
    spec: ConsortiumSpec, namespace: str, uid: str, key_pem: bytes, cert_pem: bytes
) -> Manifest:
    """The operator's client identity (a member with role ``operator``: retire, re-attest)."""
    names = Names(spec.name)
    data = {"tls.key": key_pem, "tls.crt": cert_pem}
    return _secret(
        names,
        names.operator_secret,
        namespace,
        uid,
        component="operator-identity",
        type_="kubernetes.io/tls",
        data=data,
    )


def node_config(
    spec: ConsortiumSpec,
    members: Sequence[MemberSpec],
    operator_certificate_pem: str,
    *,
    test_faults: bool = False,
) -> dict[str, Any]:
    """The node configuration template every pod reads (``consortium-node kube``)."""
    att = spec.attestation
    config: dict[str, Any] = {
        "consortium": spec.name,
        "mode": "join",
        "listen": {"host": "0.0.0.0", "port": NODE_PORT},  # noqa: S104 - a pod's interface
        "data_dir": DATA_DIR,
        "platform": platform.platform_section(spec),
        "attestation": {
            "measurements": sorted(att.measurements),
            "host_data": list(spec.allowed_host_data()),
            "validity": _duration(att.validity.total_seconds()),
            "renew_before": _duration(att.renew_before.total_seconds()),
        },
        "constitution": {
            "threshold": spec.threshold,
            "auto_trust_nodes": spec.auto_trust_nodes,
            "recovery_threshold": spec.recovery_threshold,
        },
        "members": [
            {
                "certificate": m.certificate_pem,
                "role": m.role,
                **({"recovery_key": m.recovery_key_pem} if m.recovery_key_pem else {}),
            }
            for m in sorted(members, key=lambda m: m.member_id)
        ]
        + [{"certificate": operator_certificate_pem, "role": "operator"}],
        "ledger": ledger_config(spec),
        "join": {"trusted_list": f"{MOUNT_LIST}/trusted-nodes.cose"},
        "trusted_list_path": f"{MOUNT_LIST}/trusted-nodes.cose",
        "peer_hosts_file": f"{MOUNT_PEERS}/hosts.json",
        "kubernetes": {"service_certificate": f"{MOUNT_SERVICE}/service-certificate.pem"},
    }
    if test_faults:
        config["insecure_test_faults_file"] = TEST_FAULTS_FILE
    backup = backup_config(spec)
    if backup is not None:
        config["backup"] = backup
    recovering = recovery_config(spec)
    if recovering is not None:
        config["recovery"] = recovering
    return config


def ledger_config(spec: ConsortiumSpec) -> dict[str, Any]:
    """The node configuration's ``ledger:`` section (from ``spec.ledger``)."""
    return {
        "signature_interval_tx": spec.signature_interval_tx,
        "signature_interval_ms": max(1, round(spec.signature_interval.total_seconds() * 1000)),
        "snapshot_interval": spec.snapshot_interval,
        "snapshot_writes_percent": spec.snapshot_writes_percent,
    }


def _sha256_json(material: Any) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()


def backup_config(spec: ConsortiumSpec) -> dict[str, Any] | None:
    """The node configuration's ``backup:`` section (None without ``spec.backup``): every
    setting explicit (the prefix and region too), durations as ``_duration`` writes them, the
    credentials as files of the mounted Secret, the CA bundle as a file of the config
    ConfigMap."""
    backup = spec.backup
    if backup is None:
        return None
    section = backup.s3.node_section(MOUNT_BACKUP_CREDENTIALS, f"{MOUNT_CONFIG}/{BACKUP_CA_KEY}")
    section["mode"] = backup.node_mode
    if backup.max_lag is not None:
        section["max_lag"] = _duration(backup.max_lag.total_seconds())
    if backup.schedule is not None:
        section["schedule"] = backup.schedule
    if backup.retention is not None:
        section["retention"] = _duration(backup.retention.total_seconds())
    return section


def backup_config_sha256(spec: ConsortiumSpec) -> str | None:
    """Digest of what a node reads of ``spec.backup`` at start (its section and CA bundle):
    the pod template's ``ANNOTATION_BACKUP_CONFIG``. None without ``spec.backup``."""
    section = backup_config(spec)
    if section is None or spec.backup is None:
        return None
    return _sha256_json({"backup": section, "ca_bundle": spec.backup.s3.ca_bundle})


def _duration(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole}s" if abs(seconds - whole) < 1e-9 else f"{round(seconds * 1000)}ms"


def config_map(
    spec: ConsortiumSpec, namespace: str, uid: str, node_yaml: Mapping[str, Any]
) -> Manifest:
    """The node configuration, and the backup CA bundle (public) when ``spec.backup`` has one."""
    names = Names(spec.name)
    data = {"node.yaml": yaml.safe_dump(dict(node_yaml), sort_keys=True)}
    if spec.backup is not None and spec.backup.s3.ca_bundle is not None:
        data[BACKUP_CA_KEY] = spec.backup.s3.ca_bundle
    data.update(recovery.config_map_data(spec))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(names, names.config, namespace, uid, "config"),
        "data": data,
    }


def headless_service(spec: ConsortiumSpec, namespace: str, uid: str) -> Manifest:
    """Stable DNS names for every pod, ready or not (joiners are reached before Ready)."""
    names = Names(spec.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(names, names.service, namespace, uid, "ledger-node"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": names.selector(),
            "ports": [{"name": "api", "port": NODE_PORT, "targetPort": "api", "protocol": "TCP"}],
        },
    }


def statefulset(
    spec: ConsortiumSpec, namespace: str, uid: str, replicas: int, cluster_domain: str
) -> Manifest:
    """Pod 0 starts as genesis, the rest join (decided in the pod, see ``server/kube.py``)."""
    names = Names(spec.name)
    probe = {"scheme": "HTTPS", "port": "api"}
    container: dict[str, Any] = {
        "name": "node",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": ["kube", "--config", f"{MOUNT_CONFIG}/node.yaml"],
        "env": [
            _field_env("POD_NAME", "metadata.name"),
            _field_env("POD_NAMESPACE", "metadata.namespace"),
            _field_env("POD_IP", "status.podIP"),
            {"name": "CONSORTIUM_SERVICE", "value": names.service},
            {"name": "CLUSTER_DOMAIN", "value": cluster_domain},
        ],
        "ports": [{"name": "api", "containerPort": NODE_PORT, "protocol": "TCP"}],
        "startupProbe": {
            "httpGet": {"path": "/healthz", **probe},
            "periodSeconds": 2,
            "failureThreshold": 300,
            "timeoutSeconds": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", **probe},
            "periodSeconds": 10,
            "failureThreshold": 3,
            "timeoutSeconds": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", **probe},
            "periodSeconds": 2,
            "failureThreshold": 2,
            "timeoutSeconds": 2,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "config", "mountPath": MOUNT_CONFIG, "readOnly": True},
            {"name": "service-identity", "mountPath": MOUNT_SERVICE, "readOnly": True},
            {"name": "trusted-nodes", "mountPath": MOUNT_LIST, "readOnly": True},
            {"name": "peers", "mountPath": MOUNT_PEERS, "readOnly": True},
            {"name": "ledger", "mountPath": DATA_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir
        ],
    }
    if spec.resources:
        container["resources"] = spec.resources
    claim: dict[str, Any] = {
        "metadata": {"name": "ledger", "labels": names.labels("ledger")},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.storage.size}},
        },
    }
    if spec.storage.storage_class_name:
        claim["spec"]["storageClassName"] = spec.storage.storage_class_name
    labels = {**names.labels("ledger-node"), **names.selector()}
    # A node reads its configuration once, at start: a changed ledger section is a new
    # revision of the template, rolled one pod at a time (upgrade.py).
    annotations = {ANNOTATION_LEDGER_CONFIG: _sha256_json(ledger_config(spec))}
    template_meta: dict[str, Any] = {"labels": labels, "annotations": annotations}
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": names.config}},
        _optional_cm("service-identity", names.service_identity),
        _optional_cm("trusted-nodes", names.trusted_nodes),
        _optional_cm("peers", names.peers),
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]
    if spec.backup is not None:
        _add_backup(spec, container, volumes, template_meta)
    recovery.add_credentials(spec, container, volumes)
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 10,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NODE_UID,
            "runAsGroup": NODE_UID,
            "fsGroup": NODE_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if platform.has_platform_secret(spec):  # second, as it always was (no template change)
        container["volumeMounts"].insert(1, platform.PLATFORM_MOUNT)
        volumes.insert(1, platform.platform_volume(names))
    platform.add_to_pod(spec, pod, container, template_meta)
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(names, names.statefulset, namespace, uid, "ledger-node"),
        "spec": {
            "serviceName": names.service,
            "replicas": replicas,
            # Parallel: a lost pod is recreated even while the others are not Ready (with
            # OrderedReady, two voters that lost one could never get it back). Genesis order
            # is kept by the operator, which runs one replica until the service exists.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": names.selector()},
            # OnDelete: the operator replaces pods itself, one at a time, after the members
            # approved new code, retiring each old node first (upgrade.py).
            "updateStrategy": {"type": "OnDelete"},
            "template": {
                "metadata": template_meta,
                "spec": pod,
            },
            "volumeClaimTemplates": [claim],
        },
    }


def _add_backup(
    spec: ConsortiumSpec,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    template_meta: dict[str, Any],
) -> None:
    """``spec.backup``: the user's credentials Secret, read-only and optional (a node starts
    without it and reports CredentialsMissing; kubelet adds the files once it exists), only
    its two keys, readable by the node's group (fsGroup) as the platform Secret; and the
    annotation that makes a changed backup configuration a new pod template revision."""
    assert spec.backup is not None
    container["volumeMounts"].append(
        {"name": "backup-credentials", "mountPath": MOUNT_BACKUP_CREDENTIALS, "readOnly": True}
    )
    volumes.append(
        {
            "name": "backup-credentials",
            "secret": {
                "secretName": spec.backup.s3.credentials_secret,
                "optional": True,
                "defaultMode": 0o440,
                "items": [{"key": key, "path": key} for key in BACKUP_CREDENTIAL_KEYS],
            },
        }
    )
    digest = backup_config_sha256(spec)
    assert digest is not None
    template_meta["annotations"][ANNOTATION_BACKUP_CONFIG] = digest


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _optional_cm(volume: str, config_map_name: str) -> dict[str, Any]:
    return {"name": volume, "configMap": {"name": config_map_name, "optional": True}}


def pod_disruption_budget(
    spec: ConsortiumSpec, namespace: str, uid: str, api_version: str
) -> Manifest:
    """Never let voluntary evictions take the ledger below a Raft majority."""
    names = Names(spec.name)
    return {
        "apiVersion": api_version,
        "kind": "PodDisruptionBudget",
        "metadata": _meta(names, names.pdb, namespace, uid, "ledger-node"),
        "spec": {
            "minAvailable": spec.nodes // 2 + 1,
            "selector": {"matchLabels": names.selector()},
        },
    }


def network_policy(spec: ConsortiumSpec, namespace: str, uid: str) -> Manifest:
    """The node port only from peers, the operator, labelled clients and opted-in scrapers.

    Scrapers (pods labelled ``consortium.tee.dev/scrape: "true"`` in any namespace) reach the
    same port as everyone else; ``/metrics`` is public, everything else still needs a
    member's certificate or a node certificate."""
    names = Names(spec.name)
    clients = spec.client_selector or {"matchLabels": {LABEL_CLIENT: spec.name}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(names, names.network_policy, namespace, uid, "ledger-node"),
        "spec": {
            "podSelector": {"matchLabels": names.selector()},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": names.selector()}},
                        {"podSelector": clients},
                        {
                            "namespaceSelector": {},
                            "podSelector": {"matchLabels": {LABEL_OPERATOR: "true"}},
                        },
                        {
                            "namespaceSelector": {},
                            "podSelector": {"matchLabels": {LABEL_SCRAPE: "true"}},
                        },
                    ],
                    "ports": [{"port": NODE_PORT, "protocol": "TCP"}],
                }
            ],
        },
    }


def trusted_nodes_config_map(
    spec: ConsortiumSpec, namespace: str, uid: str, envelope: bytes, payload: Mapping[str, Any]
) -> Manifest:
    """The signed list (``trusted-nodes.cose``) and its payload for humans (``.json``)."""
    names = Names(spec.name)
    meta = _meta(names, names.trusted_nodes, namespace, uid, "trusted-nodes")
    meta["annotations"] = {
        "consortium.tee.dev/list-version": str(payload["version"]),
        "consortium.tee.dev/list-sha256": hashlib.sha256(envelope).hexdigest(),
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "binaryData": {"trusted-nodes.cose": _b64(envelope)},
        "data": {"trusted-nodes.json": json.dumps(dict(payload), indent=2, sort_keys=True)},
    }


def service_identity_config_map(
    spec: ConsortiumSpec, namespace: str, uid: str, certificate_pem: str, sha256: str
) -> Manifest:
    names = Names(spec.name)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(names, names.service_identity, namespace, uid, "service-identity"),
        "data": {"service-certificate.pem": certificate_pem, "sha256": sha256},
    }


def peers_config_map(
    spec: ConsortiumSpec, namespace: str, uid: str, pod_ips: Mapping[str, str], domain: str
) -> Manifest:
    """DNS name → pod IP, for clusters without cluster DNS (see ``server/hosts.py``)."""
    names = Names(spec.name)
    mapping = {names.pod_fqdn(pod, namespace, domain): ip for pod, ip in sorted(pod_ips.items())}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(names, names.peers, namespace, uid, "peers"),
        "data": {"hosts.json": json.dumps({"names": mapping}, indent=1, sort_keys=True)},
    }
