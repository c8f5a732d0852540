"""The main demo: a consortium on Kubernetes, installed the way a user installs it.

Why a script and not a page of instructions: a newcomer should see the whole product work
(operator installed with helm, nodes attested, a transaction with a receipt verified offline,
metrics in Prometheus) with one command, and then find every piece where a user would look.
Every step runs the real tool (``kubectl``, ``helm``, ``consortiumctl``, ``prometheus``) and
prints the command, so each one can be repeated by hand.

Platforms:

* ``local`` — the project's own Kubernetes (``scripts/kube.sh``: v1.20 built from Debian's
  source, containerd + runc, no kube-proxy, no DNS). Images are built offline and imported;
  the operator runs in a pod on the host network; Debian's Prometheus runs on the host and
  finds the node pods through the Kubernetes API (``kubernetes_sd_configs``).
* ``kind`` — for users with Docker: ``kind create cluster --config kind-config.yaml``, images
  built with Docker and loaded with ``kind load``; the chart with its defaults.

``auto`` (default) picks kind when ``kind`` and a working Docker are present, else local.
``down`` stops what the demo started: Prometheus, the sample namespace, the release, and the
cluster if the demo brought it up. State lives in ``<data-dir>/state.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
KUBE_RUN = Path(os.environ.get("KUBE_RUN", "/tmp/consortium-kube"))  # noqa: S108 - kube.sh's
LOCAL_KUBECONFIG = KUBE_RUN / "admin.kubeconfig"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "consortium-operator"
KUBE_BIN = CACHE / "kube-v1.20.2" / "bin"
SAMPLES = ROOT / "crds" / "samples"
RELEASE, SYSTEM = "co", "consortium-system"
KIND_CLUSTER = "consortium"
OPERATOR_METRICS = "127.0.0.1:18080"  # deploy/local-cluster-values.yaml: metrics.port on the host


class DemoError(Exception):
    """A step failed; the message says which and why."""


@dataclass
class State:
    """What the demo started, so ``down`` stops exactly that."""

    platform: str
    namespace: str
    started_cluster: bool = False
    prometheus_pid: int = 0
    sync_pid: int = 0
    prometheus_url: str = ""
    kubeconfig: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def load(path: Path) -> State:
        return State(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def shown(args: list[str]) -> str:
    """A command as the user would type it (repository paths relative, tools by name)."""
    words = [Path(args[0]).name if "/" in args[0] else args[0]]
    words += [a.replace(str(ROOT) + "/", "") for a in args[1:]]
    return shlex.join(words)


class Runner:
    """Runs the real tools with the demo's KUBECONFIG, printing each command."""

    def __init__(self, kubeconfig: str) -> None:
        self.env = {**os.environ}
        if kubeconfig:
            self.env["KUBECONFIG"] = kubeconfig
        self.kubectl_bin = str(KUBE_BIN / "kubectl") if (KUBE_BIN / "kubectl").exists() else ""
        self.kubectl_bin = self.kubectl_bin or shutil.which("kubectl") or "kubectl"
        self.helm_bin = ""  # scripts/install-helm.sh's binary, found on first use

    def run(
        self, *args: str, stdin: str | None = None, quiet: bool = False, check: bool = True
    ) -> str:
        argv = list(args)
        if not quiet:
            print("  $", shown(argv), flush=True)
        result = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, env=self.env, check=False
        )
        if check and result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-15:]
            raise DemoError(f"`{shown(argv)}` failed ({result.returncode}):\n" + "\n".join(tail))
        return result.stdout

    def stream(self, *args: str) -> None:
        """Run with output shown as it comes (long builds)."""
        print("  $", shown(list(args)), flush=True)
        if subprocess.run(list(args), env=self.env, check=False).returncode != 0:
            raise DemoError(f"`{shown(list(args))}` failed")

    def kubectl(self, *args: str, **kw: Any) -> str:
        return self.run(self.kubectl_bin, *args, **kw)

    def helm(self, *args: str, **kw: Any) -> str:
        if not self.helm_bin:
            out = subprocess.run(
                ["bash", str(ROOT / "scripts/install-helm.sh")],
                capture_output=True,
                text=True,
                check=True,
            )
            self.helm_bin = out.stdout.strip().splitlines()[-1]
        return self.run(self.helm_bin, *args, **kw)


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise DemoError("no free TCP port on 127.0.0.1")


def docker_works() -> bool:
    if not shutil.which("docker"):
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=30)
    return probe.returncode == 0


def choose_platform(asked: str) -> str:
    if asked != "auto":
        return asked
    return "kind" if shutil.which("kind") and docker_works() else "local"


# --- cluster and images ----------------------------------------------------------------------


def cluster_local(r: Runner) -> bool:
    """Bring up scripts/kube.sh's cluster unless it runs; build and import the images."""
    if os.geteuid() != 0:
        raise DemoError(
            "the local cluster runs containerd and a kubelet, which need root: "
            "run `sudo scripts/demo.sh` (or install kind and Docker for the kind platform)"
        )
    pid = KUBE_RUN / "apiserver.pid"
    running = pid.exists() and _alive(int(pid.read_text().strip() or 0))
    step("Kubernetes: the local cluster (scripts/kube.sh; the first run builds it, ~10 min)")
    if running:
        print(f"  already running ({KUBE_RUN}); the demo will leave it up")
    else:
        r.stream("bash", str(ROOT / "scripts/kube.sh"), "up")
    step("Images: built offline with buildah and imported into containerd")
    r.stream("bash", str(ROOT / "scripts/build-images.sh"), "--load")
    return not running


def cluster_kind(r: Runner) -> bool:
    step("Kubernetes: kind (kind-config.yaml)")
    clusters = r.run("kind", "get", "clusters", quiet=True).split()
    started = KIND_CLUSTER not in clusters
    if started:
        r.stream("kind", "create", "cluster", "--config", str(ROOT / "kind-config.yaml"))
    else:
        print(f"  kind cluster {KIND_CLUSTER} exists; the demo will leave it up")
    step("Images: built with Docker and loaded into kind")
    version = _version()
    for name, dockerfile in (
        ("node", "node_image/Dockerfile"),
        ("operator", "operator/Dockerfile"),
    ):
        image = f"localhost/consortium-{name}:{version}"
        r.stream("docker", "build", "-f", str(ROOT / dockerfile), "-t", image, str(ROOT))
        r.stream("kind", "load", "docker-image", "--name", KIND_CLUSTER, image)
    return started


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _version() -> str:
    import tomllib  # noqa: PLC0415 - only this path needs it

    with open(ROOT / "pyproject.toml", "rb") as f:
        version: str = tomllib.load(f)["project"]["version"]
        return version


# --- the product -----------------------------------------------------------------------------


def install_operator(r: Runner, platform: str, ns: str) -> None:
    step(f"The operator: helm install (CRDs, RBAC in namespace {ns} only, Deployment, metrics)")
    # The namespace the operator will watch exists first: the chart puts the operator's Role,
    # RoleBinding and KopfPeering there (it gets no rights anywhere else).
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": ns,
            # Enforced by PodSecurity admission from Kubernetes 1.23 (on older clusters, such as
            # the local 1.20, the label enforces nothing); the node pods satisfy `restricted`.
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
        },
    }
    print(f"  namespace {ns}, labelled pod-security.kubernetes.io/enforce=restricted")
    r.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(namespace), quiet=True)
    values = ["-f", str(ROOT / "deploy/local-cluster-values.yaml")] if platform == "local" else []
    r.helm(
        "upgrade", "--install", RELEASE, str(ROOT / "charts/consortium-operator"),
        "-n", SYSTEM, "--create-namespace", *values, "--set", f"watchNamespaces={{{ns}}}",
        "--set", "dashboard.enabled=true", "--wait", "--timeout", "300s",
    )  # fmt: skip


def sample_documents(ids: Path) -> list[dict[str, Any]]:
    """The samples, with the Members' certificates replaced by ones whose keys the demo holds."""
    docs: list[dict[str, Any]] = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        if doc["kind"] == "Member":
            name = doc["metadata"]["name"]
            doc["spec"]["certificate"] = (ids / f"{name}_cert.pem").read_text()
    return docs


def check_measurement(docs: list[dict[str, Any]]) -> None:
    """The sample must allow the image just built, or genesis is refused (and says so)."""
    built = ROOT / "build/images/consortium-node.measurement"
    if not built.exists():
        return
    want = built.read_text().strip()
    for doc in docs:
        if doc["kind"] == "Consortium" and want not in doc["spec"]["attestation"]["measurements"]:
            raise DemoError(
                f"crds/samples/consortium.yaml does not allow the node image just built "
                f"(measurement {want}): run `.venv/bin/python scripts/update-sample-measurement.py`"
            )


def apply_samples(r: Runner, ns: str, data: Path) -> None:
    step(f"A consortium: Members alice and bob, Consortium demo (3 nodes), namespace {ns}")
    ids = data / "ids"
    for name in ("alice", "bob"):
        if not (ids / f"{name}_privk.pem").exists():
            r.run(str(BIN / "consortiumctl"), "keygen", "--name", name, "--out-dir", str(ids))
    print(f"  member keys stay on this machine: {ids}/ (only certificates go into the cluster)")
    docs = sample_documents(ids)
    check_measurement(docs)
    print(f"  $ kubectl apply -n {ns} -f crds/samples/   (with the demo's member certificates)")
    r.kubectl("apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump_all(docs), quiet=True)
    r.kubectl("wait", "-n", ns, "--for=condition=Ready", "consortium/demo", "--timeout=300s")
    print(r.kubectl("get", "-n", ns, "consortia,members", quiet=True).rstrip())


@contextlib.contextmanager
def node_url(r: Runner, ns: str, platform: str) -> Iterator[str]:
    """A URL of node demo-0 that consortiumctl can use from this machine.

    Local cluster: the pod IP (the host routes to the pod bridge). kind: pod IPs are not
    routable from the host, so ``kubectl port-forward`` to 127.0.0.1, addressed as
    ``localhost`` (every node certificate carries that name).
    """
    if platform == "local":
        ip = r.kubectl("get", "-n", ns, "pod", "demo-0", "-o", "jsonpath={.status.podIP}")
        yield f"https://{ip}:8443"
        return
    port = free_port(30443)
    argv = [r.kubectl_bin, "port-forward", "-n", ns, "pod/demo-0", f"{port}:8443"]
    print("  $", shown(argv))
    forward = subprocess.Popen(argv, env=r.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:

        def listening() -> bool:
            if forward.poll() is not None:
                raise DemoError("kubectl port-forward exited")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_for("kubectl port-forward", listening, 30)
        yield f"https://localhost:{port}"
    finally:
        forward.terminate()
        forward.wait(10)


def transaction(r: Runner, ns: str, data: Path, platform: str) -> None:
    step("A transaction, and its receipt verified offline with the service certificate")
    cert = data / "service-cert.pem"
    pem = r.kubectl(
        "get", "-n", ns, "configmap", "demo-service-identity",
        "-o", r"jsonpath={.data.service-certificate\.pem}",
    )  # fmt: skip
    cert.write_text(pem)
    ctl = str(BIN / "consortiumctl")
    ids = data / "ids"
    receipt = data / "receipt.json"
    with node_url(r, ns, platform) as url:
        r.run(
            ctl, "tx", "submit", "--node", url, "--service-cert", str(cert),
            "--cert", str(ids / "alice_cert.pem"), "--key", str(ids / "alice_privk.pem"),
            "--set", "greeting=hello from Kubernetes", "--receipt-out", str(receipt),
        )  # fmt: skip
    verified = r.run(ctl, "verify-receipt", "--service-cert", str(cert), str(receipt))
    print("\n".join("    " + line for line in verified.strip().splitlines()))


# --- Prometheus ------------------------------------------------------------------------------


def prometheus_config(data: Path, ns: str) -> dict[str, Any]:
    """Scrape the operator (host network) and every node pod listed in ``targets.json``.

    Nodes serve /metrics over TLS with certificates issued by the consortium's service
    identity, so the scrape verifies them with the service certificate (one CA per
    consortium) and the headless Service's name, which every node certificate carries (a
    pod's IP can change under a certificate issued earlier). Debian's Prometheus is built
    without Kubernetes service discovery, so ``sync-targets`` (started by the demo) keeps the
    file-based target list current.
    """
    return {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {
                "job_name": "consortium-operator",
                # Operator metrics carry the Consortium's own namespace label.
                "honor_labels": True,
                "static_configs": [{"targets": [OPERATOR_METRICS]}],
            },
            {
                "job_name": "consortium-nodes",
                "scheme": "https",
                "tls_config": {
                    "ca_file": str(data / "service-cert.pem"),
                    "server_name": f"demo-nodes.{ns}.svc",
                },
                "file_sd_configs": [
                    {"files": [str(data / "prometheus" / "targets.json")], "refresh_interval": "5s"}
                ],
            },
        ],
    }


def node_targets(r: Runner, ns: str) -> list[dict[str, Any]]:
    """file_sd entries for the node pods of ``ns`` that have an IP, labelled as a PodMonitor
    would label them (``namespace``, ``pod``)."""
    selector = "app.kubernetes.io/component=ledger-node"
    listed = r.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json", quiet=True)
    pods = json.loads(listed)["items"]
    return [
        {
            "targets": [f"{pod['status']['podIP']}:8443"],
            "labels": {"namespace": ns, "pod": pod["metadata"]["name"]},
        }
        for pod in pods
        if pod.get("status", {}).get("podIP")
    ]


def write_targets(path: Path, targets: list[dict[str, Any]]) -> None:
    """Replace atomically: Prometheus must never read half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(targets, indent=1) + "\n")
    tmp.replace(path)


def sync_targets(args: argparse.Namespace) -> None:
    """Keep ``targets.json`` current while Prometheus runs (pods get new IPs when replaced)."""
    data: Path = args.data_dir.resolve()
    state = State.load(data / "state.json")
    r = Runner(state.kubeconfig)
    path = data / "prometheus" / "targets.json"
    while _alive(state.prometheus_pid):
        try:
            write_targets(path, node_targets(r, state.namespace))
        except (DemoError, ValueError, OSError) as exc:
            print(f"sync-targets: {exc}", file=sys.stderr, flush=True)
        time.sleep(5)


def query(url: str, expr: str) -> list[Any]:
    full = f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(full, timeout=5) as answer:
            result: list[Any] = json.loads(answer.read())["data"]["result"]
            return result
    except OSError:
        return []


def start_prometheus(r: Runner, state: State, data: Path, port: int) -> None:
    step("Prometheus: Debian's server, scraping the operator and every node, with the alerts")
    binary = shutil.which("prometheus")
    if not binary:
        raise DemoError("prometheus not found (Debian package prometheus; scripts/setup-env.sh)")
    stop_prometheus(state)
    home = data / "prometheus"
    home.mkdir(parents=True, exist_ok=True)
    (home / "prometheus.yml").write_text(
        yaml.safe_dump(prometheus_config(data, state.namespace), sort_keys=False)
    )
    groups = yaml.safe_load((ROOT / "charts/consortium-operator/files/alerts.yaml").read_text())
    (home / "alerts.yml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    write_targets(home / "targets.json", node_targets(r, state.namespace))
    port = free_port(port)
    argv = [
        binary,
        f"--config.file={home / 'prometheus.yml'}",
        f"--storage.tsdb.path={home / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    print("  $", shown(argv))
    proc = _detached(argv, home / "prometheus.log")
    state.prometheus_pid = proc.pid
    state.prometheus_url = url = f"http://127.0.0.1:{port}"
    state.save(data / "state.json")
    sync = [sys.executable, __file__, "sync-targets", "--data-dir", str(data)]
    state.sync_pid = _detached(sync, home / "sync-targets.log").pid

    def answers() -> bool:
        if proc.poll() is not None:
            log = (home / "prometheus.log").read_text().strip().splitlines()[-5:]
            raise DemoError("prometheus exited:\n" + "\n".join(log))
        return bool(query(url, "vector(1)"))

    wait_for("Prometheus to answer", answers, 60)

    def flowing() -> bool:
        up = [r for r in query(url, "up") if r["value"][1] == "1"]
        commit = query(url, f'consortium_commit_index{{namespace="{state.namespace}"}}')
        ready = query(url, f'consortium_operator_consortium_ready{{namespace="{state.namespace}"}}')
        return len(up) >= 4 and len(commit) >= 3 and bool(ready)

    wait_for("the operator and 3 nodes to be scraped", flowing, 120)
    for expr in (
        "up",
        f'consortium_operator_consortium_ready{{namespace="{state.namespace}"}}',
        f'max by (pod) (consortium_commit_index{{namespace="{state.namespace}"}})',
    ):
        found = ", ".join(
            f"{r['metric'].get('pod') or r['metric'].get('job', '')}={r['value'][1]}"
            for r in query(url, expr)
        )
        print(f"  {expr}: {found}")


def _detached(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """A process that outlives the demo (its own session), output to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=log_path.parent
        )


def stop_prometheus(state: State) -> None:
    for pid in (state.sync_pid, state.prometheus_pid):
        if pid and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
    state.prometheus_pid = state.sync_pid = 0


# --- what to look at -------------------------------------------------------------------------


def where_to_look(state: State, data: Path) -> None:
    ns = state.namespace
    kube = f"export KUBECONFIG={state.kubeconfig}" if state.kubeconfig else "(kind's context)"
    lines = [
        "",
        "== Where to look",
        f"  {kube}" + (f"  PATH={KUBE_BIN}:$PATH" if state.platform == "local" else ""),
        f"  kubectl get consortia,members,proposals -n {ns}   # READY, NODES n/n; proposals' votes",
        f"  kubectl describe consortium demo -n {ns}       # conditions, nodes, Events",
        f"  kubectl get configmap demo-trusted-nodes -n {ns} -o yaml   # the signed list",
        f"  kubectl logs -n {SYSTEM} deployment/{RELEASE}-consortium-operator",
        "  kubectl explain consortium.spec --recursive     # every field, documented",
        f"  files: {data}/ (member keys, service certificate, receipt)",
        "  governance (docs/governance.md): e.g. add a Member, then vote on its Proposal with",
        f"    consortiumctl vote --consortium demo --cert {data}/ids/alice_cert.pem"
        f" --key {data}/ids/alice_privk.pem --approve --kube PROPOSAL --namespace {ns}",
    ]
    if state.prometheus_url:
        lines += [
            f"  Prometheus: {state.prometheus_url}  (targets: /targets, alerts: /alerts)",
            f'    e.g. consortium_operator_nodes{{namespace="{ns}"}}, consortium_commit_index',
            "  Grafana dashboard: charts/consortium-operator/files/dashboard.json (import it,"
            " data source: this Prometheus); also installed as ConfigMap"
            f" {SYSTEM}/{RELEASE}-consortium-operator-dashboard for Grafana's sidecar",
        ]
    default = (ROOT / "demo-data" / "kube").resolve()
    where = "" if data == default else f" --data-dir {data}"
    lines += [f"  stop it all: scripts/demo.sh down{where}"]
    print("\n".join(lines), flush=True)


# --- commands --------------------------------------------------------------------------------


def up(args: argparse.Namespace) -> None:
    data: Path = args.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    platform = choose_platform(args.platform)
    kubeconfig = str(LOCAL_KUBECONFIG) if platform == "local" else ""
    state = State(platform=platform, namespace=args.namespace, kubeconfig=kubeconfig)
    previous = data / "state.json"
    if previous.exists():  # a second run: keep what the first one started, so `down` stops it
        before = State.load(previous)
        state.started_cluster = before.started_cluster
        state.prometheus_pid, state.sync_pid = before.prometheus_pid, before.sync_pid
    print(f"consortium-operator demo on the {platform} platform (data in {data})")
    r = Runner(kubeconfig)
    started = cluster_local(r) if platform == "local" else cluster_kind(r)
    state.started_cluster = state.started_cluster or started
    state.save(previous)
    install_operator(r, platform, args.namespace)
    apply_samples(r, args.namespace, data)
    transaction(r, args.namespace, data, platform)
    if platform == "local":
        start_prometheus(r, state, data, args.prometheus_port)
    else:
        step("Prometheus on kind: not installed by the demo (it needs the Prometheus Operator)")
        print(
            "  README.md, 'Quickstart on kind': kube-prometheus-stack with the chart's\n"
            "  ServiceMonitor, PrometheusRule and dashboard, and deploy/kind/podmonitor.yaml"
        )
    state.save(previous)
    where_to_look(state, data)


def down(args: argparse.Namespace) -> None:
    data: Path = args.data_dir.resolve()
    path = data / "state.json"
    if not path.exists():
        print(f"nothing to stop: no {path}")
        return
    state = State.load(path)
    r = Runner(state.kubeconfig)
    step("Stopping the demo")
    stop_prometheus(state)
    # The Consortia first, then the Members (their finalizers need the operator and its Role in
    # the namespace, which go with the namespace), then the namespace, then the release.
    ns = ["-n", state.namespace, "--ignore-not-found", "--timeout=180s"]
    if r.kubectl("get", "namespace", state.namespace, "--ignore-not-found", quiet=True).strip():
        r.kubectl("delete", "consortia", "--all", *ns, check=False)
        r.kubectl("delete", "members,proposals", "--all", *ns, check=False)
    r.kubectl("delete", "namespace", state.namespace, "--ignore-not-found", "--timeout=180s")
    if r.helm("status", RELEASE, "-n", SYSTEM, quiet=True, check=False):
        r.helm("uninstall", RELEASE, "-n", SYSTEM, "--wait", "--timeout", "120s")
        selector = f"app.kubernetes.io/instance={RELEASE}"

        def pods_gone() -> bool:
            left = r.kubectl("get", "pods", "-n", SYSTEM, "-l", selector, "-o", "name", quiet=True)
            return not left.strip()

        wait_for("the operator pods to terminate", pods_gone, 120)
    if state.started_cluster:
        if state.platform == "local":
            r.stream("bash", str(ROOT / "scripts/kube.sh"), "down")
        else:
            r.stream("kind", "delete", "cluster", "--name", KIND_CLUSTER)
    else:
        print("  the cluster was running before the demo: left up")
    path.unlink()
    print("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo.sh", description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs="?", default="up", choices=["up", "down", "sync-targets"])
    parser.add_argument("--platform", default="auto", choices=["auto", "local", "kind"])
    parser.add_argument("--namespace", default="consortium-demo")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "demo-data" / "kube")
    parser.add_argument("--prometheus-port", type=int, default=9090)
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        {"up": up, "down": down, "sync-targets": sync_targets}[args.command](args)
    except DemoError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    if args.command != "sync-targets":
        print(f"({args.command}: {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
