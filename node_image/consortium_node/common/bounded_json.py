"""Bounded JSON: the one way the node turns bytes it did not write into JSON values.

Why: Python's ``json`` is unbounded where a server needs bounds. Nesting recurses in the
decoder (``RecursionError`` past ~1,000 levels, and every recursive walker of the value fails
sooner); a number of more than 4,300 digits raises a bare ``ValueError`` (the interpreter's
int-digits limit); ``NaN``/``Infinity`` are accepted although they are not JSON; an escaped
lone surrogate (``"\\ud800"``) decodes into a string that cannot be encoded to UTF-8 again.
Each reached the HTTP layer as a 500. ``loads`` refuses all of them, and any other malformed
input, with one exception, ``BoundedJSONError(path, reason)``, whose ``path`` names where in
the document it happened (``body.transactions[3].writes.a[0]``): the server answers it as a
400 naming that field, governance as a ``GovernanceError``.

How, without recursion: a filter at C speed (strings cut out by a regular expression, then
byte translations and a running sum of bracket depths) passes the usual document straight to
``json.loads``; a document it cannot clear is scanned token by token (strings skipped whole),
which tracks the path and refuses at the first limit crossed. ``json.loads`` then decodes the
checked text; a syntax error is located by scanning the text up to the error's position.

The limits, one place for every JSON the node parses:

* ``MAX_DEPTH`` = 64 nested arrays/objects (a top-level object is depth 1). Deep enough for
  any application value (it is .NET System.Text.Json's default), far enough below Python's
  recursion limit (1,000) that every recursive walker of a decoded value (``canonical_json``,
  ``json.dumps``) is safe.
* ``MAX_NUMBER_CHARS`` = 32 characters per number token: any 64-bit integer (at most 20) and
  the shortest text of any double (at most 24) fit; a number that does not is an attack or a
  mistake, and would otherwise cost the int-digits limit or a quadratic conversion.
* Size is bounded by the caller before decoding: request bodies by the node configuration's
  ``limits.max_body_bytes`` (aiohttp answers 413), governance documents by
  ``MAX_DOCUMENT_BYTES``.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64
MAX_NUMBER_CHARS = 32
_KEY_SHOWN = 32  # characters of an object key shown in a path

# A whole string, possessively (no backtracking: an unterminated one costs one linear pass).
_STRING = r'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
# One token per match; whitespace (and anything else no JSON token starts with) is skipped.
# A lone quote is what is left of an unterminated string: the scan stops there.
_TOKEN = re.compile(_STRING + r'|[\[\]{},:]|[^\s"\[\]{},:]+|"', re.DOTALL)
_STRINGS = re.compile(_STRING, re.DOTALL)
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
_NOT_NUMBERS = frozenset({"NaN", "Infinity", "-Infinity"})
_LITERALS = frozenset({"true", "false", "null"})
_HIGH, _LOW = range(0xD800, 0xDC00), range(0xDC00, 0xE000)
# The filter's byte tables (``_plainly_within_limits``).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_NUMBER_RUNS = bytes(ord("#") if c in b"-+.0123456789eE" else ord(" ") for c in range(256))
_EXPONENTS = bytes.maketrans(b".0123456789eE", b"00000000000ee")
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


class BoundedJSONError(ValueError):
    """The bytes are not JSON within the limits: ``path`` says where, ``reason`` why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class _Frame:
    """One open array or object: the index of the current element, or the current key (its
    raw token, decoded only if a path is shown; None while a key is awaited)."""

    __slots__ = ("index", "is_object", "key")
    key: str | None

    def __init__(self, is_object: bool) -> None:
        self.is_object, self.index, self.key = is_object, 0, None


def _shown_key(token: str) -> str:
    """A key as a path shows it: decoded, and cut short (a path is echoed to clients)."""
    try:
        key = json.loads(token) if "\\" in token else token[1:-1]
    except ValueError:
        key = token[1:-1]
    key = key.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate, shown
    return key if len(key) <= _KEY_SHOWN else key[:_KEY_SHOWN] + "…"


def _path(root: str, stack: list[_Frame]) -> str:
    """The JSON path of the value being read when the scan stopped."""
    parts = [root]
    for frame in stack:
        if not frame.is_object:
            parts.append(f"[{frame.index}]")
        elif frame.key is not None:
            parts.append("." + _shown_key(frame.key))
    return "".join(parts)


def _number_problem(token: str) -> str | None:
    """Why a bare token that is (or claims to be) a number is refused; None if it is not."""
    if token in _NOT_NUMBERS:
        return f"{token} is not a JSON number"
    if token[0] not in "-0123456789":
        return None  # not a number at all: the decoder names the syntax error
    if len(token) > MAX_NUMBER_CHARS:
        return f"a number of {len(token)} characters; the limit is {MAX_NUMBER_CHARS}"
    if any(c in token for c in ".eE"):
        try:
            if not math.isfinite(float(token)):
                return f"{token} is out of range for a number"
        except ValueError:
            return None  # not a number at all: the decoder names the syntax error
    return None


def _surrogate_problem(token: str) -> str | None:
    """Why a string token is refused: an escaped surrogate that is not half of a pair (the
    decoder would keep it, and the string could never be written as UTF-8)."""
    escapes = [(m.start(), m.end(), m.group(1)) for m in _ESCAPE.finditer(token)]
    codes = [int(h, 16) if h else -1 for _, _, h in escapes]
    i = 0
    while i < len(escapes):
        code = codes[i]
        paired = (
            code in _HIGH
            and i + 1 < len(escapes)
            and escapes[i + 1][0] == escapes[i][1]
            and codes[i + 1] in _LOW
        )
        if paired:
            i += 2
            continue
        if code in _HIGH or code in _LOW:
            return f"\\u{code:04x} is a lone surrogate, not a character"
        i += 1
    return None


def _scan(text: str, root: str) -> list[_Frame]:
    """Check the limits token by token; the open arrays/objects where the text ends.

    Syntax is not checked (the decoder does that); a limit is checked wherever it is crossed.
    """
    stack: list[_Frame] = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        first = token[0]
        top = stack[-1] if stack else None
        if first == '"':
            if len(token) == 1:
                break  # an unterminated string: the rest of the text is inside it
            if top is not None and top.is_object and top.key is None:
                top.key = token  # a key: the path names it, even if it is refused
            problem = _surrogate_problem(token) if "\\u" in token else None
            if problem:
                raise BoundedJSONError(_path(root, stack), problem)
        elif first in "[{":
            if len(stack) >= MAX_DEPTH:
                raise BoundedJSONError(
                    _path(root, stack), f"nested deeper than {MAX_DEPTH} arrays/objects"
                )
            stack.append(_Frame(first == "{"))
        elif first in "]}":
            if not stack:
                break  # unbalanced: a syntax error the decoder reports
            stack.pop()
        elif first == ",":
            if top is not None:
                top.index += 1
                top.key = None
        elif first != ":" and token not in _LITERALS:
            problem = _number_problem(token)
            if problem:
                raise BoundedJSONError(_path(root, stack), problem)
    return stack


def _plainly_within_limits(text: str) -> bool:
    """True only if no limit can be crossed anywhere in ``text`` (False may be a false alarm).

    Why a filter: the token scan costs Python work per token, several times ``json.loads``
    itself on a megabyte of small transactions; this costs a few C-speed passes. Outside the
    strings a number is a run of ``-+.0-9eE``, NaN and Infinity are the only capitals, a
    float can overflow only with an exponent; the depth is the running sum of brackets.
    """
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        return False
    outside = _STRINGS.sub("", text).encode("utf-8")
    if b"N" in outside or b"I" in outside or b"0e" in outside.translate(_EXPONENTS):
        return False
    if b"#" * (MAX_NUMBER_CHARS + 1) in outside.translate(_NUMBER_RUNS):
        return False
    steps = memoryview(outside.translate(_DEPTH_STEPS, _NOT_BRACKETS)).cast("b")
    return max(accumulate(steps), default=0) <= MAX_DEPTH


def _refuse_constant(name: str) -> Any:
    """``json.loads`` hook: the scan refuses NaN/Infinity first; this is the backstop."""
    raise ValueError(f"{name} is not a JSON number")


def loads(data: bytes, root: str = "$") -> Any:
    """Decode UTF-8 JSON ``data`` within the limits, or BoundedJSONError naming the path
    (starting at ``root``, e.g. ``body`` or ``payload``) and the reason."""
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        stack = _scan(data[: exc.start].decode("utf-8"), root)
        raise BoundedJSONError(_path(root, stack), f"not UTF-8 at byte {exc.start}") from exc
    if not _plainly_within_limits(text):
        _scan(text, root)
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        where = _path(root, _scan(text[: exc.pos], root))
        reason = f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise BoundedJSONError(where, reason) from exc
    except (ValueError, RecursionError) as exc:  # a backstop: the scan should have refused it
        raise BoundedJSONError(root, f"not acceptable JSON: {exc}") from exc
