"""The demo's traffic generator makes metrics move: an incident minute in every six, where
support-summarizer's primary model fails half its calls and a fallback answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from examples.traffic import INCIDENT_FEATURE, Traffic


def summarizer_calls(start: datetime) -> list[dict[str, object]]:
    entries = Traffic(seed=3).history(15, timedelta(minutes=1), start + timedelta(minutes=1))
    return [e for e in entries if e["feature"] == INCIDENT_FEATURE]


def test_an_incident_minute_has_failed_primaries_answered_by_the_fallback() -> None:
    calls = summarizer_calls(datetime(2026, 12, 3, 10, 3, tzinfo=UTC))  # minute 3 of 6
    failed = [e for e in calls if "retrying on gpt-4o" in str(e["message"])]
    assert len(failed) >= 5
    by_request = {e["request_id"]: e for e in calls if e not in failed}
    for attempt in failed:
        assert attempt["status"] == "error" and attempt["model"] == "claude-sonnet-4-5"
        fallback = by_request[attempt["request_id"]]
        assert fallback["model"] == "gpt-4o" and fallback["id"] != attempt["id"]


def test_other_minutes_have_no_incident() -> None:
    calls = summarizer_calls(datetime(2026, 12, 3, 10, 4, tzinfo=UTC))
    assert calls and not [e for e in calls if "retrying on gpt-4o" in str(e["message"])]
