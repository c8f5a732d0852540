"""TrustedListStore: rollback protection that survives restarts (DESIGN section 4)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cbor2
import pytest

from consortium_node.identity.certs import ServiceIdentity
from consortium_node.identity.errors import (
    ListRejection,
    TrustedListError,
    TrustedListStoreError,
)
from consortium_node.identity.trusted_list import (
    REFUSALS,
    NodeStatus,
    TrustedNodeList,
    sign_trusted_list,
)
from consortium_node.identity.trusted_list_store import Outcome, TrustedListStore

ListFactory = Callable[..., TrustedNodeList]


def _assert_unchanged(store: TrustedListStore, path: Path, envelope: bytes, version: int) -> None:
    assert store.current_envelope == envelope
    assert store.current is not None and store.current.version == version
    assert path.read_bytes() == envelope


def test_empty_store(store: TrustedListStore, path: Path) -> None:
    assert store.current is None and store.current_envelope is None
    assert not path.exists()


def test_accept_persists_across_restart(
    store: TrustedListStore, path: Path, service: ServiceIdentity, signed: Callable[..., bytes]
) -> None:
    v1, v2 = signed(1), signed(2)
    assert store.accept(v1).version == 1
    assert store.accept(v2).version == 2
    assert path.read_bytes() == v2
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    reopened = TrustedListStore(path, service.certificate_pem, "demo")
    assert reopened.current == store.current
    assert reopened.current_envelope == v2


def test_versions_may_skip(store: TrustedListStore, signed: Callable[..., bytes]) -> None:
    store.accept(signed(1))
    assert store.accept(signed(5)).version == 5


def test_lower_version_is_rollback(
    store: TrustedListStore, path: Path, service: ServiceIdentity, signed: Callable[..., bytes]
) -> None:
    v1, v2 = signed(1), signed(2)
    store.accept(v2)
    with pytest.raises(TrustedListError) as info:
        store.accept(v1)
    assert info.value.reason is ListRejection.ROLLBACK
    assert info.value.detail == "version: 1 is lower than the last accepted version 2"
    _assert_unchanged(store, path, v2, 2)
    with pytest.raises(TrustedListError, match="Rollback"):  # and after a restart too
        TrustedListStore(path, service.certificate, "demo").accept(v1)


@pytest.mark.parametrize("method", ["accept", "offer"])
def test_same_version_other_content_is_version_reused(
    store: TrustedListStore, path: Path, signed: Callable[..., bytes], method: str
) -> None:
    v2 = signed(2)
    store.accept(v2)
    with pytest.raises(TrustedListError) as info:
        getattr(store, method)(signed(2, status_1=NodeStatus.TRUSTED))
    assert info.value.reason is ListRejection.VERSION_REUSED
    assert info.value.detail == "version: 2 was already accepted with different content"
    _assert_unchanged(store, path, v2, 2)


def test_same_version_same_content_is_a_no_op(
    store: TrustedListStore, path: Path, signed: Callable[..., bytes]
) -> None:
    v2 = signed(2)
    accepted = store.accept(v2)
    assert store.accept(v2) is accepted
    resigned = signed(2)  # ECDSA is randomised: other bytes, same payload
    assert resigned != v2
    assert store.accept(resigned) is accepted
    _assert_unchanged(store, path, v2, 2)


def test_offer_sets_an_older_valid_list_aside_as_stale(
    store: TrustedListStore, path: Path, service: ServiceIdentity, signed: Callable[..., bytes]
) -> None:
    v1, v2, v3 = signed(1), signed(2), signed(3)
    assert (store.offer(v2).outcome, store.current_envelope) == (Outcome.ADOPTED, v2)
    stale = store.offer(v1)
    assert stale.outcome is Outcome.STALE
    assert (stale.offered.version, stale.held.version) == (1, 2)
    _assert_unchanged(store, path, v2, 2)
    assert store.offer(signed(2)).outcome is Outcome.UNCHANGED  # re-signed, same payload
    _assert_unchanged(store, path, v2, 2)
    adopted = store.offer(v3)
    assert (adopted.outcome, adopted.held.version) == (Outcome.ADOPTED, 3)
    reopened = TrustedListStore(path, service.certificate, "demo")
    assert reopened.offer(v2).outcome is Outcome.STALE  # after a restart too


def test_only_an_older_valid_list_is_not_a_refusal() -> None:
    assert set(REFUSALS) == set(ListRejection) - {ListRejection.ROLLBACK}


def _tampered(envelope: bytes, payload: bytes) -> bytes:
    item = cbor2.loads(envelope)
    item.value[2] = payload
    return bytes(cbor2.dumps(item))


@pytest.mark.parametrize(
    ("method", "held", "offered"),
    [("accept", 1, 3), ("offer", 1, 3), ("offer", 3, 1)],
    ids=["accept newer", "offer newer", "offer older"],  # being older hides no refusal
)
def test_rejected_lists_leave_the_store_unchanged(
    store: TrustedListStore,
    path: Path,
    make_list: ListFactory,
    other_service: ServiceIdentity,
    signed: Callable[..., bytes],
    method: str,
    held: int,
    offered: int,
) -> None:
    kept = signed(held)
    store.accept(kept)
    attempts = {
        ListRejection.BAD_SIGNATURE: _tampered(
            signed(offered), make_list(offered, status_1=NodeStatus.TRUSTED).to_payload()
        ),
        ListRejection.WRONG_SIGNER: sign_trusted_list(
            make_list(offered, svc=other_service), other_service
        ),
        ListRejection.WRONG_SERVICE: signed(offered, consortium="other"),
        ListRejection.MALFORMED: b"\xd2\x84",
    }
    for reason, envelope in attempts.items():
        with pytest.raises(TrustedListError) as info:
            getattr(store, method)(envelope)
        assert info.value.reason is reason
        assert reason in REFUSALS
        _assert_unchanged(store, path, kept, held)


def test_rejected_first_list_writes_nothing(
    store: TrustedListStore, path: Path, signed: Callable[..., bytes]
) -> None:
    with pytest.raises(TrustedListError, match="WrongService"):
        store.accept(signed(1, consortium="other"))
    assert store.current is None and not path.parent.exists()


def _flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda data: b"", "envelope: not valid CBOR"),
        (lambda data: data[: len(data) // 2], "envelope: not valid CBOR"),
        (lambda data: b"garbage", "envelope: "),
        (_flip_last_byte, "BadSignature: signature: does not verify"),
        (lambda data: data + b"\x00", "1 trailing bytes"),
    ],
    ids=["empty", "truncated", "garbage", "flipped signature", "trailing byte"],
)
def test_corrupt_persisted_file_is_an_error(
    path: Path,
    service: ServiceIdentity,
    signed: Callable[..., bytes],
    corrupt: Callable[[bytes], bytes],
    message: str,
) -> None:
    TrustedListStore(path, service.certificate, "demo").accept(signed(1))
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(TrustedListStoreError) as info:
        TrustedListStore(path, service.certificate, "demo")
    assert str(path) in str(info.value)
    assert message in str(info.value)
    assert "refusing to start from it" in str(info.value)


def test_persisted_list_of_another_service_is_an_error(
    path: Path,
    service: ServiceIdentity,
    other_service: ServiceIdentity,
    signed: Callable[..., bytes],
) -> None:
    TrustedListStore(path, service.certificate, "demo").accept(signed(1))
    with pytest.raises(TrustedListStoreError, match="WrongSigner"):
        TrustedListStore(path, other_service.certificate, "demo")
    with pytest.raises(TrustedListStoreError, match="WrongService: consortium: 'demo' is not 'x'"):
        TrustedListStore(path, service.certificate, "x")


def test_unreadable_path_is_an_error(tmp_path: Path, service: ServiceIdentity) -> None:
    (tmp_path / "dir.cose").mkdir()
    with pytest.raises(TrustedListStoreError, match=r"dir\.cose"):
        TrustedListStore(tmp_path / "dir.cose", service.certificate, "demo")
