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
only; ``\\1`` back-references), ``(?`` groups (flags, look-arounds, named groups),
``[:class:]`` inside brackets, and ``\\D \\W \\S`` inside brackets.

PostgreSQL's ``\\d \\w \\s`` follow the database's character classification (on a UTF-8
database ``\\w`` matches ``é``), so ``postgres()`` spells them out as ASCII brackets.
"""

from __future__ import annotations

import re

from minerva_ai.core.errors import UsageError

_SAME_ESCAPES = set("dDwWsStnr")
_MAX_LENGTH = 1000
# The ASCII classes, as the inside of a PostgreSQL bracket expression.
_ASCII_CLASSES = {"d": "0-9", "w": "A-Za-z0-9_", "s": " \\t\\n\\r\\f\\v"}


class RegexError(UsageError):
    """A pattern outside the documented dialect, or not a valid pattern at all."""


def check(pattern: str) -> re.Pattern[str]:
    """Validate ``pattern`` against the dialect; return its Python form for live matching."""
    return _translate(pattern)[0]


def postgres(pattern: str) -> str:
    """``pattern`` (validated) as PostgreSQL's ``~`` must be given it to match like ``check``."""
    return _translate(pattern)[1]


def _translate(pattern: str) -> tuple[re.Pattern[str], str]:
    if len(pattern) > _MAX_LENGTH:
        raise RegexError(f"the pattern is longer than {_MAX_LENGTH} characters")
    python: list[str] = []
    pg: list[str] = []
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
            pg.append(_postgres_escape(nxt, in_brackets, i))
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
            pg.append(char)
        elif char == "[":
            in_brackets = True
            python.append(char)
            pg.append(char)
        elif char == "(" and pattern[i + 1 : i + 2] == "?":
            raise RegexError(
                f"(? groups (position {i}) are not supported: flags, "
                "look-arounds and named groups differ between the engines"
            )
        elif char == "$":
            python.append(r"\Z")  # Python's $ would also match before a final newline
            pg.append(char)
        else:
            python.append(char)
            pg.append(char)
        i += 1
    if in_brackets:
        raise RegexError("unterminated [ ] bracket expression")
    try:
        compiled = re.compile("".join(python), re.ASCII | re.DOTALL)
    except re.error as exc:
        raise RegexError(f"invalid regular expression: {exc}") from None
    return compiled, "".join(pg)


def _postgres_escape(letter: str, in_brackets: bool, position: int) -> str:
    """The PostgreSQL spelling of the escape ``\\<letter>`` (already known to be allowed)."""
    ascii_class = _ASCII_CLASSES.get(letter.lower())
    if ascii_class is None:
        return "\\" + letter
    if not in_brackets:
        return f"[{ascii_class}]" if letter.islower() else f"[^{ascii_class}]"
    if letter.islower():
        return ascii_class
    raise RegexError(
        f"\\{letter} inside [ ] (position {position}) is not supported; "
        f"use [^...] with \\{letter.lower()} instead"
    )


def _bracket_start(pattern: str, i: int) -> bool:
    """True when the ``]`` at ``i`` is a literal: the first character of a bracket."""
    j = i - 1
    if j >= 0 and pattern[j] == "^":
        j -= 1
    return j >= 0 and pattern[j] == "[" and (j == 0 or pattern[j - 1] != "\\")
