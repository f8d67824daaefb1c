"""The one regex dialect of log filters: the same matches in PostgreSQL and in Python.

A pattern is checked once, then run as a PostgreSQL ``~`` on the history path and as a
compiled Python pattern on the live path. What the dialect allows:

- literal characters; ``.`` (any character, newlines included); ``^`` and ``$`` (start
  and end of the whole message);
- bracket expressions ``[abc]``, ``[^a-z]`` (no ``[:alpha:]``-style classes);
- ``*`` ``+`` ``?`` ``{m}`` ``{m,}`` ``{m,n}`` and their lazy forms, ``|``, ``( )``;
- the escapes ``\\d \\D \\w \\W \\s \\S`` (ASCII classes), ``\\t \\n \\r``, and a
  backslash before any punctuation character (``\\.``, ``\\(``, ``\\\\`` ...).

Refused, because the two engines disagree on them: other escapes (``\\b`` is a word
boundary in Python and a backspace in PostgreSQL; ``\\y \\m \\M \\A \\Z`` exist in one
only; ``\\1`` back-references), ``(?`` groups (flags, look-arounds, named groups), and
``[:class:]`` inside brackets.
"""

from __future__ import annotations

import re

from minerva_ai.errors import UsageError

_SAME_ESCAPES = set("dDwWsStnr")
_MAX_LENGTH = 1000


class RegexError(UsageError):
    """A pattern outside the documented dialect, or not a valid pattern at all."""


def check(pattern: str) -> re.Pattern[str]:
    """Validate ``pattern`` against the dialect; return its Python form for live matching."""
    if len(pattern) > _MAX_LENGTH:
        raise RegexError(f"the pattern is longer than {_MAX_LENGTH} characters")
    python: list[str] = []
    i = 0
    in_brackets = False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 >= len(pattern):
                raise RegexError("the pattern ends with a lone backslash")
            nxt = pattern[i + 1]
            if nxt not in _SAME_ESCAPES and (nxt.isalnum() or nxt == "_" or nxt.isspace()):
                raise RegexError(
                    f"escape \\{nxt} at position {i} means different things in PostgreSQL "
                    "and Python; allowed escapes: \\d \\D \\w \\W \\s \\S \\t \\n \\r "
                    "and a backslash before punctuation"
                )
            python.append(pattern[i : i + 2])
            i += 2
            continue
        if in_brackets:
            if char == "[" and pattern[i + 1 : i + 2] in (":", ".", "="):
                raise RegexError(
                    f"[{pattern[i + 1]} ... classes (position {i}) are not "
                    "supported; list the characters instead"
                )
            if char == "]" and not _bracket_start(pattern, i):
                in_brackets = False
            python.append(char)
        elif char == "[":
            in_brackets = True
            python.append(char)
        elif char == "(" and pattern[i + 1 : i + 2] == "?":
            raise RegexError(
                f"(? groups (position {i}) are not supported: flags, "
                "look-arounds and named groups differ between the engines"
            )
        elif char == "$":
            python.append(r"\Z")  # Python's $ would also match before a final newline
        else:
            python.append(char)
        i += 1
    if in_brackets:
        raise RegexError("unterminated [ ] bracket expression")
    try:
        return re.compile("".join(python), re.ASCII | re.DOTALL)
    except re.error as exc:
        raise RegexError(f"invalid regular expression: {exc}") from None


def _bracket_start(pattern: str, i: int) -> bool:
    """True when the ``]`` at ``i`` is a literal: the first character of a bracket."""
    j = i - 1
    if j >= 0 and pattern[j] == "^":
        j -= 1
    return j >= 0 and pattern[j] == "[" and (j == 0 or pattern[j - 1] != "\\")
