"""The last accepted trusted-node list of one consortium, persisted against rollback.

A node (and the operator) must never go back to an older list: the store re-verifies the
persisted envelope at start, never adopts a lower version, refuses a reused version with other
content (VersionReused), and replaces the file atomically so a crash keeps the old or the new.

``offer`` tells a *stale* list (older, but signed by the service key for this consortium) apart
from a refused one, because the mounted ConfigMap routinely lags behind what a node already
adopted from its ledger: that is normal operation, not tampering. A deliberate rollback looks
exactly the same and is just as harmless here, since a stale list is never adopted — so only
the refusals (``trusted_list.REFUSALS``) are worth an alarm. ``accept`` keeps the strict
contract for callers that must not go on with an older list (Rollback).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509

from consortium_node.common.files import write_atomic
from consortium_node.identity.errors import (
    ListRejection,
    TrustedListError,
    TrustedListStoreError,
)
from consortium_node.identity.trusted_list import (
    TrustedNodeList,
    _as_certificate,
    _reject,
    check_not_older,
    verify_trusted_list,
)


class Outcome(StrEnum):
    """What became of a list offered to the store that verified."""

    ADOPTED = "adopted"  # newer than the held list (or the first): persisted, now current
    UNCHANGED = "unchanged"  # the held version with the same payload (maybe re-signed)
    STALE = "stale"  # older than the held list: validly signed, never adopted


@dataclass(frozen=True)
class Offer:
    """The outcome of ``TrustedListStore.offer``; ``held`` is the list the store holds after."""

    outcome: Outcome
    offered: TrustedNodeList
    held: TrustedNodeList


class TrustedListStore:
    """The last accepted list of one consortium, persisted so a restart cannot be rolled back.

    The file holds the accepted envelope bytes, replaced atomically (temp file, fsync, rename,
    fsync directory). It is re-verified on load; a file that does not verify raises
    TrustedListStoreError instead of being ignored or overwritten.
    """

    def __init__(
        self, path: Path, service_certificate: x509.Certificate | str | bytes, consortium: str
    ) -> None:
        self.path = Path(path)
        self.service_certificate = _as_certificate(service_certificate)
        self.consortium = consortium
        self._lock = threading.Lock()
        self._current: TrustedNodeList | None = None
        self._envelope: bytes | None = None
        self.load()

    @property
    def current(self) -> TrustedNodeList | None:
        return self._current

    @property
    def current_envelope(self) -> bytes | None:
        return self._envelope

    def _verify(self, envelope: bytes, min_version: int | None) -> TrustedNodeList:
        return verify_trusted_list(
            envelope, self.service_certificate, consortium=self.consortium, min_version=min_version
        )

    def load(self) -> TrustedNodeList | None:
        """(Re)read the persisted envelope; None if nothing was accepted yet."""
        with self._lock:
            try:
                envelope = self.path.read_bytes()
            except FileNotFoundError:
                self._current, self._envelope = None, None
                return None
            except OSError as exc:
                raise TrustedListStoreError(f"trusted-node list {self.path}: {exc}") from exc
            try:
                lst = self._verify(envelope, None)
            except TrustedListError as exc:
                raise TrustedListStoreError(
                    f"trusted-node list {self.path}: the persisted list does not verify ({exc}); "
                    "refusing to start from it"
                ) from exc
            self._current, self._envelope = lst, envelope
            return lst

    def offer(self, envelope: bytes) -> Offer:
        """Verify ``envelope`` and adopt it if newer; raise TrustedListError if it is refused.

        Refused (store unchanged): anything ``verify_trusted_list`` rejects, and the held
        version with another payload (VersionReused). An older list that verifies is STALE:
        not an error, and the store keeps the newer list.
        """
        with self._lock:
            current = self._current
            lst = self._verify(envelope, None)
            if current is not None and lst.version < current.version:
                return Offer(Outcome.STALE, lst, current)
            if current is not None and lst.version == current.version:
                if lst.to_payload() == current.to_payload():
                    return Offer(Outcome.UNCHANGED, lst, current)
                _reject(
                    ListRejection.VERSION_REUSED,
                    f"version: {lst.version} was already accepted with different content",
                )
            write_atomic(self.path, bytes(envelope), mode=0o644)
            self._current, self._envelope = lst, bytes(envelope)
            return Offer(Outcome.ADOPTED, lst, lst)

    def accept(self, envelope: bytes) -> TrustedNodeList:
        """Verify and persist a newer list; raise TrustedListError leaving the store unchanged.

        As ``offer``, but an older list is an error too (Rollback), for callers that must not
        go on with a list older than the held one. The same version with the same payload is
        an idempotent no-op (the stored envelope is kept even if the signature bytes differ,
        as ECDSA signatures are randomised).
        """
        offer = self.offer(envelope)
        if offer.outcome is Outcome.STALE:
            check_not_older(offer.offered, offer.held.version)
        return offer.held
