"""The governance routes (``/gov/proposals…``, ``/gov/members/ack``) over ``governance.py``.

Bodies are signed documents (COSE_Sign1 bytes); the signature, not the TLS client, says who
speaks, so any client (the operator included) may relay them. Writes go to the primary (others
answer 503 NotLeader naming it); reads are served by any node from its own log.
"""

from __future__ import annotations

from aiohttp import web

from consortium_node.governance.actions import is_sha256_hex
from consortium_node.ledger import TxId
from consortium_node.server.governance import Governance
from consortium_node.server.receipts import receipt_response
from consortium_node.server.validation import ApiError, parse_query, parse_txid

GOVERNANCE = web.AppKey("governance", Governance)
MAX_DOCUMENT = 256 * 1024


async def _document(request: web.Request) -> bytes:
    parse_query(request.query, set(), set())
    body = await request.read()
    if not body:
        raise ApiError(400, "BadRequest", "body", "expected a COSE_Sign1 document")
    if len(body) > MAX_DOCUMENT:
        raise ApiError(
            413, "TooLarge", "body", f"a governance document is at most {MAX_DOCUMENT} bytes"
        )
    return body


def _proposal_id(request: web.Request) -> str:
    pid = request.match_info["proposal_id"]
    if not is_sha256_hex(pid):
        raise ApiError(400, "BadRequest", "proposal_id", "expected 64 lowercase hex digits")
    return pid


async def post_proposal(request: web.Request) -> web.Response:
    return web.json_response(await request.app[GOVERNANCE].propose(await _document(request)))


async def post_ballot(request: web.Request) -> web.Response:
    pid = _proposal_id(request)
    return web.json_response(await request.app[GOVERNANCE].ballot(pid, await _document(request)))


async def post_withdrawal(request: web.Request) -> web.Response:
    pid = _proposal_id(request)
    return web.json_response(await request.app[GOVERNANCE].withdraw(pid, await _document(request)))


async def post_ack(request: web.Request) -> web.Response:
    return web.json_response(await request.app[GOVERNANCE].ack(await _document(request)))


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


ROUTES = [
    ("POST", "/gov/proposals", post_proposal),
    ("GET", "/gov/proposals", list_proposals),
    ("GET", "/gov/proposals/{proposal_id}", get_proposal),
    ("GET", "/gov/proposals/{proposal_id}/receipt", get_proposal_receipt),
    ("POST", "/gov/proposals/{proposal_id}/ballots", post_ballot),
    ("POST", "/gov/proposals/{proposal_id}/withdraw", post_withdrawal),
    ("POST", "/gov/members/ack", post_ack),
]
