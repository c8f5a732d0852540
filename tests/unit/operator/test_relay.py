"""relay.py against an in-memory Kubernetes and a tiny governance node.

``FakeKube`` keeps objects the way the API server would for the calls the relay makes: apply
is server-side apply by one field manager (fields it applied before and omits now are
removed), patch_status is a JSON merge patch (RFC 7386). ``FakeNode`` verifies documents with
the nodes' own ``verify_document`` against a members table and answers like
``server/governance.py`` (200 view, 403 SignatureRefused, 400, 404, 409 Conflict).
"""

from __future__ import annotations

import base64
import builtins
import copy
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consortium_node.governance.documents import (
    Signer,
    document_id,
    verify_document,
)
from consortium_node.governance.errors import GovernanceError, SignatureRefusedError
from consortium_node.identity.keys import private_key_pem
from consortium_operator.api import conditions as c
from consortium_operator.api.names import LABEL_CONSORTIUM
from consortium_operator.api.spec import parse_member
from consortium_operator.nodes.client import NodeUnreachableError, Reply
from consortium_operator.proposals import intents as gov
from consortium_operator.proposals import relay as relay_module
from consortium_operator.proposals.mirror import Document
from consortium_operator.proposals.relay import (
    Relay,
    RelayMemory,
    operator_signer,
    propose_removal,
)
from tests.unit.governance.support import (
    Member,
    add_measurement,
    ballot_payload,
    member,
    proposal_payload,
)

T0 = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
NS = "ns"
ALICE, BOB, CAROL = member("relay-alice"), member("relay-bob"), member("relay-carol")
MALLORY = member("relay-mallory")  # a key, but no member
OPERATOR = member("relay-operator", "ed25519")
SIGNER = (OPERATOR.key, OPERATOR.certificate_pem)
NAMES = {
    ALICE.member_id: "alice",
    BOB.member_id: "bob",
    CAROL.member_id: "carol",
    OPERATOR.member_id: "operator",
}
CONSORTIUM: dict[str, Any] = {
    "apiVersion": "consortium.tee.dev/v1alpha1",
    "kind": "Consortium",
    "metadata": {"name": "demo", "namespace": NS, "uid": "uid-demo"},
}
M3, M4 = "03" * 32, "04" * 32


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def tampered(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 1])


# --- an in-memory Kubernetes ----------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, null deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _prune(obj: dict[str, Any], before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
    """Remove what the manager applied before and no longer applies (SSA ownership)."""
    for key, value in before.items():
        if key not in after:
            obj.pop(key, None)
        elif (
            isinstance(value, Mapping)
            and isinstance(after[key], Mapping)
            and isinstance(obj.get(key), dict)
        ):
            _prune(obj[key], value, after[key])


def _overlay(obj: dict[str, Any], manifest: Mapping[str, Any]) -> None:
    for key, value in manifest.items():
        if isinstance(value, Mapping) and isinstance(obj.get(key), dict):
            _overlay(obj[key], value)
        else:
            obj[key] = copy.deepcopy(value)


Key = tuple[str, str, str]


@dataclass
class FakeKube:
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    applied: dict[Key, dict[str, Any]] = field(default_factory=dict)  # our last apply, per object
    applies: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    status_writes: list[str] = field(default_factory=list)
    events: list[tuple[str, str, str, str]] = field(default_factory=list)  # name, type, reason, msg
    version: int = 0

    def _bump(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

    def list(
        self, kind: str, namespace: str | None, selector: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        assert selector is None
        return [copy.deepcopy(o) for (k, ns, _), o in sorted(self.objects.items()) if k == kind]

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        found = self.objects.get((kind, str(namespace), name))
        return copy.deepcopy(found) if found is not None else None

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        key = (str(manifest["kind"]), str(meta["namespace"]), str(meta["name"]))
        self.applies.append(key[2])
        obj = self.objects.get(key)
        if obj is None:
            obj = {"metadata": {"uid": f"uid-{key[2]}-{self.version}", "generation": 1}}
            self.objects[key] = obj
        spec_before = copy.deepcopy(obj.get("spec"))
        _prune(obj, self.applied.get(key, {}), manifest)
        _overlay(obj, manifest)
        if spec_before is not None and obj.get("spec") != spec_before:
            obj["metadata"]["generation"] += 1
        self.applied[key] = copy.deepcopy(dict(manifest))
        self._bump(obj)
        return copy.deepcopy(obj)

    def delete(
        self, kind: str, namespace: str | None, name: str, *, uid: str | None = None
    ) -> bool:
        key = (kind, str(namespace), name)
        obj = self.objects.get(key)
        if obj is None or (uid is not None and obj["metadata"]["uid"] != uid):
            return False
        self.deletes.append(name)
        del self.objects[key]
        self.applied.pop(key, None)
        return True

    def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        obj = self.objects[(kind, namespace, name)]
        self.status_writes.append(name)
        obj["status"] = merge_patch(obj.get("status"), status)
        self._bump(obj)

    def event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str, now: str
    ) -> None:
        self.events.append((involved["metadata"]["name"], type_, reason, message))

    # -- what other clients (members with kubectl) do
    def create(self, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> None:
        meta: dict[str, Any] = {"name": name, "namespace": NS, "uid": f"uid-{name}"}
        meta["generation"] = 1
        if labels:
            meta["labels"] = labels
        obj = {
            "apiVersion": "consortium.tee.dev/v1alpha1",
            "kind": "Proposal",
            "metadata": meta,
            "spec": spec,
        }
        self.objects[("Proposal", NS, name)] = obj
        self._bump(obj)

    def add_ballot(self, name: str, raw: bytes) -> None:
        obj = self.objects[("Proposal", NS, name)]
        obj["spec"].setdefault("ballots", []).append(b64(raw))
        obj["metadata"]["generation"] += 1
        self._bump(obj)

    def proposal(self, name: str) -> dict[str, Any]:
        found = self.get("Proposal", NS, name)
        assert found is not None, name
        return found

    def reasons(self, name: str) -> builtins.list[str]:
        return [reason for n, _, reason, _ in self.events if n == name]


# --- a tiny governance node -------------------------------------------------------------------


def _error(status: int, code: str, fld: str | None, reason: str) -> Reply:
    body = {"error": {"code": code, "field": fld, "reason": reason}}
    return Reply(status, json.dumps(body).encode(), None)


@dataclass
class FakeNode:
    """The primary's governance API, for one consortium, majority of three governors."""

    members: dict[str, Signer]
    proposals: dict[str, dict[str, Any]] = field(default_factory=dict)
    posts: list[str] = field(default_factory=list)
    gets: list[str] = field(default_factory=list)
    unreachable: bool = False
    receipt_ready: bool = True
    tx: int = 10
    needed: int = 2

    def _txid(self) -> str:
        self.tx += 1
        return f"2.{self.tx}"

    def _check(self) -> None:
        if self.unreachable:
            raise NodeUnreachableError("demo-0.demo-nodes (10.0.0.1): timed out")

    def get(self, path: str) -> Reply:
        self._check()
        self.gets.append(path)
        parts = path.strip("/").split("/")  # gov proposals <id> [receipt]
        record = self.proposals.get(parts[2])
        if record is None:
            return _error(404, "NotFound", "proposal_id", f"no proposal {parts[2]}")
        if parts[3:] == ["receipt"]:
            if not self.receipt_ready:
                return Reply(202, b'{"retry_after_ms": 100}', None)
            receipt = {"txid": record["txid"], "leaf": "ab" * 32, "proof": []}
            return Reply(200, json.dumps(receipt).encode(), None)
        return Reply(200, json.dumps(record).encode(), None)

    def post(self, path: str, document: bytes) -> Reply:
        self._check()
        self.posts.append(path)
        parts = path.strip("/").split("/")
        kind = {2: "proposal"}.get(len(parts)) or {"ballots": "ballot", "withdraw": "withdrawal"}[
            parts[3]
        ]
        try:
            doc = verify_document(document, kind, "demo", self.members)
        except SignatureRefusedError as exc:
            return _error(403, "SignatureRefused", exc.field, exc.reason)
        except GovernanceError as exc:
            return _error(400, "BadRequest", exc.field, exc.reason)
        if kind == "proposal":
            if doc.document_id in self.proposals:
                return _error(409, "Conflict", "proposal", "this proposal was already submitted")
            self.proposals[doc.document_id] = self._open(doc.document_id, doc.signer, document)
            return self.get(f"/gov/proposals/{doc.document_id}")
        record = self.proposals.get(parts[2])
        if record is None:
            return _error(404, "NotFound", "proposal_id", f"no proposal {parts[2]}")
        if doc.payload["proposal_id"] != parts[2]:
            return _error(409, "Conflict", "payload.proposal_id", "not about this proposal")
        if record["state"] != "Open":
            return _error(409, "Conflict", "proposal", f"is {record['state']}: no more ballots")
        if kind == "ballot":
            if doc.signer in record["ballots"]:
                return _error(409, "Conflict", "ballot", "this member has already voted")
            record["ballots"][doc.signer] = doc.payload["vote"]
            record["documents"]["ballots"][doc.signer] = b64(document)
            approve = sum(v == "approve" for v in record["ballots"].values())
            record["tally"]["approve"] = approve
            record["tally"]["reject"] = len(record["ballots"]) - approve
            if approve >= self.needed:
                record["state"], record["reason"] = "Accepted", f"{approve} of 3 approved"
        else:
            if doc.signer != record["proposer"]:
                return _error(
                    409, "Conflict", "document.kid", "only the proposer can withdraw a proposal"
                )
            record["state"], record["reason"] = "Withdrawn", "withdrawn by the proposer"
            record["documents"]["withdrawal"] = b64(document)
        record["txid"] = self._txid()
        return self.get(f"/gov/proposals/{parts[2]}")

    def _open(self, pid: str, proposer: str, document: bytes) -> dict[str, Any]:
        doc = Document.decode(b64(document), "proposal")
        return {
            "proposal_id": pid,
            "proposer": proposer,
            "actions": doc.payload["actions"],
            "created_at": doc.payload["created_at"],
            "expires_at": "2026-01-08T00:00:00Z",
            "state": "Open",
            "reason": "",
            "ballots": {},
            "subjects": [],
            "tally": {"approve": 0, "reject": 0, "needed": self.needed, "governors": 3},
            "documents": {"proposal": b64(document), "ballots": {}},
            "txid": self._txid(),
        }

    def set_state(self, pid: str, state: str, reason: str = "") -> None:
        self.proposals[pid].update(state=state, reason=reason, txid=self._txid())

    def ballot_posts(self) -> list[str]:
        return [p for p in self.posts if p.endswith("/ballots")]

    def receipt_gets(self) -> list[str]:
        return [p for p in self.gets if p.endswith("/receipt")]


def node_members(operator_status: str = "Active") -> dict[str, Signer]:
    out = {m.member_id: m.signer("governor", "Active") for m in (ALICE, BOB, CAROL)}
    out[OPERATOR.member_id] = OPERATOR.signer("operator", operator_status)
    return out


# --- the world: one Consortium, its Proposal CRs, its primary --------------------------------


@dataclass
class World:
    kube: FakeKube = field(default_factory=FakeKube)
    node: FakeNode = field(default_factory=lambda: FakeNode(node_members()))
    memory: RelayMemory = field(default_factory=RelayMemory)
    now: datetime = T0
    primary: bool = True
    signer: Any = SIGNER

    def relay(self) -> Relay:
        return Relay(
            self.kube,  # type: ignore[arg-type]
            NS,
            CONSORTIUM,
            self.node if self.primary else None,  # type: ignore[arg-type]
            self.memory,
            self.now,
            self.signer,
        )

    def run(self, wanted: Sequence[gov.Intent] | None = None) -> dict[str, dict[str, Any]]:
        """One pass as governing.governance makes it: propose, then relay and mirror each."""
        relay = self.relay()
        bodies = relay.proposals()
        if wanted is not None:
            relay.propose(wanted, {b["metadata"]["name"]: b for b in bodies})
        statuses = {b["metadata"]["name"]: relay.mirror(b, relay.relay(b), NAMES) for b in bodies}
        self.now += timedelta(seconds=30)
        return statuses


def alice_proposal(actions: list[dict[str, Any]] | None = None) -> bytes:
    return ALICE.sign(proposal_payload(actions or [add_measurement()], created_at=T0))


def ballot(who: Member, raw_proposal: bytes, vote: str = "approve") -> bytes:
    return who.sign(ballot_payload(document_id(raw_proposal), vote))


def world_with_alices_proposal(name: str = "upgrade") -> tuple[World, bytes]:
    w = World()
    raw = alice_proposal()
    w.kube.create(name, {"consortium": "demo", "proposal": b64(raw)})
    return w, raw


# --- relaying members' documents ----------------------------------------------------------------


def test_a_new_proposal_is_posted_once_and_mirrored_open() -> None:
    w, raw = world_with_alices_proposal()
    status = w.run()["upgrade"]
    assert w.node.posts == ["/gov/proposals"]
    assert document_id(raw) in w.node.proposals
    assert (status["state"], status["votes"], status["proposalId"]) == (
        "Open",
        "0/2",
        document_id(raw),
    )
    assert status["proposerName"] == "alice"
    assert w.kube.proposal("upgrade")["status"]["state"] == "Open"
    assert w.kube.reasons("upgrade") == ["ProposalOpen"]
    writes = len(w.kube.status_writes)
    w.run()
    w.run()
    assert w.node.posts == ["/gov/proposals"]
    assert len(w.kube.status_writes) == writes  # converged: zero writes
    assert w.kube.reasons("upgrade") == ["ProposalOpen"]


def test_other_consortia_proposals_are_not_relayed() -> None:
    w = World()
    w.kube.create("elsewhere", {"consortium": "other", "proposal": b64(alice_proposal())})
    assert w.run() == {}
    assert w.node.posts == []


def test_ballots_are_relayed_and_the_ledger_decides() -> None:
    w, raw = world_with_alices_proposal()
    w.run()
    w.kube.add_ballot("upgrade", ballot(BOB, raw))
    w.kube.add_ballot("upgrade", ballot(CAROL, raw))
    status = w.run()["upgrade"]
    assert len(w.node.ballot_posts()) == 2
    assert status["state"] == "Accepted"
    assert [(b["member"], b["accepted"]) for b in status["ballots"]] == [
        ("bob", True),
        ("carol", True),
    ]
    assert status["votes"] == "2/2"
    assert w.kube.reasons("upgrade") == ["ProposalOpen", "ProposalAccepted"]
    w.run()
    assert len(w.node.ballot_posts()) == 2  # recorded ballots are never sent again


def test_a_refused_ballot_is_remembered_and_not_sent_again() -> None:
    w, raw = world_with_alices_proposal()
    w.run()
    w.kube.add_ballot("upgrade", ballot(MALLORY, raw))  # forged: no member signed it
    w.kube.add_ballot("upgrade", tampered(ballot(CAROL, raw)))  # a member's, bytes changed
    w.kube.add_ballot("upgrade", ballot(BOB, raw, "reject"))
    status = w.run()["upgrade"]
    assert len(w.node.ballot_posts()) == 3
    forged, bad, ok = status["ballots"]
    assert not forged["accepted"]
    assert forged["reason"] == f"document.kid: {MALLORY.member_id} is not a member"
    assert "member" not in forged
    assert not bad["accepted"] and bad["member"] == "carol"
    assert bad["reason"].startswith("document.signature:")
    assert ok["accepted"] and ok["vote"] == "reject"
    cond = next(x for x in status["conditions"] if x["type"] == c.BALLOTS_ACCEPTED)
    assert (cond["status"], cond["reason"]) == ("False", c.BALLOT_REFUSED)
    assert w.kube.reasons("upgrade").count(c.BALLOT_REFUSED) == 2
    assert len(w.memory.refused) == 2
    writes = len(w.kube.status_writes)
    again = w.run()["upgrade"]
    assert len(w.node.ballot_posts()) == 3  # refusals are remembered, not re-POSTed
    assert again["ballots"] == status["ballots"]
    assert len(w.kube.status_writes) == writes
    assert w.kube.reasons("upgrade").count(c.BALLOT_REFUSED) == 2


def test_an_unsigned_ballot_goes_to_the_nodes_and_their_refusal_is_shown() -> None:
    """The operator does not judge documents: even bytes it cannot read are relayed."""
    w, _ = world_with_alices_proposal()
    w.run()
    w.kube.add_ballot("upgrade", b'{"vote": "approve"}')
    status = w.run()["upgrade"]
    assert len(w.node.ballot_posts()) == 1
    (unsigned,) = status["ballots"]
    assert not unsigned["accepted"]
    assert unsigned["reason"].startswith("document: not a COSE_Sign1"), unsigned


def test_a_members_second_ballot_is_not_sent() -> None:
    w, raw = world_with_alices_proposal()
    w.kube.add_ballot("upgrade", ballot(BOB, raw))
    w.run()
    w.kube.add_ballot("upgrade", ballot(BOB, raw, "reject"))
    status = w.run()["upgrade"]
    assert len(w.node.ballot_posts()) == 1
    assert status["ballots"][1]["reason"].startswith("this member's other ballot")


def test_ballots_on_a_decided_proposal_are_not_sent() -> None:
    w, raw = world_with_alices_proposal()
    w.run()
    w.node.set_state(document_id(raw), "Rejected", "2 of 3 rejected")
    w.kube.add_ballot("upgrade", ballot(BOB, raw))
    status = w.run()["upgrade"]
    assert w.node.ballot_posts() == []
    assert status["state"] == "Rejected"
    assert status["ballots"][0]["reason"] == "the proposal is Rejected: no more ballots"


def test_a_proposal_the_nodes_refuse_is_refused_once() -> None:
    w = World()
    w.kube.create(
        "forged",
        {
            "consortium": "demo",
            "proposal": b64(MALLORY.sign(proposal_payload([add_measurement()]))),
        },
    )
    status = w.run()["forged"]
    assert status["state"] == "Refused"
    assert status["reason"] == f"document.kid: {MALLORY.member_id} is not a member"
    w.run()
    assert w.node.posts == ["/gov/proposals"]
    assert w.kube.reasons("forged") == ["ProposalRefused"]
    assert ("forged", "Warning", "ProposalRefused") in [e[:3] for e in w.kube.events]


def test_an_invalid_proposal_is_never_sent() -> None:
    w = World()
    w.kube.create("junk", {"consortium": "demo", "proposal": b64(b"not a document")})
    assert w.run()["junk"]["state"] == "Invalid"
    assert w.node.posts == [] and w.node.gets == []


@pytest.mark.parametrize(
    ("primary", "unreachable", "reason"),
    [
        pytest.param(False, False, "no primary node known yet", id="no-primary"),
        pytest.param(True, True, "demo-0.demo-nodes (10.0.0.1): timed out", id="unreachable"),
    ],
)
def test_without_the_primary_the_proposal_is_pending(
    primary: bool, unreachable: bool, reason: str
) -> None:
    w, _ = world_with_alices_proposal()
    w.primary, w.node.unreachable = primary, unreachable
    status = w.run()["upgrade"]
    assert (status["state"], status["reason"]) == ("Pending", reason)
    cond = next(x for x in status["conditions"] if x["type"] == c.SUBMITTED)
    assert (cond["status"], cond["reason"]) == ("False", c.NOT_RELAYED)
    w.primary, w.node.unreachable = True, False
    assert w.run()["upgrade"]["state"] == "Open"
    stored = w.kube.proposal("upgrade")["status"]
    assert stored["state"] == "Open" and "reason" not in stored  # the outage's reason is gone


def test_an_outage_keeps_the_ledgers_last_verdict_and_writes_nothing() -> None:
    w, raw = world_with_alices_proposal()
    w.kube.add_ballot("upgrade", ballot(BOB, raw))
    w.run()
    before = w.kube.proposal("upgrade")["status"]
    assert before["votes"] == "1/2"
    writes = len(w.kube.status_writes)
    w.node.unreachable = True
    status = w.run()["upgrade"]
    assert status == before == w.kube.proposal("upgrade")["status"]  # Open, 1/2: still true
    assert len(w.kube.status_writes) == writes
    w.node.unreachable = False
    assert w.run()["upgrade"]["votes"] == "1/2"
    assert len(w.node.ballot_posts()) == 1


def test_a_503_from_the_node_is_an_outage_not_a_refusal() -> None:
    w, _ = world_with_alices_proposal()

    def busy(path: str, document: bytes) -> Reply:
        return _error(503, "NotLeader", None, "not the leader")

    w.node.post = busy  # type: ignore[method-assign]
    status = w.run()["upgrade"]
    assert status["state"] == "Pending"
    assert "NotLeader" not in status["reason"] and "not the leader" in status["reason"]
    assert w.memory.refused == {}


# --- receipts -------------------------------------------------------------------------------


def test_the_receipt_is_fetched_when_final_and_once_per_txid() -> None:
    w, raw = world_with_alices_proposal()
    w.run()
    w.run()
    assert w.node.receipt_gets() == []  # Open: no receipt
    w.node.receipt_ready = False
    w.kube.add_ballot("upgrade", ballot(BOB, raw))
    w.kube.add_ballot("upgrade", ballot(CAROL, raw))
    status = w.run()["upgrade"]
    assert status["state"] == "Accepted" and "receipt" not in status
    assert len(w.node.receipt_gets()) == 1  # 202: no signature yet, asked again next pass
    w.node.receipt_ready = True
    status = w.run()["upgrade"]
    assert status["receipt"]["txid"] == status["txid"]
    assert len(w.node.receipt_gets()) == 2
    w.run()
    w.run()
    assert len(w.node.receipt_gets()) == 2
    assert w.kube.proposal("upgrade")["status"]["receipt"]["txid"] == status["txid"]


# --- the operator's own proposals -------------------------------------------------------------


def add_alice() -> gov.Intent:
    pem = member("relay-newcomer").certificate_pem
    spec = parse_member("newcomer", {"consortium": "demo", "certificate": pem})
    return gov.Intent(
        "add-member",
        "newcomer",
        (gov._action("add_member", certificate=spec.certificate_pem, role="governor"),),
        "Member newcomer was created",
    )


def measurements(*ms: str) -> gov.Intent:
    actions = tuple({"name": "add_measurement", "args": {"measurement": m}} for m in ms)
    return gov.Intent("measurements", "", actions, "code upgrade")


def pid_of(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(base64.b64decode(obj["spec"]["proposal"])).hexdigest()


def proposal_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    raw = base64.b64decode(obj["spec"]["proposal"])
    return verify_document(raw, "proposal", "demo", node_members()).payload


def test_propose_creates_one_proposal_per_intent_once() -> None:
    w = World()
    wanted = [add_alice(), measurements(M3)]
    names = [i.cr_name("demo") for i in wanted]
    w.run(wanted)
    assert sorted(w.kube.applies) == sorted(names)
    for intent, name in zip(wanted, names, strict=True):
        obj = w.kube.proposal(name)
        labels = obj["metadata"]["labels"]
        assert labels[gov.LABEL_PROPOSED_BY] == "operator"
        assert labels[gov.LABEL_INTENT] == intent.category
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-demo"
        assert proposal_of(obj)["actions"] == [dict(a) for a in intent.actions]
    assert w.kube.reasons("demo") == ["ProposalCreated", "ProposalCreated"]
    statuses = w.run(wanted)  # relayed now; not proposed again
    assert {s["state"] for s in statuses.values()} == {"Open"}
    assert {s["proposerName"] for s in statuses.values()} == {"operator"}
    w.run(wanted)
    assert sorted(w.kube.applies) == sorted(names)
    assert len(w.node.proposals) == 2


def test_no_signer_proposes_nothing() -> None:
    w = World(signer=None)
    w.run([measurements(M3)])
    assert w.kube.applies == [] and w.kube.objects == {}


@pytest.mark.parametrize("final", ["Expired", "Withdrawn", "Accepted"])
def test_a_proposal_still_wanted_after_it_ended_is_proposed_again(final: str) -> None:
    """Expired or Withdrawn: nobody decided. Accepted in an earlier pass while the ledger read
    in this pass still differs: the world changed since (a member removed again, say)."""
    w = World()
    intent = measurements(M3)
    name = intent.cr_name("demo")
    w.run([intent])
    first = w.kube.proposal(name)
    w.run([intent])
    w.node.set_state(pid_of(first), final)
    assert w.run([intent])[name]["state"] == final  # mirrored this pass
    w.run([intent])  # deleted (guarded by its uid)
    assert w.kube.deletes == [name]
    assert w.kube.get("Proposal", NS, name) is None
    w.run([intent])  # proposed again, signed afresh
    again = w.kube.proposal(name)
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    assert again["spec"]["proposal"] != first["spec"]["proposal"]
    assert w.run([intent])[name]["state"] == "Open"
    assert len(w.node.proposals) == 2


def test_a_rejected_proposal_stays() -> None:
    w = World()
    intent = measurements(M3)
    name = intent.cr_name("demo")
    w.run([intent])
    w.run([intent])
    w.node.set_state(pid_of(w.kube.proposal(name)), "Rejected", "1 of 3 approved")
    for _ in range(3):
        assert w.run([intent])[name]["state"] == "Rejected"
    assert w.kube.deletes == [] and w.kube.applies == [name]


def test_a_proposal_refused_to_the_operator_stays_refused() -> None:
    w = World(node=FakeNode(node_members(operator_status="Accepted")))
    intent = measurements(M3)
    name = intent.cr_name("demo")
    w.run([intent])
    for _ in range(3):
        status = w.run([intent])[name]
        assert status["state"] == "Refused"
        assert "not Active" in status["reason"]
    assert w.node.posts == ["/gov/proposals"]
    assert w.kube.deletes == [] and w.kube.applies == [name]


def test_a_refusal_is_retried_after_a_while_and_then_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refusal may depend on state that changes (the operator member not Active yet)."""
    w = World(node=FakeNode(node_members(operator_status="Accepted")))
    intent = measurements(M3)
    name = intent.cr_name("demo")
    w.run([intent])
    assert w.run([intent])[name]["state"] == "Refused"
    w.node.members = node_members()  # the operator member is Active now
    clock = time.monotonic() + relay_module.RETRY_REFUSED_SECONDS + 1
    monkeypatch.setattr(relay_module.time, "monotonic", lambda: clock)
    assert w.run([intent])[name]["state"] == "Open"
    assert w.node.posts == ["/gov/proposals", "/gov/proposals"]


def test_an_open_operator_proposal_no_longer_wanted_is_withdrawn() -> None:
    w = World()
    old, new = measurements(M3), measurements(M3, M4)
    w.run([old])
    w.run([old])  # relayed: Open, with its proposalId in status
    first = w.kube.proposal(old.cr_name("demo"))
    pid = first["status"]["proposalId"]
    w.run([new])  # the spec changed: the new intent is proposed, the old one withdrawn
    obj = w.kube.proposal(old.cr_name("demo"))
    raw = base64.b64decode(obj["spec"]["withdrawal"])
    doc = verify_document(raw, "withdrawal", "demo", node_members())
    assert (doc.signer, doc.payload["proposal_id"]) == (OPERATOR.member_id, pid)
    assert obj["spec"]["proposal"] == first["spec"]["proposal"]
    # still the operator's, still owned by the Consortium (garbage-collected with it)
    assert obj["metadata"]["labels"] == first["metadata"]["labels"]
    assert obj["metadata"]["ownerReferences"] == first["metadata"]["ownerReferences"]
    assert obj["metadata"]["annotations"] == first["metadata"]["annotations"]
    assert w.kube.reasons("demo").count("ProposalWithdrawn") == 1
    status = w.run([new])[old.cr_name("demo")]
    assert status["state"] == "Withdrawn"
    assert status["withdrawal"] == {"accepted": True}
    for _ in range(2):
        w.run([new])
    assert w.kube.reasons("demo").count("ProposalWithdrawn") == 1
    assert old.cr_name("demo") not in w.kube.deletes  # not wanted: left as the record
    assert [p for p in w.node.posts if p.endswith("/withdraw")] == [
        f"/gov/proposals/{pid}/withdraw"
    ]


def test_the_operator_never_touches_other_proposals() -> None:
    w = World()
    intent = measurements(M3)
    # A member's proposal with the very name the operator would use, and one it does not want.
    same_name = alice_proposal()
    w.kube.create(intent.cr_name("demo"), {"consortium": "demo", "proposal": b64(same_name)})
    other = alice_proposal([add_measurement(M4)])
    w.kube.create("alices", {"consortium": "demo", "proposal": b64(other)})
    w.run([intent])
    w.node.set_state(document_id(same_name), "Expired")
    for _ in range(3):
        w.run([intent])
    assert w.kube.applies == [] and w.kube.deletes == []
    assert "withdrawal" not in w.kube.proposal("alices")["spec"]
    assert w.kube.proposal("alices")["status"]["state"] == "Open"


def test_a_removal_is_not_withdrawn_by_the_level_pass() -> None:
    w = World()
    carol = parse_member("carol", {"consortium": "demo", "certificate": CAROL.certificate_pem})
    name = propose_removal(w.kube, CONSORTIUM, carol, SIGNER, T0)  # type: ignore[arg-type]
    w.run([])
    w.run([])
    assert w.kube.proposal(str(name))["status"]["state"] == "Open"
    assert "withdrawal" not in w.kube.proposal(str(name))["spec"]


def test_propose_removal_creates_one_remove_member_proposal() -> None:
    kube = FakeKube()
    carol = parse_member("carol", {"consortium": "demo", "certificate": CAROL.certificate_pem})
    name = propose_removal(kube, CONSORTIUM, carol, SIGNER, T0)  # type: ignore[arg-type]
    assert name == gov.removal(carol).cr_name("demo")
    obj = kube.proposal(name)
    assert obj["metadata"]["labels"][gov.LABEL_INTENT] == "remove-member"
    assert obj["metadata"]["labels"][LABEL_CONSORTIUM] == "demo"
    assert proposal_of(obj)["actions"] == [
        {"name": "remove_member", "args": {"member_id": carol.member_id}}
    ]
    later = T0 + timedelta(hours=1)
    assert propose_removal(kube, CONSORTIUM, carol, SIGNER, later) == name  # type: ignore[arg-type]
    assert kube.applies == [name]
    assert kube.reasons("demo") == ["ProposalCreated"]
    assert propose_removal(kube, CONSORTIUM, carol, None, T0) is None  # type: ignore[arg-type]


def test_operator_signer_reads_the_secret() -> None:
    kube = FakeKube()
    assert operator_signer(kube, NS, "demo-operator-member") is None  # type: ignore[arg-type]
    secret = {
        "metadata": {"name": "demo-operator-member", "namespace": NS},
        "data": {
            "tls.key": b64(private_key_pem(OPERATOR.key)),
            "tls.crt": b64(OPERATOR.certificate_pem.encode()),
        },
    }
    kube.objects[("Secret", NS, "demo-operator-member")] = secret
    found = operator_signer(kube, NS, "demo-operator-member")  # type: ignore[arg-type]
    assert found is not None
    key, cert = found
    assert cert == OPERATOR.certificate_pem
    raw = gov.withdrawal_document(key, cert, "demo", "ab" * 32)
    assert verify_document(raw, "withdrawal", "demo", node_members()).signer == OPERATOR.member_id
