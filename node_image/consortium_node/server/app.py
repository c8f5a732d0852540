"""The node's HTTP API (DESIGN section 7) on aiohttp.

Routes are thin: authenticate the caller (``callers``), validate the request (``validation``),
call the ``Node``, the ``RaftNode`` or the ``Primary``, return JSON. Every error is JSON
``{"error": {"code", "field", "reason"}}``: the middleware answers the node's own exceptions as
``http_errors`` maps them, and rewrites aiohttp's own (unknown route, body too large).

Writes sent to a backup are forwarded to the primary over the node-to-node channel with the
caller's member_id (nodes are attested and trust each other; members do not reach the primary
directly). Reads are served locally and say which commit they reflect.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from consortium_node.identity.trusted_list import NodeEntry, NodeStatus
from consortium_node.ledger import SecretUnavailableError, TxId, UnknownTransactionError
from consortium_node.ledger.errors import HistoryNotHeldError
from consortium_node.recovery.record import pem_digest
from consortium_node.replication.messages import (
    MAX_MESSAGE_BYTES,
    AppendRequest,
    FetchRequest,
    M,
    MessageError,
    VoteRequest,
    decode,
    encode,
)
from consortium_node.replication.raft import RaftNode
from consortium_node.server import gov_api, recovery_api, snapshot_api
from consortium_node.server.backup import BackupShipper
from consortium_node.server.callers import (
    APP_ONLY,
    APP_ROLES,
    NETWORK_ROLES,
    Member,
    forwarded_member,
    member_calling,
    require_role,
)
from consortium_node.server.errors import (
    BadRequestError,
    ConflictError,
    NoLedgerSecretError,
    NotFoundError,
    NotReadyError,
    ServiceNotOpenError,
    UnavailableError,
)
from consortium_node.server.governance import Governance
from consortium_node.server.http_errors import ANSWERED, ApiError, api_error
from consortium_node.server.node import Node
from consortium_node.server.peers import (
    CBOR,
    RECIPIENT_HEADER,
    PeerTransport,
    authenticate_peer,
    check_recipient,
)
from consortium_node.server.primary import Primary
from consortium_node.server.receipts import receipt_response, require_committed_here
from consortium_node.server.recovery_api import Ceremony
from consortium_node.server.service_state import OPEN, not_open_reason
from consortium_node.server.validation import (
    APP_TABLE,
    check_key_param,
    parse_forwarded,
    parse_join,
    parse_json_body,
    parse_list_format,
    parse_node_id,
    parse_nonce,
    parse_query,
    parse_refresh,
    parse_transactions,
    parse_txid,
)

log = logging.getLogger("consortium_node.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Services:
    node: Node
    raft: RaftNode
    primary: Primary
    transport: PeerTransport
    governance: Governance
    ceremony: Ceremony
    backup: BackupShipper | None = None


SERVICES = web.AppKey("services", Services)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error and count requests by route and status."""
    node = _services(request).node
    resource = request.match_info.route.resource
    route_name = resource.canonical if resource is not None else "unmatched"
    try:
        response = await handler(request)
    except ANSWERED as exc:  # the node's own errors (``http_errors.py``)
        err = api_error(exc)
        response = _json(err.body(), err.status)
    except web.HTTPRequestEntityTooLarge as exc:
        limit = request.get(BODY_LIMIT, node.config.limits.max_body_bytes)
        err = ApiError(413, "PayloadTooLarge", "body", f"larger than {limit} bytes")
        response = _json(err.body(), exc.status)
    except web.HTTPException as exc:
        code = exc.reason.replace(" ", "")
        response = _json(ApiError(exc.status, code, None, exc.reason).body(), exc.status)
    node.metrics.http_requests.labels(route_name, str(response.status)).inc()
    return response


BODY_LIMIT = "consortium.body_limit"  # request key: the limit of a peer route's body


async def _read_peer_body(request: web.Request, limit: int) -> bytes:
    """The body of a request from an authenticated peer, up to ``limit`` bytes (413 beyond).

    Peer routes read past the clients' ``limits.max_body_bytes`` (aiohttp's
    ``client_max_size``, which ``request.read()`` enforces): a leader's AppendEntries batch
    holds up to ``RaftTiming.max_batch_bytes`` of entries, and a forwarded client body is
    re-encoded inside another document. Refusing them would stop replication for good.
    """
    request[BODY_LIMIT] = limit
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    data = bytearray()
    while chunk := await request.content.read(1024 * 1024):
        data += chunk
        if len(data) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
    return bytes(data)


def _peer_der(request: web.Request) -> bytes | None:
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    if isinstance(ssl_object, ssl.SSLObject):
        return ssl_object.getpeercert(binary_form=True)
    return None


def _caller_in(request: web.Request, roles: tuple[str, ...], what: str) -> Member:
    """The Active member calling (``callers.py``), if its role is one of ``roles``."""
    member = member_calling(_services(request).node.members(), _peer_der(request))
    return require_role(member, roles, what)


def _app_caller(request: web.Request) -> Member:
    return _caller_in(request, APP_ROLES, APP_ONLY)


def _peer(request: web.Request) -> str:
    """The node_id of the Trusted node calling (mTLS), or PeerRejectedError."""
    node = _services(request).node
    return authenticate_peer(
        _peer_der(request), node.service.certificate, node.membership.is_trusted
    )


def _txid(request: web.Request) -> TxId:
    query = parse_query(request.query, {"txid"}, {"txid"})
    term, index = parse_txid(query["txid"])
    return TxId(term, index)


# ---------------------------------------------------------------------- node
async def node_state(request: web.Request) -> web.Response:
    parse_query(request.query, set(), set())
    s = _services(request)
    return _json(
        {
            **s.node.state(),
            "leader": {"node_id": s.raft.leader_id, "address": s.raft.leader_address},
        }
    )


async def node_quote(request: web.Request) -> web.Response:
    query = parse_query(request.query, {"nonce"}, {"nonce"})
    return _json(_services(request).node.quote(parse_nonce(query["nonce"])))


async def node_trusted_list(request: web.Request) -> web.Response:
    fmt = parse_list_format(request.query)
    store = _services(request).node.membership.store
    envelope, current = store.current_envelope, store.current
    if envelope is None or current is None:
        raise UnavailableError("no trusted-node list has been accepted yet")
    if fmt == "json":
        return web.Response(body=current.to_payload(), content_type="application/json")
    return web.Response(
        body=envelope,
        content_type="application/cose",
        headers={"X-Trusted-List-Version": str(current.version)},
    )


def node_json(node: NodeEntry) -> dict[str, Any]:
    """A node of the trusted-node list as ``/node/network`` shows it."""
    return {
        "node_id": node.node_id,
        "name": node.name,
        "address": node.address,
        "status": node.status.value,
        "measurement": node.measurement,
        "attested_at": node.attested_at,
        "attestation_expires_at": node.attestation_expires_at,
    }


async def node_network(request: web.Request) -> web.Response:
    parse_query(request.query, set(), set())
    s = _services(request)
    lst = s.node.membership.current()
    nodes = []
    for entry in lst.nodes if lst else ():
        item = node_json(entry)
        failure = s.primary.renewal_failures.get(entry.node_id)
        if failure:
            item["renewal_failure"] = failure
        nodes.append(item)
    return _json(
        {
            "consortium": s.node.config.consortium,
            "service_certificate": s.node.service.certificate_pem,
            "service_certificate_sha256": s.node.service.certificate_sha256,
            "primary": {"node_id": s.raft.leader_id, "address": s.raft.leader_address},
            "trusted_list_version": lst.version if lst else None,
            "nodes": nodes,
            "members": [
                {
                    "member_id": m.member_id,
                    "role": m.role,
                    "status": m.status,
                    # A recovery member: which key its share is encrypted to (the key is public
                    # too, but a digest is all a reader needs to compare it with another).
                    **(
                        {"recovery_key_sha256": pem_digest(m.recovery_key_pem)}
                        if m.recovery_key_pem
                        else {}
                    ),
                }
                for m in sorted(s.node.members().values(), key=lambda m: m.member_id)
            ],
            # What the members decided, so the operator can tell which parts of its
            # Consortium spec still need their approval (a proposal).
            "attestation_policy": s.node.policy_value(),
            "constitution": s.node.constitution(),
        }
    )


async def node_commit(request: web.Request) -> web.Response:
    parse_query(request.query, set(), set())
    return _json(_services(request).node.commit())


async def join_nonce(request: web.Request) -> web.Response:
    parse_query(request.query, set(), set())
    return _json(_services(request).primary.join_nonce())


async def join(request: web.Request) -> web.Response:
    """200 with the secrets for a Trusted node, 202 while it waits for members to trust it."""
    parse_query(request.query, set(), set())
    body = parse_join(parse_json_body(await request.read()))
    answer = await _services(request).primary.join(body)
    return _json(answer, 200 if answer["status"] == NodeStatus.TRUSTED.value else 202)


async def retire_node(request: web.Request) -> web.Response:
    """Retire a node from the configuration (scale-down); governors or the operator."""
    _caller_in(request, NETWORK_ROLES, "governors and the operator retire nodes")
    node_id = parse_node_id(parse_json_body(await request.read()))
    return _json(await _services(request).primary.retire(node_id))


async def refresh(request: web.Request) -> web.Response:
    """A Trusted node announces a new address or names (``refresh.py``); peers only (mTLS)."""
    node_id = _peer(request)
    parse_query(request.query, set(), set())
    body = parse_json_body(await request.read())
    primary = _services(request).primary
    primary.require_leader()  # a backup answers NotLeader naming the primary, whatever the body
    return _json(await primary.refresh(node_id, parse_refresh(body)))


async def backup_status(request: web.Request) -> web.Response:
    """``GET /node/backup``: this node's view of the backup (``backup.py``); the primary ships."""
    parse_query(request.query, set(), set())
    shipper = _services(request).backup
    return _json({"configured": False} if shipper is None else shipper.status())


async def backup_now(request: web.Request) -> web.Response:
    """``POST /node/backup``: start a backup round now (a ``ConsortiumBackup``)."""
    _caller_in(request, NETWORK_ROLES, "governors and the operator ask for backups")
    parse_json_body(await request.read() or b"{}")
    services = _services(request)
    if services.backup is None:
        raise ConflictError("backup", "BackupNotConfigured: this consortium has no backup store")
    services.primary.require_leader()
    return _json({"requested_through": services.backup.request()}, status=202)


async def reattest(request: web.Request) -> web.Response:
    """Run a re-attestation round now (the operator's timer asks before renewBefore)."""
    _caller_in(request, NETWORK_ROLES, "governors and the operator ask for this")
    parse_json_body(await request.read() or b"{}")
    return _json(await _services(request).primary.reattest_now())


# ---------------------------------------------------------------------- app
async def _submit(services: Services, body: Any) -> dict[str, Any]:
    """Write a member's transactions on this primary (the route checked who may)."""
    batch = parse_transactions(body, services.node.config.limits)
    phase = services.node.service_phase()
    if phase != OPEN:
        raise ServiceNotOpenError("service", not_open_reason(phase), phase=phase)
    try:
        txids = await services.raft.submit(batch.write_sets)
    except SecretUnavailableError as exc:  # this primary was left out of a secret rotation
        raise NoLedgerSecretError(None, str(exc)) from exc
    return {"transactions": [{"txid": str(t)} for t in txids], "commit": services.node.commit()}


async def post_transactions(request: web.Request) -> web.Response:
    member = _app_caller(request)
    s = _services(request)
    parse_query(request.query, set(), set())
    body = parse_json_body(await request.read())
    if s.raft.role == "leader":
        return _json(await _submit(s, body))
    parse_transactions(body, s.node.config.limits)  # fail bad input here, not at the primary
    if not s.raft.leader_address:
        raise s.raft.not_leader()
    try:
        status, answer = await s.transport.forward(
            s.raft.leader_address,
            "/internal/forward/transactions",
            {"member_id": member.member_id, "body": body},
        )
    except OSError as exc:
        raise UnavailableError(str(exc)) from exc
    return _json(answer, status)


async def forwarded_transactions(request: web.Request) -> web.Response:
    _peer(request)
    s = _services(request)
    if s.raft.role != "leader":
        raise s.raft.not_leader()
    limit = 2 * s.node.config.limits.max_body_bytes + 64 * 1024  # a client's body, re-encoded
    member_id, body = parse_forwarded(parse_json_body(await _read_peer_body(request, limit)))
    forwarded_member(s.node.members(), member_id)
    return _json(await _submit(s, body))


async def get_kv(request: web.Request) -> web.Response:
    _app_caller(request)
    node = _services(request).node
    parse_query(request.query, set(), set())
    key = check_key_param(request.match_info["key"], node.config.limits)
    try:
        found = node.ledger.get(APP_TABLE, key)
    except SecretUnavailableError as exc:
        raise NoLedgerSecretError("key", str(exc)) from exc
    commit = node.commit()
    if found is None or found[0] is None:
        raise NotFoundError("key", f"no value for this key as of commit {commit['txid']}")
    value, txid = found
    return _json({"key": key, "value": value, "txid": str(txid), "commit": commit})


async def get_receipt(request: web.Request) -> web.Response:
    _app_caller(request)
    s = _services(request)
    interval = s.node.config.ledger.signature_interval_ms
    leader = s.raft.role == "leader"
    return receipt_response(s.node.ledger, _txid(request), interval, leader=leader)


async def get_transaction(request: web.Request) -> web.Response:
    _app_caller(request)
    s, txid = _services(request), _txid(request)
    require_committed_here(s.node.ledger, txid, leader=s.raft.role == "leader")
    try:
        return _json(s.node.transaction(txid))
    except HistoryNotHeldError:
        raise  # answered as itself: the range this node holds, where to ask instead
    except UnknownTransactionError as exc:
        raise NotFoundError("txid", str(exc)) from exc
    except SecretUnavailableError as exc:
        raise NoLedgerSecretError("txid", str(exc)) from exc


# ---------------------------------------------------------------------- raft
async def _raft_message(request: web.Request, cls: type[M]) -> M:
    """A Raft RPC from an authenticated Trusted peer, meant for this node, decoded and
    validated (or a 400)."""
    _peer(request)
    check_recipient(request.headers.get(RECIPIENT_HEADER), _services(request).node.node_id)
    try:
        return decode(await _read_peer_body(request, MAX_MESSAGE_BYTES), cls)
    except MessageError as exc:
        raise BadRequestError(exc.field, exc.reason) from exc


async def raft_append(request: web.Request) -> web.Response:
    message = await _raft_message(request, AppendRequest)
    response = await _services(request).raft.handle_append(message)
    return web.Response(body=encode(response), content_type=CBOR)


async def raft_vote(request: web.Request) -> web.Response:
    message = await _raft_message(request, VoteRequest)
    response = await _services(request).raft.handle_vote(message)
    return web.Response(body=encode(response), content_type=CBOR)


async def raft_pre_vote(request: web.Request) -> web.Response:
    message = await _raft_message(request, VoteRequest)
    response = await _services(request).raft.handle_pre_vote(message)
    return web.Response(body=encode(response), content_type=CBOR)


async def raft_fetch(request: web.Request) -> web.Response:
    message = await _raft_message(request, FetchRequest)
    response = await _services(request).raft.handle_fetch(message)
    return web.Response(body=encode(response), content_type=CBOR)


# ---------------------------------------------------------------------- ops
async def metrics(request: web.Request) -> web.Response:
    body = _services(request).node.render_metrics()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok", "role": _services(request).node.role})


# A backup is ready once its commit index is within this many entries of the primary's (a
# heartbeat or two of writes at full speed): it then serves reads no older than that. A primary
# is ready once an entry of its own term committed (everything before it is then committed).
READY_LAG_ENTRIES = 1_000


async def readyz(request: web.Request) -> web.Response:
    s = _services(request)
    problems = []
    status = s.node.own_status()
    if status != "Trusted":
        problems.append(f"this node is {status} in the trusted-node list")
    if s.raft.leader_id is None:
        problems.append("no primary is known (election running?)")
    commit = s.node.ledger.commit_index
    if commit == 0:
        problems.append("nothing committed yet (catching up)")
    elif s.raft.role != "leader" and s.raft.leader_commit - commit > READY_LAG_ENTRIES:
        problems.append(f"catching up: committed {commit} of the primary's {s.raft.leader_commit}")
    elif s.raft.role == "leader" and s.node.ledger.term_at(commit) < s.raft.term:
        # Its own term's first entry (the leader no-op) is not committed yet: a primary that
        # restarted commits its replayed log in slices first (snapshots on the way), and a
        # write would wait behind that work.
        last = s.node.ledger.last_index
        problems.append(f"catching up: committed {commit} of the {last} entries in its log")
    ledger = s.node.ledger_problem()
    if ledger is not None:
        problems.append(ledger)
    if problems:
        raise NotReadyError("; ".join(problems))
    return _json({"status": "ready", "role": s.node.role})


def build_app(services: Services) -> web.Application:
    """The aiohttp application of one node."""
    app = web.Application(
        client_max_size=services.node.config.limits.max_body_bytes, middlewares=[errors_middleware]
    )
    app[SERVICES] = services
    app[gov_api.GOVERNANCE] = services.governance
    app[recovery_api.CEREMONY] = services.ceremony
    app[snapshot_api.SNAPSHOTS] = services.node.ledger.snapshots
    routes = [
        ("GET", "/node/state", node_state),
        ("GET", "/node/quote", node_quote),
        ("GET", "/node/trusted-list", node_trusted_list),
        ("GET", "/node/network", node_network),
        ("GET", "/node/commit", node_commit),
        ("GET", "/node/join/nonce", join_nonce),
        ("POST", "/node/join", join),
        ("POST", "/gov/nodes/retire", retire_node),
        ("POST", "/node/reattest", reattest),
        ("POST", "/node/refresh", refresh),
        *gov_api.ROUTES,
        *recovery_api.ROUTES,
        *snapshot_api.ROUTES,
        ("GET", "/node/backup", backup_status),
        ("POST", "/node/backup", backup_now),
        ("POST", "/app/transactions", post_transactions),
        ("GET", "/app/kv/{key}", get_kv),
        ("GET", "/app/receipt", get_receipt),
        ("GET", "/app/transaction", get_transaction),
        ("POST", "/internal/raft/append", raft_append),
        ("POST", "/internal/raft/vote", raft_vote),
        ("POST", "/internal/raft/prevote", raft_pre_vote),
        ("POST", "/internal/raft/fetch", raft_fetch),
        ("POST", "/internal/forward/transactions", forwarded_transactions),
        ("GET", "/metrics", metrics),
        ("GET", "/healthz", healthz),
        ("GET", "/readyz", readyz),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    return app
