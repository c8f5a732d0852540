"""``/readyz``: which node is ready to serve, table-driven over fakes of the node and Raft."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from consortium_node.server.app import SERVICES, readyz
from consortium_node.server.errors import NotReadyError


def fake_request(
    *,
    role: str = "leader",
    term: int = 5,
    commit: int = 100,
    commit_term: int = 5,
    last: int = 100,
    leader_commit: int = 100,
    status: str = "Trusted",
) -> Any:
    ledger = SimpleNamespace(
        commit_index=commit,
        last_index=last,
        term_at=lambda index: commit_term if index == commit else term,
    )
    node = SimpleNamespace(
        ledger=ledger,
        own_status=lambda: status,
        ledger_problem=lambda: None,
        role="primary" if role == "leader" else "backup",
    )
    raft = SimpleNamespace(role=role, term=term, leader_id="ab" * 32, leader_commit=leader_commit)
    return SimpleNamespace(app={SERVICES: SimpleNamespace(node=node, raft=raft)})


def answer(request: Any) -> tuple[bool, str]:
    try:
        response = asyncio.run(readyz(request))
    except NotReadyError as exc:
        return False, str(exc)
    return True, json.loads(response.text)["role"]


@pytest.mark.parametrize(
    ("settings", "ready", "said"),
    [
        pytest.param({}, True, "primary", id="primary-steady"),
        pytest.param(
            {"commit": 40_000, "commit_term": 2, "last": 100_001},
            False,
            "catching up: committed 40000 of the 100001 entries in its log",
            id="primary-committing-its-replayed-log",
        ),
        pytest.param(
            {"commit": 99, "commit_term": 4, "last": 101},
            False,
            "catching up",
            id="primary-whose-no-op-is-not-committed",
        ),
        pytest.param(
            {"role": "follower", "commit": 100, "leader_commit": 900},
            True,
            "backup",
            id="backup-within-the-lag",
        ),
        pytest.param(
            {"role": "follower", "commit": 100, "leader_commit": 5_000},
            False,
            "catching up: committed 100 of the primary's 5000",
            id="backup-behind",
        ),
        pytest.param(
            {"role": "follower", "commit": 100, "commit_term": 2, "leader_commit": 100},
            True,
            "backup",
            id="backup-with-an-older-term-committed",  # only a primary's own term counts
        ),
        pytest.param({"commit": 0, "commit_term": 0}, False, "nothing committed", id="empty"),
        pytest.param({"status": "Pending"}, False, "Pending", id="not-trusted"),
    ],
)
def test_readiness(settings: dict[str, Any], ready: bool, said: str) -> None:
    ok, text = answer(fake_request(**settings))
    assert ok is ready
    assert said in text
