"""The primary keeps the recovery record current (``consortium_node.recovery.record``).

Why a task beside consensus, like the snapshot keeper: what the record must cover changes
with committed governance (a recovery member added, its key changed or removed, the recovery
threshold changed) and with ledger-secret rotations. After every commit the primary compares
what the newest record was built for (``record.basis``: threshold, each recovery member's key
digest, the secret versions) with what the ledger says now, and if they differ writes a new
record, with a fresh recovery key, in a public transaction of its own. Genesis is covered the
same way: the first commit after it writes record 1. A rotation writes its record in the
rotation entry itself (``next_record``, called by ``governance``), so no private entry is ever
written under a secret version that no committed record wraps. Only Active members with a
recovery key hold shares. A number threshold above the recovery members can never be met
(governance refuses to set one; a member still Accepted does not count here): no record is
written, and the node says why once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

from consortium_node.common.canonical import canonical_json
from consortium_node.governance.actions import KNOWN
from consortium_node.governance.constitution import parse_constitution
from consortium_node.ledger import EntryKind
from consortium_node.recovery.record import (
    RECORD_KEY,
    T_RECOVERY,
    RecoveryError,
    basis,
    build_record,
    key_digest,
    load_recovery_key,
)
from consortium_node.server.callers import Member
from consortium_node.server.duty import Duty, Submit

log = logging.getLogger("consortium_node")


@functools.lru_cache(maxsize=256)
def _digest(pem: str) -> str:
    """A stored recovery key's digest (cached: the keeper checks after every commit)."""
    return key_digest(load_recovery_key(pem))


def holders(members: Mapping[str, Member]) -> dict[str, str]:
    """The recovery members, who hold shares: Active members with a recovery key (only
    governors may have one), member_id → their key's PEM."""
    return {
        m.member_id: m.recovery_key_pem
        for m in members.values()
        if m.status == "Active" and m.recovery_key_pem
    }


Basis = tuple[int, dict[str, str], list[int]]


def wanted(
    members: Mapping[str, Member], constitution: Mapping[str, Any], versions: list[int]
) -> Basis | None:
    """The basis the ledger asks for now (``record.basis``), or None: no recovery member."""
    digests = {m: _digest(pem) for m, pem in holders(members).items()}
    if not digests:
        return None
    threshold = parse_constitution(constitution, KNOWN).recovery_shares_needed(len(digests))
    return threshold, digests, sorted(versions)


def needed(
    members: Mapping[str, Member], constitution: Mapping[str, Any], current: Any,
    versions: list[int],
) -> Basis | None:  # fmt: skip
    """The basis a new record must have when the ``current`` one does not cover what the
    ledger asks (None: it does, or there is no recovery member)."""
    want = wanted(members, constitution, versions)
    have = basis(current) if isinstance(current, dict) else None
    return None if want is None or want == have else want


def next_record(
    consortium: str,
    members: Mapping[str, Member],
    constitution: Mapping[str, Any],
    current: Any,
    secrets: Mapping[int, bytes],
) -> tuple[dict[str, Any] | None, str | None]:
    """The record the ledger needs now given the ``current`` one, or None; and why none can
    be written when one would be needed (an unreachable threshold)."""
    want = needed(members, constitution, current, list(secrets))
    if want is None:
        return None, None
    threshold, digests, _ = want
    if threshold > len(digests):
        return None, (
            f"recovery threshold {threshold} is above the {len(digests)} Active recovery "
            "member(s): no recovery record can be written"
        )
    keys = {m: load_recovery_key(pem) for m, pem in holders(members).items()}
    epoch = int(current.get("epoch", 0)) + 1 if isinstance(current, dict) else 1
    return build_record(consortium, epoch, secrets, keys, threshold), None


class RecoveryKeeper(Duty):
    """Runs as one task (``run``); ``wake`` after every commit."""

    what = "writing the recovery record"

    def __init__(
        self,
        *,
        consortium: str,
        members: Callable[[], Mapping[str, Member]],
        constitution: Callable[[], Mapping[str, Any]],
        current: Callable[[], Any],
        secrets: Callable[[], Mapping[int, bytes]],
        is_primary: Callable[[], bool],
        submit: Submit,
    ) -> None:
        super().__init__()
        self._consortium = consortium
        self._members, self._constitution = members, constitution
        self._current, self._secrets = current, secrets
        self._is_primary, self._submit = is_primary, submit
        self._reported: str | None = None  # why no record is written, as last logged
        self._settled: object = None  # the inputs last found to need no new record

    def due(self) -> dict[str, Any] | None:
        """The record to write now, or None (not primary, nothing changed, or impossible)."""
        if not self._is_primary():
            return None
        members, constitution = self._members(), self._constitution()
        current, secrets = self._current(), self._secrets()
        inputs = (
            sorted((m.member_id, m.status, m.recovery_key_pem or "") for m in members.values()),
            canonical_json(dict(constitution)),
            sorted(secrets),
            current.get("epoch") if isinstance(current, dict) else None,
        )
        if inputs == self._settled:  # after most commits: nothing it depends on changed
            return None
        record, why = next_record(self._consortium, members, constitution, current, secrets)
        self._settled = inputs if record is None and why is None else None
        if why is not None:
            self._report(why)
        else:
            self._reported = None
        return record

    async def once(self) -> None:
        try:
            record = self.due()
        except RecoveryError as exc:  # a stored key no longer loads: say so, write nothing
            self._report(f"recovery record not written: {exc}")
            return
        if record is None:
            return
        try:
            await self._submit([{T_RECOVERY: {RECORD_KEY: record}}], EntryKind.PUBLIC)
        except Exception as exc:  # not primary any more, or no quorum: the next primary does
            log.warning("recovery record %d not written (%s); retried", record["epoch"], exc)
            return
        log.info(
            "recovery record %d written: %d-of-%d shares, ledger secret versions %s",
            record["epoch"],
            record["threshold"],
            len(record["shares"]),
            record["secret_versions"],
        )
        self.wake()  # check again: something may have changed meanwhile

    def _report(self, why: str) -> None:
        if why != self._reported:
            log.warning("%s", why)
            self._reported = why
