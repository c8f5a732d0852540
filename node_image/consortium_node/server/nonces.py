"""Single-use, expiring nonces for attestation challenges (DESIGN section 5, steps 5 and 6).

The primary hands a fresh nonce to a joining (or re-attesting) node, which must return a
quote over it. :class:`NonceRegistry` makes each nonce good for exactly one answer within its
time to live, so a recorded quote cannot be replayed.

Memory is bounded: at most ``capacity`` nonces are remembered; issuing one more evicts the
oldest (an evicted nonce then reads as ``Unknown``). Expired nonces are pruned lazily, on
``issue()`` and ``consume()``, but only one further ``ttl`` after their expiry, so that a late
answer within that window is told ``Expired`` (and a replay ``Reused``) rather than
``Unknown``. Outcomes therefore depend only on the clock and on eviction, never on when the
last prune happened. Every outcome other than ``Ok`` refuses the request.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

NONCE_LENGTH = 32


class NonceCheck(StrEnum):
    """Outcome of :meth:`NonceRegistry.consume`."""

    OK = "Ok"
    UNKNOWN = "Unknown"  # never issued here, evicted at capacity, or long expired
    REUSED = "Reused"  # already consumed: a replay
    EXPIRED = "Expired"  # issued, never consumed, but its time to live has passed


@dataclass(slots=True)
class _Entry:
    expires_at: float
    consumed: bool = False


class NonceRegistry:
    """Issue nonces and accept each one once, before it expires.

    ``clock`` returns seconds on a monotonic scale (injectable for tests). Not thread-safe;
    the node uses it from the event loop only.
    """

    def __init__(
        self,
        ttl: timedelta | float,
        capacity: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
        if not seconds > 0:
            raise ValueError(f"ttl: {seconds} seconds; must be positive")
        if capacity < 1:
            raise ValueError(f"capacity: {capacity}; must be at least 1")
        self.ttl = seconds
        self.capacity = capacity
        self._clock = clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()  # in issue order

    def __len__(self) -> int:
        """How many nonces are remembered now (consumed and recently expired ones included)."""
        return len(self._entries)

    def issue(self) -> bytes:
        """A fresh 32-byte random nonce, valid for one :meth:`consume` within ``ttl``."""
        now = self._clock()
        self._prune(now)
        while len(self._entries) >= self.capacity:
            self._entries.popitem(last=False)
        nonce = secrets.token_bytes(NONCE_LENGTH)
        self._entries[nonce] = _Entry(expires_at=now + self.ttl)
        return nonce

    def consume(self, nonce: bytes) -> NonceCheck:
        """Use ``nonce`` up: ``Ok`` the first time within its ``ttl``, never again."""
        now = self._clock()
        self._prune(now)
        entry = self._entries.get(nonce)
        if entry is None:
            return NonceCheck.UNKNOWN
        if entry.consumed:
            return NonceCheck.REUSED
        if now >= entry.expires_at:
            return NonceCheck.EXPIRED
        entry.consumed = True
        return NonceCheck.OK

    def _prune(self, now: float) -> None:
        """Forget nonces expired for more than a further ``ttl`` (the oldest come first)."""
        # The clock is monotonic and ttl constant, so issue order is expiry order (a clock
        # that steps back only delays pruning; capacity still bounds memory).
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if now < oldest.expires_at + self.ttl:
                break
            self._entries.popitem(last=False)
