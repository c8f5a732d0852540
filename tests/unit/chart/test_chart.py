"""The chart as files: helm lint, values.schema.json (and what it rejects), values.yaml
documentation, the CRDs, and RBAC that is commented and covers what the operator calls."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.unit.chart.support import (
    CHART,
    KUBE_VERSIONS,
    RELEASE,
    REPO,
    helm,
    render,
    values_files,
    values_path,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:jsonschema.RefResolver is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The metaschema specified by:DeprecationWarning"),
]

SCHEMA_FILE = CHART / "values.schema.json"
OPERATOR = REPO / "operator" / "consortium_operator"
CRD_FILES = {
    "consortia.consortium.tee.dev.yaml": REPO / "crds" / "consortia.consortium.tee.dev.yaml",
    "members.consortium.tee.dev.yaml": REPO / "crds" / "members.consortium.tee.dev.yaml",
    "proposals.consortium.tee.dev.yaml": REPO / "crds" / "proposals.consortium.tee.dev.yaml",
    "1-peering-crds.yaml": REPO / "crds" / "kopf" / "1-peering-crds.yaml",
}


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return schema


# ---------------------------------------------------------------------------- lint, metadata
@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
def test_helm_lint(helm_bin: str, strict: bool) -> None:
    out = helm(helm_bin, "lint", str(CHART), *(["--strict"] if strict else []))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout


@pytest.mark.parametrize("values", values_files())
def test_helm_lint_strict_with_values(helm_bin: str, values: str) -> None:
    out = helm(helm_bin, "lint", str(CHART), "--strict", "-f", str(values_path(values)))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "consortium-operator"
    assert chart["version"] == "0.1.0" and chart["appVersion"] == "0.1.0"
    assert chart["kubeVersion"] == ">=1.20.0-0"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'version = "{chart["appVersion"]}"' in pyproject


def test_helm_is_v3(helm_bin: str) -> None:
    out = helm(helm_bin, "version", "--short")
    assert out.stdout.startswith("v3."), out.stdout


# ---------------------------------------------------------------------------- CRDs
def test_crds_are_byte_copies() -> None:
    shipped = sorted(p.name for p in (CHART / "crds").iterdir())
    assert shipped == sorted(CRD_FILES)
    for name, source in CRD_FILES.items():
        assert (CHART / "crds" / name).read_bytes() == source.read_bytes(), (
            f"charts/consortium-operator/crds/{name} differs from {source.relative_to(REPO)}: "
            "copy it again"
        )


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_crds_validate(kube_version: str) -> None:
    kinds = set()
    for path in sorted((CHART / "crds").iterdir()):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
            assert doc["kind"] == "CustomResourceDefinition"
            try:
                kubernetes_validate.validate(doc, kube_version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path.name}: {doc['metadata']['name']}: {exc.message}")
            kinds.add(doc["spec"]["names"]["kind"])
    assert kinds == {"Consortium", "Member", "Proposal", "ClusterKopfPeering", "KopfPeering"}


# ---------------------------------------------------------------------------- values schema
def _object_nodes(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    types = node.get("type")
    if types == "object" or (isinstance(types, list) and "object" in types):
        found.append((path or "/", node))
    for key, child in node.get("properties", {}).items():
        found += _object_nodes(child, f"{path}/{key}")
    if isinstance(node.get("items"), dict):
        found += _object_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _object_nodes(node["additionalProperties"], f"{path}/*")
    return found


def test_schema_is_draft07_and_closed() -> None:
    schema = _schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    for path, node in _object_nodes(schema):
        assert "additionalProperties" in node, f"{path}: additionalProperties not set"
        if "properties" in node:
            assert node["additionalProperties"] is False, f"{path}: must be closed"
        elif node["additionalProperties"] is True:
            # Only Kubernetes objects passed through as-is (the API server checks them).
            assert "checked by the API server" in node.get("description", "") or path == (
                "/global"
            ), path


def _keys(values: dict[str, Any], schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths of values.yaml keys that the schema declares as properties, checked both ways."""
    props = schema.get("properties", {})
    declared = set(props) - {"global"}
    assert set(values) <= set(props), f"{path}: not in the schema: {set(values) - set(props)}"
    if values and schema.get("additionalProperties") is False:  # the chart's own structure
        missing = declared - set(values)
        assert not missing, f"{path}: no default in values.yaml for {missing}"
    found = []
    for key, value in values.items():
        found.append(f"{path}/{key}")
        if isinstance(value, dict) and "properties" in props[key]:
            found += _keys(value, props[key], f"{path}/{key}")
    return found


def test_values_match_schema_and_are_documented() -> None:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    schema = _schema()
    jsonschema.Draft7Validator(schema).validate(values)
    declared = set(_keys(values, schema))
    # Every declared key has a comment line directly above it.
    stack: list[tuple[int, str]] = []
    lines = text.splitlines()
    checked = set()
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z_][\w.-]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "".join(f"/{k}" for _, k in stack) + f"/{match.group(2)}"
        stack.append((indent, match.group(2)))
        if path in declared:
            checked.add(path)
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#"), f"values.yaml line {number + 1} ({path}): no comment"
    assert checked == declared


BAD_VALUES = [
    (["--set", "bogus=1"], "additional properties 'bogus' not allowed"),
    (["--set", "image.bogus=1"], "at '/image': additional properties 'bogus' not allowed"),
    (["--set", "serviceMonitor.intervall=30s"], "at '/serviceMonitor': additional properties"),
    (["--set", "replicaCount=0"], "at '/replicaCount'"),
    (["--set", "image.pullPolicy=Sometimes"], "at '/image/pullPolicy'"),
    (["--set", "metrics.port=70000"], "at '/metrics/port'"),
    (["--set", "liveness.port=0"], "at '/liveness/port'"),
    (["--set", "kubernetesServicePort=70000"], "at '/kubernetesServicePort'"),
    (["--set", "image.tag=latest"], "at '/image/tag'"),
    (["--set", "logLevel=LOUD"], "at '/logLevel'"),
    (["--set", "watchNamespaces={Team_A}"], "at '/watchNamespaces/0'"),
    (["--set", "extraArgs={--priority=5}"], "at '/extraArgs/0'"),
    (["--set", "serviceMonitor.interval=often"], "at '/serviceMonitor/interval'"),
    (["--set-string", "replicaCount=2"], "at '/replicaCount'"),
    (
        ["--set", "podDisruptionBudget.enabled=true,podDisruptionBudget.minAvailable=2"],
        "podDisruptionBudget.minAvailable (2) must be below replicaCount (2)",
    ),
    (
        ["--set", "serviceAccount.create=false"],
        "serviceAccount.name is required when serviceAccount.create is false",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD_VALUES, ids=[a[1] for a, _ in BAD_VALUES])
def test_bad_values_are_rejected(helm_bin: str, args: list[str], message: str) -> None:
    out = helm(helm_bin, "template", RELEASE, str(CHART), *args)
    assert out.returncode != 0, f"accepted: {args}"
    assert message in out.stderr, out.stderr


# ---------------------------------------------------------------------------- RBAC
def test_every_cluster_role_rule_is_commented() -> None:
    lines = (CHART / "templates" / "rbac.yaml").read_text().splitlines()
    rules = [i for i, line in enumerate(lines) if re.match(r"^\s*- apiGroups:", line)]
    assert len(rules) >= 10
    for i in rules:
        assert lines[i - 1].strip().startswith("#"), (
            f"templates/rbac.yaml line {i + 1}: no comment directly above the rule"
        )


def _grants(docs: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs granted on every object (rules without resourceNames)."""
    names = {b["roleRef"]["name"] for b in docs if b["kind"] == "ClusterRoleBinding"}
    grants: dict[tuple[str, str], set[str]] = {}
    for role in docs:
        if role["kind"] != "ClusterRole" or role["metadata"]["name"] not in names:
            continue
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            assert "*" not in rule["apiGroups"], rule
            if "resourceNames" in rule:
                continue
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def _kinds() -> dict[str, tuple[str, str]]:
    """Kind -> (apiGroup, plural), from the operator's own table in k8s.py."""
    source = (OPERATOR / "k8s.py").read_text()
    kinds = {}
    for kind, group_version, plural in re.findall(r'"(\w+)": Kind\((f?"[^"]+"), "(\w+)"', source):
        group = group_version.strip('f"').rsplit("/", 1)[0] if "/" in group_version else ""
        kinds[kind] = (group.replace("{GROUP}", "consortium.tee.dev"), plural)
    assert {"Secret", "Pod", "StatefulSet", "Consortium", "Member"} <= set(kinds), kinds
    return kinds


def _needed() -> dict[tuple[str, str], set[str]]:
    """What the operator's source calls, read statically (so new calls fail this test)."""
    kinds = _kinds()
    sources = {p.name: p.read_text() for p in OPERATOR.glob("*.py")}
    everything = "\n".join(sources.values())
    needed: dict[tuple[str, str], set[str]] = {}

    def need(kind: str, *verbs: str, sub: str = "") -> None:
        group, plural = kinds[kind]
        needed.setdefault((group, plural + sub), set()).update(verbs)

    built = sources["builders.py"] + sources["intents.py"] + sources["relay.py"]
    for kind in re.findall(r'"kind": "(\w+)"', built):
        if kind != "Consortium":  # the owner reference, not an applied object
            need(kind, "get", "create", "patch")  # get the live object, then server-side apply
    calls = r'\b(?:kube\(\)|kube|k)\.(get|list|delete)\(\s*"([A-Z]\w+)"'
    for verb, kind in re.findall(calls, everything):
        need(kind, verb)
    for kind in re.findall(r'patch_status\(\s*"(\w+)"', everything):
        need(kind, "patch", sub="/status")
    if re.search(r"\.event\(", everything):
        need("Event", "create")
    for group, plural in re.findall(
        r'kopf\.(?:on\.event|on\.delete|timer)\(\s*(GROUP|"")\s*,\s*(?:VERSION|"v1")\s*,\s*"(\w+)"',
        sources["handlers.py"],
    ):
        key = ("consortium.tee.dev" if group == "GROUP" else "", plural)
        needed.setdefault(key, set()).update({"list", "watch"})
    for plural in re.findall(
        r'kopf\.on\.delete\(\s*GROUP\s*,\s*VERSION\s*,\s*"(\w+)"', sources["handlers.py"]
    ):
        needed.setdefault(("consortium.tee.dev", plural), set()).add("patch")  # the finalizer
    return needed


@pytest.mark.parametrize("values", ["default.yaml", "namespaced.yaml"])
def test_rbac_covers_what_the_operator_calls(helm_bin: str, values: str) -> None:
    docs = render(helm_bin, values)
    if values == "namespaced.yaml":  # namespaced rules come through RoleBindings
        bound = {b["roleRef"]["name"] for b in docs if b["kind"] == "RoleBinding"}
        docs = docs + [{"kind": "ClusterRoleBinding", "roleRef": {"name": name}} for name in bound]
    grants = _grants(docs)
    for key, verbs in _needed().items():
        missing = verbs - grants.get(key, set())
        assert not missing, f"{key}: the operator calls {sorted(missing)}, not granted"
    # Writes nobody makes are not granted.
    for (group, plural), verbs in grants.items():
        if (group, plural) != ("consortium.tee.dev", "consortia/finalizers"):
            assert "update" not in verbs, (group, plural)
        if "delete" in verbs:
            assert plural in {"pods", "persistentvolumeclaims", "proposals"}, plural
    for plural in ("secrets", "configmaps", "services"):
        assert not {"list", "watch"} & grants[("", plural)], plural
    assert ("events.k8s.io", "events") not in grants


def test_peering_writes_are_limited_to_the_peering_object(helm_bin: str) -> None:
    for values, plural in [
        ("default.yaml", "clusterkopfpeerings"),
        ("namespaced.yaml", "kopfpeerings"),
    ]:
        docs = render(helm_bin, values)
        rules = [
            rule
            for role in docs
            if role["kind"] == "ClusterRole"
            for rule in role["rules"]
            if plural in rule["resources"]
        ]
        assert rules, values
        for rule in rules:
            if "patch" in rule["verbs"]:
                assert rule["resourceNames"], rule


def test_templates_have_no_tabs_and_end_with_newline() -> None:
    for path in sorted(Path(CHART).rglob("*")):
        if "files" in path.relative_to(CHART).parts:  # written by the observability work
            continue
        if path.is_file() and path.suffix in {".yaml", ".tpl", ".txt", ".json"}:
            text = path.read_text()
            assert "\t" not in text, path
            assert text.endswith("\n"), path
