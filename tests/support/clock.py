"""A fake clock for unit tests: time moves only when the test moves it.

Code under test that takes a ``clock: Callable[[], float]`` (``time.monotonic`` or ``time.time``
in production) gets a ``FakeClock`` instead, so expiry, throttling and timers are checked
exactly and without sleeping. Only differences between readings matter to such code, so the
start value is arbitrary (positive, as a real clock's reading would be).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeClock:
    """Call it for the current time in seconds; move it forward with ``advance`` (seconds),
    ``advance_ms`` (milliseconds) or by assigning ``now``."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def advance_ms(self, ms: float) -> None:
        self.now += ms / 1000.0
