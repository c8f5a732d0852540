"""What a user meets on day one, on a real cluster: status that does not lie, bad input that is
refused or reported, and Member changes acted on at once.

* Re-attestation rounds issue new trusted-node lists every few seconds; Ready never flaps, the
  phase never goes back to Bootstrapping, and no Warning Event is written for them.
* Bad input: a Member with an RSA certificate or garbage in PEM armour gets ``Accepted=False``
  naming ``spec.certificate`` and a Warning Event; ``spec.consortium`` cannot move an admitted
  Member; an invalid spec change on a running Consortium says InvalidSpec and keeps the last
  observed facts (nodes, list, members). (``nodes: 1000``, refused by the API server, is
  tested with ``nodes: 0`` in ``test_failures.py``.)
* With the operator's production resync (30 s), a new Member's proposal and its acknowledgement
  show within seconds, not at the next resync.
* A follower pod deleted under load comes back without a term change or a new leader.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

from consortium_node.ctl.client import CtlError, NodeClient
from tests.integration.operator.test_lifecycle import READY_TIMEOUT, ready
from tests.support.gov_kube import (
    ack_through_node,
    append_ballot,
    ballot,
    member_doc,
    proposal_with,
    state_is,
)
from tests.support.harness import Identity, make_identity
from tests.support.kube import Cluster, Operator, sample_docs
from tests.support.wait import wait_for
from tests.unit.operator.support import certificate


def _status(cluster: Cluster, ns: str, kind: str = "consortium", name: str = "demo") -> Any:
    return (cluster.get(ns, kind, name) or {}).get("status") or {}


def _condition(cluster: Cluster, ns: str, kind: str, name: str, type_: str) -> dict[str, Any]:
    return cluster.condition(ns, kind, name, type_)


def test_reattestation_rounds_never_flap_ready(cluster: Cluster, namespace: str) -> None:
    ns = namespace
    members, consortium = sample_docs()
    consortium["spec"]["nodes"] = 3
    # A round every 20 s (validity - renewBefore): three rounds in the minute watched below.
    consortium["spec"]["attestation"].update(validity="75s", renewBefore="55s")
    cluster.apply(ns, *members, consortium)
    obj = wait_for("Ready 3/3", lambda: ready(cluster, ns, "demo", 3), READY_TIMEOUT)
    first_version = obj["status"]["trustedNodeList"]["version"]
    became_ready = time.time()
    seen: list[tuple[str, str, str, int]] = []
    deadline = time.monotonic() + 70
    while time.monotonic() < deadline:
        st = _status(cluster, ns)
        cond = next((c for c in st.get("conditions", []) if c["type"] == "Ready"), {})
        seen.append(
            (
                cond.get("status", ""),
                cond.get("reason", ""),
                st.get("phase", ""),
                int((st.get("trustedNodeList") or {}).get("version", 0)),
            )
        )
        time.sleep(0.5)  # a sampling period, not a wait for a condition
    versions = {v for *_, v in seen}
    assert max(versions) >= first_version + 3, f"fewer rounds than expected: {sorted(versions)}"
    flaps = [s for s in seen if s[0] != "True" or s[2] != "Ready"]
    assert flaps == [], f"{len(flaps)} of {len(seen)} samples not Ready: {flaps[:5]}"
    warnings = [
        e
        for e in cluster.events(ns, "demo")
        if e.get("type") == "Warning"
        and _epoch(e.get("lastTimestamp") or e.get("eventTime") or "") >= became_ready
    ]
    assert warnings == [], [(e["reason"], e["message"]) for e in warnings]
    assert _status(cluster, ns)["firstReadyTime"]
    # The nodes saw the ConfigMap lag behind the lists they issued: not an attack, so no ERROR.
    for pod in ("demo-0", "demo-1", "demo-2"):
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(became_ready))
        logged = cluster.kubectl("-n", ns, "logs", pod, f"--since-time={since}")
        errors = [line for line in logged.splitlines() if " ERROR " in line]
        assert errors == [], f"{pod}: {errors[:3]}"


def _epoch(stamp: str) -> float:
    from datetime import datetime  # noqa: PLC0415

    if not stamp:
        return 0.0
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


GARBAGE = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"


def test_bad_input_is_refused_or_reported_and_changes_nothing(
    cluster: Cluster, namespace: str
) -> None:
    ns = namespace
    members, consortium = sample_docs()
    consortium["spec"]["nodes"] = 1
    cluster.apply(ns, *members, consortium)
    for name, pem in (("rsa", certificate("rsa", "rsa-member")[0]), ("garbage", GARBAGE)):
        bad = copy.deepcopy(members[0])
        bad["metadata"]["name"] = name
        bad["spec"]["certificate"] = pem
        cluster.apply(ns, bad)
    obj = wait_for("Ready 1/1", lambda: ready(cluster, ns, "demo", 1), READY_TIMEOUT)
    for name in ("rsa", "garbage"):
        cond = wait_for(
            f"Member {name} Accepted=False",
            lambda n=name: (
                c
                if (c := _condition(cluster, ns, "member", n, "Accepted")).get("status") == "False"
                else None
            ),
            60,
        )
        assert cond["reason"] == "CertificateInvalid", cond
        assert cond["message"].startswith("spec.certificate: "), cond
        warnings = [e for e in cluster.events(ns, name) if e.get("type") == "Warning"]
        assert any(e["reason"] == "CertificateInvalid" for e in warnings), warnings

    # status.members counts the ledger (alice and bob), not the Member objects (four).
    counted = wait_for(
        "status.members from the ledger",
        lambda: m if (m := _status(cluster, ns).get("members", {})).get("resources") == 4 else None,
        60,
    )
    assert counted == {"total": 2, "active": 2, "resources": 4}, counted
    assert obj["status"]["firstReadyTime"]

    # spec.consortium of an admitted Member cannot move it.
    alice = members[0]["metadata"]["name"]
    moved = {"spec": {"consortium": "elsewhere"}}
    cluster.kubectl("-n", ns, "patch", "member", alice, "--type", "merge", "-p", json.dumps(moved))
    cond = wait_for(
        "ConsortiumImmutable",
        lambda: (
            c
            if (c := _condition(cluster, ns, "member", alice, "Accepted")).get("reason")
            == "ConsortiumImmutable"
            else None
        ),
        60,
    )
    assert "delete" in cond["message"] and "'demo'" in cond["message"], cond
    assert _status(cluster, ns, "member", alice)["consortium"]["name"] == "demo"
    assert _status(cluster, ns)["members"]["total"] == 2  # still in demo's ledger and counts
    back = {"spec": {"consortium": "demo"}}
    cluster.kubectl("-n", ns, "patch", "member", alice, "--type", "merge", "-p", json.dumps(back))
    wait_for(
        "alice Accepted again",
        lambda: (
            _condition(cluster, ns, "member", alice, "Accepted").get("status") == "True" or None
        ),
        60,
    )

    # An invalid change to a running Consortium: InvalidSpec, last facts kept, then fixed.
    before = _status(cluster, ns)
    short = copy.deepcopy(consortium)
    short["spec"]["attestation"].update(validity="10s", renewBefore="5s")
    cluster.apply(ns, short)
    cond = wait_for(
        "InvalidSpec",
        lambda: (
            c
            if (c := _condition(cluster, ns, "consortium", "demo", "Ready")).get("reason")
            == "InvalidSpec"
            else None
        ),
        60,
    )
    assert cond["message"].startswith("spec.attestation.validity: "), cond
    kept = _status(cluster, ns)
    assert kept["phase"] == "Failed"
    for key in ("nodes", "trustedNodes", "nodesReady", "members", "trustedNodeList", "ledger"):
        assert kept.get(key) is not None, key
    assert kept["trustedNodes"] == 1 and len(kept["nodes"]) == 1
    assert kept["members"]["total"] == before["members"]["total"] == 2
    cluster.apply(ns, consortium)
    wait_for("Ready again once fixed", lambda: ready(cluster, ns, "demo", 1), READY_TIMEOUT)


def test_member_changes_are_acted_on_at_once(
    cluster: Cluster, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """With the production resync of 30 s: a new Member's proposal, and its ack sent straight
    to a node, show within seconds (each deadline, 20 s, is under the resync, which would
    otherwise be the first pass to notice; typical figures are printed)."""
    ns = namespace
    ids = tmp_path / "ids"
    alice = make_identity(ids, "alice", "governor")
    dave = make_identity(ids, "dave", "governor")
    operator.stop()
    production = Operator(tmp_path / "operator.log", resync_seconds="30")
    try:
        production.start()
        _, consortium = sample_docs()
        consortium["spec"]["nodes"] = 1
        cluster.apply(ns, member_doc(alice), consortium)
        obj = wait_for("Ready 1/1", lambda: ready(cluster, ns, "demo", 1), READY_TIMEOUT)
        # Let the pass that saw Ready settle into its 30 s resync.
        wait_for(
            "alice Active",
            lambda: (
                _condition(cluster, ns, "member", "alice", "Active").get("status") == "True" or None
            ),
            60,
        )
        started = time.monotonic()
        cluster.apply(ns, member_doc(dave))
        add = wait_for("add-member proposal", lambda: proposal_with(cluster, ns, "add-member"), 20)
        to_proposal = time.monotonic() - started
        append_ballot(
            cluster,
            ns,
            add["metadata"]["name"],
            ballot(alice, add["status"]["proposalId"], "approve"),
        )
        name = add["metadata"]["name"]
        try:
            wait_for("dave accepted", lambda: state_is(cluster, ns, name, "Accepted"), 20)
        except AssertionError:
            print(json.dumps(cluster.get(ns, "proposal", name), indent=1)[-3000:])
            raise
        wait_for(
            "dave needs to acknowledge",
            lambda: (
                _condition(cluster, ns, "member", "dave", "Active").get("reason")
                == "AcknowledgementNeeded"
                or None
            ),
            20,
        )
        service = tmp_path / "service.pem"
        service.write_text(obj["status"]["serviceCertificate"])
        ip = obj["status"]["nodes"][0]["podIP"]
        started = time.monotonic()
        ack_through_node(dave, ip, service)
        wait_for(
            "dave Active",
            lambda: (
                _condition(cluster, ns, "member", "dave", "Active").get("status") == "True" or None
            ),
            20,
        )
        to_active = time.monotonic() - started
        print(f"Member → proposal {to_proposal:.1f} s; ack → Active {to_active:.1f} s")
    finally:
        production.stop()
        operator.start()


def _state(ip: str, service_pem: str, who: Identity) -> dict[str, Any] | None:
    try:
        reply = NodeClient(f"https://{ip}:8443", service_pem, who.cert, who.key, 5).request(
            "GET", "/node/state"
        )
    except (CtlError, OSError):
        return None
    found: dict[str, Any] = reply.json()
    return found if reply.status == 200 else None


def test_a_restarted_follower_does_not_depose_the_leader(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """A follower pod deleted under a write load comes back (new pod, new IP, same volume)
    without a term change or a new leader (PreVote, leader stickiness), and the writes to the
    leader pause for no longer than an election timeout would."""
    ns = namespace
    alice = make_identity(tmp_path / "ids", "alice", "governor")
    _, consortium = sample_docs()
    consortium["spec"]["nodes"] = 3
    cluster.apply(ns, member_doc(alice), consortium)
    obj = wait_for("Ready 3/3", lambda: ready(cluster, ns, "demo", 3), READY_TIMEOUT)
    pem = obj["status"]["serviceCertificate"]
    ips = {n["name"]: n["podIP"] for n in obj["status"]["nodes"]}

    def leader() -> tuple[str, int] | None:
        for name, ip in ips.items():
            st = _state(ip, pem, alice)
            if st is not None and st["role"] == "primary":
                return name, int(st["term"])
        return None

    primary, term = wait_for("a primary", leader, 30)
    acked: list[float] = []
    stop = threading.Event()

    def write() -> None:
        client = NodeClient(f"https://{ips[primary]}:8443", pem, alice.cert, alice.key, 10)
        i = 0
        while not stop.is_set():
            body = {"transactions": [{"writes": {f"k{i}": i}}]}
            try:
                if client.request("POST", "/app/transactions", body=body).status == 200:
                    acked.append(time.monotonic())
                    i += 1
            except (CtlError, OSError):
                pass
            stop.wait(0.05)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        wait_for("writes flowing", lambda: len(acked) >= 20, 30)
        follower = next(n for n in sorted(ips) if n != primary)
        old_uid = (cluster.get(ns, "pod", follower) or {})["metadata"]["uid"]
        cluster.kubectl("-n", ns, "delete", "pod", follower, "--wait=false")
        started = time.monotonic()

        seen: dict[str, float] = {}

        def back() -> dict[str, Any] | None:
            pod = cluster.get(ns, "pod", follower) or {}
            ip = (pod.get("status") or {}).get("podIP")
            if pod.get("metadata", {}).get("uid") in (None, old_uid) or not ip:
                return None
            seen.setdefault("new pod has an IP", time.monotonic() - started)
            st = _state(ip, pem, alice)
            if st is None:
                return None
            seen.setdefault("node answers", time.monotonic() - started)
            lead = _state(ips[primary], pem, alice)
            caught_up = lead and st["commit_index"] >= lead["commit_index"] - 50
            return st if caught_up and st["role"] == "backup" else None

        try:
            rejoined = wait_for(f"{follower} back and caught up", back, 240)
        except AssertionError:
            pod = cluster.get(ns, "pod", follower) or {}
            ip = (pod.get("status") or {}).get("podIP")
            print("seen:", seen, "restarted:", ip and _state(ip, pem, alice))
            print("leader:", _state(ips[primary], pem, alice))
            print(cluster.kubectl("-n", ns, "logs", follower, check=False)[-3000:])
            print(cluster.kubectl("-n", ns, "logs", primary, check=False)[-3000:])
            raise
        caught_up_after = time.monotonic() - started
        wait_for("more writes after it", lambda: len(acked) >= 40, 30)
    finally:
        stop.set()
        writer.join(15)
    now = _state(ips[primary], pem, alice)
    assert now is not None and now["role"] == "primary", now  # the same leader…
    assert int(now["term"]) == term, (term, now["term"])  # …in the same term
    assert int(rejoined["term"]) == term, rejoined
    gaps = [b - a for a, b in itertools.pairwise(acked)]
    assert max(gaps) < 2.0, f"writes paused {max(gaps):.2f} s (election timeout 1 s)"
    print(
        f"restart: term {term} kept, caught up after {caught_up_after:.1f} s {seen}, longest "
        f"write gap {max(gaps) * 1000:.0f} ms"
    )
