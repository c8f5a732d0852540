"""Governance seams the Kubernetes operator relies on, on a real node process: the operator's
member identity may propose and withdraw (never vote), every proposal's outcome has a receipt at
``/gov/proposals/<id>/receipt`` that verifies offline, and ``/node/network`` says what the
members decided (attestation policy, constitution)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consortium_node.identity.certs import load_certificate
from consortium_node.ledger.receipt import verify_receipt
from tests.integration.test_governance import Gov, add_measurement, member_id
from tests.support.harness import Identity, make_identity
from tests.support.wait import wait_for


class OperatorGov(Gov):
    """Gov plus a member with role ``operator`` in the genesis."""

    def __init__(self, workdir: Path) -> None:
        self.operator = make_identity(workdir / "ids", "operator", "operator")
        super().__init__(workdir)

    def members_at_genesis(self) -> list[Identity]:
        return [*super().members_at_genesis(), self.operator]


@pytest.fixture
def gov(tmp_path: Path) -> Iterator[OperatorGov]:
    g = OperatorGov(tmp_path)
    yield g
    g.node.stop()


def _receipt(gov: Gov, pid: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        status, body = gov.node.get(f"/gov/proposals/{pid}/receipt")
        assert status in (200, 202), body
        return body if status == 200 else None

    found: dict[str, Any] = wait_for(f"receipt of proposal {pid[:16]}", ready, 10, interval=0.05)
    return found


def test_operator_proposes_governors_decide_and_the_outcome_receipt_verifies(
    gov: OperatorGov,
) -> None:
    g0, g1, _ = gov.governors
    opened = gov.propose(gov.operator, add_measurement())
    pid = opened["proposal_id"]
    assert opened["state"] == "Open" and opened["proposer"] == member_id(gov.operator)
    # The operator cannot vote on it (nor on anything).
    status, body = gov.vote(gov.operator, pid, "approve")
    assert status == 403 and body["error"]["field"] == "document.kid", body
    assert gov.vote(g0, pid, "approve")[0] == 200
    status, body = gov.vote(g1, pid, "approve")
    assert status == 200 and body["state"] == "Accepted", body
    receipt = _receipt(gov, pid)
    assert receipt["txid"] == gov.proposal(pid)["txid"]
    verify_receipt(receipt, load_certificate(gov.node.service_cert.read_bytes()))
    status, network = gov.node.get("/node/network")
    assert status == 200
    assert add_measurement()["args"]["measurement"] in network["attestation_policy"]["measurements"]
    assert network["constitution"]["auto_trust_nodes"] in (True, False)


def test_operator_withdraws_its_own_proposal_only(gov: OperatorGov) -> None:
    g0 = gov.governors[0]
    ours = gov.propose(gov.operator, add_measurement("cd" * 32))["proposal_id"]
    theirs = gov.propose(g0, add_measurement("ef" * 32))["proposal_id"]
    status, body = gov.post(
        f"/gov/proposals/{theirs}/withdraw",
        gov.sign(gov.operator, {"type": "withdrawal", "proposal_id": theirs}),
    )
    assert status == 409 and "only the proposer" in body["error"]["reason"], body
    status, body = gov.post(
        f"/gov/proposals/{ours}/withdraw",
        gov.sign(gov.operator, {"type": "withdrawal", "proposal_id": ours}),
    )
    assert status == 200 and body["state"] == "Withdrawn", body
    verify_receipt(_receipt(gov, ours), load_certificate(gov.node.service_cert.read_bytes()))


def test_receipt_of_an_unknown_proposal_is_404(gov: OperatorGov) -> None:
    status, body = gov.node.get(f"/gov/proposals/{'0' * 64}/receipt")
    assert status == 404 and body["error"]["field"] == "proposal_id", body
    status, body = gov.node.get("/gov/proposals/nothex/receipt")
    assert status == 400, body
