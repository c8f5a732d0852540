"""The CRDs in crds/ and the samples in crds/samples/ (and crds/samples/backup/), checked
without a cluster.

Covers what a kube-apiserver (1.20 and later) would refuse or what users rely on: a structural
schema documented at every node (``kubectl explain``), names, printer columns, defaults that
satisfy their own schemas, and samples that validate. Samples are validated with ``jsonschema``
after translating the Kubernetes extensions, and *strictly*: an unknown field is an error here,
where the apiserver would silently prune it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.attestation.measurement import measure_tree
from consortium_node.common.timeutil import parse_duration
from consortium_node.identity.certs import load_member_certificate
from consortium_node.recovery.record import recovery_key_pem
from consortium_operator.api.spec import parse_consortium

ROOT = Path(__file__).resolve().parents[3]
CRDS = ROOT / "crds"
SAMPLES = CRDS / "samples"
GROUP = "consortium.tee.dev"
INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]

Schema = dict[str, Any]


def _load_crd(plural: str) -> dict[str, Any]:
    with (CRDS / f"{plural}.{GROUP}.yaml").open(encoding="utf-8") as handle:
        crd: dict[str, Any] = yaml.safe_load(handle)
    return crd


CRD = {
    "Consortium": _load_crd("consortia"),
    "Member": _load_crd("members"),
    "Proposal": _load_crd("proposals"),
    "ConsortiumBackup": _load_crd("consortiumbackups"),
}


def _version(kind: str) -> dict[str, Any]:
    versions = CRD[kind]["spec"]["versions"]
    assert len(versions) == 1
    version: dict[str, Any] = versions[0]
    return version


def _schema(kind: str) -> Schema:
    schema: Schema = _version(kind)["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: Schema, path: str) -> Iterator[tuple[str, Schema]]:
    """Every schema node a user can reach (not the anyOf branches of int-or-string)."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{*}}")


def _all_nodes() -> list[tuple[str, str, Schema]]:
    return [(kind, path, node) for kind in CRD for path, node in _walk(_schema(kind), kind)]


ALL_NODES = _all_nodes()
NODE_IDS = [f"{kind}:{path}" for kind, path, _ in ALL_NODES]


def _load_samples() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        with path.open(encoding="utf-8") as handle:
            docs.extend(doc for doc in yaml.safe_load_all(handle) if doc)
    return docs


SAMPLE_DOCS = _load_samples()
BACKUP_SAMPLES = SAMPLES / "backup"  # not applied with the others: the bucket is the user's
BACKUP_PATCH: dict[str, Any] = yaml.safe_load((BACKUP_SAMPLES / "backup-patch.yaml").read_text())
BACKUP_REQUEST: dict[str, Any] = yaml.safe_load(
    (BACKUP_SAMPLES / "consortiumbackup.yaml").read_text()
)


def _sample(kind: str, name: str) -> dict[str, Any]:
    for doc in SAMPLE_DOCS:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return copy.deepcopy(doc)
    raise AssertionError(f"no sample {kind}/{name}")


# --- translation to plain JSON Schema and Kubernetes-style defaulting -------------------------


def to_json_schema(node: Schema) -> Schema:
    """The Kubernetes structural schema ``node`` as strict plain JSON Schema.

    ``x-kubernetes-int-or-string`` becomes ``type: [integer, string]`` (its anyOf branches are
    already plain JSON Schema); objects that do not preserve unknown fields get
    ``additionalProperties: false`` so typos fail here instead of being pruned.
    """
    out: Schema = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if "properties" in node:
        out["properties"] = {k: to_json_schema(v) for k, v in node["properties"].items()}
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(node["additionalProperties"])
    elif (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def apply_defaults(value: Any, node: Schema) -> Any:
    """Apply ``default``s top-down as the apiserver does (a defaulted ``{}`` gets its fields')."""
    if isinstance(value, dict):
        for name, child in node.get("properties", {}).items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = apply_defaults(value[name], child)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for name in set(value) - set(node.get("properties", {})):
                value[name] = apply_defaults(value[name], extra)
    elif isinstance(value, list) and "items" in node:
        return [apply_defaults(item, node["items"]) for item in value]
    return value


def validator(kind: str) -> jsonschema.protocols.Validator:
    schema = to_json_schema(_schema(kind))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=jsonschema.FormatChecker())


def errors(kind: str, obj: dict[str, Any]) -> list[jsonschema.ValidationError]:
    return list(validator(kind).iter_errors(apply_defaults(copy.deepcopy(obj), _schema(kind))))


def _first_error_path(kind: str, obj: dict[str, Any]) -> str:
    found = errors(kind, obj)
    assert found, f"{kind} was accepted but should be rejected: {obj.get('spec')}"
    return ".".join(str(p) for p in sorted(found, key=lambda e: len(e.path))[0].path)


# --- CRD metadata -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "plural", "singular", "short"),
    [
        ("Consortium", "consortia", "consortium", "cons"),
        ("Member", "members", "member", "mem"),
        ("Proposal", "proposals", "proposal", "prop"),
        ("ConsortiumBackup", "consortiumbackups", "consortiumbackup", "cbak"),
    ],
)
def test_names_scope_and_version(kind: str, plural: str, singular: str, short: str) -> None:
    crd = CRD[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{plural}.{GROUP}"
    spec = crd["spec"]
    assert spec["group"] == GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": singular,
        "shortNames": [short],
        "categories": ["consortium-all"],
    }
    version = _version(kind)
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_categories_do_not_shadow_resource_names() -> None:
    """kubectl expands a category before resource names: a category named like a resource
    turns `kubectl get consortium demo` into "you must specify only one resource"."""
    names = set()
    categories = set()
    for crd in CRD.values():
        spec_names = crd["spec"]["names"]
        names |= {spec_names["plural"], spec_names["singular"], spec_names["kind"].lower()}
        names |= set(spec_names["shortNames"])
        categories |= set(spec_names["categories"])
    assert not categories & names


PRINTER_COLUMNS = {
    "Consortium": [
        ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status', 0),
        ("Nodes", "string", ".status.nodesReady", 0),
        ("List", "integer", ".status.trustedNodeList.version", 0),
        ("Phase", "string", ".status.phase", 0),
        ("Platform", "string", ".status.platform.name", 1),
        ("Age", "date", ".metadata.creationTimestamp", 0),
    ],
    "Member": [
        ("Consortium", "string", ".spec.consortium", 0),
        ("Role", "string", ".spec.role", 0),
        ("Member ID", "string", ".status.memberId", 1),
        ("Active", "string", '.status.conditions[?(@.type=="Active")].status', 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
    ],
    "Proposal": [
        ("Consortium", "string", ".spec.consortium", 0),
        ("Action", "string", ".status.action", 0),
        ("State", "string", ".status.state", 0),
        ("Votes", "string", ".status.votes", 0),
        ("Proposal ID", "string", ".status.proposalId", 1),
        ("Reason", "string", ".status.reason", 1),
        ("Age", "date", ".metadata.creationTimestamp", 0),
    ],
    "ConsortiumBackup": [
        ("Consortium", "string", ".spec.consortium", 0),
        ("Phase", "string", ".status.phase", 0),
        ("Last Txid", "string", ".status.lastTxid", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
    ],
}


@pytest.mark.parametrize("kind", sorted(PRINTER_COLUMNS))
def test_printer_columns(kind: str) -> None:
    columns = [
        (c["name"], c["type"], c["jsonPath"], c.get("priority", 0))
        for c in _version(kind)["additionalPrinterColumns"]
    ]
    assert columns == PRINTER_COLUMNS[kind]


@pytest.mark.parametrize("kind", sorted(PRINTER_COLUMNS))
def test_printer_columns_point_into_the_schema(kind: str) -> None:
    for column in _version(kind)["additionalPrinterColumns"]:
        path = column["jsonPath"].split("[")[0].strip(".").split(".")
        if path[0] == "metadata":
            continue
        node = _schema(kind)
        for part in path:
            node = node.get("items", node)["properties"][part]
        assert node is not None


# --- schema structure -------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "path", "node"), ALL_NODES, ids=NODE_IDS)
def test_every_schema_node_is_documented_and_typed(kind: str, path: str, node: Schema) -> None:
    if path == f"{kind}.metadata":  # the apiserver allows nothing but `type: object` here
        assert node == {"type": "object"}
        return
    assert str(node.get("description", "")).strip(), f"{path}: no description"
    if node.get("x-kubernetes-int-or-string"):
        assert "type" not in node, f"{path}: int-or-string must not set type"
        assert node.get("anyOf", INT_OR_STRING_ANY_OF) == INT_OR_STRING_ANY_OF, (
            f"{path}: structural schemas allow only anyOf [{{type: integer}}, {{type: string}}]"
            " on int-or-string; put constraints (minimum, pattern) beside it"
        )
    else:
        assert node.get("type") in {"object", "array", "string", "integer", "boolean", "number"}
    if node.get("type") == "array":
        assert "items" in node, f"{path}: array without items"
    for forbidden in ("x-kubernetes-validations", "oneOf", "allOf", "not", "nullable"):
        assert forbidden not in node, f"{path}: {forbidden} is not used (1.20, structural)"


@pytest.mark.parametrize(("kind", "path", "node"), ALL_NODES, ids=NODE_IDS)
def test_list_map_keys_are_required(kind: str, path: str, node: Schema) -> None:
    if node.get("x-kubernetes-list-type") == "map":
        keys = node["x-kubernetes-list-map-keys"]
        assert set(keys) <= set(node["items"].get("required", [])), path


DEFAULTED = [(k, p, n) for k, p, n in ALL_NODES if "default" in n]


@pytest.mark.parametrize(
    ("kind", "path", "node"), DEFAULTED, ids=[f"{k}:{p}" for k, p, _ in DEFAULTED]
)
def test_defaults_satisfy_their_schema(kind: str, path: str, node: Schema) -> None:
    value = apply_defaults(copy.deepcopy(node["default"]), node)
    jsonschema.Draft7Validator(to_json_schema(node)).validate(value)


def test_expected_defaults() -> None:
    obj = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "Consortium", "metadata": {"name": "x"}}
    obj["spec"] = {"image": "img", "attestation": {"measurements": ["0" * 64]}}
    spec = apply_defaults(obj, _schema("Consortium"))["spec"]
    assert spec == {
        "image": "img",
        "nodes": 3,
        "imagePullPolicy": "IfNotPresent",
        "attestation": {
            "measurements": ["0" * 64],
            "platform": "insecure-virtual",
            "validity": "24h",
            "renewBefore": "8h",
        },
        "governance": {
            "threshold": "majority",
            "recoveryThreshold": "majority",
            "autoTrustNodes": True,
        },
        "storage": {"size": "1Gi", "retainOnDelete": False},
        "ledger": {
            "signatureIntervalTx": 100,
            "signatureInterval": "100ms",
            "snapshotInterval": 10000,
            "snapshotWritesPercent": 50,
        },
    }
    assert parse_duration(spec["attestation"]["renewBefore"]) < parse_duration(
        spec["attestation"]["validity"]
    )
    member = {"spec": {"consortium": "demo", "certificate": "x"}}
    assert apply_defaults(member, _schema("Member"))["spec"]["role"] == "governor"


# --- samples ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc", SAMPLE_DOCS, ids=[f"{d['kind']}/{d['metadata']['name']}" for d in SAMPLE_DOCS]
)
def test_sample_validates(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == f"{GROUP}/v1alpha1"
    assert errors(doc["kind"], doc) == []


def test_samples_cover_both_kinds_and_ship_no_private_key() -> None:
    assert {(d["kind"], d["metadata"]["name"]) for d in SAMPLE_DOCS} == {
        ("Consortium", "demo"),
        ("Member", "alice"),
        ("Member", "bob"),
    }
    for path in CRDS.rglob("*"):
        if path.is_file():
            assert "PRIVATE KEY" not in path.read_text(encoding="utf-8"), path


@pytest.mark.parametrize("name", ["alice", "bob"])
def test_sample_member_certificates_are_accepted_by_the_node(name: str) -> None:
    member = _sample("Member", name)
    assert member["spec"]["consortium"] == "demo"
    cert = load_member_certificate(member["spec"]["certificate"])
    assert cert.common_name == name


def test_sample_measurement_is_this_build() -> None:
    current = measure_tree(ROOT / "node_image" / "consortium_node")
    sample = _sample("Consortium", "demo")["spec"]["attestation"]["measurements"]
    assert sample == [current], (
        f"crds/samples/consortium.yaml lists {sample} but this build measures {current}: "
        "run scripts/update-sample-measurement.py"
    )


def test_sample_durations_parse_and_renew_before_validity() -> None:
    attestation = _sample("Consortium", "demo")["spec"]["attestation"]
    assert parse_duration(attestation["renewBefore"]) < parse_duration(attestation["validity"])


# --- accepted and rejected objects ------------------------------------------------------------


def _with(kind: str, name: str, dotted: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(BACKUP_REQUEST) if kind == "ConsortiumBackup" else _sample(kind, name)
    *parents, last = dotted.split(".")
    node = obj
    for part in parents:
        node = node.setdefault(part, {})
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return obj


_DELETE = object()
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

REJECTED = [
    ("Consortium", "demo", "spec.nodes", 0, "spec.nodes"),
    ("Consortium", "demo", "spec.nodes", "3", "spec.nodes"),
    ("Consortium", "demo", "spec.image", "", "spec.image"),
    ("Consortium", "demo", "spec.image", _DELETE, "spec"),
    ("Consortium", "demo", "spec.attestation", _DELETE, "spec"),
    ("Consortium", "demo", "spec.imagePullPolicy", "Sometimes", "spec.imagePullPolicy"),
    (
        "Consortium",
        "demo",
        "spec.attestation.measurements",
        ["xyz"],
        "spec.attestation.measurements.0",
    ),
    (
        "Consortium",
        "demo",
        "spec.attestation.measurements",
        ["AB" * 32],
        "spec.attestation.measurements.0",
    ),
    ("Consortium", "demo", "spec.attestation.measurements", [], "spec.attestation.measurements"),
    ("Consortium", "demo", "spec.attestation.hostData", ["nope"], "spec.attestation.hostData.0"),
    ("Consortium", "demo", "spec.attestation.platform", "tdx", "spec.attestation.platform"),
    (
        "Consortium",
        "demo",
        "spec.attestation.sevSnp",
        {"device": "auto"},
        "spec.attestation.sevSnp.device",
    ),
    ("Consortium", "demo", "spec.attestation.sevSnp", {"vmpl": 4}, "spec.attestation.sevSnp.vmpl"),
    (
        "Consortium",
        "demo",
        "spec.attestation.sevSnp",
        {"minimumTcb": {"Genoa": {"snp": 256}}},
        "spec.attestation.sevSnp.minimumTcb.Genoa.snp",
    ),
    (
        "Consortium",
        "demo",
        "spec.attestation.sevSnp",
        {"products": ["Naples"]},
        "spec.attestation.sevSnp.products.0",
    ),
    (
        "Consortium",
        "demo",
        "spec.attestation.sevSnp",
        {"insecureEmulator": {"reportVersion": 4}},
        "spec.attestation.sevSnp.insecureEmulator.reportVersion",
    ),
    ("Consortium", "demo", "spec.attestation.validity", "1d", "spec.attestation.validity"),
    ("Consortium", "demo", "spec.attestation.renewBefore", "8", "spec.attestation.renewBefore"),
    ("Consortium", "demo", "spec.governance.threshold", 0, "spec.governance.threshold"),
    ("Consortium", "demo", "spec.governance.threshold", "most", "spec.governance.threshold"),
    ("Consortium", "demo", "spec.governance.threshold", True, "spec.governance.threshold"),
    (
        "Consortium",
        "demo",
        "spec.governance.autoTrustNodes",
        "yes",
        "spec.governance.autoTrustNodes",
    ),
    ("Consortium", "demo", "spec.storage.size", "1 GB", "spec.storage.size"),
    ("Consortium", "demo", "spec.ledger.signatureIntervalTx", 0, "spec.ledger.signatureIntervalTx"),
    (
        "Consortium",
        "demo",
        "spec.resources.limits",
        {"memory": "lots"},
        "spec.resources.limits.memory",
    ),
    ("Consortium", "demo", "spec.nodez", 3, "spec"),  # the apiserver would prune it silently
    ("Consortium", "demo", "status.phase", "Happy", "status.phase"),
    ("Consortium", "demo", "status.conditions", [{"type": "Ready"}], "status.conditions.0"),
    ("Member", "alice", "spec.role", "admin", "spec.role"),
    ("Member", "alice", "spec.certificate", "hello", "spec.certificate"),
    ("Member", "alice", "spec.certificate", _DELETE, "spec"),
    ("Member", "alice", "spec.consortium", "Demo", "spec.consortium"),
    ("Member", "alice", "spec.consortium", "a" * 64, "spec.consortium"),
    ("Member", "alice", "spec.consortium", _DELETE, "spec"),
    (
        "Member",
        "alice",
        "status.conditions",
        [{"type": "Active", "status": "yes"}],
        "status.conditions.0.status",
    ),
    ("ConsortiumBackup", "demo-now", "spec.consortium", _DELETE, "spec"),
    ("ConsortiumBackup", "demo-now", "spec.consortium", "Demo", "spec.consortium"),
    ("ConsortiumBackup", "demo-now", "spec.bogus", 1, "spec"),
    ("ConsortiumBackup", "demo-now", "status.phase", "Done", "status.phase"),
]


@pytest.mark.parametrize(
    ("kind", "name", "field", "value", "where"),
    REJECTED,
    ids=[f"{k}:{f}={v!r}"[:60] for k, _, f, v, _ in REJECTED],
)
def test_rejected(kind: str, name: str, field: str, value: Any, where: str) -> None:
    assert _first_error_path(kind, _with(kind, name, field, value)) == where


ACCEPTED = [
    ("Consortium", "demo", "spec.nodes", 1),
    ("Consortium", "demo", "spec.governance.threshold", 2),
    ("Consortium", "demo", "spec.governance", {}),
    ("Consortium", "demo", "spec.attestation.validity", "1h30m"),
    ("Consortium", "demo", "spec.attestation.renewBefore", "90.5m"),
    ("Consortium", "demo", "spec.attestation.hostData", ["ab" * 32]),
    ("Consortium", "demo", "spec.attestation.measurements", ["ab" * 48]),
    (
        "Consortium",
        "demo",
        "spec.attestation.sevSnp",
        {
            "device": "configfs-tsm",
            "runtimeClassName": "kata-qemu-snp",
            "minimumTcb": {"Turin": {"fmc": 1, "snp": 3}, "Genoa": {"microcode": 84}},
            "allowDebug": False,
            "vmpl": 0,
            "products": ["Genoa", "Turin"],
            "endorsementsRef": {"name": "amd-kds"},
            "podAnnotations": {"io.katacontainers.config.runtime.cc_init_data": "abc"},
        },
    ),
    ("Consortium", "demo", "spec.storage", {"size": "500Mi", "storageClassName": "fast"}),
    ("Consortium", "demo", "spec.storage.retainOnDelete", True),
    (
        "Consortium",
        "demo",
        "spec.resources",
        {"limits": {"cpu": 1, "memory": "512Mi"}, "claims": []},
    ),
    ("Consortium", "demo", "spec.ledger", {"signatureIntervalTx": 1, "signatureInterval": "1s"}),
    ("Consortium", "demo", "spec.clientSelector", {"matchLabels": {"app": "bank"}}),
    (
        "Consortium",
        "demo",
        "spec.clientSelector",
        {"matchExpressions": [{"key": "a", "operator": "Exists"}]},
    ),
    ("Member", "alice", "spec.role", "user"),
    ("Member", "alice", "spec.role", _DELETE),
    ("Member", "alice", "spec.certificate", CERT),
    ("Member", "alice", "spec.consortium", "a" * 63),
    ("ConsortiumBackup", "demo-now", "spec.consortium", "a" * 63),
]


@pytest.mark.parametrize(
    ("kind", "name", "field", "value"),
    ACCEPTED,
    ids=[f"{k}:{f}={v!r}"[:60] for k, _, f, v in ACCEPTED],
)
def test_accepted(kind: str, name: str, field: str, value: Any) -> None:
    assert errors(kind, _with(kind, name, field, value)) == []


def test_a_full_status_validates() -> None:
    obj = _sample("Consortium", "demo")
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "AllNodesTrusted",
        "message": "3/3 nodes trusted",
        "lastTransitionTime": "2024-05-01T12:00:00Z",
        "observedGeneration": 1,
    }
    obj["status"] = {
        "observedGeneration": 1,
        "phase": "Ready",
        "conditions": [condition],
        "serviceCertificate": CERT,
        "serviceCertificateSha256": "ab" * 32,
        "trustedNodeList": {"version": 3, "sha256": "cd" * 32, "issuedAt": "2024-05-01T12:00:00Z"},
        "nodesReady": "3/3",
        "trustedNodes": 3,
        "desiredNodes": 3,
        "nodes": [
            {
                "name": "demo-0",
                "nodeId": "ef" * 32,
                "status": "Trusted",
                "measurement": "01" * 32,
                "attestedAt": "2024-05-01T12:00:00Z",
                "attestationExpiresAt": "2024-05-02T12:00:00Z",
                "ordinal": 0,
                "podIP": "10.89.0.5",
                "reattestationFailure": "",
            }
        ],
        "members": {"total": 2, "active": 2},
        "ledger": {
            "term": 1,
            "commitIndex": 42,
            "primary": "demo-0",
            "lastSnapshot": {"index": 40, "txid": "1.40"},
        },
        "recovery": {"recordEpoch": 2, "threshold": 2, "members": 3, "current": True},
        "firstReadyTime": "2024-05-01T12:00:01Z",
    }
    assert errors("Consortium", obj) == []
    member = _sample("Member", "alice")
    member["status"] = {
        "memberId": "12" * 32,
        "consortium": {"name": "demo", "uid": "0f1e2d3c-aaaa-bbbb-cccc-000000000000"},
        "observedGeneration": 1,
        "phase": "Active",
        "conditions": [{**condition, "type": "Active"}],
    }
    assert errors("Member", member) == []
    obj = _with_backup()
    obj["status"] = {
        "conditions": [{**condition, "type": "BackupHealthy"}],
        "backup": {
            "lastSuccessfulTime": "2024-05-01T12:00:00Z",
            "lastTxid": "2.40",
            "manifest": f"manifests/{40:020d}-{'ab' * 8}.cose",
            "lagSeconds": 4.2,
            "lagEntries": 3,
            "lastError": {"reason": "BucketNotFound", "message": "no", "time": "2024-05-01T12:00Z"},
        },
    }
    assert errors("Consortium", obj) == []
    request = copy.deepcopy(BACKUP_REQUEST)
    request["status"] = {
        "observedGeneration": 1,
        "phase": "Completed",
        "requestedThrough": 40,
        "lastTxid": "2.40",
        "objects": 3,
        "bytes": 123456,
        "manifest": f"manifests/{40:020d}-{'ab' * 8}.cose",
        "manifestSha256": "ab" * 32,
        "startedAt": "2024-05-01T12:00:00Z",
        "completedAt": "2024-05-01T12:00:05Z",
        "message": "done",
        "conditions": [{**condition, "type": "Complete"}],
    }
    assert errors("ConsortiumBackup", request) == []


# --- spec.backup and ConsortiumBackup ---------------------------------------------------------


def _with_backup(backup: dict[str, Any] | None = None) -> dict[str, Any]:
    """The sample Consortium with the sample's spec.backup merged in (or ``backup``)."""
    obj = _sample("Consortium", "demo")
    obj["spec"]["backup"] = copy.deepcopy(
        BACKUP_PATCH["spec"]["backup"] if backup is None else backup
    )
    return obj


def test_backup_samples_validate_and_parse() -> None:
    """The merge patch is only spec.backup; merged into the sample it validates against the
    schema and the operator's own checks, and the ConsortiumBackup sample names the sample."""
    assert list(BACKUP_PATCH) == ["spec"] and list(BACKUP_PATCH["spec"]) == ["backup"]
    obj = _with_backup()
    assert errors("Consortium", obj) == []
    spec = parse_consortium("demo", apply_defaults(obj, _schema("Consortium"))["spec"])
    assert spec.backup is not None and spec.backup.s3.credentials_secret.startswith("demo-")
    assert BACKUP_REQUEST["apiVersion"] == f"{GROUP}/v1alpha1"
    assert errors("ConsortiumBackup", BACKUP_REQUEST) == []
    assert BACKUP_REQUEST["spec"]["consortium"] == _sample("Consortium", "demo")["metadata"]["name"]


BACKUP = {"s3": {"endpoint": "https://s3.example", "bucket": "bkt", "credentialsSecret": "creds"}}


def test_backup_defaults() -> None:
    obj = _with_backup(BACKUP)
    backup = apply_defaults(obj, _schema("Consortium"))["spec"]["backup"]
    assert backup == {
        "s3": {**BACKUP["s3"], "region": "us-east-1"},
        "mode": "Continuous",  # no maxLag default: mode Scheduled must leave it out
    }


def _backup_with(dotted: str, value: Any) -> dict[str, Any]:
    backup = copy.deepcopy(BACKUP)
    *parents, last = dotted.split(".")
    node = backup
    for part in parents:
        node = node.setdefault(part, {})
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return _with_backup(backup)


BACKUP_REJECTED = [
    ("s3", _DELETE, "spec.backup"),
    ("s3.endpoint", _DELETE, "spec.backup.s3"),
    ("s3.endpoint", "ftp://s3.example", "spec.backup.s3.endpoint"),
    ("s3.endpoint", "https://user:pw@s3.example", "spec.backup.s3.endpoint"),
    ("s3.endpoint", "https://s3.example?x=1", "spec.backup.s3.endpoint"),
    ("s3.endpoint", "https://s3.example/bucket", "spec.backup.s3.endpoint"),
    ("s3.bucket", "ab", "spec.backup.s3.bucket"),
    ("s3.bucket", "My_Bucket", "spec.backup.s3.bucket"),
    ("s3.bucket", "b" * 64, "spec.backup.s3.bucket"),
    ("s3.prefix", "/abs/", "spec.backup.s3.prefix"),
    ("s3.prefix", "no-slash", "spec.backup.s3.prefix"),
    ("s3.region", "US East", "spec.backup.s3.region"),
    ("s3.credentialsSecret", "Creds", "spec.backup.s3.credentialsSecret"),
    ("s3.credentialsSecret", _DELETE, "spec.backup.s3"),
    ("s3.bogus", 1, "spec.backup.s3"),
    ("mode", "Sometimes", "spec.backup.mode"),
    ("maxLag", "60", "spec.backup.maxLag"),
    ("schedule", "@daily", "spec.backup.schedule"),
    ("schedule", "0 * * *", "spec.backup.schedule"),
    ("retention", "a month", "spec.backup.retention"),
]


@pytest.mark.parametrize(
    ("field", "value", "where"),
    BACKUP_REJECTED,
    ids=[f"{f}={v!r}"[:60] for f, v, _ in BACKUP_REJECTED],
)
def test_backup_rejected(field: str, value: Any, where: str) -> None:
    assert _first_error_path("Consortium", _backup_with(field, value)) == where


BACKUP_ACCEPTED = [
    ("s3.endpoint", "http://minio.minio.svc:9000"),
    ("s3.endpoint", "https://[fd00::1]:9000/"),
    ("s3.bucket", "a.b-c.123"),
    ("s3.prefix", ""),
    ("s3.prefix", "prod/ledger-1/"),
    ("s3.credentialsSecret", "backup.creds-1"),
    ("s3.caBundle", CERT),
    ("mode", "Scheduled"),
    ("maxLag", "1m30s"),
    ("schedule", "0 */6 * * *"),
    ("retention", "30d"),
]


@pytest.mark.parametrize(
    ("field", "value"), BACKUP_ACCEPTED, ids=[f"{f}={v!r}"[:60] for f, v in BACKUP_ACCEPTED]
)
def test_backup_accepted_by_the_schema(field: str, value: Any) -> None:
    assert errors("Consortium", _backup_with(field, value)) == []


def test_a_members_recovery_key_is_a_public_key_pem() -> None:
    """The API server takes a P-256 public key PEM in spec.recoveryKey, and refuses anything
    shaped otherwise (a certificate, a private key) before the operator sees it."""
    pem = recovery_key_pem(ec.generate_private_key(ec.SECP256R1()).public_key())
    member = _sample("Member", "alice")
    member["spec"]["recoveryKey"] = pem
    assert errors("Member", member) == []
    for wrong in (
        member["spec"]["certificate"],
        "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
    ):
        member["spec"]["recoveryKey"] = wrong
        assert _first_error_path("Member", member) == "spec.recoveryKey"
