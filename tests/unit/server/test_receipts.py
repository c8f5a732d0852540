"""receipts.require_committed_here: a 404 on a txid says whether to ask again (NotCommittedYet)
or not (NotFound), from what this node's log holds and whether it is the primary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from consortium_node.ledger import TxId
from consortium_node.ledger.ledger import Ledger
from consortium_node.server.errors import NotCommittedYetError, NotFoundError
from consortium_node.server.http_errors import api_error
from consortium_node.server.receipts import require_committed_here


@dataclass
class Log:
    """The part of a Ledger the check reads: terms by index, and the commit."""

    terms: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 3])  # indices 1..5
    commit_index: int = 3

    @property
    def last_index(self) -> int:
        return len(self.terms)

    @property
    def commit_txid(self) -> TxId:
        return TxId(self.term_at(self.commit_index), self.commit_index)

    def term_at(self, index: int) -> int:
        return self.terms[index - 1] if index else 0


def code(txid: TxId, *, leader: bool) -> str | None:
    try:
        require_committed_here(cast(Ledger, Log()), txid, leader=leader)
    except (NotFoundError, NotCommittedYetError) as exc:
        answer = api_error(exc)
        assert answer.status == 404 and answer.field == "txid"
        assert answer.extra["commit"] == "2.3"
        return answer.code
    return None


@pytest.mark.parametrize("leader", [True, False])
def test_committed_here_passes(leader: bool) -> None:
    assert code(TxId(2, 3), leader=leader) is None
    assert code(TxId(9, 2), leader=leader) is None  # a wrong term within the commit: ledger's


@pytest.mark.parametrize(
    ("txid", "on_primary", "on_backup"),
    [
        (TxId(2, 4), "NotCommittedYet", "NotCommittedYet"),  # in the log, not committed yet
        (TxId(3, 5), "NotCommittedYet", "NotCommittedYet"),
        (TxId(5, 9), "NotFound", "NotCommittedYet"),  # beyond the log: a backup may lag
        (TxId(1, 4), "NotFound", "NotCommittedYet"),  # another term at that index
    ],
)
def test_beyond_the_commit(txid: TxId, on_primary: str, on_backup: str) -> None:
    assert code(txid, leader=True) == on_primary
    assert code(txid, leader=False) == on_backup


def test_the_reason_says_to_retry() -> None:
    with pytest.raises(NotCommittedYetError) as caught:
        require_committed_here(cast(Any, Log()), TxId(2, 4), leader=False)
    assert "retry" in caught.value.reason and "2.4" in caught.value.reason
