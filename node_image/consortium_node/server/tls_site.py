"""The API's TLS listener: a refused handshake is visible at both ends.

Why: asyncio (CPython 3.11 to 3.13, gh-98078) closes a connection whose TLS handshake failed
without flushing what OpenSSL wrote for the peer, so a client whose certificate is refused
never receives the fatal alert (``unknown ca``) and sees only a dropped connection; and it
logs the failure only in debug mode (an ``ssl.SSLError`` is an ``OSError``, which asyncio
does not pass to the loop's exception handler). Neither the member nor the operator could
tell why a certificate was refused.

``TLSSite`` listens like aiohttp's ``TCPSite`` with an SSL context, but wraps each accepted
connection itself, in asyncio's own ``SSLProtocol`` with one addition at the end of a failed
handshake: what OpenSSL queued for the peer (the alert) is written to the socket first, and
the refusal is logged at WARNING with the peer's address and the reason — at most once per
``RefusalLog.interval`` per address, with the count of those not logged, so a scanner cannot
flood the log. A client that resets or times out mid-handshake was not refused: not logged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from asyncio import sslproto
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("consortium_node.tls")

# X.509 verification errors (OpenSSL's X509_V_ERR_*) and the alert OpenSSL sends for them.
_UNKNOWN_CA = {2, 18, 19, 20, 21, 24}  # no issuer, self-signed, untrusted chain, invalid CA
_ALERTS = {**dict.fromkeys(_UNKNOWN_CA, "unknown ca"), 10: "certificate expired"}
# Other handshake failures, in the words a reader of the log looks for.
_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no certificate",
    "HTTP_REQUEST": "plain HTTP sent to the TLS port",
}


def refusal_reason(exc: ssl.SSLError) -> str:
    """Why a handshake was refused: for a certificate, the alert the client receives and
    OpenSSL's verification message; otherwise OpenSSL's reason, readable."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        alert = _ALERTS.get(exc.verify_code, "bad certificate")
        return f"{alert} (certificate verify failed: {exc.verify_message})"
    reason = getattr(exc, "reason", None)  # absent or None without an OpenSSL reason code
    if not isinstance(reason, str) or not reason:
        return str(exc)
    return _REASONS.get(reason, reason.lower().replace("_", " "))


def peer_address(peername: Any) -> tuple[str, str]:
    """(host, ``host:port``) of a socket's peername; IPv6 hosts in brackets."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = str(peername[0]), peername[1]
        return host, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return "unknown", "unknown address"


class RefusalLog:
    """Which refusals to log: an address's first, then at most one per ``interval`` seconds
    saying how many were not logged since. Remembers at most ``max_peers`` addresses (the
    longest unlogged are forgotten first), so many addresses cannot grow it either."""

    def __init__(
        self,
        interval: float = 60.0,
        max_peers: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval, self._max_peers, self._clock = interval, max_peers, clock
        self._peers: dict[str, tuple[float, int]] = {}  # host → (last logged, not logged since)

    def admit(self, host: str) -> int | None:
        """None to stay quiet; otherwise log, mentioning this many refusals not logged."""
        now = self._clock()
        seen = self._peers.get(host)
        if seen is not None and now - seen[0] < self.interval:
            self._peers[host] = (seen[0], seen[1] + 1)
            return None
        self._peers.pop(host, None)  # re-inserted last: the dict is ordered by last logged
        self._peers[host] = (now, 0)
        while len(self._peers) > self._max_peers:
            del self._peers[next(iter(self._peers))]
        return seen[1] if seen is not None else 0


def report_refusal(refusals: RefusalLog, peername: Any, exc: ssl.SSLError) -> None:
    """Log one refused handshake, if ``refusals`` admits its address."""
    host, where = peer_address(peername)
    unlogged = refusals.admit(host)
    if unlogged is None:
        return
    since = f"; {unlogged} more from {host} not logged since the last" if unlogged else ""
    log.warning("TLS handshake refused: peer %s, %s%s", where, refusal_reason(exc), since)


class _AlertingSSLProtocol(sslproto.SSLProtocol):
    """asyncio's server-side TLS protocol that sends its alert and reports a refusal."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        app_protocol: asyncio.BaseProtocol,
        context: ssl.SSLContext,
        on_refusal: Callable[[Any, ssl.SSLError], None],
    ) -> None:
        # No waiter: nobody awaits a server-side handshake (the loop's own path awaits one
        # only to close the socket on failure, which SSLProtocol does itself).
        super().__init__(loop, app_protocol, context, None, server_side=True)  # type: ignore[arg-type]
        self._on_refusal = on_refusal
        self._peername: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._peername = transport.get_extra_info("peername")
        super().connection_made(transport)

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if isinstance(handshake_exc, ssl.SSLError):
            # What OpenSSL wrote for the peer (the fatal alert) is in the outgoing buffer,
            # which the close below would drop. A private method: if a later Python renames
            # it, only the alert is lost, not the refusal or the log line.
            flush = getattr(self, "_process_outgoing", None)
            if callable(flush):
                flush()
            self._on_refusal(self._peername, handshake_exc)
        super()._on_handshake_complete(handshake_exc)


class TLSSite(web.BaseSite):
    """aiohttp's ``TCPSite`` over TLS, whose refused handshakes send their alert and are
    logged (``_AlertingSSLProtocol``)."""

    __slots__ = ("_host", "_port", "_refusals")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        refusals: RefusalLog | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host, self._port = host, port
        self._refusals = refusals or RefusalLog()

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        handlers, context = self._runner.server, self._ssl_context
        assert handlers is not None and context is not None  # set up by __init__ and the runner

        def report(peername: Any, exc: ssl.SSLError) -> None:
            report_refusal(self._refusals, peername, exc)

        def connection() -> asyncio.BaseProtocol:
            return _AlertingSSLProtocol(loop, handlers(), context, report)

        self._server = await loop.create_server(
            connection, self._host, self._port, backlog=self._backlog, reuse_address=True
        )
