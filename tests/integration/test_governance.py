"""Governance on a real node process: signed proposals and ballots over the API, decided by the
constitution, applied atomically, every outcome in the ledger with a receipt that verifies
offline with only the service certificate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from consortium_node.common.canonical import canonical_json
from consortium_node.common.timeutil import rfc3339
from consortium_node.governance.documents import sign_document
from consortium_node.identity import keys
from consortium_node.identity.certs import certificate_der, load_certificate
from consortium_node.identity.cose import sign1
from consortium_node.ledger.receipt import verify_receipt
from tests.support.harness import Identity, LocalNode, make_identity, make_platform
from tests.support.wait import wait_for

CONSORTIUM = "test"
NEW_MEASUREMENT = "ab" * 32


class Gov:
    """Three governors and a user on one genesis node."""

    def __init__(self, workdir: Path) -> None:
        ids = workdir / "ids"
        self.governors = [make_identity(ids, f"gov{i}", "governor") for i in range(3)]
        self.user = make_identity(ids, "user0", "user", kind="ed25519")
        self.outsider = make_identity(ids, "outsider", "governor")
        key, cert = make_platform(workdir / "platform")
        self.node = LocalNode(workdir, "node-0", self.members_at_genesis(), key, cert)
        self.node.start()

    def members_at_genesis(self) -> list[Identity]:
        return [*self.governors, self.user]

    def sign(self, who: Identity, payload: dict[str, Any]) -> bytes:
        key = keys.load_private_key(who.key.read_bytes())
        return sign_document(key, who.cert.read_text(), {"consortium": CONSORTIUM, **payload})

    def post(self, path: str, envelope: bytes, identity: Identity | None = None) -> tuple[int, Any]:
        status, body, _ = self.node.request(
            "POST", path, envelope, identity, {"Content-Type": "application/cose"}
        )
        return status, json.loads(body)

    def propose(self, who: Identity, *actions: dict[str, Any]) -> dict[str, Any]:
        payload = {
            "type": "proposal",
            "created_at": rfc3339(datetime.now(UTC)),
            "actions": list(actions),
        }
        status, body = self.post("/gov/proposals", self.sign(who, payload))
        assert status == 200, body
        return body

    def vote(self, who: Identity, pid: str, vote: str) -> tuple[int, Any]:
        payload = {"type": "ballot", "proposal_id": pid, "vote": vote}
        return self.post(f"/gov/proposals/{pid}/ballots", self.sign(who, payload))

    def proposal(self, pid: str) -> dict[str, Any]:
        status, body = self.node.get(f"/gov/proposals/{pid}")
        assert status == 200, body
        result: dict[str, Any] = body
        return result

    def policy_measurements(self) -> list[str]:
        status, body = self.node.get("/node/trusted-list?format=json")
        assert status == 200, body
        return list(body["allowed_measurements"])

    def receipt_verifies(self, txid: str) -> bool:
        def ready() -> dict[str, Any] | None:
            status, body = self.node.get(f"/app/receipt?txid={txid}", self.user)
            assert status in (200, 202), body
            return body if status == 200 else None

        receipt = wait_for(f"receipt of {txid}", ready, 10, interval=0.05)
        service = load_certificate(self.node.service_cert.read_bytes())
        verify_receipt(receipt, service)
        return True


@pytest.fixture
def gov(tmp_path: Path) -> Iterator[Gov]:
    g = Gov(tmp_path)
    yield g
    g.node.stop()


def add_measurement(value: str = NEW_MEASUREMENT) -> dict[str, Any]:
    return {"name": "add_measurement", "args": {"measurement": value}}


def test_majority_accepts_a_measurement_and_the_receipt_proves_it(gov: Gov) -> None:
    g0, g1, g2 = gov.governors
    opened = gov.propose(g0, add_measurement())
    pid = opened["proposal_id"]
    assert opened["state"] == "Open" and opened["tally"] == {
        "approve": 0,
        "reject": 0,
        "needed": 2,
        "governors": 3,
    }
    assert NEW_MEASUREMENT not in gov.policy_measurements()
    status, body = gov.vote(g0, pid, "approve")
    assert status == 200 and body["state"] == "Open"
    status, body = gov.vote(g1, pid, "approve")
    assert status == 200 and body["state"] == "Accepted", body
    # Applied in the same transaction: a new trusted-node list allows the measurement.
    assert NEW_MEASUREMENT in gov.policy_measurements()
    # The outcome, with every signed document, is in the ledger; its receipt verifies offline.
    shown = gov.proposal(pid)
    assert shown["state"] == "Accepted" and set(shown["documents"]["ballots"]) == {
        member_id(g0),
        member_id(g1),
    }
    assert gov.receipt_verifies(shown["txid"])
    # A late ballot is refused: the proposal is decided.
    status, body = gov.vote(g2, pid, "reject")
    assert status == 409 and "Accepted" in body["error"]["reason"]


def test_a_minority_does_not_pass(gov: Gov) -> None:
    g0, g1, g2 = gov.governors
    pid = gov.propose(g0, add_measurement())["proposal_id"]
    assert gov.vote(g0, pid, "approve")[1]["state"] == "Open"
    assert gov.vote(g1, pid, "reject")[1]["state"] == "Open"
    status, body = gov.vote(g2, pid, "reject")
    assert status == 200 and body["state"] == "Rejected", body
    assert NEW_MEASUREMENT not in gov.policy_measurements()
    assert gov.receipt_verifies(gov.proposal(pid)["txid"])


def member_id(who: Identity) -> str:
    return keys.member_id_of(certificate_der(load_certificate(who.cert.read_bytes())))


def test_forged_and_outsider_ballots_are_refused(gov: Gov) -> None:
    g0, g1, _ = gov.governors
    pid = gov.propose(g0, add_measurement())["proposal_id"]
    # Claims to be g1 (its kid) but is signed with the outsider's key.
    payload = {"type": "ballot", "consortium": CONSORTIUM, "proposal_id": pid, "vote": "approve"}
    forged = sign1(
        keys.load_private_key(gov.outsider.key.read_bytes()),
        canonical_json(payload),
        kid=bytes.fromhex(member_id(g1)),
    )
    status, body = gov.post(f"/gov/proposals/{pid}/ballots", forged, identity=g1)
    assert status == 403 and body["error"]["code"] == "SignatureRefused", body
    status, body = gov.vote(gov.outsider, pid, "approve")
    assert status == 403 and "not a member" in body["error"]["reason"]
    # A user may not vote either.
    status, body = gov.vote(gov.user, pid, "approve")
    assert status == 403 and "only governors" in body["error"]["reason"]
    shown = gov.proposal(pid)
    assert shown["state"] == "Open" and shown["ballots"] == {}


def test_a_removed_members_later_ballot_is_refused(gov: Gov) -> None:
    g0, g1, g2 = gov.governors
    removal = gov.propose(g0, {"name": "remove_member", "args": {"member_id": member_id(g2)}})
    other = gov.propose(g0, add_measurement())["proposal_id"]
    gov.vote(g0, removal["proposal_id"], "approve")
    status, body = gov.vote(g1, removal["proposal_id"], "approve")
    assert status == 200 and body["state"] == "Accepted", body
    status, body = gov.vote(g2, other, "approve")
    assert status == 403 and "not a member" in body["error"]["reason"], body
    # Two governors remain: a majority is now 2 of 2.
    assert gov.vote(g0, other, "approve")[1]["tally"]["needed"] == 2


def test_a_new_member_is_accepted_then_active_after_its_ack(gov: Gov, tmp_path: Path) -> None:
    g0, g1, _ = gov.governors
    newcomer = make_identity(tmp_path / "ids", "gov3", "governor", kind="ed25519")
    action = {
        "name": "add_member",
        "args": {"certificate": newcomer.cert.read_text(), "role": "governor"},
    }
    pid = gov.propose(g0, action)["proposal_id"]
    gov.vote(g0, pid, "approve")
    assert gov.vote(g1, pid, "approve")[1]["state"] == "Accepted"
    # Accepted, not yet Active: it cannot vote, and governors are still 3.
    other = gov.propose(g0, add_measurement())["proposal_id"]
    status, body = gov.vote(newcomer, other, "approve")
    assert status == 403 and "Accepted, not Active" in body["error"]["reason"]
    ack = gov.sign(newcomer, {"type": "ack", "member_id": member_id(newcomer)})
    status, body = gov.post("/gov/members/ack", ack)
    assert status == 200 and body["status"] == "Active", body
    assert gov.receipt_verifies(body["txid"])
    status, body = gov.vote(newcomer, other, "approve")
    assert status == 200 and body["tally"]["governors"] == 4 and body["tally"]["needed"] == 3


def test_withdrawal_and_conflicting_proposals(gov: Gov) -> None:
    g0, g1, _ = gov.governors
    first = gov.propose(g0, add_measurement())["proposal_id"]
    rival = gov.propose(
        g1, add_measurement(), {"name": "add_host_data", "args": {"host_data": "cd" * 32}}
    )
    withdrawn = gov.propose(g0, add_measurement("ef" * 32))["proposal_id"]
    payload = {"type": "withdrawal", "proposal_id": withdrawn}
    status, body = gov.post(f"/gov/proposals/{withdrawn}/withdraw", gov.sign(g1, payload))
    assert status == 409 and "only the proposer" in body["error"]["reason"]
    status, body = gov.post(f"/gov/proposals/{withdrawn}/withdraw", gov.sign(g0, payload))
    assert status == 200 and body["state"] == "Withdrawn"
    gov.vote(g0, first, "approve")
    assert gov.vote(g1, first, "approve")[1]["state"] == "Accepted"
    # The rival touched the same measurement: its ballots were cast on another state.
    shown = gov.proposal(rival["proposal_id"])
    assert shown["state"] == "Rejected" and shown["reason"].startswith("Invalidated")
    status, body = gov.node.get("/gov/proposals")
    states = {p["proposal_id"]: p["state"] for p in body["proposals"]}
    assert states == {first: "Accepted", rival["proposal_id"]: "Rejected", withdrawn: "Withdrawn"}


def test_bad_documents_are_named_and_change_nothing(gov: Gov) -> None:
    g0 = gov.governors[0]
    for body, field in (
        (b"", "body"),
        (b"not cose", "document"),
        (
            gov.sign(
                g0, {"type": "proposal", "created_at": "soon", "actions": [add_measurement()]}
            ),
            "payload.created_at",
        ),
        (
            gov.sign(
                g0,
                {
                    "type": "proposal",
                    "created_at": rfc3339(datetime.now(UTC)),
                    "actions": [add_measurement("XY")],
                },
            ),
            "payload.actions[0].args.measurement",
        ),
    ):
        status, answer = gov.post("/gov/proposals", body)
        assert status == 400 and answer["error"]["field"] == field, answer
    status, answer = gov.node.get("/gov/proposals/" + "00" * 32)
    assert status == 404
    assert gov.node.get("/gov/proposals")[1] == {"proposals": []}


def test_consortiumctl_proposes_votes_and_lists_through_a_node(
    gov: Gov, capsys: pytest.CaptureFixture[str]
) -> None:
    from consortium_node.ctl.main import main  # noqa: PLC0415

    def ctl(who: Identity, *argv: str) -> tuple[int, Any, str]:
        code = main(
            [
                *argv,
                "--consortium", CONSORTIUM, "--cert", str(who.cert), "--key", str(who.key),
                "--node", gov.node.url, "--service-cert", str(gov.node.service_cert),
            ]
        )  # fmt: skip
        out, err = capsys.readouterr()
        return code, json.loads(out) if out.strip() else None, err

    g0, g1, _ = gov.governors
    code, opened, err = ctl(g0, "propose", "--add-measurement", NEW_MEASUREMENT)
    assert code == 0 and opened["state"] == "Open", err
    pid = opened["proposal_id"]
    assert ctl(g0, "vote", "--proposal-id", pid, "--approve")[1]["state"] == "Open"
    code, voted, err = ctl(g1, "vote", "--proposal-id", pid, "--approve")
    assert code == 0 and voted["state"] == "Accepted", err
    # A refused ballot is a clear message and a non-zero exit.
    code, _, err = ctl(g1, "vote", "--proposal-id", pid, "--reject")
    assert code == 1 and "HTTP 409" in err and "Accepted" in err
    service = ["--node", gov.node.url, "--service-cert", str(gov.node.service_cert)]
    assert main(["proposals", "list", *service]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(p["proposal_id"], p["state"], p["actions"]) for p in listed] == [
        (pid, "Accepted", ["add_measurement"])
    ]
    assert main(["proposals", "show", pid, *service]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tally"] == {"approve": 2, "reject": 0, "needed": 2, "governors": 3}
    assert gov.receipt_verifies(shown["txid"])
    # Neither --out nor --node: nothing to do with the document.
    code = main(["ack", "--consortium", CONSORTIUM, "--cert", str(g0.cert), "--key", str(g0.key)])
    assert code == 2 and "--out FILE" in capsys.readouterr().err
