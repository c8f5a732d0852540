"""spec.ledger on a real cluster: the status shows the newest committed snapshot, and a changed
setting reaches every node (each node reads its configuration at start, so the pods roll one at
a time, as for new code, keeping their identities) while writes go on and nothing acknowledged
is lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from consortium_node.ctl.client import NodeClient
from consortium_operator.api.names import ANNOTATION_LEDGER_CONFIG
from tests.integration.operator.test_lifecycle import READY_TIMEOUT, ready
from tests.support.gov_kube import Writer, answering, condition, consortium_doc, member_doc
from tests.support.harness import make_identity
from tests.support.kube import Cluster
from tests.support.wait import WaitTimeoutError, wait_for

ROLL_TIMEOUT = 420


def _pods(cluster: Cluster, ns: str) -> dict[str, str]:
    """Running node pods: name → uid."""
    return {
        p["metadata"]["name"]: p["metadata"]["uid"]
        for p in cluster.items(ns, "pods", "consortium.tee.dev/consortium=demo")
        if not p["metadata"].get("deletionTimestamp")
    }


def _template_digest(cluster: Cluster, ns: str) -> str:
    sts = cluster.get(ns, "statefulset", "demo") or {}
    found: str = sts["spec"]["template"]["metadata"]["annotations"][ANNOTATION_LEDGER_CONFIG]
    return found


def _node_ids(obj: dict[str, Any]) -> dict[str, str]:
    return {n["name"]: n.get("nodeId", "") for n in obj["status"]["nodes"]}


@pytest.mark.timeout(900)
def test_a_ledger_settings_change_rolls_the_nodes_and_status_shows_the_snapshot(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    ns = namespace
    alice = make_identity(tmp_path / "ids", "alice", "governor")
    consortium = consortium_doc(3)
    consortium["spec"]["ledger"] = {"snapshotInterval": 200}
    cluster.apply(ns, member_doc(alice), consortium)
    obj = wait_for("Ready 3/3", lambda: ready(cluster, ns, "demo", 3), READY_TIMEOUT)
    service_pem = obj["status"]["serviceCertificate"]
    client = wait_for(
        "every node answering", lambda: answering(cluster, ns, alice, service_pem), 60
    )
    bulk = {"transactions": [{"writes": {f"bulk-{i}": i}} for i in range(250)]}
    resp = client.request("POST", "/app/transactions", body=bulk)
    assert resp.status == 200, resp.status

    def snapshot_shown() -> dict[str, Any] | None:
        st = (cluster.get(ns, "consortium", "demo") or {}).get("status") or {}
        snapshot: dict[str, Any] | None = (st.get("ledger") or {}).get("lastSnapshot")
        return snapshot if snapshot and snapshot["index"] >= 200 else None

    shown = wait_for("status.ledger.lastSnapshot", snapshot_shown, 120)
    assert shown["txid"].endswith(f".{shown['index']}"), shown
    listed = client.request("GET", "/node/snapshots").json()["snapshots"]
    assert max(e["index"] for e in listed) >= shown["index"], (shown, listed)

    before_pods, before_digest = _pods(cluster, ns), _template_digest(cluster, ns)
    before_ids = _node_ids(obj)
    writer = Writer(cluster, ns, alice, service_pem)
    writer.start()
    wait_for("writes flowing", lambda: len(writer.acked) >= 10 or None, 60)
    consortium["spec"]["ledger"] = {"snapshotInterval": 100}
    cluster.apply(ns, consortium)

    def rolled() -> dict[str, Any] | None:
        o = cluster.get(ns, "consortium", "demo") or {}
        pods = _pods(cluster, ns)
        replaced = len(pods) == 3 and not set(pods.values()) & set(before_pods.values())
        up_to_date = bool(o) and condition(o, "UpToDate")["status"] == "True"
        return o if replaced and up_to_date and ready(cluster, ns, "demo", 3) else None

    done = wait_for("every pod replaced with the new settings, Ready", rolled, ROLL_TIMEOUT)
    assert _template_digest(cluster, ns) != before_digest
    assert _node_ids(done) == before_ids, "the same nodes, restarted (not replaced)"
    config = cluster.get(ns, "configmap", "demo-config") or {}
    assert yaml.safe_load(config["data"]["node.yaml"])["ledger"]["snapshot_interval"] == 100
    count = len(writer.acked)
    wait_for("more writes after the roll", lambda: len(writer.acked) >= count + 10 or None, 60)
    writer.stop.set()
    writer.join(30)

    wait_for("every node answering", lambda: answering(cluster, ns, alice, service_pem), 60)
    last_key = max(writer.acked, key=lambda k: int(k.split("-")[1]))
    for pod in cluster.items(ns, "pods", "consortium.tee.dev/consortium=demo"):
        client = NodeClient(f"https://{pod['status']['podIP']}:8443", service_pem, alice.cert,
                            alice.key, 10)  # fmt: skip

        def caught_up(c: NodeClient = client) -> bool:
            return c.request("GET", f"/app/kv/{last_key}").status == 200

        name = pod["metadata"]["name"]
        try:
            wait_for(f"{name} to commit {last_key}", caught_up, 60)
        except WaitTimeoutError as exc:
            logs = cluster.kubectl("-n", ns, "logs", name, "--tail", "60", check=False)
            raise AssertionError(f"{exc}\n{name}'s log:\n{logs}") from exc
        for key, txid in sorted(writer.acked.items()):
            got = client.request("GET", f"/app/kv/{key}")
            assert got.status == 200, (pod["metadata"]["name"], key, got.status, got.body[:200])
            assert got.json()["txid"] == txid and got.json()["value"] == int(key.split("-")[1])
    print(
        f"snapshot {shown['txid']} shown in status; settings rolled to 3 pods with "
        f"{len(writer.acked)} transactions acknowledged and read back "
        f"({writer.failures} attempts refused or failed during the roll)"
    )
