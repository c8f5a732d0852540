"""What a node answers while it starts: ``/healthz`` 200, every other path 503 ``Starting``.

Why: before the API exists a node replays its ledger (or skims it up to its newest snapshot),
or joins (attestation, a snapshot fetched and checked, the secrets received). That takes
seconds to minutes with a long history, and a node that does not even listen meanwhile looks
dead: Kubernetes' probes would restart it in a loop, and an operator cannot tell a slow start
from a crash. So ``consortium-node run`` serves this small application from its own thread and
event loop while ``Node.open`` works in the main thread; once the node has opened, this server
closes its socket and the node's API takes the port (``main.py``).

What it says: ``GET /healthz`` → 200 ``{"status": "starting", "seconds": S, "last": M}``, where
``M`` is the newest INFO-or-above message the node logged (e.g. its ledger replay progress);
anything else → 503 ``{"error": {"code": "Starting", "reason": ...}}`` with ``Retry-After``.
``/readyz`` is therefore 503 until the node is really ready.

It presents a throwaway self-signed certificate (common name ``consortium-node starting``): the
node certificate is not usable before the node has opened, and a client that verifies the node
(every client but a kubelet probe, which does not verify) must not be answered by anything
that could pass for it. Such a client sees a failed handshake where it used to see a refused
connection, and retries.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from types import TracebackType

from aiohttp import web

from consortium_node.identity import keys
from consortium_node.identity.certs import self_signed_certificate
from consortium_node.server.tls import load_identity

log = logging.getLogger("consortium_node")

COMMON_NAME = "consortium-node starting"
RETRY_AFTER_SECONDS = 2
MESSAGE_LIMIT = 300  # characters of the newest log message shown


class LatestMessage(logging.Handler):
    """Keeps the newest INFO-or-above message logged under ``consortium_node``."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.message = "starting"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.message = record.getMessage()[:MESSAGE_LIMIT]
        except (TypeError, ValueError):  # a malformed log call must not break start-up
            self.handleError(record)


def starting_app(latest: LatestMessage, started: float) -> web.Application:
    """The application served while the node starts (see the module docstring)."""

    def seconds() -> float:
        return round(time.monotonic() - started, 1)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "starting", "seconds": seconds(), "last": latest.message}
        )

    async def anything(request: web.Request) -> web.Response:
        reason = f"the node is starting ({seconds():g} s): {latest.message}"
        return web.json_response(
            {"error": {"code": "Starting", "reason": reason}},
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{path:.*}", anything)
    return app


def throwaway_context() -> ssl.SSLContext:
    """A TLS server context with a fresh key and a self-signed certificate."""
    key = keys.generate_key("p256")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_identity(context, key, self_signed_certificate(key, COMMON_NAME, days=1))
    return context


class StartingServer:
    """``with StartingServer(host, port): node = Node.open(config)`` serves the starting
    application on ``host:port`` in a daemon thread for the duration of the block.

    If the port cannot be bound the block still runs (the node's own bind reports it).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.latest = LatestMessage()
        self.listening = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StartingServer:
        log.addHandler(self.latest)
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(started,), name="starting", daemon=True
        )
        self._thread.start()
        started.wait(30)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        log.removeHandler(self.latest)
        loop, thread = self._loop, self._thread
        if loop is not None and self.listening:  # (one that could not listen stops by itself)
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(30)

    def _serve(self, started: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        app = starting_app(self.latest, time.monotonic())
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.host, self.port, ssl_context=throwaway_context())
            loop.run_until_complete(site.start())
        except OSError as exc:
            log.warning("cannot answer probes while starting: %s", exc)
            # Cleaned up before the caller goes on: stopping this loop meanwhile would leave
            # the cleanup unfinished (an exception in this thread).
            loop.run_until_complete(runner.cleanup())
            loop.close()
            started.set()
            return
        self.listening = True
        started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())  # the port is free when this returns
            loop.close()
            self.listening = False
