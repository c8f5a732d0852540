"""Governance on a real cluster: members decide, through Proposal objects the operator relays.

* A code upgrade: the spec's new image and measurement become an operator proposal; a minority
  does not pass it (the nodes keep the old image), a forged ballot is refused and shown so; the
  majority accepts it and the operator rolls the nodes one by one under continuous writes, and
  not one acknowledged transaction is lost.
* Members: a new Member CR becomes an add-member proposal, Active only once the ledger says so
  (after its own ack); a deleted Member becomes a remove-member proposal; a removed member's
  later ballot is refused; a rejected upgrade leaves the old image running and says why.
* Every decided proposal carries a receipt that verifies offline with the service certificate.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from consortium_node.governance.documents import sign_document
from consortium_node.identity import keys
from consortium_node.identity.certs import load_certificate
from consortium_node.ledger.receipt import verify_receipt
from tests.integration.operator.test_lifecycle import READY_TIMEOUT, ready
from tests.support.gov_kube import (
    Writer,
    ack_through_node,
    answering,
    append_ballot,
    ballot,
    condition,
    consortium_doc,
    ctl,
    member_doc,
    new_code,
    outcome_receipt_verifies,
    pod_images,
    proposal_with,
    state_is,
)
from tests.support.harness import Identity, make_identity
from tests.support.kube import Cluster, build_node_variant
from tests.support.wait import wait_for

ROLL_TIMEOUT = 420


@pytest.fixture
def people(tmp_path: Path) -> dict[str, Identity]:
    ids = tmp_path / "ids"
    found = {n: make_identity(ids, n, "governor") for n in ("alice", "bob", "carol", "dave")}
    found["mallory"] = make_identity(ids, "mallory", "governor")  # never a member
    return found


@pytest.fixture(scope="module")
def variant() -> tuple[str, str]:
    return build_node_variant("upgrade-test")


# ---------------------------------------------------------------------- tests
@pytest.mark.timeout(900)
def test_majority_accepts_new_code_and_the_nodes_roll_without_losing_a_transaction(
    cluster: Cluster, namespace: str, people: dict[str, Identity], variant: tuple[str, str]
) -> None:
    ns = namespace
    alice, bob, carol, mallory = (people[n] for n in ("alice", "bob", "carol", "mallory"))
    consortium = consortium_doc(3)
    old_image = consortium["spec"]["image"]
    old_measurement = consortium["spec"]["attestation"]["measurements"][0]
    cluster.apply(ns, member_doc(alice), member_doc(bob), member_doc(carol), consortium)
    obj = wait_for("Ready 3/3", lambda: ready(cluster, ns, "demo", 3), READY_TIMEOUT)
    service_pem = obj["status"]["serviceCertificate"]
    assert condition(obj, "UpToDate")["status"] == "True"

    writer = Writer(cluster, ns, alice, service_pem)
    writer.start()
    wait_for("writes flowing", lambda: len(writer.acked) >= 20 or None, 60)

    # New code: the spec lists its measurement next to the old one and names its image.
    new_image, new_measurement = variant
    new_code(cluster, ns, new_image, [old_measurement, new_measurement])
    prop = wait_for(
        "the operator's add-measurement proposal, Open",
        lambda: proposal_with(cluster, ns, "measurements"),
        60,
    )
    name, pid = prop["metadata"]["name"], prop["status"]["proposalId"]
    assert prop["status"]["state"] == "Open" and prop["status"]["proposerName"] == "operator"
    assert prop["status"]["actions"] == [
        {"name": "add_measurement", "args": {"measurement": new_measurement}}
    ]

    # A minority (1 of 3) does not pass it: the nodes keep the approved image.
    append_ballot(cluster, ns, name, ballot(alice, pid, "approve"))
    wait_for(
        "1/2 approvals recorded",
        lambda: (
            (cluster.get(ns, "proposal", name) or {}).get("status", {}).get("votes") == "1/2"
            or None
        ),
        60,
    )
    waiting = wait_for(
        "UpToDate=False WaitingForApproval",
        lambda: (
            o
            if (o := cluster.get(ns, "consortium", "demo"))
            and any(
                c["type"] == "UpToDate" and c["reason"] == "WaitingForApproval"
                for c in o["status"]["conditions"]
            )
            else None
        ),
        60,
    )
    assert waiting["status"]["runningImage"] == old_image
    assert name in waiting["status"]["waitingProposals"]
    assert set(pod_images(cluster, ns).values()) == {old_image}

    # A forged ballot: mallory's key, claiming to be carol (carol's member id as kid).
    forged = sign_document(
        keys.load_private_key(mallory.key.read_bytes()),
        carol.cert.read_text(),  # the kid is computed from this certificate: carol's id
        {"type": "ballot", "consortium": "demo", "proposal_id": pid, "vote": "approve"},
    )
    append_ballot(cluster, ns, name, base64.b64encode(forged).decode())
    refused = wait_for(
        "the forged ballot shown refused",
        lambda: next(
            (
                b
                for b in (cluster.get(ns, "proposal", name) or {})
                .get("status", {})
                .get("ballots", [])
                if b["index"] == 1 and b.get("reason") not in (None, "not relayed yet")
            ),
            None,
        ),
        60,
    )
    assert refused["accepted"] is False and "signature" in refused["reason"], refused
    assert refused["member"] == "carol"  # who it *claims* to be; the nodes said no
    # An unsigned "ballot": relayed all the same, and the nodes' refusal is what shows.
    append_ballot(cluster, ns, name, base64.b64encode(b'{"vote": "approve"}').decode())
    unsigned = wait_for(
        "the unsigned ballot shown refused",
        lambda: next(
            (
                b
                for b in (cluster.get(ns, "proposal", name) or {})
                .get("status", {})
                .get("ballots", [])
                if b["index"] == 2 and b.get("reason") not in (None, "not relayed yet")
            ),
            None,
        ),
        60,
    )
    assert unsigned["accepted"] is False and "not a COSE_Sign1" in unsigned["reason"], unsigned
    assert (cluster.get(ns, "proposal", name) or {})["status"]["state"] == "Open"

    # bob approves with consortiumctl --kube: a majority; the roll starts.
    ctl(
        "vote",
        "--consortium",
        "demo",
        "--cert",
        str(bob.cert),
        "--key",
        str(bob.key),
        "--approve",
        "--kube",
        name,
        "--namespace",
        ns,
    )
    accepted = wait_for("Accepted", lambda: state_is(cluster, ns, name, "Accepted"), 60)
    assert accepted["status"]["tally"]["approve"] == 2
    outcome_receipt_verifies(cluster, ns, name, service_pem)

    def rolled() -> dict[str, Any] | None:
        o = cluster.get(ns, "consortium", "demo") or {}
        images = pod_images(cluster, ns)
        nodes = o.get("status", {}).get("nodes", [])
        if (
            ready(cluster, ns, "demo", 3)
            and set(images.values()) == {new_image}
            and len(images) == 3
            and [n.get("measurement") for n in nodes] == [new_measurement] * 3
            and condition(o, "UpToDate")["status"] == "True"
        ):
            return o
        return None

    done = wait_for("all nodes on the new code, Ready, UpToDate", rolled, ROLL_TIMEOUT)
    wait_for("more writes after the roll", lambda: len(writer.acked) >= 40 or None, 60)
    writer.stop.set()
    writer.join(30)
    assert done["status"]["runningImage"] == new_image
    retired = [
        e
        for e in cluster.events(ns, "demo")
        if e["reason"] == "NodeRetired" and "replaced by" in e["message"]
    ]
    assert len(retired) == 3, [e["message"] for e in retired]

    # No acknowledged transaction is lost: each key reads back, each receipt verifies.
    client = wait_for(
        "every node answering as itself", lambda: answering(cluster, ns, alice, service_pem), 60
    )
    service = load_certificate(service_pem.encode())
    for n, (key, txid) in enumerate(sorted(writer.acked.items())):
        resp = client.request("GET", f"/app/kv/{key}")
        assert resp.status == 200, (key, resp.status)
        assert resp.json()["value"] == int(key.split("-")[1])
        assert resp.json()["txid"] == txid  # the acknowledged transaction, not a later one
        if n % 10:
            continue  # a receipt for every tenth: they share signatures, checking all adds time

        def receipt(t: str = txid) -> dict[str, Any] | None:
            r = client.request("GET", "/app/receipt", {"txid": t})
            return r.json() if r.status == 200 else None

        verify_receipt(wait_for(f"receipt {txid}", receipt, 30), service)
    print(
        f"roll: {len(writer.acked)} transactions acknowledged and read back, "
        f"{writer.failures} attempts refused or failed during the roll"
    )
    assert len(writer.acked) >= 40


def test_members_join_and_leave_by_proposal_and_a_rejected_upgrade_keeps_the_old_code(
    cluster: Cluster,
    namespace: str,
    people: dict[str, Identity],
    variant: tuple[str, str],
    tmp_path: Path,
) -> None:
    ns = namespace
    alice, bob, carol, dave = (people[n] for n in ("alice", "bob", "carol", "dave"))
    cluster.apply(ns, member_doc(alice), member_doc(bob), member_doc(carol), consortium_doc(1))
    obj = wait_for("Ready 1/1", lambda: ready(cluster, ns, "demo", 1), READY_TIMEOUT)
    service_pem = obj["status"]["serviceCertificate"]
    ip = obj["status"]["nodes"][0]["podIP"]

    # A new Member CR becomes an add-member proposal; it is not Active until the ledger says so.
    cluster.apply(ns, member_doc(dave))
    add = wait_for("add-member proposal", lambda: proposal_with(cluster, ns, "add-member"), 60)
    name, pid = add["metadata"]["name"], add["status"]["proposalId"]
    active = cluster.condition(ns, "member", "dave", "Active")
    assert active["status"] == "False" and name in active["message"], active
    for who in (alice, bob):
        append_ballot(cluster, ns, name, ballot(who, pid, "approve"))
    wait_for("dave accepted", lambda: state_is(cluster, ns, name, "Accepted"), 60)
    wait_for(
        "dave needs to acknowledge",
        lambda: (
            cluster.condition(ns, "member", "dave", "Active").get("reason")
            == "AcknowledgementNeeded"
            or None
        ),
        60,
    )
    service_file = tmp_path / "service.pem"
    service_file.write_text(service_pem)
    ack_through_node(dave, ip, service_file)
    wait_for(
        "dave Active",
        lambda: cluster.condition(ns, "member", "dave", "Active").get("status") == "True" or None,
        60,
    )
    outcome_receipt_verifies(cluster, ns, name, service_pem)

    # Deleting bob's Member CR becomes a remove-member proposal; the others remove him.
    cluster.kubectl("-n", ns, "delete", "member", "bob", "--timeout=60s")
    rm = wait_for("remove-member proposal", lambda: proposal_with(cluster, ns, "remove-member"), 60)
    rm_name, rm_pid = rm["metadata"]["name"], rm["status"]["proposalId"]
    for who in (alice, carol, dave):
        append_ballot(cluster, ns, rm_name, ballot(who, rm_pid, "approve"))
    wait_for("bob removed", lambda: state_is(cluster, ns, rm_name, "Accepted"), 60)
    outcome_receipt_verifies(cluster, ns, rm_name, service_pem)

    # A rejected upgrade: the old image keeps running and the Consortium says why.
    consortium = cluster.get(ns, "consortium", "demo") or {}
    old_image = consortium["spec"]["image"]
    new_image, new_measurement = variant
    measurements = [*consortium["spec"]["attestation"]["measurements"], new_measurement]
    new_code(cluster, ns, new_image, measurements)
    up = wait_for("upgrade proposal", lambda: proposal_with(cluster, ns, "measurements"), 60)
    up_name, up_pid = up["metadata"]["name"], up["status"]["proposalId"]
    # bob, removed, votes: refused by the nodes, shown so.
    append_ballot(cluster, ns, up_name, ballot(bob, up_pid, "approve"))
    bob_ballot = wait_for(
        "bob's ballot refused",
        lambda: next(
            (
                b
                for b in (cluster.get(ns, "proposal", up_name) or {})
                .get("status", {})
                .get("ballots", [])
                if b.get("reason") not in (None, "not relayed yet")
            ),
            None,
        ),
        60,
    )
    assert bob_ballot["accepted"] is False and "not a member" in bob_ballot["reason"], bob_ballot
    for who in (alice, carol):
        append_ballot(cluster, ns, up_name, ballot(who, up_pid, "reject"))
    rejected = wait_for("Rejected", lambda: state_is(cluster, ns, up_name, "Rejected"), 60)
    outcome_receipt_verifies(cluster, ns, up_name, service_pem)
    assert rejected["status"]["tally"]["reject"] == 2
    said = wait_for(
        "UpToDate=False ProposalRejected",
        lambda: (
            c
            if (c := condition(cluster.get(ns, "consortium", "demo") or {}, "UpToDate"))["reason"]
            == "ProposalRejected"
            else None
        ),
        60,
    )
    assert up_name in said["message"] and "keep running" in said["message"], said
    final = cluster.get(ns, "consortium", "demo") or {}
    assert final["status"]["runningImage"] == old_image
    assert set(pod_images(cluster, ns).values()) == {old_image}
    assert ready(cluster, ns, "demo", 1)
