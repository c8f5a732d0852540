"""The governance routes (``/gov/proposals…``, ``/gov/members/ack``) over ``governance.py``.

Bodies are signed documents (COSE_Sign1 bytes); the signature, not the TLS client, says who
speaks, so any client (the operator included) may relay them — a backup included: a document
posted to a backup is forwarded, bytes unchanged, to the primary over the node-to-node channel
and the primary's answer returned, as application writes are. So a member who can reach one
node (a port-forward to one pod) can propose, vote and acknowledge, whichever node leads; the
primary's address (a cluster DNS name) never has to resolve on the member's machine. A
forwarded document is not forwarded again (a primary that lost its role answers 503 NotLeader
naming the new one). Reads are served by any node from its own log.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from consortium_node.ledger import TxId
from consortium_node.recovery.record import RECORD_KEY, T_RECOVERY
from consortium_node.server.errors import NotFoundError, UnavailableError
from consortium_node.server.governance import Governance
from consortium_node.server.receipts import receipt_response
from consortium_node.server.validation import (
    check_document,
    parse_proposal_id,
    parse_query,
    parse_txid,
)

GOVERNANCE = web.AppKey("governance", Governance)
FORWARDED = "X-Consortium-Forwarded"  # set on a document a backup relays to the primary


async def _document(request: web.Request) -> bytes:
    parse_query(request.query, set(), set())
    return check_document(await request.read())


def _proposal_id(request: web.Request) -> str:
    return parse_proposal_id(request.match_info["proposal_id"])


async def _forward(request: web.Request, document: bytes) -> web.Response:
    """Relay ``document`` to the primary at the same path; answer what the primary answered."""
    governance = request.app[GOVERNANCE]
    leader = governance.raft.leader_address
    if request.headers.get(FORWARDED) or not leader:
        # forwarded once already, or no primary known yet
        raise governance.raft.not_leader()
    headers = {"Content-Type": "application/cose", FORWARDED: "1"}
    try:
        status, answer = await governance.primary.transport.relay(
            leader, request.path, document, headers
        )
    except OSError as exc:
        raise UnavailableError(str(exc)) from exc
    return web.json_response(answer, status=status)


async def _record(request: web.Request, kind: str, proposal_id: str | None) -> web.Response:
    """Record a signed document of ``kind`` on the primary: here, or forwarded to it."""
    document = await _document(request)
    governance = request.app[GOVERNANCE]
    if governance.raft.role != "leader":
        return await _forward(request, document)
    answer: dict[str, Any]
    if kind == "proposal":
        answer = await governance.propose(document)
    elif kind == "ack":
        answer = await governance.ack(document)
    elif kind == "ballot":
        answer = await governance.ballot(str(proposal_id), document)
    else:
        answer = await governance.withdraw(str(proposal_id), document)
    return web.json_response(answer)


async def post_proposal(request: web.Request) -> web.Response:
    return await _record(request, "proposal", None)


async def post_ballot(request: web.Request) -> web.Response:
    return await _record(request, "ballot", _proposal_id(request))


async def post_withdrawal(request: web.Request) -> web.Response:
    return await _record(request, "withdrawal", _proposal_id(request))


async def post_ack(request: web.Request) -> web.Response:
    return await _record(request, "ack", None)


async def get_proposal(request: web.Request) -> web.Response:
    parse_query(request.query, set(), set())
    return web.json_response(request.app[GOVERNANCE].view(_proposal_id(request)))


async def get_proposal_receipt(request: web.Request) -> web.Response:
    """The receipt of the transaction that recorded the proposal's current state (for a
    decided proposal, its outcome; for an Expired one, its last ballot or its opening)."""
    parse_query(request.query, set(), set())
    governance = request.app[GOVERNANCE]
    view = governance.view(_proposal_id(request))
    term, index = parse_txid(view["txid"])
    node = governance.node
    return receipt_response(
        node.ledger, TxId(term, index), node.config.ledger.signature_interval_ms
    )


async def list_proposals(request: web.Request) -> web.Response:
    parse_query(request.query, set(), set())
    return web.json_response({"proposals": request.app[GOVERNANCE].views()})


async def get_recovery_record(request: web.Request) -> web.Response:
    """The committed recovery record (``consortium_node.recovery.record``; public ledger
    data: shares encrypted to each recovery member, the secrets wrapped) and its txid, for a
    member to check on its own machine that it can open its share; 404 if none is written
    (no recovery member)."""
    parse_query(request.query, set(), set())
    found = request.app[GOVERNANCE].node.ledger.get(T_RECOVERY, RECORD_KEY)
    if found is None:
        raise NotFoundError("recovery", "no recovery record yet: no member has a recovery key")
    record, txid = found
    return web.json_response({"record": record, "txid": str(txid)})


ROUTES = [
    ("GET", "/gov/recovery", get_recovery_record),
    ("POST", "/gov/proposals", post_proposal),
    ("GET", "/gov/proposals", list_proposals),
    ("GET", "/gov/proposals/{proposal_id}", get_proposal),
    ("GET", "/gov/proposals/{proposal_id}/receipt", get_proposal_receipt),
    ("POST", "/gov/proposals/{proposal_id}/ballots", post_ballot),
    ("POST", "/gov/proposals/{proposal_id}/withdraw", post_withdrawal),
    ("POST", "/gov/members/ack", post_ack),
]
