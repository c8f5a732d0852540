"""Watch the mounted trusted-node list (the operator's ConfigMap) and adopt newer versions.

The operator only moves documents: every list read here is verified (service signature,
consortium, version never lower than the last accepted, a version never reused with other
content) before it is adopted. A refused list is logged and counted, and the node keeps the
last valid one (DESIGN section 4).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from consortium_node.identity.errors import TrustedListError
from consortium_node.server.node import Node

log = logging.getLogger("consortium_node.watch")


def check_list_file(node: Node, path: Path, last_seen: bytes | None) -> bytes | None:
    """Read ``path`` once; adopt or refuse its list if it changed. Returns what was read."""
    try:
        envelope = path.read_bytes()
    except FileNotFoundError:
        return last_seen
    except OSError as exc:
        log.warning("cannot read the trusted-node list at %s: %s", path, exc)
        return last_seen
    if envelope in (last_seen, node.membership.store.current_envelope):
        return envelope
    try:
        adopted = node.membership.store.accept(envelope)
    except TrustedListError as exc:
        node.metrics.list_rejections.labels(exc.reason.value).inc()
        kept = node.membership.store.current
        log.error(
            "refused the trusted-node list in %s: %s (keeping version %s)",
            path,
            exc,
            kept.version if kept else None,
        )
        return envelope
    node.metrics.observe_list(adopted, adopted.issued_at_datetime)
    log.info("adopted trusted-node list version %d from %s", adopted.version, path)
    return envelope


async def watch_list_file(node: Node, path: Path, interval: float = 0.5) -> None:
    """Poll ``path`` forever (ConfigMap updates replace the file through a symlink swap)."""
    last: bytes | None = None
    while True:
        last = check_list_file(node, path, last)
        await asyncio.sleep(interval)
