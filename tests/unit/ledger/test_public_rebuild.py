"""A ledger that holds no secret version (``LedgerSecrets(None)``): what a recovery node does
with a recovered ledger before the members' shares bring the secrets back.

It takes every entry (checked as a replica's are: signatures, Merkle tree), rebuilds the
public state, serves receipts, and commits every private entry unread (private reads fail,
naming why); reopened with the recovered secret, the same files give the private state too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from consortium_node.identity.certs import ServiceIdentity
from consortium_node.ledger import (
    EntryKind,
    Ledger,
    LedgerConfig,
    LedgerSecrets,
    NodeKeySigner,
    SecretUnavailableError,
)
from consortium_node.ledger.receipt import verify_receipt
from tests.support.clock import FakeClock

from .helpers import fill


def test_public_state_first_then_the_private_state_with_the_secret(
    tmp_path: Path, service: ServiceIdentity, signer: NodeKeySigner, secret: bytes,
    clock: FakeClock,
) -> None:  # fmt: skip
    source = Ledger.open(tmp_path / "source", ledger_secret=secret, config=LedgerConfig(),
                         clock=clock)  # fmt: skip
    source.append([{"public:demo.settings": {"mode": "open"}}], EntryKind.PUBLIC)
    txids = fill(source, signer, 5)
    source.append_signature(signer)
    source.sync_and_commit()
    last = source.last_index
    payloads = source.raw_entries(1, last)
    source.close()

    rebuilt = Ledger.open(tmp_path / "recovered", ledger_secret=LedgerSecrets(None),
                          config=LedgerConfig(), clock=clock)  # fmt: skip
    assert rebuilt.secrets.held() == []
    rebuilt.append_entries(payloads)
    rebuilt.sync()
    assert rebuilt.advance_commit(last) == last
    assert rebuilt.get("public:demo.settings", "mode") is not None
    with pytest.raises(SecretUnavailableError, match="does not hold ledger secret version 1"):
        rebuilt.get("app", "k0-0")
    verify_receipt(rebuilt.receipt(txids[3]), service.certificate)  # history stays provable
    rebuilt.close()

    reopened = Ledger.open(tmp_path / "recovered", ledger_secret=secret, config=LedgerConfig(),
                           clock=clock)  # fmt: skip
    reopened.advance_commit(last)
    found = reopened.get("app", "k2-3")
    assert found is not None and found[0] == {"n": 3, "batch": 2}
    reopened.close()
