"""Times and durations as users write them.

Times cross process boundaries as RFC 3339 UTC strings with second precision and a ``Z``
suffix (``2026-11-23T20:21:00Z``): one spelling per instant, so they can be signed.
Durations are Go/Kubernetes style (``90s``, ``15m``, ``24h``, ``1h30m``, ``500ms``), the form
users already know from cert-manager's ``duration``/``renewBefore``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC, truncated to whole seconds."""
    return datetime.now(UTC).replace(microsecond=0)


def rfc3339(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with second precision (``...Z``)."""
    if moment.tzinfo is None:
        raise ValueError("rfc3339: naive datetime; use an aware UTC datetime")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime; ValueError says why not."""
    if not isinstance(text, str) or not _RFC3339.match(text):
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp like 2026-01-02T03:04:05Z")
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.astimezone(UTC)


def parse_duration(text: str) -> timedelta:
    """Parse ``30d``, ``1h30m``, ``90s``, ``500ms`` (units d, h, m, s, ms) into a positive
    timedelta."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 24h or 1h30m")
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 24h or 1h30m")
    if total <= 0:
        raise ValueError(f"{text!r}: a duration must be greater than zero")
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """Format a timedelta in the shortest ``XhYmZs`` form (inverse of parse_duration)."""
    seconds = round(value.total_seconds() * 1000) / 1000
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return out + (f"{secs}s" if secs or not out else "")
