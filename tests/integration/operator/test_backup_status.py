"""spec.backup and ConsortiumBackup on a real cluster, without an object store: what the
operator configures and reports. ConsortiumBackups of a missing Consortium or of one without
spec.backup fail at once; spec.backup with a missing credentials Secret is BackupHealthy=False
CredentialsSecretNotFound (Ready stays True) and reaches the pods as a new pod template;
removing it removes the condition and status.backup. (Shipping to a real S3 server is the node
tiers' business.) Every wait polls with a deadline."""

from __future__ import annotations

from typing import Any

from tests.integration.operator.test_lifecycle import READY_TIMEOUT, ready
from tests.support.kube import Cluster, sample_docs
from tests.support.wait import wait_for

BACKUP = {
    "s3": {
        # Nothing listens here: the nodes report EndpointUnreachable once they have credentials.
        "endpoint": "http://127.0.0.1:9",
        "bucket": "consortium-backups",
        "credentialsSecret": "demo-backup-credentials",
    },
    "maxLag": "30s",
}
ANNOTATION = "consortium.tee.dev/backup-config-sha256"


def _request(name: str, consortium: str) -> dict[str, Any]:
    return {
        "apiVersion": "consortium.tee.dev/v1alpha1",
        "kind": "ConsortiumBackup",
        "metadata": {"name": name},
        "spec": {"consortium": consortium},
    }


def _finished(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    obj = cluster.get(ns, "consortiumbackup", name) or {}
    st = obj.get("status") or {}
    return st if st.get("phase") in ("Completed", "Failed") else None


def _backup_condition(cluster: Cluster, ns: str) -> dict[str, Any]:
    return cluster.condition(ns, "consortium", "demo", "BackupHealthy")


def test_backup_requests_and_status_without_a_store(cluster: Cluster, namespace: str) -> None:
    ns = namespace
    cluster.apply(ns, _request("nowhere", "no-such-consortium"))
    st = wait_for(
        "ConsortiumBackup of a missing Consortium fails",
        lambda: _finished(cluster, ns, "nowhere"),
        60,
    )
    assert st["phase"] == "Failed"
    assert st["conditions"][0]["reason"] == "ConsortiumNotFound"

    members, consortium = sample_docs()
    consortium["spec"]["nodes"] = 1
    cluster.apply(ns, *members, consortium)
    wait_for("Ready 1/1", lambda: ready(cluster, ns, "demo", 1), READY_TIMEOUT)
    assert _backup_condition(cluster, ns) == {}

    cluster.apply(ns, _request("too-early", "demo"))
    st = wait_for(
        "ConsortiumBackup without spec.backup fails",
        lambda: _finished(cluster, ns, "too-early"),
        60,
    )
    assert st["conditions"][0]["reason"] == "BackupNotConfigured"

    consortium["spec"]["backup"] = BACKUP
    cluster.apply(ns, consortium)

    def missing_secret() -> dict[str, Any] | None:
        cond = _backup_condition(cluster, ns)
        return cond if cond.get("reason") == "CredentialsSecretNotFound" else None

    cond = wait_for("BackupHealthy=False CredentialsSecretNotFound", missing_secret, 120)
    assert cond["status"] == "False"
    assert "spec.backup.s3.credentialsSecret" in cond["message"]
    # The pod is restarted with the new configuration; a failing backup never makes it unready.
    wait_for("Ready 1/1 with failing backups", lambda: ready(cluster, ns, "demo", 1), READY_TIMEOUT)
    assert _backup_condition(cluster, ns)["reason"] == "CredentialsSecretNotFound"
    sts = cluster.get(ns, "statefulset", "demo") or {}
    template = sts["spec"]["template"]
    assert ANNOTATION in template["metadata"].get("annotations", {})
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert volumes["backup-credentials"]["secret"]["optional"] is True
    assert any(
        e["reason"] == "CredentialsSecretNotFound" and e["type"] == "Warning"
        for e in cluster.events(ns, "demo")
    )

    cluster.kubectl(
        "-n", ns, "create", "secret", "generic", "demo-backup-credentials",
        "--from-literal=AWS_ACCESS_KEY_ID=test", "--from-literal=AWS_SECRET_ACCESS_KEY=test",
    )  # fmt: skip

    def secret_seen() -> dict[str, Any] | None:
        cond = _backup_condition(cluster, ns)
        return cond if cond and cond.get("reason") != "CredentialsSecretNotFound" else None

    wait_for("BackupHealthy past CredentialsSecretNotFound", secret_seen, 120)

    del consortium["spec"]["backup"]
    cluster.kubectl(
        "-n", ns, "patch", "consortium", "demo", "--type", "json",
        "-p", '[{"op": "remove", "path": "/spec/backup"}]',
    )  # fmt: skip

    def removed() -> dict[str, Any] | None:
        obj = cluster.get(ns, "consortium", "demo") or {}
        st = obj.get("status") or {}
        types = [c["type"] for c in st.get("conditions", [])]
        return obj if "BackupHealthy" not in types and "backup" not in st else None

    wait_for("BackupHealthy and status.backup removed", removed, 120)
