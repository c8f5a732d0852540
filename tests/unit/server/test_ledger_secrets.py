"""server/ledger_secrets.py: a rotation wraps one fresh secret to every recipient node, each
node opens only its own copy, and the versions a node holds survive a restart sealed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.attestation.insecure_virtual import VirtualEnclave, VirtualPlatform
from consortium_node.identity import keys
from consortium_node.identity.wrap import unwrap
from consortium_node.ledger import (
    T_LEDGER_SECRETS,
    EntryFormatError,
    EntryKind,
    HeldSecret,
    Ledger,
    LedgerSecrets,
    TxId,
)
from consortium_node.server.join_secrets import ledger_secret_context
from consortium_node.server.ledger_secrets import (
    SecretBundleError,
    SecretVault,
    decode_later,
    encode_later,
    rotation_writes,
)
from consortium_node.server.sealed import SealedStore

CONSORTIUM = "test"


def node_key() -> ec.EllipticCurvePrivateKey:
    key = keys.generate_key("p256")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


@pytest.fixture(scope="module")
def enclave() -> VirtualEnclave:
    return VirtualEnclave(VirtualPlatform.generate(), "chip-0", "ab" * 32, "cd" * 32)


def vault(tmp_path: Path, enclave: VirtualEnclave, key: ec.EllipticCurvePrivateKey) -> SecretVault:
    return SecretVault(SealedStore(tmp_path / keys.node_id_of(key)[:8], enclave), key, CONSORTIUM)


def test_one_fresh_secret_wrapped_to_every_recipient_and_nothing_in_clear(
    tmp_path: Path, enclave: VirtualEnclave
) -> None:
    nodes = [node_key() for _ in range(3)]
    recipients = {keys.node_id_of(k): keys.public_key_pem(k) for k in nodes}
    keyring = LedgerSecrets(b"\x01" * 32)
    writes = rotation_writes(keyring, recipients, CONSORTIUM, 41)
    record = writes[T_LEDGER_SECRETS]["2"]
    assert (record["version"], record["applies_from"]) == (2, 42)
    assert set(record["wrapped"]) == set(recipients)
    opened = set()
    for key in nodes:
        node_id = keys.node_id_of(key)
        blob = base64.b64decode(record["wrapped"][node_id])
        secret = unwrap(key, blob, ledger_secret_context(CONSORTIUM, node_id, 2))
        assert secret.hex() not in json.dumps(writes) and secret not in blob
        opened.add(secret)
        # Bound to its node and version: another context does not open it.
        with pytest.raises(Exception, match="authentication failed"):
            unwrap(key, blob, ledger_secret_context(CONSORTIUM, node_id, 3))
    assert len(opened) == 1 and len(next(iter(opened))) == 32
    # The vault of a recipient opens its copy; an outsider's vault gets None, not an error.
    insider = vault(tmp_path, enclave, nodes[0])._unwrap(2, record["wrapped"])
    assert insider == next(iter(opened))
    assert vault(tmp_path, enclave, node_key())._unwrap(2, record["wrapped"]) is None
    tampered = dict(record["wrapped"])
    tampered[keys.node_id_of(nodes[1])] = tampered[keys.node_id_of(nodes[2])]
    with pytest.raises(EntryFormatError, match="does not open"):
        vault(tmp_path, enclave, nodes[1])._unwrap(2, tampered)


def test_vault_seals_learned_versions_and_a_restart_holds_them(
    tmp_path: Path, enclave: VirtualEnclave
) -> None:
    key = node_key()
    me = {keys.node_id_of(key): keys.public_key_pem(key)}
    first = b"\x07" * 32
    keyring = vault(tmp_path, enclave, key).create(first)
    with Ledger.open(tmp_path / "ledger", ledger_secret=keyring) as ledger:
        ledger.append([{"app": {"k": "one"}}], EntryKind.PRIVATE)
        for _ in range(2):
            index = ledger.last_index + 1
            ledger.append(
                [rotation_writes(ledger.secrets, me, CONSORTIUM, index)], EntryKind.PUBLIC
            )
        [txid] = ledger.append([{"app": {"k": "three"}}], EntryKind.PRIVATE)
        ledger.sync_and_commit()
        held = ledger.secrets.held()
    assert [h.version for h in held] == [1, 2, 3]
    restarted = vault(tmp_path, enclave, key).load()
    assert restarted.held() == held
    with Ledger.open(tmp_path / "ledger", ledger_secret=restarted) as reopened:
        reopened.advance_commit(reopened.last_index)
        assert reopened.get("app", "k") == ("three", txid)


def test_bundle_round_trip_and_errors() -> None:
    held = [HeldSecret(1, b"\x01" * 32, None), HeldSecret(2, b"\x02" * 32, TxId(3, 40))]
    encoded = encode_later(held)
    assert encoded == {"2": {"secret": "02" * 32, "txid": "3.40"}}
    assert decode_later(json.loads(json.dumps(encoded))) == held[1:]
    assert decode_later({}) == []
    for bad in ([], {"2": {"secret": "zz", "txid": "3.40"}}, {"2": {"secret": "02" * 32}}):
        with pytest.raises(SecretBundleError):
            decode_later(bad)
