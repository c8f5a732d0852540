"""Governance on the local cluster, shared by tests/integration/operator/test_governance.py and
bench/upgrade.py: Member and Consortium documents, signed ballots appended to Proposal objects,
consortiumctl, and a Writer that keeps transactions flowing while nodes are replaced."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from consortium_node.ctl.client import CtlError, NodeClient
from consortium_node.governance.documents import sign_document
from consortium_node.identity import keys
from consortium_node.identity.certs import load_certificate
from consortium_node.ledger.receipt import verify_receipt
from tests.support.harness import Identity
from tests.support.kube import KUBECONFIG, ROOT, Cluster, kube_bin, sample_docs
from tests.support.wait import wait_for


def member_doc(who: Identity, consortium: str = "demo") -> dict[str, Any]:
    return {
        "apiVersion": "consortium.tee.dev/v1alpha1",
        "kind": "Member",
        "metadata": {"name": who.name},
        "spec": {"consortium": consortium, "certificate": who.cert.read_text(), "role": who.role},
    }


def consortium_doc(nodes: int) -> dict[str, Any]:
    _, consortium = sample_docs()
    consortium["spec"]["nodes"] = nodes
    return consortium


def sign(who: Identity, payload: dict[str, Any], consortium: str = "demo") -> str:
    key = keys.load_private_key(who.key.read_bytes())
    envelope = sign_document(key, who.cert.read_text(), {"consortium": consortium, **payload})
    return base64.b64encode(envelope).decode()


def ballot(who: Identity, proposal_id: str, vote: str) -> str:
    return sign(who, {"type": "ballot", "proposal_id": proposal_id, "vote": vote})


def append_ballot(cluster: Cluster, ns: str, name: str, b64: str) -> None:
    obj = cluster.get(ns, "proposal", name) or {}
    path = "/spec/ballots/-" if (obj.get("spec") or {}).get("ballots") else "/spec/ballots"
    value: Any = b64 if path.endswith("-") else [b64]
    patch = json.dumps([{"op": "add", "path": path, "value": value}])
    cluster.kubectl("-n", ns, "patch", "proposal", name, "--type", "json", "-p", patch)


def run_ctl(*args: str) -> subprocess.CompletedProcess[str]:
    """consortiumctl, with the cluster's kubectl for --kube, whatever its exit code."""
    env = {**os.environ, "KUBECONFIG": str(KUBECONFIG), "KUBECTL": str(kube_bin() / "kubectl")}
    return subprocess.run(
        [str(ROOT / ".venv/bin/consortiumctl"), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def ctl(*args: str) -> str:
    """consortiumctl that must succeed; its standard output."""
    done = run_ctl(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def ack_through_node(who: Identity, ip: str, service_pem_file: Path) -> str:
    """``consortiumctl ack`` signed with ``who``'s key, sent straight to the node at ``ip``."""
    return ctl(
        "ack",
        "--consortium",
        "demo",
        "--cert",
        str(who.cert),
        "--key",
        str(who.key),
        "--node",
        f"https://{ip}:8443",
        "--service-cert",
        str(service_pem_file),
    )


def proposal_with(cluster: Cluster, ns: str, intent: str) -> dict[str, Any] | None:
    for p in cluster.items(ns, "proposals", f"consortium.tee.dev/intent={intent}"):
        if (p.get("status") or {}).get("state"):
            found: dict[str, Any] = p
            return found
    return None


def state_is(cluster: Cluster, ns: str, name: str, state: str) -> dict[str, Any] | None:
    obj = cluster.get(ns, "proposal", name) or {}
    return obj if (obj.get("status") or {}).get("state") == state else None


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def outcome_receipt_verifies(cluster: Cluster, ns: str, name: str, service_pem: str) -> None:
    """The Proposal's status carries the receipt of its outcome; it verifies offline."""

    def with_receipt() -> dict[str, Any] | None:
        obj = cluster.get(ns, "proposal", name) or {}
        return obj if "receipt" in obj.get("status", {}) else None

    obj = wait_for(f"the receipt of {name}'s outcome", with_receipt, 60)
    receipt = obj["status"]["receipt"]
    assert receipt["txid"] == obj["status"]["txid"]
    verify_receipt(receipt, load_certificate(service_pem.encode()))


def pod_images(cluster: Cluster, ns: str) -> dict[str, str]:
    pods = cluster.items(ns, "pods", "consortium.tee.dev/consortium=demo")
    return {
        p["metadata"]["name"]: next(c["image"] for c in p["spec"]["containers"])
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
    }


def answering(cluster: Cluster, ns: str, who: Identity, service_pem: str) -> NodeClient | None:
    """A client for the first node pod, once every running node pod answers over TLS as a node
    of the service with a certificate for its pod IP (pod IPs read from the pods)."""
    clients = []
    for pod in cluster.items(ns, "pods", "consortium.tee.dev/consortium=demo"):
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or pod["metadata"].get("deletionTimestamp"):
            return None
        client = NodeClient(f"https://{ip}:8443", service_pem, who.cert, who.key, 10)
        try:
            if client.request("GET", "/node/state").status != 200:
                return None
        except (CtlError, OSError):
            return None
        clients.append(client)
    return clients[0] if clients else None


class Writer(threading.Thread):
    """Writes one key per transaction, round-robin over the pods, until stopped; remembers
    every acknowledged (key, txid). Failures during the roll are retried on another pod."""

    PACE = 0.1  # seconds between transactions

    def __init__(self, cluster: Cluster, ns: str, who: Identity, service_pem: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.ns, self.who, self.service_pem = cluster, ns, who, service_pem
        self.acked: dict[str, str] = {}
        self.acked_at: list[float] = []  # time.monotonic() of each acknowledgement
        self.failures = 0
        self.stop = threading.Event()
        self.ips: list[str] = []

    def refresh(self) -> None:
        st = (self.cluster.get(self.ns, "consortium", "demo") or {}).get("status") or {}
        self.ips = [n["podIP"] for n in st.get("nodes", []) if n.get("podIP")]

    def run(self) -> None:
        i, turn, last = 0, 0, 0.0
        while not self.stop.is_set():
            if time.monotonic() - last > 2 or not self.ips:
                self.refresh()
                last = time.monotonic()
            if not self.ips:
                time.sleep(0.2)  # no pod known: poll the status again
                continue
            ip = self.ips[turn % len(self.ips)]
            turn += 1
            key = f"roll-{i}"
            try:
                client = NodeClient(
                    f"https://{ip}:8443", self.service_pem, self.who.cert, self.who.key, 10
                )
                resp = client.request(
                    "POST", "/app/transactions", body={"transactions": [{"writes": {key: i}}]}
                )
                if resp.status == 200:
                    self.acked[key] = resp.json()["transactions"][0]["txid"]
                    self.acked_at.append(time.monotonic())
                    i += 1
                else:
                    self.failures += 1
            except (CtlError, OSError):
                self.failures += 1
            self.stop.wait(self.PACE)  # a steady load, not a flood (the pass reads them all)


def new_code(cluster: Cluster, ns: str, image: str, measurements: list[str]) -> None:
    """A code upgrade as a user asks for it: the new image, and the measurements to allow."""
    patch = {"spec": {"image": image, "attestation": {"measurements": measurements}}}
    cluster.kubectl(
        "-n", ns, "patch", "consortium", "demo", "--type", "merge", "-p", json.dumps(patch)
    )
