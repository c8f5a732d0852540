"""The node's HTTP API (DESIGN section 7) on aiohttp.

Routes are thin: validate the request (``validation``), call the ``Node`` or the ``Committer``,
return JSON. Every error is JSON ``{"error": {"code", "field", "reason"}}`` with a 4xx/5xx
status — including aiohttp's own (unknown route, body too large), which a middleware rewrites.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from consortium_node.ledger import ReceiptNotReadyError, TxId, UnknownTransactionError
from consortium_node.server.committer import Committer, CommitUnavailableError
from consortium_node.server.node import Member, Node
from consortium_node.server.validation import (
    APP_TABLE,
    ApiError,
    check_key_param,
    parse_json_body,
    parse_nonce,
    parse_query,
    parse_transactions,
    parse_txid,
)

log = logging.getLogger("consortium_node.api")

NODE_KEY = web.AppKey("node", Node)
COMMITTER_KEY = web.AppKey("committer", Committer)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error and count requests by route and status."""
    node = request.app[NODE_KEY]
    route = request.match_info.route.resource
    route_name = route.canonical if route is not None else "unmatched"
    try:
        response = await handler(request)
    except ApiError as exc:
        response = _json(exc.body(), exc.status)
    except web.HTTPRequestEntityTooLarge as exc:
        limit = node.config.limits.max_body_bytes
        err = ApiError(413, "PayloadTooLarge", "body", f"larger than {limit} bytes")
        response = _json(err.body(), exc.status)
    except web.HTTPException as exc:
        code = exc.reason.replace(" ", "")
        response = _json(ApiError(exc.status, code, None, exc.reason).body(), exc.status)
    except CommitUnavailableError as exc:
        response = _json(ApiError(503, "Unavailable", None, str(exc)).body(), 503)
    node.metrics.http_requests.labels(route_name, str(response.status)).inc()
    return response


def _caller(request: web.Request) -> Member:
    """The Active member/user authenticated by the TLS client certificate, or 401/403."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = (
        ssl_object.getpeercert(binary_form=True) if isinstance(ssl_object, ssl.SSLObject) else None
    )
    if not der:
        raise ApiError(
            401,
            "Unauthenticated",
            "client_certificate",
            "this endpoint needs a TLS client certificate of a registered member or user",
        )
    member = request.app[NODE_KEY].authenticate(der)
    if member is None:
        raise ApiError(
            403,
            "Forbidden",
            "client_certificate",
            "the certificate is not an Active member or user of this consortium",
        )
    return member


def _txid(request: web.Request) -> TxId:
    query = parse_query(request.query, {"txid"}, {"txid"})
    term, index = parse_txid(query["txid"])
    return TxId(term, index)


async def node_state(request: web.Request) -> web.Response:
    parse_query(request.query, set(), set())
    return _json(request.app[NODE_KEY].state())


async def node_quote(request: web.Request) -> web.Response:
    query = parse_query(request.query, {"nonce"}, {"nonce"})
    return _json(request.app[NODE_KEY].quote(parse_nonce(query["nonce"])))


async def node_trusted_list(request: web.Request) -> web.Response:
    query = parse_query(request.query, {"format"}, set())
    fmt = query.get("format", "cose")
    node = request.app[NODE_KEY]
    if fmt not in ("cose", "json"):
        raise ApiError(400, "BadRequest", "format", "must be cose or json")
    envelope = node.lists.current_envelope
    current = node.lists.current
    if envelope is None or current is None:
        raise ApiError(503, "Unavailable", None, "no trusted-node list has been issued yet")
    if fmt == "json":
        return web.Response(body=current.to_payload(), content_type="application/json")
    return web.Response(
        body=envelope,
        content_type="application/cose",
        headers={"X-Trusted-List-Version": str(current.version)},
    )


async def node_network(request: web.Request) -> web.Response:
    parse_query(request.query, set(), set())
    return _json(request.app[NODE_KEY].network())


async def node_commit(request: web.Request) -> web.Response:
    parse_query(request.query, set(), set())
    return _json(request.app[NODE_KEY].commit())


async def post_transactions(request: web.Request) -> web.Response:
    _caller(request)
    node = request.app[NODE_KEY]
    parse_query(request.query, set(), set())
    batch = parse_transactions(parse_json_body(await request.read()), node.config.limits)
    txids = await request.app[COMMITTER_KEY].submit(batch.write_sets)
    return _json(
        {
            "transactions": [{"txid": str(t)} for t in txids],
            "commit": node.commit(),
        }
    )


async def get_kv(request: web.Request) -> web.Response:
    _caller(request)
    node = request.app[NODE_KEY]
    parse_query(request.query, set(), set())
    key = check_key_param(request.match_info["key"], node.config.limits)
    found = node.ledger.get(APP_TABLE, key)
    commit = node.commit()
    if found is None or found[0] is None:
        raise ApiError(
            404, "NotFound", "key", f"no value for this key as of commit {commit['txid']}"
        )
    value, txid = found
    return _json({"key": key, "value": value, "txid": str(txid), "commit": commit})


async def get_receipt(request: web.Request) -> web.Response:
    _caller(request)
    node = request.app[NODE_KEY]
    txid = _txid(request)
    try:
        return _json(node.ledger.receipt(txid))
    except UnknownTransactionError as exc:
        raise ApiError(404, "NotFound", "txid", str(exc)) from exc
    except ReceiptNotReadyError as exc:
        interval = node.config.ledger.signature_interval_ms
        return _json(
            {
                "status": "Pending",
                "txid": str(txid),
                "reason": str(exc),
                "retry_after_ms": interval,
            },
            202,
        )


async def get_transaction(request: web.Request) -> web.Response:
    _caller(request)
    node = request.app[NODE_KEY]
    txid = _txid(request)
    try:
        return _json(node.transaction(txid))
    except UnknownTransactionError as exc:
        raise ApiError(404, "NotFound", "txid", str(exc)) from exc


async def metrics(request: web.Request) -> web.Response:
    body = request.app[NODE_KEY].render_metrics()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def healthz(request: web.Request) -> web.Response:
    committer = request.app[COMMITTER_KEY]
    if not committer.running:
        raise ApiError(503, "Unhealthy", None, "the commit pipeline has stopped")
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    problems = []
    if not request.app[COMMITTER_KEY].running:
        problems.append("commit pipeline stopped")
    if node.lists.current is None:
        problems.append("no trusted-node list")
    elif node.state()["status"] != "Trusted":
        problems.append(f"this node is {node.state()['status']} in the trusted-node list")
    if problems:
        raise ApiError(503, "NotReady", None, "; ".join(problems))
    return _json({"status": "ready", "role": node.role})


def build_app(node: Node, committer: Committer) -> web.Application:
    """The aiohttp application of one node (the committer is started on app start-up)."""
    app = web.Application(
        client_max_size=node.config.limits.max_body_bytes, middlewares=[errors_middleware]
    )
    app[NODE_KEY] = node
    app[COMMITTER_KEY] = committer
    app.router.add_get("/node/state", node_state)
    app.router.add_get("/node/quote", node_quote)
    app.router.add_get("/node/trusted-list", node_trusted_list)
    app.router.add_get("/node/network", node_network)
    app.router.add_get("/node/commit", node_commit)
    app.router.add_post("/app/transactions", post_transactions)
    app.router.add_get("/app/kv/{key}", get_kv)
    app.router.add_get("/app/receipt", get_receipt)
    app.router.add_get("/app/transaction", get_transaction)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)

    async def on_startup(_: web.Application) -> None:
        committer.start()

    async def on_cleanup(_: web.Application) -> None:
        await committer.stop()
        node.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
