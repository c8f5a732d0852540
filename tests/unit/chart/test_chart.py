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
    NAMESPACE,
    RELEASE,
    REPO,
    helm,
    of_kind,
    one,
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
    **{
        f"{plural}.consortium.tee.dev.yaml": REPO / "crds" / f"{plural}.consortium.tee.dev.yaml"
        for plural in ("consortia", "members", "proposals", "consortiumbackups")
    },
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
# The chart's Member CRD adds one CEL transition rule to the kubectl copy: Helm installs CRDs
# without client-side validation and an API server older than 1.25 drops the unknown field,
# while kubectl (client-side validation against such a server) refuses the whole CRD.
MEMBERS = "members.consortium.tee.dev.yaml"
IMMUTABLE_RULE = """                  x-kubernetes-validations:
                    - rule: self == oldSelf
                      message: >-
                        spec.consortium is immutable: the consortium's ledger holds this
                        member; delete the Member and create a new one to move it
"""


def _without_cel(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _without_cel(v) for k, v in doc.items() if k != "x-kubernetes-validations"}
    if isinstance(doc, list):
        return [_without_cel(v) for v in doc]
    return doc


def test_crds_are_byte_copies() -> None:
    shipped = sorted(p.name for p in (CHART / "crds").iterdir())
    assert shipped == sorted(CRD_FILES)
    for name, source in CRD_FILES.items():
        if name == MEMBERS:
            continue
        assert (CHART / "crds" / name).read_bytes() == source.read_bytes(), (
            f"charts/consortium-operator/crds/{name} differs from {source.relative_to(REPO)}: "
            "copy it again"
        )


def test_the_charts_member_crd_is_the_kubectl_copy_plus_the_immutability_rule() -> None:
    chart = (CHART / "crds" / MEMBERS).read_text()
    assert chart.count(IMMUTABLE_RULE) == 1
    assert chart.replace(IMMUTABLE_RULE, "") == CRD_FILES[MEMBERS].read_text()
    doc = yaml.safe_load(chart)
    spec = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = spec["properties"]["consortium"]["x-kubernetes-validations"]
    assert rules[0]["rule"] == "self == oldSelf"
    assert "x-kubernetes-validations" not in CRD_FILES[MEMBERS].read_text()


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_crds_validate(kube_version: str) -> None:
    kinds = set()
    for path in sorted((CHART / "crds").iterdir()):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
            assert doc["kind"] == "CustomResourceDefinition"
            old = tuple(map(int, kube_version.split("."))) < (1, 25)  # CEL: unknown to these
            try:
                kubernetes_validate.validate(
                    _without_cel(doc) if old else doc, kube_version, strict=True
                )
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path.name}: {doc['metadata']['name']}: {exc.message}")
            kinds.add(doc["spec"]["names"]["kind"])
    assert kinds == {
        "Consortium",
        "Member",
        "Proposal",
        "ConsortiumBackup",
        "ClusterKopfPeering",
        "KopfPeering",
    }


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
    (["--set", "clusterWide=yes"], "at '/clusterWide'"),
    (
        ["--set", "clusterWide=true,watchNamespaces={team-a}"],
        "clusterWide: true watches every namespace; leave watchNamespaces empty",
    ),
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


Rule = dict[str, Any]


def _bound(docs: list[dict[str, Any]]) -> dict[str | None, list[Rule]]:
    """The rules granted to the operator's ServiceAccount, by where they apply: None for a
    ClusterRoleBinding (every namespace and the cluster scope), else the RoleBinding's
    namespace. Every binding must name a role the chart renders."""
    account = one(docs, "ServiceAccount")["metadata"]
    roles = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
        for d in docs
        if d["kind"] in {"Role", "ClusterRole"}
    }
    bound: dict[str | None, list[Rule]] = {}
    for binding in docs:
        if binding["kind"] not in {"RoleBinding", "ClusterRoleBinding"}:
            continue
        subject = {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
        assert binding["subjects"] == [subject], binding
        where = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        role = roles[(ref["kind"], where if ref["kind"] == "Role" else None, ref["name"])]
        bound.setdefault(where, []).extend(role["rules"])
    return bound


def _grants(rules: list[Rule]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs granted on every object (rules without resourceNames)."""
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
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
    source = (OPERATOR / "kube" / "k8s.py").read_text()
    kinds = {}
    for kind, group_version, plural in re.findall(r'"(\w+)": Kind\((f?"[^"]+"), "(\w+)"', source):
        group = group_version.strip('f"').rsplit("/", 1)[0] if "/" in group_version else ""
        kinds[kind] = (group.replace("{GROUP}", "consortium.tee.dev"), plural)
    assert {"Secret", "Pod", "StatefulSet", "Consortium", "Member"} <= set(kinds), kinds
    return kinds


def _needed() -> dict[tuple[str, str], set[str]]:
    """What the operator's source calls, read statically (so new calls fail this test)."""
    kinds = _kinds()
    sources = {str(p.relative_to(OPERATOR)): p.read_text() for p in OPERATOR.rglob("*.py")}
    everything = "\n".join(sources.values())
    needed: dict[tuple[str, str], set[str]] = {}

    def need(kind: str, *verbs: str, sub: str = "") -> None:
        group, plural = kinds[kind]
        needed.setdefault((group, plural + sub), set()).update(verbs)

    built = (
        sources["kube/builders.py"]
        + sources["proposals/intents.py"]
        + sources["proposals/relay.py"]
    )
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


# Where the operator acts with each values file: its namespaces, or None for every namespace.
WATCHED: dict[str, list[str] | None] = {
    "default.yaml": [NAMESPACE],
    "namespaced.yaml": ["team-a", "team-b"],
    "cluster-wide.yaml": None,
}
READS = {"get", "list", "watch"}


def _manages_workloads(grants: dict[tuple[str, str], set[str]]) -> bool:
    """The rights that make an operator node root where it has them."""
    return (
        {"create", "patch"} <= grants.get(("apps", "statefulsets"), set())
        and {"create", "patch"} <= grants.get(("", "secrets"), set())
        and "delete" in grants.get(("", "pods"), set())
        and "delete" in grants.get(("", "persistentvolumeclaims"), set())
    )


@pytest.mark.parametrize("values", sorted(WATCHED))
def test_rbac_covers_what_the_operator_calls(helm_bin: str, values: str) -> None:
    bound = _bound(render(helm_bin, values))
    watched = WATCHED[values]
    places: list[str | None] = [None] if watched is None else list(watched)
    for where in places:
        grants = _grants(bound.get(None, []) + (bound[where] if where else []))
        for key, verbs in _needed().items():
            missing = verbs - grants.get(key, set())
            assert not missing, f"{where}: {key}: the operator calls {sorted(missing)}, not granted"
        # Writes nobody makes are not granted.
        for (group, plural), verbs in grants.items():
            if (group, plural) != ("consortium.tee.dev", "consortia/finalizers"):
                assert "update" not in verbs, (group, plural)
            if "delete" in verbs:
                assert plural in {"pods", "persistentvolumeclaims", "proposals"}, plural
        for plural in ("secrets", "configmaps", "services"):
            assert not {"list", "watch"} & grants[("", plural)], plural
        assert ("events.k8s.io", "events") not in grants


@pytest.mark.parametrize("values", [v for v in values_files() if v != "cluster-wide.yaml"])
def test_namespaced_by_default_with_no_cluster_wide_writes(helm_bin: str, values: str) -> None:
    """Unless clusterWide is chosen, the operator's rights to manage workloads are Roles in the
    watched namespaces (the release namespace by default) and nowhere else; cluster-wide it may
    only read CRDs and namespaces, and get and patch Consortia and Members (a finalizer in a
    namespace being deleted, whose Role is gone, must still be released). The roles that do
    write cluster-wide (the aggregated edit role) are bound to nobody by the chart."""
    docs = render(helm_bin, values)
    given = yaml.safe_load(values_path(values).read_text()) or {}
    watched = given.get("watchNamespaces") or [NAMESPACE]
    bound = _bound(docs)
    assert sorted(k for k in bound if k is not None) == sorted(watched)
    for rule in bound.get(None, []):
        if set(rule["resources"]) == {"consortia", "members"}:
            # Only to release finalizers in a namespace being deleted (its Role goes first).
            assert set(rule["verbs"]) == {"get", "patch"}, rule
            continue
        assert set(rule["verbs"]) <= READS, rule
        assert set(rule["resources"]) <= {"customresourcedefinitions", "namespaces"}, rule
    roles = of_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(watched)
    for where in watched:
        assert _manages_workloads(_grants(bound[where])), where
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "--namespace"] == watched
    assert "--all-namespaces" not in args
    if given.get("peering", {}).get("create", True):
        peerings = of_kind(docs, "KopfPeering")
        assert sorted(p["metadata"]["namespace"] for p in peerings) == sorted(watched)
    assert not of_kind(docs, "ClusterKopfPeering")


def test_cluster_wide_is_the_cluster_role(helm_bin: str) -> None:
    docs = render(helm_bin, "cluster-wide.yaml")
    bound = _bound(docs)
    assert list(bound) == [None], "no RoleBindings when cluster-wide"
    assert not of_kind(docs, "Role") and not of_kind(docs, "KopfPeering")
    grants = _grants(bound[None])
    assert _manages_workloads(grants)
    assert ("", "namespaces") not in grants  # kopf does not observe namespaces cluster-wide
    names = {b["roleRef"]["name"] for b in of_kind(docs, "ClusterRoleBinding")}
    assert names == {RELEASE, f"{RELEASE}-cluster"}
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args and "--namespace" not in args
    assert one(docs, "ClusterKopfPeering")["metadata"]["name"] == "consortium-operator"


def test_cluster_wide_consequence_is_documented() -> None:
    """Choosing clusterWide says what it costs, where the user chooses it."""
    values = (CHART / "values.yaml").read_text()
    comment = values[: values.index("\nclusterWide:")].rsplit("# --", 1)[1]
    assert "root on" in comment and "every node" in comment and "kube-system" in comment
    for doc in (CHART / "README.md", REPO / "docs/reference/security.md"):
        text = " ".join(doc.read_text().split())
        assert "clusterWide" in text and "root on every node" in text, doc


def test_peering_writes_are_limited_to_the_peering_object(helm_bin: str) -> None:
    for values, plural, name in [
        ("cluster-wide.yaml", "clusterkopfpeerings", "consortium-operator"),
        ("default.yaml", "kopfpeerings", "consortium-operator"),
        ("namespaced.yaml", "kopfpeerings", "consortium-operator-teams"),
    ]:
        rules = [
            rule
            for rules in _bound(render(helm_bin, values)).values()
            for rule in rules
            if plural in rule["resources"]
        ]
        assert rules, values
        for rule in rules:
            if "patch" in rule["verbs"]:
                assert rule["resourceNames"] == [name], rule


def test_templates_have_no_tabs_and_end_with_newline() -> None:
    for path in sorted(Path(CHART).rglob("*")):
        if "files" in path.relative_to(CHART).parts:  # written by the observability work
            continue
        if path.is_file() and path.suffix in {".yaml", ".tpl", ".txt", ".json"}:
            text = path.read_text()
            assert "\t" not in text, path
            assert text.endswith("\n"), path
