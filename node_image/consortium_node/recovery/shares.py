"""Shamir k-of-n sharing of the 32-byte recovery key.

Why: the recovery key wraps every ledger secret version (``record``). No single member may
hold it, yet any ``threshold`` of the recovery members together must be able to rebuild it
after every node lost its sealed state (CCF's recovery shares). Shamir's scheme gives exactly
that: fewer than ``threshold`` shares are consistent with every possible key, so they reveal
nothing about it.

Field arithmetic is not ours: PyCryptodome's ``Crypto.Protocol.SecretSharing.Shamir``
(GF(2^128), reduction polynomial x^128 + x^7 + x^2 + x + 1), in its ``ssss=True`` mode,
which is compatible with B. Poettering's ``ssss`` tool (tested against a share set made with
``ssss-split``). It shares 16-byte secrets, so the key is shared as two halves with the same
x-coordinates: share ``i`` is the pair of evaluations at ``x = i``.

Share byte format (``Share.to_bytes``, 33 bytes)::

    offset  length  field
    0       1       index i, 1..255 (the x-coordinate; 0 would be the key itself)
    1       16      y of the first half (key bytes 0..15) at x = i
    17      16      y of the second half (key bytes 16..31) at x = i

Errors are ``ShareError`` with a ``reason`` (``ShareFormat``, ``DuplicateShare``,
``NotEnoughShares``); a wrong share is *not* detectable here (any set of points interpolates
to some key): ``record`` checks each share against its commitment before combining, and the
combined key against the AES-GCM tag of the wrapped secrets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from Crypto.Protocol.SecretSharing import Shamir

KEY_SIZE = 32
HALF = 16
SHARE_SIZE = 1 + KEY_SIZE
MAX_SHARES = 255  # one byte of x-coordinate


class ShareError(ValueError):
    """A share, or a set of shares, that cannot be used; ``reason`` names why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class Share:
    """The evaluation of both halves' polynomials at ``x = index``."""

    index: int
    value: bytes  # first half's y || second half's y

    def __post_init__(self) -> None:
        if not 1 <= self.index <= MAX_SHARES:
            raise ShareError("ShareFormat", f"index {self.index} is not in 1..{MAX_SHARES}")
        if len(self.value) != KEY_SIZE:
            raise ShareError("ShareFormat", f"a share value is {KEY_SIZE} bytes")

    def to_bytes(self) -> bytes:
        return bytes([self.index]) + self.value

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        if len(data) != SHARE_SIZE:
            raise ShareError("ShareFormat", f"a share is {SHARE_SIZE} bytes, not {len(data)}")
        return cls(data[0], bytes(data[1:]))


def check_threshold(threshold: int, count: int) -> None:
    """``1 <= threshold <= count <= MAX_SHARES``, or ``ShareError`` naming which is wrong."""
    if not 1 <= count <= MAX_SHARES:
        raise ShareError("ShareFormat", f"{count} shares: must be 1..{MAX_SHARES}")
    if not 1 <= threshold <= count:
        raise ShareError("ShareFormat", f"threshold {threshold} must be in 1..{count}")


def split(key: bytes, threshold: int, count: int) -> list[Share]:
    """``count`` shares of ``key`` (32 bytes), any ``threshold`` of which rebuild it; share
    ``i`` has index ``i`` (1-based). Fresh random coefficients at every call."""
    if len(key) != KEY_SIZE:
        raise ShareError("ShareFormat", f"the recovery key is {KEY_SIZE} bytes")
    check_threshold(threshold, count)
    if threshold == 1:  # Shamir needs k >= 2; with k = 1 every share is the key itself
        return [Share(i, key) for i in range(1, count + 1)]
    low = Shamir.split(threshold, count, key[:HALF], ssss=True)
    high = Shamir.split(threshold, count, key[HALF:], ssss=True)
    return [Share(i, a + b) for (i, a), (j, b) in zip(low, high, strict=True) if i == j]


def combine(shares: Sequence[Share], threshold: int) -> bytes:
    """The key the first ``threshold`` of ``shares`` interpolate to (more are ignored)."""
    if threshold < 1:
        raise ShareError("ShareFormat", f"threshold {threshold} must be at least 1")
    indices = [s.index for s in shares]
    if len(set(indices)) != len(indices):
        raise ShareError("DuplicateShare", f"two shares have the same index ({indices})")
    if len(shares) < threshold:
        raise ShareError("NotEnoughShares", f"{len(shares)} of the {threshold} shares needed")
    used = list(shares)[:threshold]
    if threshold == 1:
        return used[0].value
    low = Shamir.combine([(s.index, s.value[:HALF]) for s in used], ssss=True)
    high = Shamir.combine([(s.index, s.value[HALF:]) for s in used], ssss=True)
    return low + high
