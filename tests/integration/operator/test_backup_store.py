"""Backups on a real cluster to a real S3-protocol server (moto, on the host, reached by the pods
through the cluster bridge): a Consortium with spec.backup under a steady writer; the bucket
catches up within maxLag and `consortiumctl backup verify` passes on it; the shipping pod is
killed in the middle of an upload (frozen by a proxy) and nothing torn appears while the next
primary resumes; a ConsortiumBackup completes; then every node pod and volume is deleted and the
backup alone verifies and covers every acknowledged transaction. Every wait polls with a
deadline."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consortium_node.backup import format as fmt
from consortium_node.backup.verify import verify_backup
from consortium_node.ctl.client import CtlError, NodeClient
from consortium_node.identity.certs import load_certificate
from consortium_node.ledger import TxId
from tests.integration.operator.test_lifecycle import READY_TIMEOUT, ready
from tests.support.gov_kube import member_doc
from tests.support.harness import Identity, make_identity
from tests.support.kube import ROOT, Cluster, sample_docs
from tests.support.s3server import S3Server, start_s3_server
from tests.support.stall_proxy import StallProxy
from tests.support.wait import wait_for

MAX_LAG = 10.0
SECRET = "demo-backup-credentials"
NODE_PODS = "app.kubernetes.io/instance=demo,app.kubernetes.io/component=ledger-node"


@pytest.fixture(scope="module")
def s3_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path_factory.mktemp("s3-host"), bind="0.0.0.0")
    yield server
    server.stop()


class Writer:
    """Writes through whichever pod is primary (found again after a pod is lost)."""

    def __init__(self, cluster: Cluster, ns: str, who: Identity) -> None:
        self.cluster, self.ns, self.who = cluster, ns, who
        self.acked: list[TxId] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _clients(self) -> list[NodeClient]:
        obj = self.cluster.get(self.ns, "consortium", "demo") or {}
        st = obj.get("status") or {}
        pem = st.get("serviceCertificate")
        ips = [n.get("podIP") for n in st.get("nodes", []) if n.get("podIP")]
        return [NodeClient(f"https://{ip}:8443", pem, self.who.cert, self.who.key, 5) for ip in ips]

    def _run(self) -> None:
        i = 0
        clients: list[NodeClient] = []
        while not self._stop.is_set():
            if not clients:
                clients = self._clients()
            body = {"transactions": [{"writes": {f"k{i}-{j}": i for j in range(5)}}] * 10}
            for client in list(clients):
                try:
                    reply = client.request("POST", "/app/transactions", body=body)
                except (CtlError, OSError):
                    clients.remove(client)
                    continue
                if reply.status == 200:
                    self.acked += [TxId.parse(t["txid"]) for t in reply.json()["transactions"]]
                    i += 1
                    break
            else:
                clients = []
                self._stop.wait(0.5)
            self._stop.wait(0.05)


def _status_backup(cluster: Cluster, ns: str) -> dict[str, Any]:
    obj = cluster.get(ns, "consortium", "demo") or {}
    return dict((obj.get("status") or {}).get("backup") or {})


def _covered(cluster: Cluster, ns: str, index: int) -> dict[str, Any] | None:
    backup = _status_backup(cluster, ns)
    last = backup.get("lastTxid")
    return backup if last and TxId.parse(last).index >= index else None


def _verify_cli(server: S3Server, bucket: str, cert: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "consortium_node.ctl.main",
            "backup",
            "verify",
            "--service-cert",
            str(cert),
            "--bucket",
            bucket,
            "--endpoint",
            server.endpoint,
            "--prefix",
            "demo/",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **server.credentials_env, "PYTHONPATH": str(ROOT / "node_image")},
        timeout=120,
        check=False,
    )


def test_backups_survive_a_killed_shipper_and_the_loss_of_every_volume(
    cluster: Cluster, namespace: str, tmp_path: Path, s3_host: S3Server
) -> None:
    ns = namespace
    bucket = s3_host.make_bucket()
    alice = make_identity(tmp_path / "ids", "alice", "governor")
    _, consortium = sample_docs()
    consortium["spec"]["nodes"] = 3
    consortium["spec"]["ledger"] = {"snapshotInterval": 300}
    cluster.apply(ns, member_doc(alice), consortium)
    obj = wait_for("Ready 3/3", lambda: ready(cluster, ns, "demo", 3), READY_TIMEOUT)
    pem = obj["status"]["serviceCertificate"]
    cert = tmp_path / "service.pem"
    cert.write_text(pem)
    # Pods reach the host through the cluster bridge's gateway (host-local IPAM: .1).
    gateway = obj["status"]["nodes"][0]["podIP"].rsplit(".", 1)[0] + ".1"
    proxy = StallProxy(s3_host.port, bind="0.0.0.0").start()
    cluster.apply(
        ns,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET},
            "stringData": s3_host.credentials_env,
        },
    )
    consortium["spec"]["backup"] = {
        "s3": {
            "endpoint": f"http://{gateway}:{proxy.port}",
            "bucket": bucket,
            "credentialsSecret": SECRET,
        },
        "maxLag": f"{int(MAX_LAG)}s",
    }
    cluster.apply(ns, consortium)
    try:
        with Writer(cluster, ns, alice) as writer:

            def healthy() -> dict[str, Any] | None:
                cond = cluster.condition(ns, "consortium", "demo", "BackupHealthy")
                backup = _status_backup(cluster, ns)
                return backup if cond.get("status") == "True" and backup.get("lastTxid") else None

            wait_for("BackupHealthy with a manifest", healthy, READY_TIMEOUT)
            wait_for("writes flowing", lambda: len(writer.acked) >= 50, 60)
            # Caught up within maxLag of an acknowledgement (plus the status poll).
            mark = max(t.index for t in writer.acked)
            started = time.monotonic()
            wait_for("the bucket to cover the writes", lambda: _covered(cluster, ns, mark), 90)
            lag = time.monotonic() - started
            assert lag <= MAX_LAG + 30, lag
            print(f"status.backup covered index {mark} {lag:.1f} s after it was acknowledged")

            result = _verify_cli(s3_host, bucket, cert)
            assert result.returncode == 0, result.stderr + result.stdout

            # Kill the shipper while one of its uploads is frozen half-way.
            before = TxId.parse(_status_backup(cluster, ns)["lastTxid"]).index
            proxy.arm()
            assert proxy.stalled.wait(MAX_LAG * 6), "the shipper uploaded nothing more"
            shipper = _primary_pod(cluster, ns, pem, alice)
            cluster.kubectl(
                "-n", ns, "delete", "pod", shipper, "--grace-period=0", "--force", "--wait=false"
            )
            proxy.release()
            print("killed", shipper, "while uploading:", proxy.stalled_request.decode())
            wait_for(
                "the next primary to resume the backup",
                lambda: _covered(cluster, ns, before + 1),
                READY_TIMEOUT,
            )
            cluster.apply(
                ns,
                {
                    "apiVersion": "consortium.tee.dev/v1alpha1",
                    "kind": "ConsortiumBackup",
                    "metadata": {"name": "after-the-kill"},
                    "spec": {"consortium": "demo"},
                },
            )

            def completed() -> dict[str, Any] | None:
                st = (cluster.get(ns, "consortiumbackup", "after-the-kill") or {}).get("status")
                return st if st and st.get("phase") in ("Completed", "Failed") else None

            done = wait_for("the ConsortiumBackup to complete", completed, 180)
            assert done["phase"] == "Completed", done
            assert done["manifest"].startswith("manifests/")
        acked = writer.acked
        assert acked, "nothing was acknowledged"
        last_ack = max(t.index for t in acked)
        wait_for(
            "the bucket to cover every acknowledgement",
            lambda: _covered(cluster, ns, last_ack),
            120,
        )
    finally:
        proxy.stop()

    # Every node pod and volume gone (the Consortium deleted, its PVCs with it).
    cluster.kubectl("-n", ns, "delete", "consortium", "demo", "--timeout=120s")
    wait_for(
        "no node pods and no ledger volumes",
        lambda: (
            not cluster.items(
                ns, "pod", "app.kubernetes.io/instance=demo,app.kubernetes.io/component=ledger-node"
            )
            and not [
                p
                for p in cluster.items(ns, "persistentvolumeclaim")
                if "demo" in p["metadata"]["name"]
            ]
        ),
        180,
    )
    store = s3_host.store(bucket, "demo/")
    service = load_certificate(pem)
    for key in store.keys(fmt.LEDGER_DIR):  # nothing torn, listed or not
        first, last = fmt.parse_segment_key(key) or (0, -1)
        assert len(fmt.decode_segment(store.get(key), key)) == last - first + 1, key
    verified = verify_backup(store, service)
    assert verified.first_txid.index == 1
    assert verified.last_txid.index >= last_ack
    assert verified.snapshots
    result = _verify_cli(s3_host, bucket, cert)
    assert result.returncode == 0, result.stderr
    assert str(verified.last_txid) in result.stdout
    print(f"after every volume was deleted the backup verifies: {result.stdout.strip()}")


def _primary_pod(cluster: Cluster, ns: str, pem: str, who: Identity) -> str:
    def find() -> str | None:
        obj = cluster.get(ns, "consortium", "demo") or {}
        for node in (obj.get("status") or {}).get("nodes", []):
            ip = node.get("podIP")
            if not ip:
                continue
            try:
                reply = NodeClient(f"https://{ip}:8443", pem, who.cert, who.key, 5).request(
                    "GET", "/node/state"
                )
            except (CtlError, OSError):
                continue
            if reply.status == 200 and reply.json().get("role") == "primary":
                return str(node["name"])
        return None

    found: str = wait_for("the primary pod", find, 30)
    return found
