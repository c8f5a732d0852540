"""``helm template`` of the chart with each values file in values/, checked without a cluster.

Every built-in manifest validates strictly (unknown fields are errors) against the Kubernetes
1.20 and 1.28 schemas of kubernetes-validate; custom kinds are checked structurally. Then what
the operator relies on: the restricted security context, the flags, host networking only where
asked, the monitoring objects carrying files/alerts.yaml and files/dashboard.json unchanged.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.unit.chart.support import (
    CHART,
    CUSTOM_KINDS,
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

# kubernetes-validate 1.28.3 (the last release with 1.20 schemas) uses jsonschema's RefResolver.
pytestmark = [
    pytest.mark.filterwarnings("ignore:jsonschema.RefResolver is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The metaschema specified by:DeprecationWarning"),
]

VALUES = values_files()
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
PEERING_CRDS = CHART / "crds" / "1-peering-crds.yaml"


def test_values_files_present() -> None:
    assert set(VALUES) >= {
        "default.yaml",
        "minimal.yaml",
        "hostnetwork-test.yaml",
        "all-features.yaml",
        "namespaced.yaml",
        "cluster-wide.yaml",
    }


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    containers: list[dict[str, Any]] = pod["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _peering_schemas() -> dict[str, dict[str, Any]]:
    schemas: dict[str, dict[str, Any]] = {}
    for crd in yaml.safe_load_all(PEERING_CRDS.read_text()):
        schemas[crd["spec"]["names"]["kind"]] = crd["spec"]["versions"][0]["schema"][
            "openAPIV3Schema"
        ]
    return schemas


def _check_custom(doc: dict[str, Any]) -> None:
    """What kubernetes-validate cannot: apiVersion/kind/metadata, and the kinds' essentials."""
    kind = doc["kind"]
    meta = doc["metadata"]
    assert DNS_SUBDOMAIN.match(meta["name"]) and len(meta["name"]) <= 253, meta
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}, doc
    if kind in {"ServiceMonitor", "PrometheusRule"}:
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert meta["namespace"]
    if kind == "ServiceMonitor":
        (endpoint,) = doc["spec"]["endpoints"]
        assert endpoint["port"] == "metrics"
        assert doc["spec"]["selector"]["matchLabels"]
    if kind == "PrometheusRule":
        groups = doc["spec"]["groups"]
        assert groups, "no rule groups"
        for group in groups:
            assert isinstance(group["name"], str) and group["rules"], group
            for rule in group["rules"]:
                assert ("alert" in rule) != ("record" in rule), rule
                assert isinstance(rule["expr"], (str, int)), rule
    if kind in {"ClusterKopfPeering", "KopfPeering"}:
        assert doc["apiVersion"] == "kopf.dev/v1"
        assert ("namespace" in meta) == (kind == "KopfPeering"), meta
        jsonschema.validate(doc, _peering_schemas()[kind])


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", VALUES)
def test_manifests_validate(helm_bin: str, values: str, kube_version: str) -> None:
    docs = render(helm_bin, values, kube_version)
    assert docs
    seen: set[tuple[str, str, str | None]] = set()
    for doc in docs:
        key = (doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace"))
        assert key not in seen, f"duplicate object {key}"
        seen.add(key)
        if doc["kind"] in CUSTOM_KINDS:
            _check_custom(doc)
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{values} on {kube_version}: {doc['kind']} {key[1]}: {exc.message}")


@pytest.mark.parametrize("values", VALUES)
def test_deployment_is_restricted(helm_bin: str, values: str) -> None:
    docs = render(helm_bin, values)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["runAsUser"] == 10001
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not sc.get("privileged")
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert container["image"].split(":")[-1] != "latest"
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert not pod.get("hostPID") and not pod.get("hostIPC")
    for volume in pod["volumes"]:
        assert "hostPath" not in volume


@pytest.mark.parametrize("values", VALUES)
def test_operator_flags(helm_bin: str, values: str) -> None:
    docs = render(helm_bin, values)
    container = _container(docs)
    assert container["command"] == ["consortium-operator"]
    args = container["args"]
    source = yaml.safe_load((CHART / "values.yaml").read_text())
    given = yaml.safe_load(values_path(values).read_text())
    peering = (given or {}).get("peering", {}).get("name", source["peering"]["name"])
    assert args[args.index("--peering") + 1] == peering
    assert not any(a.startswith("--priority") for a in args), "replicas must not share a priority"
    assert "--standalone" not in args
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert args[args.index("--metrics-port") + 1] == str(ports["metrics"])
    liveness = args[args.index("--liveness") + 1]
    assert liveness == f"http://0.0.0.0:{ports['healthz']}/healthz"
    probe = container["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "healthz"}
    service = one(docs, "Service")
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics" and port["targetPort"] == "metrics"
    assert service["spec"]["type"] == "ClusterIP"
    deployment_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= deployment_labels.items()
    env = _env(container)
    assert env["CLUSTER_DOMAIN"] == (given or {}).get("clusterDomain", "cluster.local")
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert ("CONSORTIUM_OPERATOR_INSECURE_TEST_FAULTS" in env) == bool(
        (given or {}).get("insecureTestFaults")
    )


def test_default_deployment(helm_bin: str) -> None:
    docs = render(helm_bin, "default.yaml")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    container = _container(docs)
    assert container["image"] == "localhost/consortium-operator:0.1.0"  # appVersion, not latest
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # Least privilege by default: the release namespace only, and its peering object there.
    args = container["args"]
    assert args[args.index("--namespace") + 1] == NAMESPACE and args.count("--namespace") == 1
    peering = one(docs, "KopfPeering")
    assert peering["metadata"] == {**peering["metadata"], "name": "consortium-operator"}
    assert not of_kind(docs, "ClusterKopfPeering")
    assert one(docs, "RoleBinding")["roleRef"]["kind"] == "Role"
    assert not of_kind(docs, "ServiceMonitor") and not of_kind(docs, "PrometheusRule")
    assert not of_kind(docs, "ConfigMap") and not of_kind(docs, "PodDisruptionBudget")
    account = one(docs, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert (
        deployment["spec"]["template"]["spec"]["serviceAccountName"]
        == (account["metadata"]["name"])
    )
    for doc in docs:
        if doc["kind"] not in {"ClusterRole", "ClusterRoleBinding"}:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]


@pytest.mark.parametrize("values", VALUES)
def test_host_network_only_when_asked(helm_bin: str, values: str) -> None:
    docs = render(helm_bin, values)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    env = _env(_container(docs))
    if values in ("hostnetwork-test.yaml", "deploy/local-cluster-values.yaml"):
        assert pod["hostNetwork"] is True
        assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
        assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
        assert env["KUBERNETES_SERVICE_PORT"] == "6443"
        # Test faults only in the tests' values, never in what the demo installs.
        faults = env.get("CONSORTIUM_OPERATOR_INSECURE_TEST_FAULTS")
        assert faults == ("1" if values == "hostnetwork-test.yaml" else None)
        strategy = one(docs, "Deployment")["spec"]["strategy"]["rollingUpdate"]
        assert strategy == {"maxSurge": 0, "maxUnavailable": 1}
    else:
        assert "hostNetwork" not in pod and "dnsPolicy" not in pod
        assert "KUBERNETES_SERVICE_HOST" not in env and "KUBERNETES_SERVICE_PORT" not in env


@pytest.mark.parametrize("values", VALUES)
def test_node_network_policy_admits_the_operator_pods(helm_bin: str, values: str) -> None:
    """Whatever the values (nameOverride included), the operator's pods carry the label every
    Consortium's NetworkPolicy admits the operator by."""
    from consortium_operator.api.spec import parse_consortium  # noqa: PLC0415
    from consortium_operator.kube import builders  # noqa: PLC0415

    sample = yaml.safe_load((REPO / "crds/samples/consortium.yaml").read_text())
    policy = builders.network_policy(parse_consortium("demo", sample["spec"]), "ns", "uid")
    labels = one(render(helm_bin, values), "Deployment")["spec"]["template"]["metadata"]["labels"]
    admitted = [
        peer["podSelector"]["matchLabels"]
        for peer in policy["spec"]["ingress"][0]["from"]
        if "namespaceSelector" in peer
    ]
    assert any(match.items() <= labels.items() for match in admitted), (admitted, labels)


def test_namespaced_watch(helm_bin: str) -> None:
    docs = render(helm_bin, "namespaced.yaml")
    args = _container(docs)["args"]
    watched = [args[i + 1] for i, a in enumerate(args) if a == "--namespace"]
    assert watched == ["team-a", "team-b"]
    bindings = of_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    main_role = f"{RELEASE}"
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": main_role,
        }
        (subject,) = binding["subjects"]
        assert subject["namespace"] == NAMESPACE
    roles = of_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert {r["metadata"]["name"] for r in roles} == {main_role}
    # The namespaced permissions are not granted cluster-wide.
    assert [b["roleRef"]["name"] for b in of_kind(docs, "ClusterRoleBinding")] == [
        f"{main_role}-cluster"
    ]
    peerings = of_kind(docs, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert {p["metadata"]["name"] for p in peerings} == {"consortium-operator-teams"}
    assert not of_kind(docs, "ClusterKopfPeering")
    cluster_roles = {r["metadata"]["name"]: r for r in of_kind(docs, "ClusterRole")}
    assert main_role not in cluster_roles
    cluster_rules = {
        res: set(rule["verbs"])
        for rule in cluster_roles[f"{main_role}-cluster"]["rules"]
        for res in rule["resources"]
    }
    assert cluster_rules == {
        "customresourcedefinitions": {"list", "watch"},
        "namespaces": {"get", "list", "watch"},
        # releasing finalizers in a namespace being deleted, whose Role went first
        "consortia": {"get", "patch"},
        "members": {"get", "patch"},
    }


def test_minimal(helm_bin: str) -> None:
    docs = render(helm_bin, "minimal.yaml")
    assert one(docs, "Deployment")["spec"]["replicas"] == 1
    assert not of_kind(docs, "ClusterKopfPeering") and not of_kind(docs, "KopfPeering")
    assert {r["metadata"]["name"] for r in of_kind(docs, "ClusterRole")} == {f"{RELEASE}-cluster"}
    assert one(docs, "Role")["metadata"]["name"] == RELEASE
    assert "resources" not in _container(docs)


def test_all_features(helm_bin: str) -> None:
    docs = render(helm_bin, "all-features.yaml")
    container = _container(docs)
    assert container["image"] == (
        "registry.example.com/tee/consortium-operator@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
    assert _env(container)["CONSORTIUM_OPERATOR_WORKERS"] == "32"
    assert "--metrics-address=0.0.0.0" in container["args"]
    pod = one(docs, "Deployment")["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"example.com/team": "tee"}
    assert pod["metadata"]["labels"]["example.com/tier"] == "control"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["spec"]["tolerations"][0]["key"] == "dedicated"
    assert "podAntiAffinity" in pod["spec"]["affinity"]
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"

    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["interval"] == "15s" and endpoint["scrapeTimeout"] == "5s"
    assert endpoint["honorLabels"] is True  # keeps the metrics' own `namespace` label

    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    if isinstance(alerts, dict):  # a rule file's `groups:` mapping is accepted too
        alerts = alerts["groups"]
    assert rule["spec"]["groups"] == alerts

    dashboard = one(docs, "ConfigMap")
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Consortium"}
    (text,) = dashboard["data"].values()
    assert json.loads(text) == json.loads((CHART / "files" / "dashboard.json").read_text())


@pytest.mark.parametrize(
    ("kube_version", "api_version"), [("1.20", "policy/v1beta1"), ("1.28", "policy/v1")]
)
def test_pdb_api_version_follows_the_cluster(
    helm_bin: str, kube_version: str, api_version: str
) -> None:
    docs = render(helm_bin, "all-features.yaml", kube_version)
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == api_version
    assert pdb["spec"]["minAvailable"] == 2


def test_dashboard_label_is_configurable(helm_bin: str) -> None:
    docs = render(
        helm_bin,
        None,
        "1.28",
        (
            "--set",
            "dashboard.enabled=true,dashboard.labelKey=grafana.com/dashboard,dashboard.labelValue=yes",
        ),
    )
    labels = one(docs, "ConfigMap")["metadata"]["labels"]
    assert labels["grafana.com/dashboard"] == "yes" and "grafana_dashboard" not in labels


def _notes(helm_bin: str, tmp_path: Path, *args: str) -> str:
    """NOTES.txt rendered: `helm install --dry-run` wants a cluster and `helm template` skips
    NOTES, so a copy of the chart renders it as a named template inside a ConfigMap."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes_test.tpl").write_text(
        '{{- define "notes-test" -}}\n' + notes + "{{- end }}\n"
    )
    (chart / "templates" / "notes-test.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ include "notes-test" . | quote }}\n'
    )
    out = helm(
        helm_bin,
        "template",
        RELEASE,
        str(chart),
        "--namespace",
        NAMESPACE,
        "--show-only",
        "templates/notes-test.yaml",
        *args,
    )
    assert out.returncode == 0, out.stderr
    text: str = yaml.safe_load(out.stdout)["data"]["notes"]
    return text


def test_notes(helm_bin: str, tmp_path: Path) -> None:
    notes = _notes(helm_bin, tmp_path)
    assert "kubectl apply -n <namespace> -f crds/samples/members.yaml" in notes
    assert "kubectl apply -n <namespace> -f crds/samples/consortium.yaml" in notes
    assert "kubectl explain consortium.spec" in notes
    assert "kubectl get consortia -n <namespace> -w" in notes
    assert f"{RELEASE}-metrics.{NAMESPACE}.svc.cluster.local:8080/metrics" in notes
    assert "WARNING" not in notes
    assert f"It watches namespaces: {NAMESPACE} (Role and RoleBinding there" in notes
    assert "EVERY namespace" not in notes
    assert "{{" not in notes and "<no value>" not in notes


def test_notes_warn_about_test_faults(helm_bin: str, tmp_path: Path) -> None:
    notes = _notes(
        helm_bin,
        tmp_path,
        "--set",
        "insecureTestFaults=true,serviceMonitor.enabled=true,watchNamespaces={team-a}",
    )
    assert "WARNING: insecureTestFaults is on" in notes
    assert "It watches namespaces: team-a (" in notes
    assert "ServiceMonitor" in notes
    assert "<no value>" not in notes


def test_notes_say_what_cluster_wide_costs(helm_bin: str, tmp_path: Path) -> None:
    notes = " ".join(_notes(helm_bin, tmp_path, "--set", "clusterWide=true").split())
    assert "It watches EVERY namespace (clusterWide: true)" in notes
    assert "kube-system included" in notes and "root on every node" in notes


def test_kube_version_floor(helm_bin: str) -> None:
    out = helm(helm_bin, "template", RELEASE, str(CHART), "--kube-version", "1.19.0")
    assert out.returncode != 0
    assert ">=1.20.0-0" in out.stderr
