"""Governance on the primary: record signed proposals, ballots, withdrawals and acks on the
ledger, decide with the constitution, and apply accepted actions atomically.

Everything a member sends is a COSE_Sign1 document (``governance/documents.py``) checked
against the members *in the ledger*; the TLS client does not matter, so the operator (or
anyone) can relay a document but never forge one. Each request is one read-decide-write under
a lock, written as one public ledger transaction that carries:

* ``public:consortium.proposals[<proposal_id>]``: the proposal's state (``Proposal.to_json``),
  its tally, and every document that shaped it (base64 COSE), so receipts prove the outcome
  and anyone can re-verify the signatures offline;
* when a proposal is accepted, its effects (``gov_apply.py``) and the other open proposals it
  invalidates; node trust changes and new measurements also issue the next trusted-node list
  in the same transaction, and a ledger secret rotation adds its rotation record (the new
  secret wrapped to every Trusted node), built when the transaction gets its index.

An accepted proposal whose actions can no longer apply (say, the member was removed since)
ends Rejected with reason "Failed: …" and changes nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from consortium_node.common.timeutil import utcnow
from consortium_node.governance.actions import KNOWN
from consortium_node.governance.constitution import Constitution, parse_constitution
from consortium_node.governance.documents import SignedDocument, Signer, verify_document
from consortium_node.governance.errors import GovernanceError
from consortium_node.governance.proposals import (
    Proposal,
    ProposalState,
    cast_ballot,
    decide,
    invalidated_by,
    open_proposal,
    tally,
    withdraw,
)
from consortium_node.ledger import EntryKind, WriteSet
from consortium_node.recovery.record import RECORD_KEY, T_RECOVERY
from consortium_node.server.errors import ConflictError, NotFoundError
from consortium_node.server.genesis import T_ATTESTATION, T_MEMBERS
from consortium_node.server.gov_apply import GovState, active_governors, effects_of
from consortium_node.server.ledger_secrets import rotation_writes
from consortium_node.server.recovery_keeper import next_record
from consortium_node.server.service_state import SERVICE_KEY, T_SERVICE

if TYPE_CHECKING:
    from consortium_node.replication.raft import RaftNode
    from consortium_node.server.node import Node
    from consortium_node.server.primary import Primary

log = logging.getLogger("consortium_node.governance")

T_PROPOSALS = "public:consortium.proposals"

# Writes that depend on the index their transaction gets (a ledger secret rotation).
Positioned = Callable[[int], dict[str, dict[str, Any]]]


def _b64(envelope: bytes) -> str:
    return base64.b64encode(envelope).decode("ascii")


class Governance:
    def __init__(self, node: Node, raft: RaftNode, primary: Primary) -> None:
        self.node, self.raft, self.primary = node, raft, primary
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ reading state
    def consortium(self) -> str:
        return self.node.config.consortium

    def members(self) -> dict[str, dict[str, Any]]:
        """Member records as the ledger holds them (a record written back keeps every field)."""
        return {
            m.member_id: {
                "certificate": m.certificate_pem,
                "role": m.role,
                "status": m.status,
                **({"recovery_key": m.recovery_key_pem} if m.recovery_key_pem else {}),
            }
            for m in self.node.members().values()
        }

    def signers(self) -> dict[str, Signer]:
        return {
            mid: Signer(mid, v["certificate"], v["role"], v["status"])
            for mid, v in self.members().items()
        }

    def constitution(self) -> Constitution:
        return parse_constitution(self.node.constitution(), KNOWN)

    def _found(self, proposal_id: str) -> tuple[dict[str, Any], str] | None:
        """The proposal's ledger record and the txid that wrote it (one read)."""
        ledger = self.node.ledger
        found = ledger.public_get(T_PROPOSALS, proposal_id) or ledger.get(T_PROPOSALS, proposal_id)
        if not found or not isinstance(found[0], dict):
            return None
        return found[0], str(found[1])

    def record(self, proposal_id: str) -> dict[str, Any] | None:
        found = self._found(proposal_id)
        return found[0] if found else None

    def records(self) -> list[dict[str, Any]]:
        found = (self.record(pid) for pid in self.node.ledger.public_keys(T_PROPOSALS))
        return sorted((r for r in found if r), key=lambda r: r["proposal"]["created_at"])

    def view(self, proposal_id: str) -> dict[str, Any]:
        """A proposal as the API shows it: state now (expiry applied), tally, documents."""
        found = self._found(proposal_id)
        if found is None:
            raise NotFoundError("proposal_id", f"no proposal {proposal_id}")
        return self._show(*found, self.constitution(), self._governors())

    def views(self) -> list[dict[str, Any]]:
        """Every proposal, oldest first, as ``view`` shows one."""
        constitution, governors = self.constitution(), self._governors()
        found = (self._found(pid) for pid in self.node.ledger.public_keys(T_PROPOSALS))
        shown = [self._show(*f, constitution, governors) for f in found if f]
        return sorted(shown, key=lambda p: p["created_at"])

    @staticmethod
    def _show(
        record: dict[str, Any], txid: str, constitution: Constitution, governors: set[str]
    ) -> dict[str, Any]:
        p = decide(Proposal.from_json(record["proposal"]), constitution, governors, utcnow())
        return {
            **p.to_json(),
            "tally": tally(p, constitution, governors).to_json(),
            "documents": record["documents"],
            "txid": txid,
        }

    def _governors(self) -> set[str]:
        return active_governors(self.members())

    def _verify(self, envelope: bytes, kind: str) -> SignedDocument:
        """The verified document; GovernanceError (SignatureRefusedError if the signature or
        signer is refused) otherwise."""
        return verify_document(envelope, kind, self.consortium(), self.signers())

    def _require_leader(self) -> None:
        if self.raft.role != "leader":
            raise self.raft.not_leader()

    # ------------------------------------------------------------------ requests
    async def propose(self, envelope: bytes) -> dict[str, Any]:
        self._require_leader()
        async with self._lock:
            doc = self._verify(envelope, "proposal")
            if self.record(doc.document_id) is not None:
                raise ConflictError("proposal", "this proposal was already submitted")
            p = open_proposal(doc, self.constitution(), utcnow())
            documents: dict[str, Any] = {"proposal": _b64(envelope), "ballots": {}}
            return await self._settle(p, documents)

    async def ballot(self, proposal_id: str, envelope: bytes) -> dict[str, Any]:
        self._require_leader()
        async with self._lock:
            doc = self._verify(envelope, "ballot")
            p, documents = self._load(proposal_id)
            try:
                voted = cast_ballot(p, doc, self.constitution(), self._governors(), utcnow())
            except GovernanceError as exc:
                raise ConflictError(exc.field, exc.reason) from exc
            documents["ballots"][doc.signer] = _b64(envelope)
            return await self._settle(voted, documents)

    async def withdraw(self, proposal_id: str, envelope: bytes) -> dict[str, Any]:
        self._require_leader()
        async with self._lock:
            doc = self._verify(envelope, "withdrawal")
            p, documents = self._load(proposal_id)
            try:
                done = withdraw(p, doc, utcnow())
            except GovernanceError as exc:
                raise ConflictError(exc.field, exc.reason) from exc
            documents["withdrawal"] = _b64(envelope)
            return await self._settle(done, documents)

    async def ack(self, envelope: bytes) -> dict[str, Any]:
        """A new member's signed acknowledgement: Accepted → Active."""
        self._require_leader()
        async with self._lock:
            doc = self._verify(envelope, "ack")
            member = self.members()[doc.signer]
            writes = {T_MEMBERS: {doc.signer: {**member, "status": "Active"}}}
            txids = await self.raft.submit([writes], EntryKind.PUBLIC)
            log.info("member %s… acknowledged: Active", doc.signer[:16])
            return {"member_id": doc.signer, "status": "Active", "txid": str(txids[-1])}

    # ------------------------------------------------------------------ writing
    def _load(self, proposal_id: str) -> tuple[Proposal, dict[str, Any]]:
        record = self.record(proposal_id)
        if record is None:
            raise NotFoundError("proposal_id", f"no proposal {proposal_id}")
        documents = {**record["documents"], "ballots": dict(record["documents"]["ballots"])}
        return Proposal.from_json(record["proposal"]), documents

    async def _settle(self, p: Proposal, documents: dict[str, Any]) -> dict[str, Any]:
        """Decide, apply if accepted, and write it all as one ledger transaction."""
        constitution, governors = self.constitution(), self._governors()
        p = decide(p, constitution, governors, utcnow())
        writes: dict[str, dict[str, Any]] = {}
        changes: dict[str, Any] = {}
        records: dict[str, dict[str, Any]] = {}
        policy = None
        positioned: Positioned | None = None
        if p.state is ProposalState.ACCEPTED:
            p, writes, changes, records, policy, positioned = self._apply(p)
        tallied = tally(p, constitution, governors).to_json()
        writes.setdefault(T_PROPOSALS, {})[p.proposal_id] = {
            "proposal": p.to_json(),
            "tally": tallied,
            "documents": documents,
        }
        if changes or policy is not None:
            await self.primary.issue(
                changes, records, extra_writes=writes, policy=policy, positioned=positioned
            )
        elif positioned is not None:
            late = positioned
            await self.raft.submit(lambda index: [{**writes, **late(index)}], EntryKind.PUBLIC)
        else:
            await self.raft.submit([writes], EntryKind.PUBLIC)
        log.info("proposal %s…: %s %s", p.proposal_id[:16], p.state, p.reason)
        return self.view(p.proposal_id)

    def _apply(
        self, p: Proposal
    ) -> tuple[
        Proposal, dict[str, dict[str, Any]], dict[str, Any], dict[str, Any], Any, Positioned | None
    ]:
        current = self.node.membership.current()
        nodes = {n.node_id: n.status.value for n in current.nodes} if current else {}
        state = GovState(
            self.members(),
            self.node.policy_value(),
            self.constitution(),
            nodes,
            service=self.node.public_value(T_SERVICE, SERVICE_KEY),
            secrets_recovered=self.node.holds_every_secret(),
        )
        try:
            effects = effects_of(p.actions, state)
        except GovernanceError as exc:
            failed = replace(p, state=ProposalState.REJECTED, reason=f"Failed: {exc}")
            return failed, {}, {}, {}, None, None
        writes = dict(effects.writes)
        others = [Proposal.from_json(r["proposal"]) for r in self.records()]
        for dropped in invalidated_by(p, others):
            old = self.record(dropped.proposal_id) or {}
            writes.setdefault(T_PROPOSALS, {})[dropped.proposal_id] = {
                **old,
                "proposal": dropped.to_json(),
            }
        changes: dict[str, Any] = {}
        records: dict[str, dict[str, Any]] = {}
        entries = {n.node_id: n for n in current.nodes} if current else {}
        for node_id in effects.trust:
            changes[node_id], records[node_id] = self.primary.trusted_change(entries[node_id])
        for node_id in effects.retire:
            changes[node_id], records[node_id] = self.primary.retired_change(
                entries[node_id], "RetiredByGovernance"
            )
        policy = writes.get(T_ATTESTATION, {}).get("policy")
        if not (effects.measurements_changed or changes):
            policy = None  # no new list needed; the policy write is in ``writes``
        return p, writes, changes, records, policy, self._rotation(effects.secret_recipients)

    def _rotation(self, recipients: list[str] | None) -> Positioned | None:
        """The rotation record for ``recipients``, made when its transaction is appended."""
        if recipients is None:
            return None
        current = self.node.membership.current()
        listed = {n.node_id: n.public_key_pem for n in current.nodes} if current else {}
        keys = {node_id: listed[node_id] for node_id in recipients}
        ledger, consortium = self.node.ledger, self.consortium()
        return lambda index: rotation_writes(
            ledger.secrets, keys, consortium, index, also=self._recovery_record
        )

    def _recovery_record(self, secrets: dict[int, bytes]) -> WriteSet:
        """A new recovery record wrapping ``secrets`` (every version, the new one included),
        written in the rotation entry itself (``recovery_keeper``); nothing if no record is
        needed or none can be written (the keeper says why)."""
        node = self.node
        record, _ = next_record(
            self.consortium(), node.members(), node.constitution(),
            node.public_value(T_RECOVERY, RECORD_KEY), secrets,
        )  # fmt: skip
        return {} if record is None else {T_RECOVERY: {RECORD_KEY: record}}
