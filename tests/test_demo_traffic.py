"""The demo's traffic generator makes metrics move: an incident in its first minute and one
minute in every six after, where support-summarizer's primary model fails half its calls
and a fallback answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from examples.traffic import INCIDENT_FEATURE, Traffic

STARTED = datetime(2026, 12, 3, 10, 0, 20, tzinfo=UTC)


def summarizer_calls(start: datetime) -> list[dict[str, object]]:
    traffic = Traffic(seed=3, start=STARTED)
    entries = traffic.history(15, timedelta(minutes=1), start + timedelta(minutes=1))
    return [e for e in entries if e["feature"] == INCIDENT_FEATURE]


def test_an_incident_minute_has_failed_primaries_answered_by_the_fallback() -> None:
    calls = summarizer_calls(datetime(2026, 12, 3, 10, 6, tzinfo=UTC))  # six minutes in
    failed = [e for e in calls if "retrying on gpt-4o" in str(e["message"])]
    assert len(failed) >= 5
    by_request = {e["request_id"]: e for e in calls if e not in failed}
    for attempt in failed:
        assert attempt["status"] == "error" and attempt["model"] == "claude-sonnet-4-5"
        fallback = by_request[attempt["request_id"]]
        assert fallback["model"] == "gpt-4o" and fallback["id"] != attempt["id"]


def test_other_minutes_have_no_incident() -> None:
    calls = summarizer_calls(datetime(2026, 12, 3, 10, 4, tzinfo=UTC))  # four minutes in
    assert calls and not [e for e in calls if "retrying on gpt-4o" in str(e["message"])]


def test_the_incident_starts_with_the_generator() -> None:
    traffic = Traffic(seed=1, start=STARTED)
    assert traffic.in_incident(STARTED + timedelta(seconds=30))
    assert not traffic.in_incident(STARTED + timedelta(minutes=1, seconds=5))
