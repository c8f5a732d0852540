"""A node whose address or names changed announces them, and gets a certificate that says so.

A node's certificate names the addresses it had when the primary issued it (its join, or its
last re-attestation). A node restarted elsewhere — a pod with a new IP, a process moved to
another address — keeps its identity (sealed key, ledger) but not its address, so clients that
dial the new address fail TLS hostname checks, and if its address in the trusted-node list
changed, the primary cannot even reach it: its Raft traffic goes to the old address.

So every node compares, every few seconds, what its configuration says it is (``address``,
``subject_alt_names``: ``certificates.certificate_names``) with its entry in the current list
and its certificate. When they differ it asks the primary to refresh it (``Primary.refresh``):

1. fetch a single-use nonce from the primary (``GET /node/join/nonce``);
2. ``POST /node/refresh`` over the node-to-node channel — mutual TLS with its current node
   certificate, which authenticates it as the Trusted node it is — with the new address and
   names, and a **fresh quote over the same key** and that nonce, which the primary verifies
   against the ledger's policy like any re-attestation;
3. the primary writes the next trusted-node list (new address, renewed attestation) with a
   certificate naming the new names, and answers with that certificate once committed; the
   node uses it at once (the primary's next Raft message to the new address must find it).

Not knowing the primary (its heartbeats go to the old address), the node asks the primary it
last knew, then every other Trusted node in its list; a backup answers NotLeader naming the
primary, which is asked next. A node that is itself the primary refreshes itself. Failures
are retried with back-off; nothing changes until a primary has verified a fresh quote.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from consortium_node.identity.certs import subject_alt_names
from consortium_node.identity.trusted_list import NodeStatus
from consortium_node.server.certificates import certificate_names
from consortium_node.server.validation import parse_refresh

if TYPE_CHECKING:
    from consortium_node.replication.raft import RaftNode
    from consortium_node.server.node import Node
    from consortium_node.server.peers import PeerTransport
    from consortium_node.server.primary import Primary

log = logging.getLogger("consortium_node.refresh")

FIRST_CHECK = 0.2  # seconds after start: a restarted node announces a new address at once
CHECK_INTERVAL = 2.0  # seconds between checks while nothing needs announcing
MAX_BACKOFF = 30.0


class RefreshFailedError(Exception):
    """No primary refreshed this node in this attempt; the message says what was answered."""


@dataclass(frozen=True)
class Announcement:
    """What a node announces: where it is now and the names its certificate must carry."""

    address: str
    subject_alt_names: tuple[str, ...]


def normal(name: str) -> str:
    """A name as certificates compare it: IP addresses in canonical form, DNS names lowercase."""
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return name.lower().rstrip(".")


def announcement(
    address: str, wanted: Iterable[str], listed_address: str | None, certified: Iterable[str]
) -> Announcement | None:
    """What to announce, or None when the list has ``address`` and the certificate every
    wanted name (pure: the decision ``needed`` makes from a node's state)."""
    names = tuple(dict.fromkeys(normal(n) for n in wanted))
    if listed_address == address and set(names) <= {normal(n) for n in certified}:
        return None
    return Announcement(address, names)


def needed(node: Node) -> Announcement | None:
    """This node's announcement, if it is Trusted and its list entry or certificate lag."""
    current = node.membership.current()
    own = current.node(node.node_id) if current else None
    if own is None or own.status is not NodeStatus.TRUSTED:
        return None
    return announcement(
        node.config.address,
        certificate_names(node.config),
        own.address,
        subject_alt_names(node.certificate.current),
    )


def candidates(node: Node, leader_address: str | None) -> list[str]:
    """Where to look for the primary: the one last known, then every other Trusted node."""
    current = node.membership.current()
    listed = [
        n.address
        for n in (current.nodes if current else ())
        if n.status is NodeStatus.TRUSTED and n.node_id != node.node_id
    ]
    return list(dict.fromkeys([*([leader_address] if leader_address else []), *listed]))


async def announce(
    node: Node, raft: RaftNode, primary: Primary, transport: PeerTransport, wanted: Announcement
) -> dict[str, Any]:
    """Ask the primary to refresh this node; its answer (with the new node certificate)."""
    if raft.role == "leader":
        nonce = primary.nonces.issue()
        return await primary.refresh(node.node_id, parse_refresh(_body(node, wanted, nonce)))
    answers = []
    queue = candidates(node, raft.leader_address)
    tried: set[str] = set()
    while queue:
        target = queue.pop(0)
        if target in tried:
            continue
        tried.add(target)
        try:
            nonce = bytes.fromhex((await transport.get_json(target, "/node/join/nonce"))["nonce"])
            status, answer = await transport.forward(
                target, "/node/refresh", _body(node, wanted, nonce)
            )
        except (OSError, KeyError, TypeError, ValueError) as exc:
            answers.append(f"{target}: {exc}")
            continue
        if status == 200 and isinstance(answer, dict):
            return answer
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        answers.append(f"{target}: HTTP {status} {error.get('reason', '')}".strip())
        leader = error.get("leader_address") if isinstance(error, dict) else None
        if isinstance(leader, str) and leader not in tried:
            queue.insert(0, leader)
    raise RefreshFailedError("; ".join(answers) or "no other Trusted node to ask")


def _body(node: Node, wanted: Announcement, nonce: bytes) -> dict[str, Any]:
    return {
        "address": wanted.address,
        "subject_alt_names": list(wanted.subject_alt_names),
        "quote": node.quote(nonce)["quote"],
        "nonce": nonce.hex(),
    }


async def keep_address_current(
    node: Node, raft: RaftNode, primary: Primary, transport: PeerTransport
) -> None:
    """Run forever: announce this node's address and names whenever they lag (see above)."""
    delay = FIRST_CHECK
    while True:
        await asyncio.sleep(delay)
        wanted = needed(node)
        if wanted is None:
            delay = CHECK_INTERVAL
            continue
        try:
            answer = await announce(node, raft, primary, transport, wanted)
            node.certificate.adopt(str(answer["node_certificate"]), "refreshed node certificate")
        except Exception as exc:  # any failure: log it and ask again later
            delay = min(max(delay, 0.5) * 2, MAX_BACKOFF)
            log.warning("announcing %s failed (retry in %.0fs): %s", wanted.address, delay, exc)
            continue
        names = ", ".join(wanted.subject_alt_names)
        log.info("refreshed: at %s, certificate names %s", answer.get("address"), names)
        delay = CHECK_INTERVAL
