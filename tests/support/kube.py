"""The real local Kubernetes for the operator tests: cluster, operator process, kubectl.

The cluster (``scripts/kube.sh``) and the node image (``scripts/build-images.sh``) are brought
up once per test session and torn down at its end if this session started them. The
operator runs on the host as a real ``consortium-operator`` process (kopf), so killing and
restarting it is a real crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
RUN = Path(os.environ.get("KUBE_RUN", "/tmp/consortium-kube"))
KUBECONFIG = RUN / "admin.kubeconfig"


def kube_bin() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return (
        Path(os.environ.get("KUBE_CACHE", cache / "consortium-operator" / "kube-v1.20.2")) / "bin"
    )


@dataclass
class Cluster:
    started_here: bool

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [str(kube_bin() / "kubectl"), *args],
            check=False,
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": str(KUBECONFIG)},
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout if check else result.stdout + result.stderr

    def get(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        out = self.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
        try:
            found: dict[str, Any] = json.loads(out)
        except ValueError:
            return None
        return found

    def items(self, namespace: str, kind: str, selector: str | None = None) -> list[Any]:
        args = ["-n", namespace, "get", kind, "-o", "json"]
        if selector:
            args += ["-l", selector]
        items: list[Any] = json.loads(self.kubectl(*args))["items"]
        return items

    def apply(self, namespace: str, *docs: dict[str, Any]) -> None:
        self.kubectl("-n", namespace, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))

    def condition(self, namespace: str, kind: str, name: str, type_: str) -> dict[str, Any]:
        obj = self.get(namespace, kind, name) or {}
        for cond in (obj.get("status") or {}).get("conditions", []):
            if cond.get("type") == type_:
                found: dict[str, Any] = cond
                return found
        return {}

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [
            e for e in self.items(namespace, "events") if e["involvedObject"].get("name") == name
        ]

    def audit_writes(self, namespace: str, since: float) -> list[dict[str, Any]]:
        """API writes by the operator (not kubectl, not the kubelet) in ``namespace``."""
        out = []
        with open(RUN / "audit.log") as log:
            for line in log:
                event = json.loads(line)
                ref = event.get("objectRef") or {}
                stamp = event.get("requestReceivedTimestamp", "")
                if ref.get("namespace") != namespace or event.get("stage") != "ResponseComplete":
                    continue
                agent = event.get("userAgent", "")
                if agent.startswith("kubectl") or "kube-" in agent or "kubelet" in agent:
                    continue
                if event.get("user", {}).get("username") != "kubernetes-admin":
                    continue
                if _epoch(stamp) >= since:
                    out.append(event)
        return out


def _epoch(stamp: str) -> float:
    from datetime import datetime  # noqa: PLC0415

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One user at a time of the machine's one local Kubernetes (a test session, a benchmark):
    a second one waits here rather than sharing the cluster with a second operator process or
    tearing it down under the first."""
    with open(os.environ.get("KUBE_LOCK", "/tmp/consortium-kube.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("waiting for another user of the local Kubernetes…", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def bring_up() -> Cluster:
    """Start the cluster (unless running), build and import the images, apply the CRDs."""
    running = (RUN / "apiserver.pid").exists() and _alive(RUN / "apiserver.pid")
    env = {**os.environ, "KUBE_CRDS": str(ROOT / "crds")}
    if not running:
        subprocess.run(["bash", str(ROOT / "scripts/kube.sh"), "up"], check=True, env=env)
    subprocess.run(["bash", str(ROOT / "scripts/build-images.sh")], check=True)
    for image in ("consortium-node.tar", "consortium-operator.tar"):
        tar = ROOT / "build/images" / image
        subprocess.run(["bash", str(ROOT / "scripts/kube.sh"), "import", str(tar)], check=True)
    cluster = Cluster(started_here=not running)
    cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    return cluster


def build_node_variant(name: str) -> tuple[str, str]:
    """Build node image variant ``name`` and import it into the cluster: (image, measurement).

    ``scripts/build-images.sh --node-variant NAME`` derives ``localhost/consortium-node:
    <version>-NAME`` from the node image (building that first if its sources changed) by adding
    one module, so its code measurement differs from the node image's; an unchanged variant is
    not rebuilt, only imported again. ``name``: 1 to 20 of a-z, 0-9 and ``-``.
    """
    if not re.fullmatch(r"[a-z0-9-]{1,20}", name):
        raise ValueError(f"build_node_variant: bad name {name!r} (1 to 20 of a-z, 0-9 and -)")
    subprocess.run(
        ["bash", str(ROOT / "scripts/build-images.sh"), "--node-variant", name], check=True
    )
    out = ROOT / os.environ.get("OUT_DIR", "build/images")
    tar = out / f"consortium-node-{name}.tar"
    measurement = (out / f"consortium-node-{name}.measurement").read_text().strip()
    # The reference the archive carries is the one containerd imports it under.
    with tarfile.open(tar) as archive:
        manifest = archive.extractfile("manifest.json")
        assert manifest is not None, f"{tar}: no manifest.json"
        [entry] = json.load(manifest)
    [image] = entry["RepoTags"]
    subprocess.run(["bash", str(ROOT / "scripts/kube.sh"), "import", str(tar)], check=True)
    return str(image), measurement


def tear_down(cluster: Cluster) -> None:
    if cluster.started_here:
        subprocess.run(["bash", str(ROOT / "scripts/kube.sh"), "down"], check=False)


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Operator:
    """A real ``consortium-operator`` process on the host."""

    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    args: tuple[str, ...] = ("--standalone",)
    resync_seconds: str = "3"  # passes over Ready Consortia; the operator's default is 30
    env: dict[str, str] = field(default_factory=dict)  # e.g. PYTHONPATH: another checkout

    def start(self) -> None:
        env = {
            **os.environ,
            **self.env,
            "KUBECONFIG": str(KUBECONFIG),
            "CONSORTIUM_OPERATOR_INSECURE_TEST_FAULTS": "1",
            "CONSORTIUM_OPERATOR_RESYNC_SECONDS": self.resync_seconds,
        }
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(ROOT / ".venv/bin/consortium-operator"),
                    *self.args,
                    "--metrics-port",
                    str(self.port),
                    "--metrics-address",
                    "127.0.0.1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        wait_for("operator metrics endpoint", lambda: self.metrics() is not None, 30)

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def metrics(self) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text: str = r.read().decode()
                return text
        except OSError:
            return None

    def sample(self, name: str, **labels: str) -> float:
        """Sum of the samples of metric ``name`` matching ``labels``."""
        total = 0.0
        for line in (self.metrics() or "").splitlines():
            match = re.match(r"^([a-zA-Z_:]+)(\{[^}]*\})? (\S+)$", line)
            if not match or match.group(1) != name:
                continue
            got = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(match.group(3))
        return total


def sample_docs() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(Member docs, Consortium doc) from crds/samples, for tests to adapt."""
    members = list(yaml.safe_load_all((ROOT / "crds/samples/members.yaml").read_text()))
    consortium = yaml.safe_load((ROOT / "crds/samples/consortium.yaml").read_text())
    return [m for m in members if m], consortium
