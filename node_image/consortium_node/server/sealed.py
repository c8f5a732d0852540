"""Secrets at rest: sealed by the TEE to this chip and this code measurement.

Files live in ``<data_dir>/sealed/<label>.sealed`` and are written atomically (temp file, fsync,
rename, fsync of the directory), so a crash leaves either the old or the new blob, never half.
Unsealing fails loudly when the code measurement changed: a modified node cannot read the
secrets of the node it replaced.

A TEE that derives no sealing key (SEV-SNP through configfs-tsm) gets a store that keeps
secrets in memory only: nothing secret touches the disk, and after a restart the node's
identity is gone (``IdentityLostError``), so it keeps its old data aside and joins afresh as
a new node, which the consortium admits by attestation like any other.
"""

from __future__ import annotations

from pathlib import Path

from consortium_node.attestation import Attester, UnsealError
from consortium_node.common.files import write_atomic


class SealedStoreError(RuntimeError):
    """A sealed secret exists but cannot be unsealed (other code, other chip, corrupt)."""


class IdentityLostError(SealedStoreError):
    """The sealed node key is gone while the rest of the node's data is there: the identity
    that data belongs to can never be used again (a storage fault)."""


class SealedStore:
    """Seal/unseal named secrets with the enclave's sealing key."""

    def __init__(self, directory: Path, enclave: Attester) -> None:
        self.directory, self.enclave = directory, enclave
        # None: sealed to disk; a dict: this TEE cannot seal, secrets live in memory only.
        self.memory: dict[str, bytes] | None = None if enclave.can_seal else {}

    def _path(self, label: str) -> Path:
        return self.directory / f"{label}.sealed"

    def exists(self, label: str) -> bool:
        if self.memory is not None:
            return label in self.memory
        return self._path(label).exists()

    def put(self, label: str, secret: bytes) -> None:
        if self.memory is not None:
            self.memory[label] = secret
            return
        write_atomic(self._path(label), self.enclave.seal(secret, label))

    def get(self, label: str) -> bytes:
        if self.memory is not None:
            if label not in self.memory:
                raise SealedStoreError(f"{label}: not held (this TEE keeps no sealed secrets)")
            return self.memory[label]
        path = self._path(label)
        try:
            return self.enclave.unseal(path.read_bytes(), label)
        except UnsealError as exc:
            raise SealedStoreError(
                f"cannot unseal {path}: {exc} (was it sealed by another code measurement "
                f"or another chip? this node measures {self.enclave.measurement[:16]}…)"
            ) from exc
