"""Log levels: the five stored, the aliases accepted, and filters like ``error,warn`` and
``warn+`` (the same on ingest, GET /logs, the live paths and the CLI)."""

from __future__ import annotations

import pytest

from minerva_ai.core import loglevels
from minerva_ai.core.errors import UsageError


def test_the_levels_in_order_of_severity() -> None:
    assert loglevels.LEVELS == ("debug", "info", "warn", "error", "critical")


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("debug", "debug"),
        ("INFO", "info"),
        (" Warn ", "warn"),
        ("WARNING", "warn"),
        ("warning", "warn"),
        ("Err", "error"),
        ("ERROR", "error"),
        ("FATAL", "critical"),
        ("crit", "critical"),
        ("critical", "critical"),
        ("trace", "debug"),
        ("information", "info"),
        ("notice", "info"),
        ("emergency", "critical"),
        ("alert", "critical"),
    ],
)
def test_levels_and_aliases_are_normalised_case_insensitively(given: str, stored: str) -> None:
    assert loglevels.normalise(given) == stored


@pytest.mark.parametrize("given", ["", "verbose", "warn+", "errors", "w", "info,warn"])
def test_anything_else_is_not_a_level(given: str) -> None:
    assert loglevels.normalise(given) is None


@pytest.mark.parametrize(
    ("spec", "levels"),
    [
        ("error", ["error"]),
        ("error,warn", ["error", "warn"]),
        (" error , WARNING ", ["error", "warn"]),
        ("warn+", ["warn", "error", "critical"]),
        ("WARNING+", ["warn", "error", "critical"]),
        ("debug+", list(loglevels.LEVELS)),
        ("critical+", ["critical"]),
        ("err+", ["error", "critical"]),
        ("error,warn+", ["error", "warn", "critical"]),  # each level once
        ("info,info,", ["info"]),
        ("fatal,trace", ["critical", "debug"]),
    ],
)
def test_a_level_filter_expands_to_exact_levels(spec: str, levels: list[str]) -> None:
    assert loglevels.expand(spec) == levels


@pytest.mark.parametrize("spec", ["loud", "error,loud", "+", "warn++", "warn-"])
def test_an_unknown_level_in_a_filter_is_a_usage_error_naming_it(spec: str) -> None:
    with pytest.raises(UsageError) as raised:
        loglevels.expand(spec)
    message = str(raised.value)
    assert "unknown level" in message
    assert "debug, info, warn, error, critical" in message and "LEVEL+" in message


@pytest.mark.parametrize("spec", ["", ",", " , "])
def test_an_empty_level_filter_is_a_usage_error(spec: str) -> None:
    with pytest.raises(UsageError, match="empty level filter"):
        loglevels.expand(spec)
