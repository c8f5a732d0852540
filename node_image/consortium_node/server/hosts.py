"""Peer name resolution through a file the operator maintains (``peer_hosts_file``).

Nodes record stable DNS names as their addresses (``<pod>.<service>.<ns>.svc.<domain>:8443``),
which a full cluster resolves through the headless Service. A cluster without cluster DNS (the
project's own test cluster, some edge set-ups) cannot; there the operator publishes the pods'
current IPs in a ConfigMap (``{"names": {"<dns name>": "<ip>"}}``) mounted into every pod, and
this module consults it before the system resolver. Trust does not depend on it: a wrong or
stale entry only makes a connection fail, since peers are authenticated by their node
certificate (TLS hostname checks use the recorded name, not the IP).

The override is installed by wrapping ``socket.getaddrinfo``, the one function both aiohttp's
default resolver and ``urllib`` (the joiner) go through.
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


def install(path: Path) -> HostsFile:
    """Route ``socket.getaddrinfo`` through ``path`` first (idempotent per process)."""
    global _installed  # noqa: PLW0603 - one resolver per process, like /etc/hosts
    hosts = HostsFile(path)
    if _installed is None:
        original = socket.getaddrinfo

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            current = _installed
            if isinstance(host, str) and current is not None:
                ip = current.lookup(host)
                if ip is not None:
                    return original(ip, *args, **kwargs)
            return original(host, *args, **kwargs)

        socket.getaddrinfo = getaddrinfo
    _installed = hosts
    log.info("peer names resolve through %s first", path)
    return hosts
