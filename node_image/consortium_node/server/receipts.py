"""Receipts as the API serves them: 200 with the receipt, or 202 Pending until a signature
transaction covers the txid (``retry_after_ms`` says when to ask again), 404 if unknown.

Shared by ``GET /app/receipt`` (any transaction, for members and users) and
``GET /gov/proposals/<id>/receipt`` (the transaction that recorded a proposal's state).

A 404 says which of two very different things it means, in ``error.code``:

* ``NotCommittedYet`` — the txid lies beyond what *this node* knows to be committed. On a
  backup that is the normal state of a write acknowledged by the primary a moment ago (the
  backup learns the commit with the next heartbeat): ask again. ``error.commit`` is this node's
  commit, so a client can tell how far behind it is.
* ``NotFound`` — final: the index is committed here with another term (that txid was
  overwritten after a change of primary), or this node is the primary and the txid is not in
  its log (a primary's log holds every committed entry, so such a txid never committed).
"""

from __future__ import annotations

from aiohttp import web

from consortium_node.ledger import ReceiptNotReadyError, TxId, UnknownTransactionError
from consortium_node.ledger.errors import HistoryNotHeldError
from consortium_node.ledger.ledger import Ledger
from consortium_node.server.errors import NotCommittedYetError, NotFoundError


def require_committed_here(ledger: Ledger, txid: TxId, *, leader: bool) -> None:
    """NotCommittedYetError if ``txid`` may still commit here (see above), or NotFoundError if
    this node is the primary and has no such entry; nothing if it is within the commit."""
    if txid.index <= ledger.commit_index:
        return
    commit = str(ledger.commit_txid) if ledger.commit_index else None
    in_flight = txid.index <= ledger.last_index and ledger.term_at(txid.index) == txid.term
    if leader and not in_flight:
        raise NotFoundError(
            "txid",
            f"transaction {txid} is not in the primary's log (committed up to {commit})",
            commit=commit,
        )
    raise NotCommittedYetError(
        "txid",
        f"transaction {txid} is not committed on this node yet (its commit is {commit}); "
        "a backup learns new commits within a heartbeat: retry",
        commit=commit,
    )


def receipt_response(
    ledger: Ledger, txid: TxId, retry_after_ms: int, *, leader: bool = False
) -> web.Response:
    """The receipt of ``txid``; ``leader``: this node is the primary (see above)."""
    require_committed_here(ledger, txid, leader=leader)
    try:
        return web.json_response(ledger.receipt(txid))
    except HistoryNotHeldError:
        raise  # answered as itself: the range this node holds, where to ask instead
    except UnknownTransactionError as exc:
        raise NotFoundError("txid", str(exc)) from exc
    except ReceiptNotReadyError as exc:
        return web.json_response(
            {
                "status": "Pending",
                "txid": str(txid),
                "reason": str(exc),
                "retry_after_ms": retry_after_ms,
            },
            status=202,
        )
