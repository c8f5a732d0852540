"""Which Trusted identity a node that joined again under a new key supersedes
(``server/superseded.py``): decided from the list and how long the leader has not heard
from each voter."""

from __future__ import annotations

import pytest

from consortium_node.identity.trusted_list import NodeEntry, NodeStatus
from consortium_node.server.superseded import silence_for, superseded

LEADER = "aa" * 32


def entry(
    node_id: str,
    name: str = "node-1",
    address: str = "node-1.test:8443",
    attested: str = "2026-12-06T01:00:00Z",
    status: NodeStatus = NodeStatus.TRUSTED,
) -> NodeEntry:
    return NodeEntry(
        node_id * 32,
        name,
        address,
        "-----BEGIN PUBLIC KEY-----",
        "00" * 32,
        "00" * 32,
        status,
        attested,
        "2026-12-07T01:00:00Z",
    )


LEAD = entry("aa", "node-0", "node-0.test:8443")
OLD = entry("01")
NEW = entry("02", attested="2026-12-06T02:00:00Z")
SILENT = {OLD.node_id: 60.0, NEW.node_id: 0.5}


@pytest.mark.parametrize(
    ("nodes", "quiet", "expected"),
    [
        pytest.param([LEAD, OLD, NEW], SILENT, (OLD, NEW), id="old-silent-new-answers"),
        pytest.param([LEAD, NEW, OLD], SILENT, (OLD, NEW), id="in-any-order"),
        pytest.param([LEAD, OLD, NEW], {**SILENT, OLD.node_id: 3.0}, None, id="old-heard-lately"),
        pytest.param([LEAD, OLD, NEW], {**SILENT, NEW.node_id: 9.0}, None, id="new-not-answering"),
        pytest.param([LEAD, OLD, NEW], {NEW.node_id: 0.5}, None, id="old-not-a-peer-here"),
        pytest.param([LEAD, OLD], SILENT, None, id="silent-but-nobody-replaced-it"),
        pytest.param(
            [LEAD, OLD, entry("02", address="node-9.test:8443", attested=NEW.attested_at)],
            SILENT,
            None,
            id="other-address",
        ),
        pytest.param(
            [LEAD, OLD, entry("02", name="node-9", attested=NEW.attested_at)],
            SILENT,
            None,
            id="other-name",
        ),
        pytest.param(
            [LEAD, entry("01", attested=NEW.attested_at), entry("02", attested=OLD.attested_at)],
            SILENT,
            None,
            id="the-silent-one-is-newer",
        ),
        pytest.param(
            [LEAD, OLD, entry("02", status=NodeStatus.PENDING, attested=NEW.attested_at)],
            SILENT,
            None,
            id="new-not-trusted-yet",
        ),
        pytest.param(
            [LEAD, entry("01", status=NodeStatus.RETIRED), NEW],
            SILENT,
            None,
            id="old-already-retired",
        ),
        pytest.param(
            [entry("aa", attested=NEW.attested_at), OLD],
            {OLD.node_id: 60.0},
            (OLD, entry("aa", attested=NEW.attested_at)),
            id="the-leader-itself-joined-again",
        ),
    ],
)
def test_the_old_identity_is_superseded_only_when_silent_and_replaced(
    nodes: list[NodeEntry],
    quiet: dict[str, float],
    expected: tuple[NodeEntry, NodeEntry] | None,
) -> None:
    assert superseded(nodes, quiet.get, LEADER, silent=10.0) == expected


def test_the_silence_is_ten_election_timeouts_and_at_least_five_seconds() -> None:
    assert silence_for(1.0) == 10.0
    assert silence_for(0.1) == 5.0
