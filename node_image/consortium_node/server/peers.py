"""Node-to-node channel: mutually authenticated TLS with node certificates.

Outbound, a node presents its node certificate (issued by the service identity) and trusts only
the service certificate. Inbound, a peer is accepted only if its certificate chains to the
service certificate, is within its validity (= the attestation's expiry) and its key is Trusted
in the current trusted-node list (DESIGN section 4). The HTTP transport for Raft RPCs and for
forwarded writes lives here too; payloads are CBOR (Raft) or JSON (forwarding).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
from cryptography import x509

from consortium_node.common import bounded_json
from consortium_node.common.timeutil import utcnow
from consortium_node.identity.certs import verify_node_certificate
from consortium_node.identity.errors import IdentityError
from consortium_node.replication.messages import (
    AppendRequest,
    AppendResponse,
    FetchRequest,
    FetchResponse,
    VoteRequest,
    VoteResponse,
    decode,
    encode,
)
from consortium_node.server import hosts

CBOR = "application/cbor"


# A Raft RPC names the node it is meant for. A node that lost its identity joins again under
# a new one at the same address; without this it would answer its old self's RPCs, and a
# candidate could count its vote twice (or a leader step down on its own heartbeat).
RECIPIENT_HEADER = "Consortium-Recipient"


class PeerRejectedError(Exception):
    """The caller is not a Trusted node with a valid, unexpired node certificate."""


class MisdirectedError(Exception):
    """A Raft RPC meant for another node (``RECIPIENT_HEADER``) reached this one."""

    def __init__(self, meant_for: str, this_node: str) -> None:
        super().__init__(
            f"this is node {this_node[:16]}…, not {meant_for[:16]}… (another node answers at "
            "that node's address, e.g. one that joined again under a new identity)"
        )


def check_recipient(header: str | None, node_id: str) -> None:
    """Refuse an RPC whose ``RECIPIENT_HEADER`` names another node (absent: an older peer)."""
    if header is not None and header != node_id:
        raise MisdirectedError(header, node_id)


def authenticate_peer(
    certificate_der: bytes | None,
    service_certificate: x509.Certificate,
    is_trusted: Callable[[str], bool],
) -> str:
    """The node_id of a calling peer, or PeerRejectedError saying why not."""
    if not certificate_der:
        raise PeerRejectedError("no client certificate: node-to-node calls need mTLS")
    try:
        cert = x509.load_der_x509_certificate(certificate_der)
        node_id = verify_node_certificate(cert, service_certificate, at=utcnow())
    except (ValueError, IdentityError) as exc:
        raise PeerRejectedError(f"not a node certificate of this service: {exc}") from exc
    if not is_trusted(node_id):
        raise PeerRejectedError(
            f"node {node_id[:16]}… is not Trusted with an unexpired attestation in the "
            "current trusted-node list"
        )
    return node_id


class PeerHTTPError(OSError):
    """A peer answered with an HTTP error ``status``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class PeerTransport:
    """HTTPS client for Raft RPCs and forwarded requests (implements raft.Transport)."""

    def __init__(self, context: ssl.SSLContext, timeout: float) -> None:
        self._context = context
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self._context, limit_per_host=8, resolver=hosts.PeerResolver()
            )
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def reset(self) -> None:
        """Drop pooled connections: they keep presenting the certificate they were opened
        with, and peers refuse a node certificate once it has expired."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            task = asyncio.get_running_loop().create_task(session.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _post(self, address: str, path: str, body: bytes, to: str) -> bytes:
        headers = {"Content-Type": CBOR, RECIPIENT_HEADER: to}
        try:
            async with self._client().post(
                f"https://{address}{path}", data=body, headers=headers
            ) as resp:
                data = await resp.read()
                if resp.status != 200:
                    message = f"{address}{path}: HTTP {resp.status}: {data[:200]!r}"
                    raise PeerHTTPError(message, resp.status)
                return data
        except aiohttp.ClientError as exc:
            raise OSError(f"{address}{path}: {exc}") from exc

    async def append_entries(self, address: str, request: AppendRequest, to: str) -> AppendResponse:
        data = await self._post(address, "/internal/raft/append", encode(request), to)
        return decode(data, AppendResponse)

    async def request_vote(self, address: str, request: VoteRequest, to: str) -> VoteResponse:
        data = await self._post(address, "/internal/raft/vote", encode(request), to)
        return decode(data, VoteResponse)

    async def _post_newer(self, address: str, path: str, body: bytes, to: str) -> bytes | None:
        """``_post`` to a route older peers lack: None if the peer answers 404."""
        try:
            return await self._post(address, path, body, to)
        except PeerHTTPError as exc:
            if exc.status == 404:
                return None
            raise

    async def pre_vote(self, address: str, request: VoteRequest, to: str) -> VoteResponse | None:
        """A pre-vote; None if the peer predates pre-vote (its code has no such route)."""
        data = await self._post_newer(address, "/internal/raft/prevote", encode(request), to)
        return None if data is None else decode(data, VoteResponse)

    async def fetch_entries(
        self, address: str, request: FetchRequest, to: str
    ) -> FetchResponse | None:
        """Committed entries a peer holds (storage-fault repair); None if it predates fetch."""
        data = await self._post_newer(address, "/internal/raft/fetch", encode(request), to)
        return None if data is None else decode(data, FetchResponse)

    async def get_json(self, address: str, path: str) -> Any:
        """GET a JSON document from a peer (e.g. a re-attestation quote)."""
        try:
            async with self._client().get(f"https://{address}{path}") as resp:
                if resp.status != 200:
                    raise OSError(f"{address}{path}: HTTP {resp.status}")
                return bounded_json.loads(await resp.read(), "answer")
        except (aiohttp.ClientError, ValueError) as exc:
            raise OSError(f"{address}{path}: {exc}") from exc

    async def get_snapshot(self, address: str, index: int, limit: int) -> bytes | None:
        """The bytes of committed snapshot ``index`` a peer serves (``GET /node/snapshot``),
        at most ``limit``; None if it serves none at that index (404). Read with a timeout
        per read, not per request: a large state takes longer than an RPC."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30)
        path = f"/node/snapshot?index={index}"
        try:
            async with self._client().get(f"https://{address}{path}", timeout=timeout) as resp:
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise OSError(f"{address}{path}: HTTP {resp.status}")
                if (resp.content_length or 0) > limit:
                    raise OSError(f"{address}{path}: {resp.content_length} bytes, over {limit}")
                parts, size = [], 0
                async for part in resp.content.iter_chunked(1 << 20):
                    size += len(part)
                    if size > limit:
                        raise OSError(f"{address}{path}: more than {limit} bytes")
                    parts.append(part)
                return b"".join(parts)
        except aiohttp.ClientError as exc:
            raise OSError(f"{address}{path}: {exc}") from exc

    async def relay(
        self, address: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, Any]:
        """POST bytes as they are (a signed governance document) to a peer; its status and
        JSON answer. OSError if it does not answer."""
        try:
            async with self._client().post(
                f"https://{address}{path}", data=body, headers=headers
            ) as resp:
                return resp.status, bounded_json.loads(await resp.read(), "answer")
        except (aiohttp.ClientError, ValueError) as exc:
            raise OSError(f"forwarding to the leader at {address} failed: {exc}") from exc

    async def forward(self, address: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """Relay a request to the leader; returns its status and JSON body."""
        try:
            async with self._client().post(f"https://{address}{path}", json=body) as resp:
                return resp.status, bounded_json.loads(await resp.read(), "answer")
        except (aiohttp.ClientError, ValueError) as exc:  # an answer that is not bounded JSON
            raise OSError(f"forwarding to the leader at {address} failed: {exc}") from exc
