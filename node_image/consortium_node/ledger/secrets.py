"""Versioned ledger secrets: which secret encrypts, and which decrypts, each private entry.

Why: governance can rotate the ledger secret (``rotate_ledger_secret``, modelled on CCF). Old
private entries must stay readable, so a node keeps every version it holds; new ones must use
the newest. The ledger itself says which version is in force where: version 1 from index 1,
and each *rotation entry* (a PUBLIC entry writing ``T_LEDGER_SECRETS``) introduces the next
version from the index after it. That schedule is public and covers every appended entry,
committed or not (like the public view), so it is rolled back with a truncated suffix.

Rotation record, ``T_LEDGER_SECRETS[str(version)]`` (one per rotation entry, nothing else in
that table)::

    {"version": v, "applies_from": i, "wrapped": {node_id: base64(wrap blob), ...}}

``v`` is the previous version + 1, ``i`` the rotation entry's own index + 1, and ``wrapped``
the new secret encrypted to each recipient node's attested key (``identity/wrap.py``; the
context is the server's business, see ``unwrap`` below). No secret is ever in clear.

Which versions a node *holds* is separate from the schedule: version 1 comes from genesis or
join, later ones from unwrapping its own copy in a rotation entry (on append, replication and
replay alike) or from a joiner's bundle. A held version remembers the txid of the rotation
entry it belongs to (``origin``): a joiner's bundled copy is only used if its rotation entry is
the one in this log (same term and index: the same entry, by Raft's log matching). A node left
out of a rotation (Retired) does not crash: it keeps the schedule and the log, and reading a
private entry it cannot decrypt raises ``SecretUnavailableError``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consortium_node.ledger.entries import SECRET_SIZE, TxId, WriteSet, check_secret_version
from consortium_node.ledger.errors import (
    EntryFormatError,
    LedgerError,
    SecretUnavailableError,
    UnknownSecretVersionError,
)

T_LEDGER_SECRETS = "public:consortium.ledger_secrets"
RECORD_FIELDS = frozenset({"version", "applies_from", "wrapped"})

# (version, wrapped) → this node's secret, or None if the node is not a recipient. Raises
# EntryFormatError if a copy addressed to this node does not open.
Unwrap = Callable[[int, Mapping[str, str]], bytes | None]


@dataclass(frozen=True)
class HeldSecret:
    """A secret this node holds; ``origin`` is its rotation entry (None for version 1)."""

    version: int
    secret: bytes
    origin: TxId | None

    def __post_init__(self) -> None:
        check_secret_version(self.version)
        if not isinstance(self.secret, bytes) or len(self.secret) != SECRET_SIZE:
            raise LedgerError(f"ledger secret version {self.version} must be {SECRET_SIZE} bytes")
        if (self.origin is None) != (self.version == 1):
            raise LedgerError("only ledger secret version 1 has no rotation entry")


@dataclass(frozen=True)
class Rotation:
    """Version ``version`` is in force from index ``applies_from`` (rotation entry ``txid``)."""

    version: int
    txid: TxId
    applies_from: int


def rotation_record(version: int, applies_from: int, wrapped: Mapping[str, str]) -> WriteSet:
    """The write set of a rotation entry (see the module docstring)."""
    record = {"version": version, "applies_from": applies_from, "wrapped": dict(wrapped)}
    return {T_LEDGER_SECRETS: {str(version): record}}


def _parse_record(txid: TxId, rows: Any, expected: int) -> Mapping[str, str]:
    """The ``wrapped`` map of the rotation entry ``txid``; EntryFormatError if malformed."""
    where = f"rotation entry {txid}: {T_LEDGER_SECRETS}"
    if not isinstance(rows, dict) or list(rows) != [str(expected)]:
        keys = sorted(rows) if isinstance(rows, dict) else rows
        raise EntryFormatError(f"{where} must hold exactly version {expected}, got {keys!r}")
    record = rows[str(expected)]
    if not isinstance(record, dict) or set(record) != RECORD_FIELDS:
        fields = sorted(RECORD_FIELDS)
        raise EntryFormatError(f"{where}[{expected}] must be an object with {fields}")
    if record["version"] != expected or type(record["version"]) is not int:
        raise EntryFormatError(f"{where}[{expected}].version is {record['version']!r}")
    if record["applies_from"] != txid.index + 1 or type(record["applies_from"]) is not int:
        raise EntryFormatError(
            f"{where}[{expected}].applies_from is {record['applies_from']!r}, not the next "
            f"index {txid.index + 1}"
        )
    wrapped = record["wrapped"]
    if not isinstance(wrapped, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in wrapped.items()
    ):
        raise EntryFormatError(f"{where}[{expected}].wrapped must map node ids to strings")
    return wrapped


class LedgerSecrets:
    """The schedule of secret versions in one ledger and the versions this node holds.

    ``on_learn`` is called with every secret newly held through a rotation entry (the server
    seals it). Owned by one ``Ledger``; not thread-safe.
    """

    def __init__(
        self,
        first: bytes | None,
        held: Iterable[HeldSecret] = (),
        *,
        unwrap: Unwrap | None = None,
        on_learn: Callable[[HeldSecret], None] | None = None,
    ) -> None:
        # ``first`` None: this node holds no version yet (a recovery node rebuilding the
        # public state before the members' shares bring the secrets back): every private
        # entry is committed unread, and private reads fail until it reopens with them.
        self._held: dict[int, HeldSecret] = {} if first is None else {1: HeldSecret(1, first, None)}
        for item in held:
            if item.version == 1:
                raise LedgerError("ledger secret version 1 is given as ``first``")
            self._held[item.version] = item
        self._aeads: dict[int, AESGCM] = {}
        self._rotations: list[Rotation] = []
        self._starts: list[int] = []  # applies_from of each rotation, ascending
        self._unwrap = unwrap
        self._on_learn = on_learn

    # -- the schedule -------------------------------------------------------------------

    @property
    def current_version(self) -> int:
        """The newest version in the log: the one the next private entry uses."""
        return self._rotations[-1].version if self._rotations else 1

    @property
    def rotations(self) -> list[Rotation]:
        return list(self._rotations)

    def version_at(self, index: int) -> int:
        """The version in force at ``index`` (per the rotation entries appended so far)."""
        position = bisect.bisect_right(self._starts, index)
        return self._rotations[position - 1].version if position else 1

    def observe(self, txid: TxId, writes: WriteSet) -> None:
        """Book the PUBLIC entry ``txid`` (appended in log order): a rotation entry introduces
        the next version and, if this node is a recipient, its secret."""
        rows = writes.get(T_LEDGER_SECRETS)
        if rows is None:
            return
        if self._rotations and txid.index <= self._rotations[-1].txid.index:
            raise LedgerError(f"rotation entry {txid} is not after {self._rotations[-1].txid}")
        version = self.current_version + 1
        wrapped = _parse_record(txid, rows, version)
        secret = self._unwrap(version, wrapped) if self._unwrap is not None else None
        known = self._held.get(version)
        if secret is not None:
            learned = HeldSecret(version, secret, txid)
            if known != learned:
                self._held[version] = learned
                self._aeads.pop(version, None)
                if self._on_learn is not None:
                    self._on_learn(learned)
        elif known is not None and known.origin != txid:
            del self._held[version]  # a bundled copy from a rotation this log does not hold
            self._aeads.pop(version, None)
        self._rotations.append(Rotation(version, txid, txid.index + 1))
        self._starts.append(txid.index + 1)

    def truncate(self, last_kept: int) -> None:
        """Forget rotations whose entry is beyond ``last_kept`` (a truncated log suffix).

        Held secrets stay: their ``origin`` decides whether they serve a later rotation."""
        keep = bisect.bisect_right([r.txid.index for r in self._rotations], last_kept)
        del self._rotations[keep:]
        del self._starts[keep:]

    # -- the secrets --------------------------------------------------------------------

    def held(self) -> list[HeldSecret]:
        """Every version this node holds, oldest first."""
        return [self._held[v] for v in sorted(self._held)]

    def by_version(self) -> dict[int, bytes]:
        """Every secret this node holds, version → secret, oldest first."""
        return {v: self._held[v].secret for v in sorted(self._held)}

    def holds(self, version: int) -> bool:
        return version in self._held

    def held_aead(self, version: int) -> AESGCM:
        """The cipher of a held version whatever the schedule says (a snapshot is checked
        before the rotations it records are booked); SecretUnavailableError if not held."""
        held = self._held.get(version)
        if held is None:
            raise SecretUnavailableError(f"this node does not hold ledger secret version {version}")
        return AESGCM(held.secret)

    def restore(self, rows: Mapping[str, tuple[Any, int, int]]) -> None:
        """Book the rotations a snapshot's ``T_LEDGER_SECRETS`` table records (``version →
        (record, term, index of its rotation entry)``), in version order, as replay would."""
        for version in sorted(rows, key=int):
            record, term, index = rows[version]
            self.observe(TxId(term, index), {T_LEDGER_SECRETS: {version: record}})

    def aead(self, version: int) -> AESGCM:
        """The cipher of ``version``; UnknownSecretVersionError if the log never introduced
        it, SecretUnavailableError if this node does not hold it."""
        secret = self._secret(version)
        cached = self._aeads.get(version)
        if cached is None:
            cached = self._aeads[version] = AESGCM(secret)
        return cached

    def parts_cipher(self, version: int) -> PartsCipher:
        """``aead(version)``'s cipher, for data in parts (a snapshot's state); same errors."""
        return PartsCipher(self._secret(version))

    def _secret(self, version: int) -> bytes:
        """The secret of ``version``, with ``aead``'s errors."""
        if not 1 <= version <= self.current_version:
            raise UnknownSecretVersionError(
                f"ledger secret version {version} is unknown: the log introduces versions up "
                f"to {self.current_version}"
            )
        held = self._held.get(version)
        if held is None:
            raise SecretUnavailableError(
                f"this node does not hold ledger secret version {version} (it was not a "
                "recipient of that rotation): private entries encrypted with it are unreadable "
                "here"
            )
        return held.secret

    def encrypting(self) -> tuple[int, AESGCM]:
        """The current version and its cipher, for the next private entry."""
        version = self.current_version
        return version, self.aead(version)


class PartsCipher:
    """AES-256-GCM over data given in parts, without joining them: ``encrypt_parts(nonce,
    parts, aad)`` is ``AESGCM(secret).encrypt(nonce, b"".join(parts), aad)`` in parts (the
    ciphertext of each, then the 16-byte tag). Why: one ``AESGCM.encrypt`` of a whole state
    holds the GIL throughout (measured: ~20 ms for 40 MB), stalling the event loop of a node
    whose snapshot encoder runs on a worker thread; a call per part holds it for one part."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def encrypt_parts(self, nonce: bytes, parts: Iterable[bytes], aad: bytes) -> list[bytes]:
        encryptor = Cipher(algorithms.AES(self._secret), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(aad)
        sealed = [encryptor.update(part) for part in parts]
        sealed.append(encryptor.finalize())
        sealed.append(encryptor.tag)
        return sealed
