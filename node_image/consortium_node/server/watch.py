"""Watch the mounted trusted-node list (the operator's ConfigMap) and adopt newer versions.

The operator only moves documents: every list read here is verified (service signature,
consortium, a version never reused with other content) before it is adopted, and the node
keeps the last valid one (DESIGN section 4).

What is read falls in three kinds, reported differently so that the tamper signal means
something:

- newer: adopted (INFO);
- stale: validly signed but older than the held list. The ConfigMap lags behind what the node
  already adopted from its ledger in normal operation (each re-attestation issues a version),
  so this is counted in ``consortium_trusted_list_stale_total`` and logged at INFO once per
  version, not at ERROR. A deliberate rollback is indistinguishable from it and just as
  harmless: the list is never adopted;
- refused (forged, foreign, malformed, a reused version with other content): ERROR and
  ``consortium_trusted_list_rejections_total{reason}``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from consortium_node.identity.errors import TrustedListError
from consortium_node.identity.trusted_list_store import Offer, Outcome
from consortium_node.server.node import Node

log = logging.getLogger("consortium_node.watch")


@dataclass(frozen=True)
class Seen:
    """What the watcher remembers between reads of the file."""

    envelope: bytes | None = None  # the bytes read last: an unchanged file is not re-examined
    stale_version: int | None = None  # the stale version last reported at INFO


def check_list_file(node: Node, path: Path, seen: Seen) -> Seen:
    """Read ``path`` once; adopt, set aside or refuse its list if it changed."""
    try:
        envelope = path.read_bytes()
    except FileNotFoundError:
        return seen
    except OSError as exc:
        log.warning("cannot read the trusted-node list at %s: %s", path, exc)
        return seen
    store = node.membership.store
    if envelope in (seen.envelope, store.current_envelope):
        return replace(seen, envelope=envelope)
    try:
        offer = store.offer(envelope)
    except TrustedListError as exc:
        node.metrics.list_rejections.labels(exc.reason.value).inc()
        kept = store.current
        log.error(
            "refused the trusted-node list in %s: %s (keeping version %s)",
            path,
            exc,
            kept.version if kept else None,
        )
        return replace(seen, envelope=envelope)
    return Seen(envelope, _report(node, path, offer, seen.stale_version))


def _report(node: Node, path: Path, offer: Offer, stale_version: int | None) -> int | None:
    """Count and log an offer that verified; returns the stale version reported at INFO."""
    if offer.outcome is Outcome.ADOPTED:
        node.metrics.observe_list(offer.held, offer.held.issued_at_datetime)
        log.info("adopted trusted-node list version %d from %s", offer.held.version, path)
    if offer.outcome is not Outcome.STALE:
        return stale_version
    node.metrics.list_stale.inc()
    version = offer.offered.version
    log.log(
        logging.DEBUG if version == stale_version else logging.INFO,
        "the trusted-node list in %s is version %d, older than the held version %d, which is "
        "kept (the file lags behind the ledger)",
        path,
        version,
        offer.held.version,
    )
    return version


async def watch_list_file(node: Node, path: Path, interval: float = 0.5) -> None:
    """Poll ``path`` forever (ConfigMap updates replace the file through a symlink swap)."""
    seen = Seen()
    while True:
        seen = check_list_file(node, path, seen)
        await asyncio.sleep(interval)
