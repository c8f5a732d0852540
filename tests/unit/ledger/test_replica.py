"""A leader's batch is judged the same with the private-entry fast path as by ``check_entry``
alone: the same entries and staged writes when it passes, the same error when it does not."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consortium_node.ledger import EntryKind, Ledger, LedgerConfig, NodeKeySigner, entries, replica
from consortium_node.ledger.entries import Entry, decode_entry, private_entry
from consortium_node.ledger.errors import EntryFormatError
from consortium_node.ledger.merkle import MerkleTree
from consortium_node.ledger.secrets import LedgerSecrets
from consortium_node.ledger.signing import CertificateCache

from .conftest import OpenLedger

SECRET = bytes(range(32))
CONFIG = LedgerConfig(signature_interval_tx=4, signature_interval_ms=10**6)


@pytest.fixture(scope="module")
def payloads(tmp_path_factory: pytest.TempPathFactory, signer: NodeKeySigner) -> list[bytes]:
    """A leader's log: a public entry, then private ones over two terms, signed every 4."""
    leader = Ledger.open(tmp_path_factory.mktemp("leader"), ledger_secret=SECRET, config=CONFIG)
    leader.append([{"public:cfg": {"v": 1}}], EntryKind.PUBLIC)
    for number in range(12):
        if number == 6:
            leader.term = 2
        leader.append([{"app": {f"k{number}": "v" * number, "n": number}}], EntryKind.PRIVATE)
        if leader.signature_due():
            leader.append_signature(signer)
    leader.append_signature(signer)
    try:
        return leader.raw_entries(1, leader.last_index)
    finally:
        leader.close()


def _outcome(payloads: list[bytes], fast: bool, monkeypatch: pytest.MonkeyPatch) -> object:
    """What ``check_batch`` makes of ``payloads`` on a fresh follower's tree and secrets."""
    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(replica, "_checked_private", lambda *args: None)
        tree, secrets = MerkleTree(), LedgerSecrets(SECRET)
        try:
            checked = replica.check_batch(payloads, tree, 0, secrets, CertificateCache())
        except Exception as exc:
            return type(exc), str(exc), tree.size
        return checked, tree.root(), secrets.current_version


def _flipped(payloads: list[bytes], position: int, offset: int, bits: int) -> Iterator[bytes]:
    for number, payload in enumerate(payloads):
        if number != position % len(payloads):
            yield payload
            continue
        at = offset % len(payload)
        yield payload[:at] + bytes([payload[at] ^ bits]) + payload[at + 1 :]


def test_the_fast_path_takes_the_private_entries(
    payloads: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[int] = []
    real = replica._checked_private

    def counting(payload: bytes, index: int, *args: object) -> object:
        result = real(payload, index, *args)  # type: ignore[arg-type]
        if result is not None:
            taken.append(index)
        return result

    monkeypatch.setattr(replica, "_checked_private", counting)
    checked = replica.check_batch(
        payloads, MerkleTree(), 0, LedgerSecrets(SECRET), CertificateCache()
    )
    private = [entry.index for entry, _ in checked if entry.kind is EntryKind.PRIVATE]
    assert taken == private and len(private) == 12


def test_a_genuine_batch_is_checked_the_same(
    payloads: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _outcome(payloads, True, monkeypatch)
    assert isinstance(fast, tuple) and isinstance(fast[0], list) and len(fast[0]) == len(payloads)
    assert fast == _outcome(payloads, False, monkeypatch)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    position=st.integers(min_value=0, max_value=10**6),
    offset=st.integers(min_value=0, max_value=10**6),
    bits=st.integers(min_value=1, max_value=255),
)
def test_a_damaged_batch_is_refused_the_same(
    payloads: list[bytes],
    monkeypatch: pytest.MonkeyPatch,
    position: int,
    offset: int,
    bits: int,
) -> None:
    damaged = list(_flipped(payloads, position, offset, bits))
    assert _outcome(damaged, True, monkeypatch) == _outcome(damaged, False, monkeypatch)


def _sealed(term: int, index: int, secret: bytes = SECRET) -> Entry:
    return private_entry(AESGCM(secret), term, index, {"app": {"x": 1}})


def _sealed_text(term: int, index: int, plaintext: bytes) -> Entry:
    return entries._sealed(AESGCM(SECRET), term, index, plaintext, bytes(12), secret_version=1)


WRONG_PRIVATE: dict[str, Callable[[int, int], Entry]] = {
    "other-secret": lambda term, index: _sealed(term, index, os.urandom(32)),
    # The right secret, the wrong place: its associated data names the next index.
    "moved": lambda term, index: _sealed(term, index + 1)._replace(index=index),
    "lower-term": lambda term, index: _sealed(term - 1, index),
    "gap": lambda term, index: _sealed(term, index + 1),
    "digest": lambda term, index: _sealed(term, index)._replace(write_set_digest=bytes(32)),
    # A public table in a private entry (sealed as the ledger would, past its checks).
    "public-table": lambda term, index: _sealed_text(
        term, index, b'{"salt":"","writes":{"public:cfg":{"x":1}}}'
    ),
    "not-json": lambda term, index: _sealed_text(term, index, b'{"salt":"","writes":'),
}


@pytest.mark.parametrize("name", sorted(WRONG_PRIVATE))
def test_a_wrong_private_entry_is_refused_the_same(
    payloads: list[bytes], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    last = decode_entry(payloads[-1])
    wrong = WRONG_PRIVATE[name](last.term, last.index + 1).encode()
    fast = _outcome([*payloads, wrong], True, monkeypatch)
    assert isinstance(fast, tuple) and fast[0] is EntryFormatError
    assert f"entry {last.term - (name == 'lower-term')}." in str(fast[1])
    assert fast == _outcome([*payloads, wrong], False, monkeypatch)


def test_a_follower_applies_what_the_fast_path_staged(
    payloads: list[bytes], open_ledger: OpenLedger
) -> None:
    follower = open_ledger(CONFIG, ledger_secret=SECRET)
    assert follower.append_entries(payloads) == len(payloads)
    follower.sync_and_commit()
    last_private = max(
        decode_entry(p).txid for p in payloads if decode_entry(p).kind is EntryKind.PRIVATE
    )
    assert follower.get("app", "k11") == ("v" * 11, last_private)
    assert follower.get("app", "n") == (11, last_private)
