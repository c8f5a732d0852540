"""Versioned ledger secrets: the entry formats, old ledgers, rotation entries on append,
replication and replay, unknown versions, and a node left out of a rotation."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consortium_node.common.canonical import canonical_json
from consortium_node.ledger import (
    EntryFormatError,
    EntryKind,
    HeldSecret,
    Ledger,
    LedgerConfig,
    LedgerCorruptionError,
    LedgerSecrets,
    NodeKeySigner,
    SecretUnavailableError,
    TxId,
    UnknownSecretVersionError,
    rotation_record,
)
from consortium_node.ledger.entries import (
    decode_entry,
    open_entry,
    peek_position,
    private_aad,
    private_entry,
)

ME = "aa" * 32


class FakeWrapping:
    """Stands in for the server's unwrap: 'wrapped' blobs are hex secrets for ``ME``."""

    def __init__(self) -> None:
        self.secrets: dict[int, bytes] = {}
        self.learned: list[HeldSecret] = []

    def record(self, version: int, index: int, recipients: tuple[str, ...] = (ME,)) -> dict:  # type: ignore[type-arg]
        secret = self.secrets.setdefault(version, os.urandom(32))
        return rotation_record(version, index + 1, {n: secret.hex() for n in recipients})

    def unwrap(self, version: int, wrapped: Mapping[str, str]) -> bytes | None:
        return bytes.fromhex(wrapped[ME]) if ME in wrapped else None

    def keyring(self, first: bytes, held: tuple[HeldSecret, ...] = ()) -> LedgerSecrets:
        return LedgerSecrets(first, held, unwrap=self.unwrap, on_learn=self.learned.append)


def old_format_private_payload(secret: bytes, term: int, index: int, writes: dict) -> bytes:  # type: ignore[type-arg]
    """A private entry exactly as nodes wrote them before rotation existed (format 1)."""
    plaintext = canonical_json({"salt": "00" * 16, "writes": writes})
    nonce = os.urandom(12)
    aad = b"CLE1" + term.to_bytes(8, "big") + index.to_bytes(8, "big") + bytes([2])
    body = nonce + AESGCM(secret).encrypt(nonce, plaintext, aad)
    digest = hashlib.sha256(plaintext).digest()
    return cbor2.dumps([1, term, index, 2, digest, body], canonical=True)


# -- formats ------------------------------------------------------------------------------


def test_format_2_round_trips_and_commits_to_the_version() -> None:
    aead = AESGCM(os.urandom(32))
    entry = private_entry(aead, 4, 9, {"app": {"k": "v"}}, secret_version=3)
    payload = entry.encode()
    assert payload[:2] == b"\x86\x02" and peek_position(payload) == (4, 9)
    decoded = decode_entry(payload)
    assert decoded == entry and decoded.format == 2 and decoded.secret_version == 3
    assert decoded.body[:4] == (3).to_bytes(4, "big")
    assert open_entry(aead, decoded)[1] == {"app": {"k": "v"}}
    # The version is in the body: the leaf (body_sha256) and so receipts commit to it.
    assert decoded.leaf_components()["body_sha256"] == hashlib.sha256(decoded.body).hexdigest()
    # Relabelled as another version, the ciphertext no longer opens (the AAD binds it).
    relabelled = cbor2.dumps(
        [2, 4, 9, 2, entry.write_set_digest, (4).to_bytes(4, "big") + entry.body[4:]],
        canonical=True,
    )
    with pytest.raises(EntryFormatError, match="version 4"):
        open_entry(aead, decode_entry(relabelled))
    assert private_aad(4, 9, EntryKind.PRIVATE, 3)[:4] == b"CLE2"


def test_version_1_is_written_in_format_1_unchanged() -> None:
    secret = os.urandom(32)
    entry = private_entry(AESGCM(secret), 1, 2, {"app": {"k": "v"}})
    assert entry.encode()[:2] == b"\x86\x01" and entry.format == 1 and entry.secret_version == 1
    old = decode_entry(old_format_private_payload(secret, 1, 2, {"app": {"k": "old"}}))
    assert old.secret_version == 1
    assert open_entry(AESGCM(secret), old) == ("00" * 16, {"app": {"k": "old"}})


@pytest.mark.parametrize(
    ("items", "reason"),
    [
        pytest.param([2, 1, 1, 1, b"x" * 32, b"\x00\x00\x00\x02" + b"y" * 28], "only for private"),
        pytest.param([2, 1, 1, 2, b"x" * 32, b"\x00\x00\x00\x01" + b"y" * 28], "version 1 is"),
        pytest.param([2, 1, 1, 2, b"x" * 32, b"\x00\x00\x00\x02" + b"y" * 4], "too short"),
        pytest.param([3, 1, 1, 2, b"x" * 32, b"y" * 40], "format version 3"),
    ],
)
def test_format_2_is_one_encoding_only(items: list[object], reason: str) -> None:
    with pytest.raises(EntryFormatError, match=reason):
        decode_entry(cbor2.dumps(items, canonical=True))


# -- the keyring and a ledger ---------------------------------------------------------------

CONFIG = LedgerConfig(signature_interval_tx=1000, signature_interval_ms=10**6)


def open_with(directory: Path, keyring: LedgerSecrets | bytes) -> Ledger:
    return Ledger.open(directory, ledger_secret=keyring, config=CONFIG)


def rotate(ledger: Ledger, fake: FakeWrapping, recipients: tuple[str, ...] = (ME,)) -> TxId:
    index = ledger.last_index + 1
    version = ledger.secrets.current_version + 1
    [txid] = ledger.append([fake.record(version, index, recipients)], EntryKind.PUBLIC)
    return txid


def test_an_old_ledger_on_disk_still_opens_and_reads(tmp_path: Path, signer: NodeKeySigner) -> None:
    secret = os.urandom(32)
    with open_with(tmp_path / "l", secret) as ledger:
        [txid] = ledger.append([{"app": {"k": "before"}}], EntryKind.PRIVATE)
        ledger.append_signature(signer)
        ledger.sync_and_commit()
    chunk = next((tmp_path / "l").glob("*.chunk")).read_bytes()
    assert b"\x86\x02" not in chunk[:16]  # written in format 1
    fake = FakeWrapping()
    with open_with(tmp_path / "l", fake.keyring(secret)) as reopened:
        reopened.advance_commit(reopened.last_index)
        assert reopened.get("app", "k") == ("before", txid)
        assert reopened.secrets.current_version == 1


def test_rotation_on_append_replay_and_reads_across_versions(
    tmp_path: Path, signer: NodeKeySigner
) -> None:
    fake, secret = FakeWrapping(), os.urandom(32)
    with open_with(tmp_path / "l", fake.keyring(secret)) as ledger:
        [old] = ledger.append([{"app": {"k": "v1"}}], EntryKind.PRIVATE)
        rotation = rotate(ledger, fake)
        assert ledger.secrets.current_version == 2
        assert ledger.secrets.version_at(rotation.index) == 1
        assert ledger.secrets.version_at(rotation.index + 1) == 2
        assert [h.version for h in fake.learned] == [2] and fake.learned[0].origin == rotation
        [new] = ledger.append([{"app": {"k": "v2"}}], EntryKind.PRIVATE)
        assert ledger.raw_entries(new.index, new.index)[0][:2] == b"\x86\x02"
        ledger.append_signature(signer)
        ledger.sync_and_commit()
        assert ledger.read(old).writes == {"app": {"k": "v1"}}
        assert ledger.read(new).writes == {"app": {"k": "v2"}}
    # Replay: the node unwraps its copy again and reads both versions.
    fake.learned.clear()
    held = (HeldSecret(2, fake.secrets[2], rotation),)
    with open_with(tmp_path / "l", fake.keyring(secret, held)) as reopened:
        reopened.advance_commit(reopened.last_index)
        assert reopened.get("app", "k") == ("v2", new) and fake.learned == []
        assert reopened.read(old).writes == {"app": {"k": "v1"}}


def test_a_node_left_out_keeps_the_log_but_cannot_read_later_private_entries(
    tmp_path: Path, signer: NodeKeySigner
) -> None:
    fake, secret = FakeWrapping(), os.urandom(32)
    with open_with(tmp_path / "l", fake.keyring(secret)) as ledger:
        ledger.append([{"app": {"k": "v1"}}], EntryKind.PRIVATE)
        rotate(ledger, fake, recipients=("bb" * 32,))  # not to this node
        assert ledger.secrets.current_version == 2 and not ledger.secrets.holds(2)
        with pytest.raises(SecretUnavailableError, match="version 2"):
            ledger.append([{"app": {"k": "v2"}}], EntryKind.PRIVATE)
    # The same log written by a recipient, replayed by a node that is not one: no crash.
    other = FakeWrapping()
    with open_with(tmp_path / "m", other.keyring(secret)) as leader:
        leader.append([{"app": {"k": "v1"}}], EntryKind.PRIVATE)
        rotate(leader, other)
        [new] = leader.append([{"app": {"k": "v2"}}], EntryKind.PRIVATE)
        leader.append_signature(signer)
        leader.sync_and_commit()
    outsider = LedgerSecrets(secret, unwrap=lambda version, wrapped: None)
    with open_with(tmp_path / "m", outsider) as replayed:
        replayed.advance_commit(replayed.last_index)
        assert replayed.commit_index == replayed.last_index
        assert replayed.unreadable_from == (new.index, 2)
        assert replayed.read(TxId(1, 1)).writes == {"app": {"k": "v1"}}
        with pytest.raises(SecretUnavailableError, match="version 2"):
            replayed.read(new)
        with pytest.raises(SecretUnavailableError, match=f"from index {new.index}"):
            replayed.get("app", "k")
        assert replayed.receipt(new)["txid"] == str(new)  # the tree is intact


def test_a_follower_learns_a_rotation_within_one_batch_and_rolls_it_back(
    tmp_path: Path, signer: NodeKeySigner
) -> None:
    fake, secret = FakeWrapping(), os.urandom(32)
    leader = open_with(tmp_path / "leader", fake.keyring(secret))
    follower = open_with(tmp_path / "follower", FakeWrapping().keyring(secret))
    try:
        leader.append([{"app": {"k": "v1"}}], EntryKind.PRIVATE)
        rotate(leader, fake)
        [new] = leader.append([{"app": {"k": "v2"}}], EntryKind.PRIVATE)
        leader.append_signature(signer)
        follower.append_entries(leader.raw_entries(1, leader.last_index))
        follower.sync()
        follower.advance_commit(follower.last_index)
        assert follower.get("app", "k") == ("v2", new)
        assert follower.secrets.current_version == 2
        # A batch whose last entry is bad is refused whole: the rotation is not kept.
        fresh = open_with(tmp_path / "fresh", FakeWrapping().keyring(secret))
        bad = [*leader.raw_entries(1, 3), b"\x86\x01garbage"]
        with pytest.raises(EntryFormatError):
            fresh.append_entries(bad)
        assert fresh.last_index == 0 and fresh.secrets.current_version == 1
        # Truncating an uncommitted rotation rolls the schedule back.
        fresh.append_entries(leader.raw_entries(1, 2))
        assert fresh.secrets.current_version == 2
        fresh.truncate(1)
        assert fresh.secrets.current_version == 1 and fresh.secrets.rotations == []
        fresh.close()
    finally:
        leader.close()
        follower.close()


def test_unknown_secret_versions_are_refused(tmp_path: Path) -> None:
    secret = os.urandom(32)
    ahead = private_entry(AESGCM(os.urandom(32)), 1, 1, {"app": {"k": "v"}}, secret_version=2)
    with open_with(tmp_path / "l", secret) as ledger:
        with pytest.raises(UnknownSecretVersionError, match="version 2"):
            ledger.append_entries([ahead.encode()])
        with pytest.raises(UnknownSecretVersionError, match="unknown"):
            ledger.secrets.aead(7)
        assert ledger.last_index == 0
    # On disk (say, a chunk from another history) it is corruption, named with its place.
    with open_with(tmp_path / "m", secret) as ledger:
        ledger._store.append([ahead.encode()], 1)
        ledger._store.sync()
    with pytest.raises(LedgerCorruptionError, match="secret version 2"):
        open_with(tmp_path / "m", secret)


def test_a_stale_version_after_a_rotation_is_refused(tmp_path: Path) -> None:
    fake, secret = FakeWrapping(), os.urandom(32)
    with open_with(tmp_path / "l", fake.keyring(secret)) as ledger:
        rotate(ledger, fake)
        stale = private_entry(AESGCM(secret), 1, 2, {"app": {"k": "v"}})
        with pytest.raises(EntryFormatError, match="version 2 is in force"):
            ledger.append_entries([stale.encode()])


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        pytest.param(lambda r, i: rotation_record(3, i + 1, {}), "exactly version 2"),
        pytest.param(lambda r, i: rotation_record(2, i + 5, {}), "applies_from"),
        pytest.param(
            lambda r, i: {"public:consortium.ledger_secrets": {"2": {"version": 2}}}, "object with"
        ),
        pytest.param(lambda r, i: rotation_record(2, i + 1, {ME: 5}), "wrapped"),  # type: ignore[dict-item]
    ],
)
def test_malformed_rotation_records_are_refused(tmp_path: Path, mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    fake = FakeWrapping()
    with open_with(tmp_path / "l", fake.keyring(os.urandom(32))) as ledger:
        with pytest.raises(EntryFormatError, match=reason):
            ledger.append([mutate(None, 1)], EntryKind.PUBLIC)
        assert ledger.last_index == 0 and ledger.secrets.current_version == 1


def test_a_bundled_copy_is_used_only_for_its_own_rotation_entry() -> None:
    secret, bundled = os.urandom(32), os.urandom(32)
    keyring = LedgerSecrets(secret, [HeldSecret(2, bundled, TxId(3, 10))])
    keyring.observe(TxId(3, 10), rotation_record(2, 11, {}))
    assert keyring.holds(2) and keyring.aead(2) is keyring.aead(2)
    other = LedgerSecrets(secret, [HeldSecret(2, bundled, TxId(3, 10))])
    other.observe(TxId(4, 10), rotation_record(2, 11, {}))  # another history's rotation
    assert not other.holds(2)
    with pytest.raises(SecretUnavailableError):
        other.encrypting()
