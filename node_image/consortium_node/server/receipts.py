"""Receipts as the API serves them: 200 with the receipt, or 202 Pending until a signature
transaction covers the txid (``retry_after_ms`` says when to ask again), 404 if unknown.

Shared by ``GET /app/receipt`` (any transaction, for members and users) and
``GET /gov/proposals/<id>/receipt`` (the transaction that recorded a proposal's state).
"""

from __future__ import annotations

from aiohttp import web

from consortium_node.ledger import ReceiptNotReadyError, TxId, UnknownTransactionError
from consortium_node.ledger.ledger import Ledger
from consortium_node.server.validation import ApiError


def receipt_response(ledger: Ledger, txid: TxId, retry_after_ms: int) -> web.Response:
    try:
        return web.json_response(ledger.receipt(txid))
    except UnknownTransactionError as exc:
        raise ApiError(404, "NotFound", "txid", str(exc)) from exc
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
