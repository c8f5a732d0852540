"""Proposal CRs ↔ the consortium's governance API: relay documents, mirror the verdict.

The operator moves signed documents; it cannot make one count. Each pass, for every Proposal
CR of the Consortium: the proposal, then each ballot and the withdrawal, are POSTed to the
primary unless the ledger already holds them (``GET /gov/proposals/<id>``), and the status is
rewritten from what the nodes answered (``mirror.py``). A document the nodes refuse (bad
signature, not an Active governor, a second ballot, …) is remembered by its digest and not
sent again, and its refusal is shown on the ballot it came in. Once a proposal is decided, the
receipt of the transaction that recorded the outcome is copied into status, so anyone can
verify it offline with only the service certificate.

The operator's own proposals (``intents.py``) are created here too: signed with the
operator's member key, named by their intent, and withdrawn when the spec no longer wants them.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from consortium_node.common.timeutil import rfc3339
from consortium_node.governance import FINAL_STATES, LEDGER_STATES, ProposalState
from consortium_node.governance.documents import document_id
from consortium_node.identity.keys import PrivateKey, load_private_key
from consortium_operator.api import conditions as c
from consortium_operator.api.names import API_VERSION
from consortium_operator.api.spec import MemberSpec
from consortium_operator.kube.k8s import Kube
from consortium_operator.nodes.client import NodeClient, NodeUnreachableError, Reply
from consortium_operator.proposals import intents as gov
from consortium_operator.proposals.mirror import (
    WILL_NOT_APPLY,
    Document,
    Relayed,
    ledger_copy,
    proposal_status,
    withdrawal_recorded,
)

log = logging.getLogger("consortium_operator")
COSE = "application/cose"
# An intent's own Proposal in one of these is deleted and made again if still wanted.
ASK_AGAIN_STATES = frozenset(
    {ProposalState.EXPIRED, ProposalState.WITHDRAWN, ProposalState.ACCEPTED}
)
REFUSALS = (400, 403, 404, 409, 413, 422)  # the nodes' verdict on a document (422: a share)
RETRY_REFUSED_SECONDS = 300.0


@dataclass
class RelayMemory:
    # document sha256 → (the nodes' reason, when): not sent again for a while. A refusal can
    # depend on state that changes (a governor not Active yet), so it is retried after
    # RETRY_REFUSED_SECONDS; a bad signature is refused again, at the cost of one request.
    refused: dict[str, tuple[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Primary:
    client: NodeClient
    ip: str
    server_name: str

    def get(self, path: str) -> Reply:
        return self.client.request(self.ip, self.server_name, "GET", path)

    def post(self, path: str, document: bytes) -> Reply:
        return self.client.request(
            self.ip, self.server_name, "POST", path, raw=document, content_type=COSE
        )


@dataclass
class Relay:
    kube: Kube
    namespace: str
    consortium: Mapping[str, Any]  # the Consortium object (owner, Events)
    primary: Primary | None
    memory: RelayMemory
    now: datetime
    signer: tuple[PrivateKey, str] | None = None  # the operator's member key and certificate

    @property
    def name(self) -> str:
        return str(self.consortium["metadata"]["name"])

    # ------------------------------------------------------------------ relaying
    def proposals(self) -> list[dict[str, Any]]:
        return [
            p
            for p in self.kube.list("Proposal", self.namespace)
            if (p.get("spec") or {}).get("consortium") == self.name
        ]

    def relay(self, body: Mapping[str, Any]) -> Relayed:
        """Send what the ledger lacks; return what the nodes said."""
        spec = body.get("spec") or {}
        proposal = Document.decode(spec.get("proposal"), "spec.proposal")
        if proposal.raw is None or proposal.error is not None:
            return Relayed()
        if self.primary is None:
            return Relayed(unreachable="no primary node known yet")
        pid = document_id(proposal.raw)
        ballot_refusals: dict[int, str] = {}
        try:
            view = self._view(pid)
            if view is None:
                view, refused = self._submit("/gov/proposals", proposal.raw)
                if view is None:
                    return Relayed(refused=refused)
            for i, text in enumerate(spec.get("ballots") or []):
                doc = Document.decode(text, f"spec.ballots[{i}]")
                if doc.raw is None:
                    continue  # not even base64: nothing to relay
                # Even a document the operator cannot read (unsigned, not COSE) goes to the
                # nodes: their refusal, not the operator's opinion, is what status shows.
                if ledger_copy(view, doc.signer) is not None:
                    continue  # recorded (or this member's other ballot is): mirror says which
                if view.get("state") != ProposalState.OPEN:
                    ballot_refusals[i] = f"the proposal is {view.get('state')}: no more ballots"
                    continue
                answer, refused = self._submit(f"/gov/proposals/{pid}/ballots", doc.raw)
                if answer is not None:
                    view = answer
                elif refused:
                    ballot_refusals[i] = refused
            view, withdrawal_refusal = self._withdraw(spec, pid, view)
            receipt = self._receipt(body, pid, view)
        except NodeUnreachableError as exc:
            return Relayed(unreachable=str(exc))
        return Relayed(
            view=view,
            ballot_refusals=ballot_refusals,
            withdrawal_refusal=withdrawal_refusal,
            receipt=receipt,
        )

    def _view(self, pid: str) -> dict[str, Any] | None:
        assert self.primary is not None
        reply = self.primary.get(f"/gov/proposals/{pid}")
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise NodeUnreachableError(f"GET /gov/proposals/{pid[:16]}…: {reply.error()}")
        view: dict[str, Any] = reply.json()
        return view

    def _submit(self, path: str, document: bytes) -> tuple[dict[str, Any] | None, str | None]:
        """POST a document once: (the proposal's view, None), or (None, the nodes' refusal)."""
        assert self.primary is not None
        digest = document_id(document)
        known = self.memory.refused.get(digest)
        if known is not None and time.monotonic() - known[1] < RETRY_REFUSED_SECONDS:
            return None, known[0]
        reply = self.primary.post(path, document)
        if reply.status == 200:
            view: dict[str, Any] = reply.json()
            return view, None
        if reply.status in REFUSALS:
            self.memory.refused[digest] = (reply.error(), time.monotonic())
            return None, reply.error()
        raise NodeUnreachableError(f"POST {path}: {reply.error()}")  # 503 NotLeader, RetryLater

    def _withdraw(
        self, spec: Mapping[str, Any], pid: str, view: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        """Relay spec.withdrawal unless recorded: (the view after it, the nodes' refusal)."""
        if "withdrawal" not in spec:
            return view, None
        doc = Document.decode(spec["withdrawal"], "spec.withdrawal")
        if doc.raw is None or doc.error is not None:
            return view, doc.error
        if withdrawal_recorded(view, doc):
            return view, None
        if view.get("state") != ProposalState.OPEN:
            return view, f"the proposal is {view.get('state')}: it cannot be withdrawn"
        answer, refused = self._submit(f"/gov/proposals/{pid}/withdraw", doc.raw)
        return answer or view, refused

    def _receipt(
        self, body: Mapping[str, Any], pid: str, view: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The outcome's receipt, fetched once per recording transaction (None: not yet)."""
        existing = body.get("status") or {}
        if view.get("state") not in FINAL_STATES:
            return None
        if existing.get("txid") == view.get("txid") and existing.get("receipt"):
            return None  # mirror keeps the one it has
        assert self.primary is not None
        reply = self.primary.get(f"/gov/proposals/{pid}/receipt")
        if reply.status != 200:  # 202: no signature covers it yet; the next pass asks again
            return None
        receipt: dict[str, Any] = reply.json()
        return receipt

    def mirror(
        self, body: Mapping[str, Any], relayed: Relayed, names: Mapping[str, str]
    ) -> dict[str, Any]:
        """Write the Proposal's status if it changed, with an Event on each state change."""
        old = body.get("status") or {}
        if relayed.unreachable is not None and old.get("state") in LEDGER_STATES:
            return dict(old)  # the ledger's last verdict stands while no node answers
        new = proposal_status(body, relayed, names, rfc3339(self.now))
        if c.without_transition_times(new) == c.without_transition_times(old):
            return new
        meta = body["metadata"]
        if new.get("state") != old.get("state"):
            kind = "Warning" if new["state"] in WILL_NOT_APPLY else "Normal"
            self.kube.event(
                body,
                kind,
                f"Proposal{new['state']}",
                new.get("reason") or new["state"],
                rfc3339(self.now),
            )
        was = {b.get("index"): b for b in old.get("ballots", [])}
        for ballot in new.get("ballots", []):
            before = was.get(ballot["index"]) or {}
            reason = ballot.get("reason")
            if (
                not ballot["accepted"]
                and reason != before.get("reason")
                and reason != "not relayed yet"
            ):
                self.kube.event(
                    body,
                    "Warning",
                    c.BALLOT_REFUSED,
                    f"ballots[{ballot['index']}]: {ballot.get('reason')}",
                    rfc3339(self.now),
                )
        self.kube.patch_status("Proposal", self.namespace, meta["name"], _merge_patch(old, new))
        return new

    # ------------------------------------------------------------------ the operator's own
    def propose(self, wanted: Sequence[gov.Intent], live: Mapping[str, Mapping[str, Any]]) -> None:
        """Create a Proposal CR per intent not yet proposed; re-propose an Expired or Withdrawn
        one; withdraw the operator's Open proposals the spec no longer wants."""
        if self.signer is None:
            return
        names = {i.cr_name(self.name): i for i in wanted}
        for name, intent in names.items():
            found = live.get(name)
            state = ((found or {}).get("status") or {}).get("state")
            if found is None:
                self._create(intent)
            elif state in ASK_AGAIN_STATES and _ours(found):
                # Accepted in an earlier pass, yet the ledger read this pass still differs: the
                # world changed since (say, the member was removed again); ask again.
                self.kube.delete("Proposal", self.namespace, name, uid=found["metadata"]["uid"])
        for name, found in live.items():
            labels = found["metadata"].get("labels") or {}
            st = found.get("status") or {}
            if (
                _ours(found)
                and labels.get(gov.LABEL_INTENT) in gov.LEVEL_CATEGORIES
                and name not in names
                and st.get("state") == ProposalState.OPEN
                and "withdrawal" not in (found.get("spec") or {})
                and st.get("proposalId")
            ):
                self._withdraw_ours(found, str(st["proposalId"]))

    def create(self, intent: gov.Intent) -> str:
        """Create the Proposal CR for ``intent`` unless one of that name exists; its name."""
        name = intent.cr_name(self.name)
        if self.kube.get("Proposal", self.namespace, name) is None and self.signer is not None:
            self._create(intent)
        return name

    def _create(self, intent: gov.Intent) -> None:
        assert self.signer is not None
        key, cert = self.signer
        document = gov.proposal_document(key, cert, self.name, intent, self.now)
        manifest = gov.proposal_manifest(
            self.name, self.namespace, str(self.consortium["metadata"]["uid"]), intent, document
        )
        self.kube.apply(manifest)
        message = f"Proposal {manifest['metadata']['name']} put to the members: {intent.why}"
        log.info("%s/%s %s", self.namespace, self.name, message)
        self.kube.event(self.consortium, "Normal", "ProposalCreated", message, rfc3339(self.now))

    def _withdraw_ours(self, found: Mapping[str, Any], proposal_id: str) -> None:
        assert self.signer is not None
        key, cert = self.signer
        document = gov.withdrawal_document(key, cert, self.name, proposal_id)
        meta = found["metadata"]
        self.kube.apply(
            {
                "apiVersion": API_VERSION,
                "kind": "Proposal",
                "metadata": {
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    # Server-side apply drops what the operator applied before and omits now:
                    # keep its labels (proposed-by, intent), annotation and owner reference.
                    **{
                        k: meta[k]
                        for k in ("labels", "annotations", "ownerReferences")
                        if k in meta
                    },
                },
                "spec": {
                    "consortium": self.name,
                    "proposal": found["spec"]["proposal"],
                    "withdrawal": base64.b64encode(document).decode("ascii"),
                },
            }
        )
        self.kube.event(
            self.consortium,
            "Normal",
            "ProposalWithdrawn",
            f"Proposal {meta['name']} is no longer what the spec asks; withdrawn",
            rfc3339(self.now),
        )


def _merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) from ``old`` to ``new``: fields ``new`` lacks are null,
    so a status key that no longer applies (a tally while unreachable) is removed."""
    out: dict[str, Any] = dict(new)
    for key, value in old.items():
        if key not in new:
            out[key] = None
        elif isinstance(value, Mapping) and isinstance(new[key], Mapping):
            out[key] = _merge_patch(value, new[key])
    return out


def _ours(body: Mapping[str, Any]) -> bool:
    return (body["metadata"].get("labels") or {}).get(gov.LABEL_PROPOSED_BY) == "operator"


def operator_signer(kube: Kube, namespace: str, secret: str) -> tuple[PrivateKey, str] | None:
    """The operator's member key and certificate for one Consortium (None until created)."""
    live = kube.get("Secret", namespace, secret)
    if live is None:
        return None
    data = live.get("data") or {}
    key_pem, cert_pem = base64.b64decode(data["tls.key"]), base64.b64decode(data["tls.crt"])
    return load_private_key(key_pem), cert_pem.decode("ascii")


def propose_removal(
    kube: Kube,
    consortium: Mapping[str, Any],
    member: MemberSpec,
    signer: tuple[PrivateKey, str] | None,
    now: datetime,
    *,
    uid: str = "",
) -> str | None:
    """Put a deleted Member's removal to the members; the Proposal's name (None: no signer)."""
    if signer is None:
        return None
    namespace = str(consortium["metadata"]["namespace"])
    relay = Relay(kube, namespace, consortium, None, RelayMemory(), now, signer)
    return relay.create(gov.removal(member, uid))
