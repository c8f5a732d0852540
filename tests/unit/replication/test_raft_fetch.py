"""Repair from any peer (``replication.fetch``): what a node gives a node that lost committed
entries, and a node the leader cannot reach getting them from a follower that holds them.

The double fault, where nobody reachable holds them, is in ``test_raft_recovery``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from consortium_node.replication import fetch
from consortium_node.replication.messages import FetchRequest, FetchResponse
from tests.support import storage_faults as sf

from .raft_harness import TIMING, Cluster, eventually, value, writes

NODE = "cd" * 32


@dataclass
class Log:
    """A log that holds entries ``base + 1 .. last`` (entry ``i`` is ``b"e<i>"``, term ``i //
    10 + 1``), committed up to ``commit``: what ``fetch.answer`` reads of a ledger."""

    base_index: int
    last_index: int
    commit_index: int

    def term_at(self, index: int) -> int:
        assert self.base_index <= index <= self.last_index, f"not held: {index}"
        return 0 if index == 0 else index // 10 + 1

    def entries_from(self, start: int, max_count: int, max_bytes: int) -> list[bytes]:
        last = min(self.last_index, start + max_count - 1)
        return [f"e{i}".encode() for i in range(start, last + 1)]


@pytest.mark.parametrize(
    ("log", "start", "max_entries", "prev_term", "given"),
    [
        pytest.param(Log(0, 50, 40), 11, 100, 2, range(11, 41), id="committed-entries-only"),
        pytest.param(Log(0, 50, 40), 1, 100, 0, range(1, 41), id="from-the-first-entry"),
        pytest.param(Log(0, 50, 40), 11, 5, 2, range(11, 16), id="a-batch-at-most"),
        pytest.param(Log(0, 50, 40), 41, 100, 5, range(0), id="not-committed-here-yet"),
        pytest.param(Log(0, 50, 50), 51, 100, 6, range(0), id="nothing-after-the-log"),
        pytest.param(Log(0, 30, 30), 45, 100, 0, range(0), id="beyond-the-log"),
        pytest.param(Log(20, 50, 50), 11, 100, 0, range(0), id="before-its-snapshot"),
        pytest.param(Log(20, 50, 50), 21, 100, 3, range(21, 51), id="just-after-its-snapshot"),
    ],
)
def test_a_node_gives_the_committed_entries_it_holds(
    log: Log, start: int, max_entries: int, prev_term: int, given: range
) -> None:
    request = FetchRequest(4, NODE, start, 45)
    response = fetch.answer(
        log, request, node_id="me", term=7, max_entries=max_entries, max_bytes=10**6
    )
    assert response == FetchResponse(
        7,
        "me",
        log.commit_index,
        log.base_index,
        prev_term,
        tuple(f"e{i}".encode() for i in given),
    )


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (None, "predates fetching entries"),
        (FetchResponse(3, NODE, 90, 60, 0, ()), "log starts after its snapshot at 60"),
        (FetchResponse(3, NODE, 40, 0, 5, ()), "committed only up to 40"),
    ],
)
def test_why_a_peer_gave_nothing(response: FetchResponse | None, reason: str) -> None:
    said = fetch.why_not(NODE, response, 50)
    assert said.startswith(NODE[:8]) and said.endswith(reason), said


async def test_a_node_cut_off_from_the_leader_fetches_lost_entries_from_a_follower(
    cluster: Cluster,
) -> None:
    members = await cluster.start_all(3)
    a = await cluster.wait_leader()
    b, c = (m for m in members if m is not a)
    txids = [(await a.node.submit(writes(f"held-{n}")))[-1] for n in range(5)]
    await cluster.wait_synced(members)
    term = a.node.term
    await cluster.stop(b)
    sf.flip(sf.entry(b.ledger_dir, txids[0].index))  # the first of the five, and all after it
    cluster.network.dropped.update({(a.address, b.address), (b.address, a.address)})
    cluster.reopen(b)
    await cluster.start(b)
    assert b.ledger.missing_committed is not None

    await eventually(
        lambda: b.ledger.missing_committed is None and b.ledger.unvouched is None,
        30 * TIMING.election_timeout,
        "b holds every entry it knew committed again",
    )
    assert cluster.network.count("fetch", b, c) > 0
    assert b.node.unfetchable() is None  # a voter gave them: no snapshot to install
    assert not b.ledger.diverged
    await eventually(
        lambda: all(value(b, f"held-{n}") == f"value-held-{n}" for n in range(5)),
        10 * TIMING.election_timeout,
        "b applies the fetched entries",
    )
    assert b.ledger.raw_entries(1, txids[-1].index) == c.ledger.raw_entries(1, txids[-1].index)
    assert a.node.role == "leader" and a.node.term == term, "no election was needed"
    assert b.node.role == "follower"
