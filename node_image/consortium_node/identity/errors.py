"""Errors of the identity layer; each message names what was checked and why it failed."""

from __future__ import annotations

from enum import StrEnum


class IdentityError(Exception):
    """Base class for key, certificate, COSE and trusted-list failures."""


class KeyMaterialError(IdentityError):
    """A key could not be loaded, has an unsupported type, or a signature is invalid."""


class CertificateError(IdentityError):
    """A certificate does not parse, has the wrong key type, is expired or not issued as claimed."""


class CoseError(IdentityError):
    """A COSE_Sign1 envelope is malformed, uses an unsupported algorithm or does not verify."""


class CoseSignatureError(CoseError):
    """The COSE_Sign1 signature does not verify with the given key (tampered or other signer)."""


class CoseKeyMismatchError(CoseError):
    """The envelope's ``alg`` cannot have been produced by the given key's type."""


class ListRejection(StrEnum):
    """Why a list was refused; the value is the ``reason`` of TrustedListError."""

    MALFORMED = "Malformed"  # not COSE_Sign1 / bad payload field (detail names the field)
    BAD_SIGNATURE = "BadSignature"  # does not verify with the service key (tampered)
    WRONG_SIGNER = "WrongSigner"  # kid or key type is not the service certificate's key
    WRONG_SERVICE = "WrongService"  # payload names another service certificate or consortium
    ROLLBACK = "Rollback"  # version lower than the last accepted one (else valid: stale)
    VERSION_REUSED = "VersionReused"  # same version as the last accepted, different content


class TrustedListError(IdentityError):
    """A trusted-node list was rejected; ``reason`` is a ListRejection, ``detail`` names the field.

    The message reads ``"<reason>: <detail>"`` (e.g. ``"Malformed: nodes[1].status: ..."``).
    """

    def __init__(self, reason: ListRejection, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[TrustedListError], tuple[ListRejection, str]]:
        return (type(self), (self.reason, self.detail))


class TrustedListStoreError(IdentityError):
    """The persisted trusted-node list cannot be read or no longer verifies (never ignored)."""


class WrapError(IdentityError):
    """A wrapped secret cannot be produced or opened (wrong key or context, altered blob)."""
