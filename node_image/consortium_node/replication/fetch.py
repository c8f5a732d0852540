"""Repair from any peer: committed entries a node lost to a storage fault, or that the leader
cannot send it (the leader started from a snapshot after the node's log ends), fetched from a
voter that holds them.

Why: the leader replicates again what a follower lacks, but only from its own log. A leader
that started from a snapshot does not hold the entries before it, and with no leader at all
(damage on a majority of the voters) nobody sends anything. Committed entries are the same on
every node (Raft's State Machine Safety), so any node can give those it knows committed, and
the asking node checks them exactly as it checks a leader's (each signature entry signs the
Merkle root over every entry before it, the signature entries it set aside must come back
byte for byte, private entries must decrypt: ``Ledger.append_entries``) before it appends
them. This is CTRL's recovery (Alagappan et al., FAST 2018) from "the replicas that hold
them", not only from the leader.

The asking side runs in ``RaftNode`` (which holds the append lock); this module holds the two
pure halves: what a node answers (``answer``) and whom to ask, in which order, with the
reasons of those that could not help (``ask``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from consortium_node.replication.messages import FetchRequest, FetchResponse

log = logging.getLogger("consortium_node.raft")


class FetchTransport(Protocol):
    async def fetch_entries(
        self, address: str, request: FetchRequest, to: str
    ) -> FetchResponse | None:
        """Committed entries from the node ``to``; None: it predates fetch (HTTP 404)."""
        ...


class HeldLog(Protocol):
    """What ``answer`` reads of a ledger (``Ledger`` has it)."""

    @property
    def base_index(self) -> int: ...
    @property
    def commit_index(self) -> int: ...
    @property
    def last_index(self) -> int: ...
    def term_at(self, index: int) -> int: ...
    def entries_from(self, start: int, max_count: int, max_bytes: int) -> list[bytes]: ...


def answer(
    ledger: HeldLog,
    request: FetchRequest,
    *,
    node_id: str,
    term: int,
    max_entries: int,
    max_bytes: int,
) -> FetchResponse:
    """What this node gives a node asking for entries from ``request.start``: the committed
    entries it holds from there (at most ``max_entries`` and ``max_bytes``, at least one if
    any), none if its log does not hold entry ``start - 1`` (before a snapshot it started
    from, or beyond its end) or it has not committed ``start``."""
    base, commit, prev = ledger.base_index, ledger.commit_index, request.start - 1
    entries: list[bytes] = []
    prev_term = 0
    if base <= prev <= ledger.last_index and request.start >= 1:
        prev_term = ledger.term_at(prev)
        if request.start <= commit:
            count = min(max_entries, commit - prev)
            entries = ledger.entries_from(request.start, count, max_bytes)[:count]
    return FetchResponse(term, node_id, commit, base, prev_term, tuple(entries))


@dataclass(frozen=True)
class Found:
    """A peer's answer with entries to append."""

    node_id: str
    response: FetchResponse


def why_not(node_id: str, response: FetchResponse | None, start: int) -> str:
    """Why a peer gave no entry from ``start`` (for the log line that says nobody could)."""
    who = node_id[:8]
    if response is None:
        return f"{who} predates fetching entries"
    if response.base_index >= start:
        return f"{who}'s log starts after its snapshot at {response.base_index}"
    return f"{who} committed only up to {response.commit_index}"


async def ask(
    transport: FetchTransport,
    peers: Sequence[tuple[str, str]],
    request: FetchRequest,
    timeout: float,
) -> Found | list[str]:
    """Ask ``peers`` (node_id, address) in turn for committed entries from ``request.start``:
    the first answer with entries, or why each peer could not give any."""
    reasons: list[str] = []
    for node_id, address in peers:
        try:
            response = await asyncio.wait_for(
                transport.fetch_entries(address, request, node_id), timeout
            )
            if response is not None and response.node_id != node_id:
                raise ValueError(f"answered by {response.node_id[:8]}")
        except (OSError, TimeoutError, ValueError) as exc:
            reasons.append(f"{node_id[:8]} did not answer ({exc or type(exc).__name__})")
            continue
        if response is not None and response.entries:
            return Found(node_id, response)
        reasons.append(why_not(node_id, response, request.start))
    return reasons
