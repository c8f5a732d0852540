"""Waiting in tests and benchmarks: poll a check until it holds or a deadline passes.

Nothing waits with a fixed sleep. ``wait_for`` calls ``check`` every ``interval`` seconds until
it returns a truthy value (which it returns) or ``timeout`` seconds have passed; an exception
from ``check`` counts as "not yet". At the deadline it raises ``WaitTimeoutError`` naming what
was awaited, with the last value returned and the last exception raised, for the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, TypeVar

T = TypeVar("T")

_NOTHING = object()


class WaitTimeoutError(AssertionError, TimeoutError):
    """A wait that ran out of time: a test failure (``AssertionError``) and a timeout
    (``TimeoutError``), so a caller may catch it as either."""


def wait_for(
    what: str,
    check: Callable[..., T | Literal[False] | None],  # ...: also ``lambda n=node: ...``
    timeout: float,
    *,
    interval: float = 0.5,
) -> T:
    """Poll ``check`` until it returns something truthy and return that; at ``timeout`` seconds
    raise ``WaitTimeoutError`` naming ``what`` (read as "timed out waiting for <what>")."""
    deadline = time.monotonic() + timeout
    last_value: object = _NOTHING
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as exc:
            last_error = exc
        else:
            if value:
                return value
            last_value = value
        time.sleep(interval)
    seen = [f"last value: {last_value!r}"] if last_value is not _NOTHING else []
    if last_error is not None:
        seen.append(f"last error: {last_error!r}")
    raise WaitTimeoutError(
        f"timed out after {timeout:g}s waiting for {what}"
        + (f" ({'; '.join(seen)})" if seen else " (never checked)")
    )
