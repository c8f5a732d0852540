"""The primary's recovery record keeper (``server.recovery_keeper``): a record is due when
what the ledger says (Active recovery members' keys, the recovery threshold, the ledger secret
versions) differs from what the newest record was built for, and only then."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_node.recovery.record import open_share, recover_secrets, recovery_key_pem
from consortium_node.server.callers import Member
from consortium_node.server.recovery_keeper import RecoveryKeeper

KEYS = {f"{n:064x}": ec.generate_private_key(ec.SECP256R1()) for n in (1, 2, 3)}
SECRETS = {1: bytes(range(32))}


def members(status: str = "Active", keys: dict[str, Any] | None = None) -> dict[str, Member]:
    keys = KEYS if keys is None else keys
    found = {
        m: Member(m, "governor", status, "PEM", recovery_key_pem(k.public_key()))
        for m, k in keys.items()
    }
    found["ff" * 32] = Member("ff" * 32, "governor", "Active", "PEM")  # no recovery key
    return found


class World:
    """What the keeper reads, changeable between calls."""

    def __init__(self) -> None:
        self.members = members()
        self.constitution: dict[str, Any] = {}
        self.record: dict[str, Any] | None = None
        self.secrets = dict(SECRETS)
        self.primary = True

    def keeper(self) -> RecoveryKeeper:
        async def submit(*_: Any) -> list[Any]:
            raise AssertionError("due() never submits")

        return RecoveryKeeper(
            consortium="demo",
            members=lambda: self.members,
            constitution=lambda: self.constitution,
            current=lambda: self.record,
            secrets=lambda: self.secrets,
            is_primary=lambda: self.primary,
            submit=submit,
        )

    def write_due(self) -> dict[str, Any] | None:
        due = self.keeper().due()
        if due is not None:
            self.record = due
        return due


def test_a_record_is_written_when_its_basis_changes_and_not_otherwise() -> None:
    world = World()
    first = world.write_due()
    assert first is not None and first["epoch"] == 1 and first["threshold"] == 2
    assert set(first["shares"]) == set(KEYS)  # the member without a key holds none
    assert world.write_due() is None  # nothing changed
    m = sorted(KEYS)
    shares = {k: open_share(first, "demo", k, KEYS[k]) for k in m[:2]}
    assert recover_secrets(first, "demo", shares) == SECRETS

    world.secrets[2] = bytes(32)  # a rotation
    second = world.write_due()
    assert second is not None and second["epoch"] == 2 and second["secret_versions"] == [1, 2]
    world.constitution = {"recovery_threshold": 3}
    third = world.write_due()
    assert third is not None and third["threshold"] == 3 and third["epoch"] == 3
    new_key = ec.generate_private_key(ec.SECP256R1())
    world.members = members(keys={**KEYS, m[0]: new_key})  # a member changed its key
    fourth = world.write_due()
    assert fourth is not None and fourth["epoch"] == 4
    assert open_share(fourth, "demo", m[0], new_key).index >= 1
    world.members = members(keys={k: KEYS[k] for k in m[1:]})  # one fewer recovery member
    world.constitution = {}
    fifth = world.write_due()
    assert fifth is not None and set(fifth["shares"]) == set(m[1:]) and fifth["threshold"] == 2


def test_nothing_is_due_on_a_backup_or_without_recovery_members() -> None:
    world = World()
    world.primary = False
    assert world.write_due() is None
    world.primary = True
    world.members = members(status="Accepted")  # not Active yet: no shares
    assert world.write_due() is None


def test_an_unreachable_threshold_writes_nothing_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World()
    world.constitution = {"recovery_threshold": 4}
    caplog.set_level(logging.WARNING)
    keeper = world.keeper()
    assert keeper.due() is None and keeper.due() is None
    said = [r.getMessage() for r in caplog.records if "no recovery record" in r.getMessage()]
    assert said == [
        "recovery threshold 4 is above the 3 Active recovery member(s): no recovery record "
        "can be written"
    ]
