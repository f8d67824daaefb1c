"""Times, durations and sizes as people type them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from minerva_ai.core.errors import ConfigError
from minerva_ai.core.timeparse import parse_duration, parse_size, parse_time

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
        ("250ms", timedelta(milliseconds=250)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (" 1.5h ", timedelta(minutes=90)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "10", "h", "10 minutes", "-5m", "5y", "1h 30m"])
def test_bad_durations_name_the_value_and_the_forms(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(text)
    assert repr(text) in str(caught.value)
    assert "30s" in str(caught.value)
    assert caught.value.exit_code == 2


def test_a_duration_as_a_time_means_that_long_ago() -> None:
    assert parse_time("2h", now=NOW) == datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
    assert parse_time("now", now=NOW) == NOW


def test_iso_times_with_an_offset_are_converted_to_utc() -> None:
    assert parse_time("2026-11-26T03:00:00+02:00") == datetime(2026, 11, 26, 1, tzinfo=UTC)
    assert parse_time("2026-11-26T01:02:03Z") == datetime(2026, 11, 26, 1, 2, 3, tzinfo=UTC)


def test_iso_times_without_an_offset_are_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")  # UTC+9, no daylight saving
    time.tzset()
    try:
        assert parse_time("2026-11-26T09:00:00") == datetime(2026, 11, 26, 0, tzinfo=UTC)
        assert parse_time("2026-11-26") == datetime(2026, 11, 25, 15, tzinfo=UTC)
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "26/11/2026", "12:00 pm"])
def test_times_without_meaning_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid time"):
        parse_time(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2048", 2048),
        ("100B", 100),
        ("500KB", 500_000),
        ("500kb", 500_000),
        ("500KiB", 512_000),
        ("10MB", 10_000_000),
        ("1.5GiB", 1_610_612_736),
        ("2k", 2000),
        ("1TB", 10**12),
    ],
)
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "KB", "5XB", "5 parsecs", "-1KB", "10ib", "3Ki"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid size"):
        parse_size(text)
