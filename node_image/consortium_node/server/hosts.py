"""Peer name resolution through a file the operator maintains (``peer_hosts_file``).

Nodes record stable DNS names as their addresses (``<pod>.<service>.<ns>.svc.<domain>:8443``),
which a full cluster resolves through the headless Service. A cluster without cluster DNS (the
project's own test cluster, some edge set-ups) cannot; there the operator publishes the pods'
current IPs in a ConfigMap (``{"names": {"<dns name>": "<ip>"}}``) mounted into every pod, and
this module consults it before the system resolver. Trust does not depend on it: a wrong or
stale entry only makes a connection fail, since peers are authenticated by their node
certificate (TLS hostname checks use the recorded name, not the IP).

The override is installed twice: by wrapping ``socket.getaddrinfo``, which ``urllib`` (the
joiner, snapshot fetches) and asyncio's own event loop go through, and as the aiohttp resolver
of the peer client (``PeerResolver``), because uvloop, the node's event loop
(``server/runtime.py``), resolves names in libuv and never calls ``socket.getaddrinfo``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

log = logging.getLogger("consortium_node.hosts")


class HostsFile:
    """Name → IP map read from a JSON file, re-read when it changes (at most once a second)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._names: dict[str, str] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = float("-inf")

    def lookup(self, name: str) -> str | None:
        """The IP recorded for ``name`` (case-insensitive, trailing dot ignored), if any."""
        with self._lock:
            now = self._clock()
            if now - self._checked >= 1.0:
                self._checked = now
                self._reload()
            return self._names.get(name.lower().rstrip("."))

    def _reload(self) -> None:
        try:
            stat = self.path.stat()
        except OSError:
            self._names, self._stamp = {}, None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._names = parse_hosts(self.path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("ignoring peer hosts file %s: %s", self.path, exc)
            self._names = {}


def parse_hosts(text: str) -> dict[str, str]:
    """``{"names": {name: ip}}`` → lowercase name → ip; ValueError naming what is wrong."""
    data: Any = json.loads(text) if text.strip() else {"names": {}}
    names = data.get("names") if isinstance(data, dict) else None
    if not isinstance(names, dict):
        raise ValueError('expected {"names": {"<dns name>": "<ip>"}}')
    out: dict[str, str] = {}
    for name, ip in names.items():
        if not isinstance(name, str) or not isinstance(ip, str):
            raise ValueError(f"names.{name}: expected a string IP address")
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
        except OSError:
            raise ValueError(f"names.{name}: {ip!r} is not an IP address") from None
        out[name.lower().rstrip(".")] = ip
    return out


_installed: HostsFile | None = None


def lookup(name: str) -> str | None:
    """The IP the installed hosts file records for ``name``, if a file is installed and does."""
    current = _installed
    return current.lookup(name) if current is not None else None


class PeerResolver(AbstractResolver):
    """aiohttp resolver: the installed hosts file first, then the event loop's resolver.

    A name found in the file resolves as its IP would, but the results keep the name as their
    ``hostname`` (the TLS server name stays the recorded name, never the IP)."""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        ip = lookup(host)
        if ip is None:
            return await self._inner.resolve(host, port, family)
        found = await self._inner.resolve(ip, port, family)
        return [ResolveResult(**{**result, "hostname": host}) for result in found]

    async def close(self) -> None:
        await self._inner.close()


def install(path: Path) -> HostsFile:
    """Route ``socket.getaddrinfo`` through ``path`` first (idempotent per process)."""
    global _installed  # noqa: PLW0603 - one resolver per process, like /etc/hosts
    hosts = HostsFile(path)
    if _installed is None:
        original = socket.getaddrinfo

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            ip = lookup(host) if isinstance(host, str) else None
            return original(host if ip is None else ip, *args, **kwargs)

        socket.getaddrinfo = getaddrinfo
    _installed = hosts
    log.info("peer names resolve through %s first", path)
    return hosts
