"""The last accepted trusted-node list of one consortium, persisted against rollback.

A node (and the operator) must never go back to an older list: the store re-verifies the
persisted envelope at start, refuses lower versions (Rollback) and a reused version with other
content (VersionReused), and replaces the file atomically so a crash keeps the old or the new.
"""

from __future__ import annotations

import threading
from pathlib import Path

from cryptography import x509

from consortium_node.common.files import write_atomic
from consortium_node.identity.errors import TrustedListError, TrustedListStoreError
from consortium_node.identity.trusted_list import (
    ListRejection,
    TrustedNodeList,
    _as_certificate,
    _reject,
    verify_trusted_list,
)


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

    def accept(self, envelope: bytes) -> TrustedNodeList:
        """Verify and persist a newer list; raise TrustedListError leaving the store unchanged.

        The same version with the same payload is an idempotent no-op (the stored envelope is
        kept even if the signature bytes differ, as ECDSA signatures are randomised).
        """
        with self._lock:
            current = self._current
            lst = self._verify(envelope, current.version if current else None)
            if current is not None and lst.version == current.version:
                if lst.to_payload() == current.to_payload():
                    return current
                _reject(
                    ListRejection.VERSION_REUSED,
                    f"version: {lst.version} was already accepted with different content",
                )
            write_atomic(self.path, bytes(envelope), mode=0o644)
            self._current, self._envelope = lst, bytes(envelope)
            return lst
