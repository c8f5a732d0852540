"""Which local snapshots a ledger opens from, checked before anything of them is used.

Why a module of its own: the choice has rules that are easy to get wrong, and every file on
the volume is untrusted (the host can edit it). Two uses:

* the *base*: a log whose first chunk starts at ``b + 1 > 1`` (a node that joined, or restarted
  with an empty volume, from the snapshot at ``b``) starts from that snapshot, which must be
  there and verify, or the log cannot be opened (``LedgerCorruptionError``, kind missing); with
  no chunk at all, the newest committed snapshot that verifies is the base (none: index 1);
* the *shortcut*: the newest committed snapshot ``s`` above the base that verifies lets replay
  skim entries up to ``s`` (their leaves and terms only: no decryption, no signature checks,
  no KV) and take the committed state from the snapshot; the skimmed entries must rebuild the
  root the snapshot's signature entry signs, and end with that very entry, or the ledger opens
  again without the shortcut (whatever is wrong is then found and named by a full replay).

Verified means ``snapshot.verify_snapshot``: the evidence receipt verifies with the service
certificate, the bytes match the evidence, the signature entry signs the frontier, the private
tables decrypt with a secret this node holds.
"""

from __future__ import annotations

import logging

from cryptography import x509

from consortium_node.ledger.damage import DamageKind
from consortium_node.ledger.errors import LedgerCorruptionError, LedgerError
from consortium_node.ledger.secrets import LedgerSecrets
from consortium_node.ledger.snapshot import SnapshotState, verify_snapshot
from consortium_node.ledger.snapshot_store import SnapshotStore, StoredSnapshot

log = logging.getLogger("consortium_node.ledger")


def verified(
    stored: StoredSnapshot, certificate: x509.Certificate, secrets: LedgerSecrets
) -> SnapshotState:
    """The checked state of a committed snapshot file; LedgerError says why not."""
    try:
        data = stored.path.read_bytes()
    except OSError as exc:
        raise LedgerError(f"{stored.path} does not read: {exc}") from exc
    state, _ = verify_snapshot(data, stored.receipt(), certificate, secrets.held_aead)
    if state.index != stored.index:
        raise LedgerError(f"{stored.path.name} holds the snapshot at index {state.index}")
    return state


def _newest_verified(
    candidates: list[StoredSnapshot], certificate: x509.Certificate, secrets: LedgerSecrets
) -> SnapshotState | None:
    for stored in reversed(candidates):
        try:
            return verified(stored, certificate, secrets)
        except LedgerError as exc:
            log.error("ledger: snapshot %s not used: %s", stored.path.name, exc)
    return None


def choose(
    snapshots: SnapshotStore,
    first_chunk: tuple[int, str] | None,
    certificate: x509.Certificate,
    secrets: LedgerSecrets,
) -> tuple[SnapshotState | None, SnapshotState | None]:
    """``(base, shortcut)`` for a log whose first chunk is ``(first index, path)`` (None: no
    chunk), as the module docstring says."""
    committed = [s for s in snapshots.list() if s.committed]
    if first_chunk is None:
        return _newest_verified(committed, certificate, secrets), None
    first, path = first_chunk
    base = None
    if first > 1:
        stored = snapshots.get(first - 1)
        try:
            if stored is None or not stored.committed:
                raise LedgerError("it is not on this volume")
            base = verified(stored, certificate, secrets)
        except LedgerError as exc:
            raise LedgerCorruptionError(
                path,
                0,
                f"the log starts at index {first}, after a snapshot at {first - 1}, and that "
                f"snapshot cannot be used: {exc}",
                DamageKind.MISSING,
            ) from exc
    floor = base.index if base is not None else 0
    shortcut = _newest_verified([s for s in committed if s.index > floor], certificate, secrets)
    return base, shortcut
