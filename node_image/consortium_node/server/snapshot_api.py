"""The snapshot routes: which committed snapshots this node holds, their bytes and receipts.

Why any node serves them, without client authentication: a committed snapshot proves itself
(its evidence receipt verifies with the service certificate alone, and its digest is in that
entry), its private tables are encrypted under the ledger secret, and a joining node fetches
one before it is anybody a member would know. Only committed snapshots are listed or served.

* ``GET /node/snapshots``: ``{"snapshots": [{"index", "txid", "sha256", "size",
  "evidence_txid"}...]}``, oldest first;
* ``GET /node/snapshot?index=N`` (default: the newest): the snapshot bytes
  (``application/octet-stream``, header ``X-Snapshot-Index``); 404 if this node holds no
  committed snapshot at ``N``;
* ``GET /node/snapshot/receipt?index=N``: the evidence entry's receipt (JSON).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from aiohttp import web

from consortium_node.ledger.snapshot import peek_txid
from consortium_node.ledger.snapshot_store import SnapshotStore, StoredSnapshot
from consortium_node.server.errors import BadRequestError, NotFoundError
from consortium_node.server.validation import parse_query

SNAPSHOTS = web.AppKey("snapshots", SnapshotStore)


def _stored(request: web.Request) -> StoredSnapshot:
    query = parse_query(request.query, {"index"}, set())
    store = request.app[SNAPSHOTS]
    committed = [s for s in store.list() if s.committed]
    if "index" not in query:
        if not committed:
            raise NotFoundError("snapshot", "this node holds no committed snapshot yet")
        return committed[-1]
    text = query["index"]
    if not text.isdigit() or len(text) > 20:
        raise BadRequestError("index", "must be a decimal ledger index")
    for stored in committed:
        if stored.index == int(text):
            return stored
    held = ", ".join(str(s.index) for s in committed) or "none"
    raise NotFoundError("index", f"no committed snapshot at index {text} here (held: {held})")


def describe(stored: StoredSnapshot) -> dict[str, Any]:
    data = stored.path.read_bytes()
    receipt = stored.receipt()
    return {
        "index": stored.index,
        "txid": str(peek_txid(data)),
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "evidence_txid": receipt.get("txid"),
    }


def _describe_committed(store: SnapshotStore) -> list[dict[str, Any]]:
    return [describe(s) for s in store.list() if s.committed]


async def list_snapshots(request: web.Request) -> web.Response:
    parse_query(request.query, set(), set())
    # Reads and hashes every committed snapshot (the size of the state each): not on the loop.
    listed = await asyncio.to_thread(_describe_committed, request.app[SNAPSHOTS])
    return web.json_response({"snapshots": listed})


async def get_snapshot(request: web.Request) -> web.StreamResponse:
    stored = _stored(request)
    return web.FileResponse(
        stored.path,
        headers={
            "Content-Type": "application/octet-stream",
            "X-Snapshot-Index": str(stored.index),
        },
    )


async def get_snapshot_receipt(request: web.Request) -> web.Response:
    return web.json_response(_stored(request).receipt())


ROUTES = [
    ("GET", "/node/snapshots", list_snapshots),
    ("GET", "/node/snapshot", get_snapshot),
    ("GET", "/node/snapshot/receipt", get_snapshot_receipt),
]
