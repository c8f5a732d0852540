"""Test-only fault injection: make an enclave produce evidence that must be rejected.

End-to-end tests need to show that a bad node is refused *for the right reason*. Each fault
corrupts one aspect of a quote so that the platform's verifier fails with exactly one
``Reason`` (an emulated platform's attester produces them; hardware cannot):

    wrong-measurement -> MeasurementNotAllowed     stale-timestamp -> Stale
    replayed-nonce    -> NonceMismatch             bad-signature   -> BadSignature
    revoked-chip      -> ChipRevoked

Faults are off unless a caller passes them explicitly (the node only does so when an
explicit test-only setting is present), and an enclave with faults logs a warning.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Fault(StrEnum):
    """One injectable attestation fault; the value is its name in settings."""

    WRONG_MEASUREMENT = "wrong-measurement"
    STALE_TIMESTAMP = "stale-timestamp"
    REPLAYED_NONCE = "replayed-nonce"
    BAD_SIGNATURE = "bad-signature"
    REVOKED_CHIP = "revoked-chip"


def valid_fault_names() -> tuple[str, ...]:
    """Every fault name, in declaration order."""
    return tuple(fault.value for fault in Fault)


def parse_faults(names: Iterable[str] | str) -> frozenset[Fault]:
    """Fault names → ``Fault`` set.

    ``names`` is an iterable of names or one comma-separated string (the form of an
    environment variable, e.g. ``"stale-timestamp,bad-signature"``); surrounding whitespace
    and empty items are ignored. An unknown name raises ``ValueError`` listing the valid ones.
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    faults: set[Fault] = set()
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"fault names must be strings, got {item!r}")
        name = item.strip()
        if not name:
            continue
        try:
            faults.add(Fault(name))
        except ValueError:
            valid = ", ".join(valid_fault_names())
            raise ValueError(f"unknown attestation fault {name!r}; valid faults: {valid}") from None
    return frozenset(faults)
