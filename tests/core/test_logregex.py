"""The regex dialect: what it refuses, and that what it accepts matches like PostgreSQL."""

import re

import psycopg
import pytest

from minerva_ai.core import logregex


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"\bword", r"\b"),
        (r"\y", r"\y"),
        (r"\Aabc", r"\A"),
        (r"(a)\1", r"\1"),
        (r"(?i)abc", "(?"),
        (r"a(?=b)", "(?"),
        (r"[[:alpha:]]+", "[:"),
        ("abc\\", "lone backslash"),
        ("[abc", "unterminated"),
        ("a**", "invalid regular expression"),
        ("x" * 1001, "longer than"),
    ],
)
def test_patterns_the_engines_disagree_on_are_refused(pattern, why):
    with pytest.raises(logregex.RegexError, match=re.escape(why)):
        logregex.check(pattern)


MESSAGES = [
    "connection refused",
    "upstream timeout after 30s",
    "ok",
    "line one\nline two",
    "ends with newline\n",
    "price: 12.50 EUR",
    "Ünïcödé 42 café",
    "tab\tseparated",
    "]bracket",
]

PATTERNS = [
    r"timeout|refused",
    r"^ok$",
    r"two$",
    r"newline$",
    r"one.line",
    r"\d+\.\d{2}",
    r"\w+\s\d",
    r"caf\w",
    r"[]x]bracket",
    r"[^a-z ]",
    r"t\tsep",
    r"^$",
    r"(ab|cd)*e?",
]


def test_accepted_patterns_match_exactly_like_postgresql(servers):
    with psycopg.connect(servers.database_url) as conn:
        for pattern in PATTERNS:
            compiled = logregex.check(pattern)
            for message in MESSAGES:
                expected = conn.execute("SELECT %s ~ %s", (message, pattern)).fetchone()[0]
                assert (compiled.search(message) is not None) == expected, (pattern, message)
