"""Errors of the ledger layer.

Every error names where the problem is: a chunk file and byte offset for on-disk damage, a
field for malformed write sets and receipts, a transaction id and the current commit for
lookups. Callers map them to HTTP statuses (unknown → 404, not ready → 202, receipt → 400,
secret unavailable → 503).
"""

from __future__ import annotations

from pathlib import Path


class LedgerError(Exception):
    """Base class of every ledger failure."""


class LedgerCorruptionError(LedgerError):
    """The ledger on disk is damaged or forged; the node must not start from it as is."""

    def __init__(self, path: Path | str, offset: int, reason: str, kind: str = "corrupted") -> None:
        self.path = Path(path)
        self.offset = offset
        self.reason = reason
        self.kind = kind  # a damage.DamageKind value: truncated, corrupted or missing
        super().__init__(f"ledger corrupt: {self.path} at byte {offset}: {reason}")


class StoredEntryDamagedError(LedgerError):
    """A durable entry read back while the node runs is not what it replayed or wrote: its
    record fails its CRC or has vanished (``cause`` is the ``LedgerCorruptionError``), or it
    no longer decodes to the entry whose leaf the Merkle tree holds. The disk changed under
    the node; the running state (built from the good bytes) is intact, the file is not."""

    def __init__(self, index: int, reason: str) -> None:
        self.index = index
        self.reason = reason
        super().__init__(f"the entry at index {index} is damaged on disk: {reason}")


class EntryFormatError(LedgerError):
    """An entry payload does not decode (wrapped in LedgerCorruptionError when read from disk)."""


class UnknownSecretVersionError(EntryFormatError):
    """A private entry names a ledger secret version that is not in force at its position (never
    introduced by a rotation entry before it, or superseded): the entry is refused."""


class SecretUnavailableError(LedgerError):
    """This node does not hold the ledger secret version some private data needs.

    Expected on a node left out of a rotation (a Retired node): it keeps the log, verifies its
    tree and signatures, but cannot read private entries encrypted after that rotation.
    """


class UnknownTransactionError(LedgerError):
    """The transaction id is not committed in this ledger (index beyond commit, or wrong term)."""


class HistoryNotHeldError(UnknownTransactionError):
    """The transaction is committed, but before the snapshot this node started from: it does
    not hold that part of the history (``held_from`` is its first entry). Nodes that replayed
    the whole ledger, and backups, hold it."""

    def __init__(self, index: int, held_from: int) -> None:
        self.index = index
        self.held_from = held_from
        super().__init__(
            f"index {index} is committed, but this node started from the snapshot at index "
            f"{held_from - 1} and holds entries from {held_from} on: ask a node that holds "
            "the whole history, or verify it from a backup"
        )


class ReceiptNotReadyError(LedgerError):
    """The transaction is committed but no committed signature covers it yet (retry later)."""


class ReceiptError(LedgerError):
    """A receipt is malformed or does not verify; ``field`` names the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"receipt {field}: {reason}")


class WriteSetError(LedgerError, ValueError):
    """A write set is malformed or uses a table its entry kind may not write."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"write set {field}: {reason}")
