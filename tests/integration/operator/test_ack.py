"""A new member acknowledges through Kubernetes, as its Member's status tells it to.

On the real local cluster with the real operator: a Member added after bootstrap is proposed,
accepted by the governors, and shows ``AcknowledgementNeeded`` with the command to run; the
member runs ``consortiumctl ack --kube NAME`` (its key never enters the cluster: only the
signed ack goes into ``spec.acknowledgement``), the operator relays it, and the ledger — not
the operator — makes the member Active. An ack the operator cannot make count (a forged one)
is refused by the nodes and reported on the Member.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from consortium_node.governance.documents import sign_document
from consortium_node.identity import keys
from consortium_node.identity.certs import certificate_der, load_certificate
from tests.integration.operator.test_lifecycle import READY_TIMEOUT, ready
from tests.support.gov_kube import (
    append_ballot,
    ballot,
    consortium_doc,
    ctl,
    member_doc,
    proposal_with,
    run_ctl,
    state_is,
)
from tests.support.harness import make_identity
from tests.support.kube import Cluster
from tests.support.wait import wait_for


def active(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return cluster.condition(ns, "member", name, "Active")


def test_ack_with_kube_makes_the_member_active(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    ns = namespace
    ids = tmp_path / "ids"
    alice = make_identity(ids, "alice", "governor")
    dave = make_identity(ids, "dave", "user")
    mallory = make_identity(ids, "mallory", "governor")  # never a member
    cluster.apply(ns, member_doc(alice), consortium_doc(1))
    wait_for("Ready 1/1", lambda: ready(cluster, ns, "demo", 1), READY_TIMEOUT)

    cluster.apply(ns, member_doc(dave))
    add = wait_for("add-member proposal", lambda: proposal_with(cluster, ns, "add-member"), 60)
    name, pid = add["metadata"]["name"], add["status"]["proposalId"]
    append_ballot(cluster, ns, name, ballot(alice, pid, "approve"))
    wait_for("dave accepted", lambda: state_is(cluster, ns, name, "Accepted"), 60)
    needed = wait_for(
        "dave asked to acknowledge",
        lambda: (c if (c := active(cluster, ns, "dave")).get("reason") == "AcknowledgementNeeded"
                 else None),
        60,
    )  # fmt: skip
    assert "consortiumctl ack" in needed["message"] and "--kube dave" in needed["message"]

    # The wrong Member: refused on the member's machine, nothing written.
    signer = ["--consortium", "demo", "--cert", str(dave.cert), "--key", str(dave.key)]
    wrong = run_ctl("ack", *signer, "--kube", "alice", "--namespace", ns)
    assert wrong.returncode == 1 and "its own key" in wrong.stderr, wrong.stderr
    assert "acknowledgement" not in (cluster.get(ns, "member", "alice") or {})["spec"]

    # A forged ack (mallory's key, dave's certificate as the kid): the operator relays it and
    # the nodes refuse it; the Member says so and dave stays inactive.
    forged = sign_document(
        keys.load_private_key(mallory.key.read_bytes()),
        dave.cert.read_text(),
        {"type": "ack", "consortium": "demo", "member_id": _member_id(dave.cert.read_text())},
    )
    patch = {"spec": {"acknowledgement": base64.b64encode(forged).decode()}}
    cluster.kubectl("-n", ns, "patch", "member", "dave", "--type", "merge", "-p", json.dumps(patch))
    refused = wait_for(
        "the forged ack refused",
        lambda: next(
            (e for e in cluster.events(ns, "dave") if e["reason"] == "AcknowledgementRefused"),
            None,
        ),
        60,
    )
    assert "signature" in refused["message"], refused["message"]
    assert active(cluster, ns, "dave")["status"] == "False"

    # The real one, exactly as the status says: Active once the ledger has recorded it.
    shown = json.loads(ctl("ack", *signer, "--kube", "dave", "--namespace", ns))
    assert shown["member"] == f"{ns}/dave" and shown["type"] == "ack"
    wait_for(
        "dave Active",
        lambda: active(cluster, ns, "dave").get("status") == "True" or None,
        60,
    )
    assert active(cluster, ns, "dave")["reason"] != "AcknowledgementNeeded"
    members = (cluster.get(ns, "consortium", "demo") or {})["status"]["members"]
    assert members["active"] == 2, members
    assert any(e["reason"] == "Acknowledged" for e in cluster.events(ns, "dave"))


def _member_id(pem: str) -> str:
    return keys.member_id_of(certificate_der(load_certificate(pem)))
