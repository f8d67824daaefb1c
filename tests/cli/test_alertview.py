"""``cli/alertview.py``: the parsers of `alerts` flags, and how alerts read on a terminal."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest

from minerva_ai.cli import alertview
from minerva_ai.cli.output import Output
from minerva_ai.core.errors import ConfigError, UsageError

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_relative_times() -> None:
    assert alertview.relative(NOW - timedelta(seconds=42), now=NOW) == "42s ago"
    assert alertview.relative("2026-12-03T11:55:00Z", now=NOW) == "5m ago"
    assert alertview.relative(NOW - timedelta(hours=3, minutes=5), now=NOW) == "3h ago"
    assert alertview.relative(NOW + timedelta(days=2), now=NOW) == "in 2d"


def test_numbers_and_conditions() -> None:
    assert [alertview.number(v) for v in (50.0, 33.3333, 1840.5, 0.00213)] == [
        "50",
        "33.33",
        "1,840.5",
        "0.00213",
    ]
    assert alertview.condition({"operator": ">", "threshold": 5}) == "> 5"
    rule = {"operator": "<", "threshold": 99.5, "warning_threshold": 99.9}
    assert alertview.condition(rule) == "< 99.5 (warn < 99.9)"


@pytest.mark.parametrize("text", ["novalue", "=x", "1team=x", "a b=c"])
def test_a_label_is_key_equals_value(text: str) -> None:
    with pytest.raises(ConfigError):
        alertview.parse_label(text)
    assert alertview.parse_label("team=search=x") == ("team", "search=x")


def test_silence_windows() -> None:
    sent = alertview.silence_window("2h", None, None, now=NOW)
    assert (sent.starts_at, sent.ends_at, sent.duration) == (None, None, "2h")
    combined = alertview.silence_window("1h30m", None, "30m", now=NOW)
    assert combined.starts_at == NOW + timedelta(minutes=30)
    assert combined.ends_at == NOW + timedelta(hours=2)
    until = alertview.silence_window(None, "2026-12-03T18:00:00Z", None, now=NOW)
    assert until.ends_at == datetime(2026, 12, 3, 18, tzinfo=UTC) and until.duration is None
    with pytest.raises(UsageError):
        alertview.silence_window("2h", "3h", None, now=NOW)
    with pytest.raises(UsageError):
        alertview.silence_window(None, None, None, now=NOW)
    with pytest.raises(ConfigError):
        alertview.silence_window("soon", None, None, now=NOW)


def test_a_list_on_a_terminal_shows_short_ids_and_relative_times() -> None:
    alert = {
        "id": "3f2a9c1b-0000-4000-8000-000000000000",
        "feature": "tagger",
        "rule": "errors",
        "severity": "critical",
        "state": "open",
        "value": 12.5,
        "opened_at": (datetime.now(UTC) - timedelta(minutes=4, seconds=2)).isoformat(),
        "acknowledged_at": None,
    }
    stream = Terminal()
    output = Output("table", stream, tty=True)
    output.items([alert], alertview.alert_columns(output.tty))
    header, row = stream.getvalue().splitlines()
    assert header.split() == [
        "ID",
        "FEATURE",
        "RULE",
        "SEVERITY",
        "STATE",
        "VALUE",
        "OPENED",
        "ACK",
    ]
    assert row.split() == [
        "3f2a9c1b",
        "tagger",
        "errors",
        "critical",
        "open",
        "12.5",
        "4m",
        "ago",
        "-",
    ]


def test_a_transition_on_one_line() -> None:
    event = {
        "cursor": "42",
        "transition": {
            "at": "2026-12-03T10:41:15.204Z",
            "feature": "tagger",
            "rule": "errors",
            "event": "breach",
            "from_state": "ok",
            "to_state": "firing",
            "severity": "critical",
            "value": 12.5,
            "threshold": 5,
            "actor": "evaluator",
            "alert_id": "3f2a9c1b-0000-4000-8000-000000000000",
            "reason": "error_rate 12.5 over 5m > 5\nnext",
        },
    }
    line = alertview.transition_line(event, color=False, local=False)
    assert line == (
        "2026-12-03T10:41:15.204Z  tagger  errors  breach  ok -> firing  critical  "
        "value=12.5 threshold=5 actor=evaluator alert=3f2a9c1b cursor=42  "
        "error_rate 12.5 over 5m > 5⏎next"
    )
