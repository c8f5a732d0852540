"""Raft's persistent state: the current term and the vote cast in it.

Raft's safety depends on both surviving a crash: a node that forgot its term or its vote
could vote twice in one term and let two leaders be elected. :meth:`PersistentState.save`
therefore returns only once the new state is durable (``write_atomic``: temp file, fsync,
rename, directory fsync), before the caller answers any RPC that depends on it.

File format: canonical JSON ``{"current_term": <int >= 0>, "voted_for": <str | null>}``.
A missing file means a fresh node (term 0, no vote). A file that cannot be read or parsed
raises :class:`RaftStateError`; it is never silently reset, because resetting the term could
let the node vote a second time in a term it already voted in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from consortium_node.common.canonical import canonical_json
from consortium_node.common.files import write_atomic

_KEYS = frozenset({"current_term", "voted_for"})


class RaftStateError(Exception):
    """The persisted Raft state at ``path`` cannot be used; ``reason`` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[RaftStateError], tuple[Path, str]]:
        return (type(self), (self.path, self.reason))


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


class PersistentState:
    """``current_term`` and ``voted_for``, loaded from ``path`` and saved durably to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._term, self._voted_for = self._load()

    @property
    def current_term(self) -> int:
        return self._term

    @property
    def voted_for(self) -> str | None:
        return self._voted_for

    def save(self, term: int, voted_for: str | None) -> None:
        """Persist ``(term, voted_for)`` durably before returning.

        Raises ``ValueError`` if ``term`` is lower than the current term, or if it would change
        a vote already cast in the current term (a node votes at most once per term). Saving
        the state already held is a no-op: nothing is written and nothing is fsynced.
        """
        if term < self._term:
            raise ValueError(f"term: {term} is lower than the current term {self._term}")
        if term == self._term:
            if voted_for == self._voted_for:
                return
            if self._voted_for is not None:
                raise ValueError(
                    f"voted_for: term {term} already has a vote for {self._voted_for!r}; "
                    f"cannot change it to {voted_for!r}"
                )
        write_atomic(self.path, canonical_json({"current_term": term, "voted_for": voted_for}))
        self._term, self._voted_for = term, voted_for

    def _load(self) -> tuple[int, str | None]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0, None
        except OSError as exc:
            raise RaftStateError(self.path, f"cannot read the Raft state ({exc})") from exc
        try:
            value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
        except (UnicodeDecodeError, ValueError) as exc:
            raise RaftStateError(self.path, f"not valid JSON ({exc})") from exc
        if not isinstance(value, dict):
            raise RaftStateError(self.path, f"expected a JSON object, got {type(value).__name__}")
        if set(value) != _KEYS:
            missing = sorted(_KEYS - set(value))
            unexpected = sorted(set(value) - _KEYS)
            raise RaftStateError(self.path, f"fields: missing {missing}, unexpected {unexpected}")
        term = value["current_term"]
        if isinstance(term, bool) or not isinstance(term, int) or term < 0:
            raise RaftStateError(self.path, f"current_term: {term!r} is not a non-negative integer")
        voted_for = value["voted_for"]
        if voted_for is not None and not isinstance(voted_for, str):
            raise RaftStateError(
                self.path, f"voted_for: {voted_for!r} is neither a string nor null"
            )
        return term, voted_for
