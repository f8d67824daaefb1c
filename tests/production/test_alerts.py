"""A rule breached behind nginx, with two instances evaluating: one alert, one webhook event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from minerva_ai.service.locks import JobName
from tests.conftest import wait_until
from tests.production.harness import Stack
from tests.production.support import new_feature
from tests.service.conftest import log_entry, serving

RULE = {"name": "errors", "metric": "error_rate", "operator": ">", "threshold": 5, "window": "1h"}


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver on loopback: its URL and the events it got."""
    events: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        found = scope["path"] == "/hook"
        if found:
            events.append(json.loads(body))
        await send({"type": "http.response.start", "status": 204 if found else 404})
        await send({"type": "http.response.body", "body": b""})

    with serving(app) as url:
        yield f"{url}/hook", events


def _evaluations(stack: Stack) -> Any:
    with psycopg.connect(stack.postgres.url) as conn:
        row = conn.execute(
            "SELECT last_run_at FROM job_leases WHERE name = %s", (JobName.ALERT_EVALUATION,)
        ).fetchone()
    return row[0] if row else None


def test_a_breach_fires_one_alert_and_one_webhook_event(
    stack: Stack, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, events = receiver
    feature = new_feature(stack)
    with stack.http() as http:
        settings = {"version": 1, "settings": {"monitoring": {"alert_rules": [RULE]}}}
        assert http.put(f"/features/{feature}/settings", json=settings).status_code == 200
        hook = http.post("/webhooks", json={"name": feature, "url": url, "features": [feature]})
        assert hook.status_code == 201, hook.text
        failing = [
            log_entry(feature, f"call {i}", status="error", latency_ms=50.0) for i in range(10)
        ]
        assert http.post("/logs", json=failing).status_code == 200

        def fired() -> list[dict[str, Any]]:
            return [e for e in events if e["type"] == "alert.firing"]

        wait_until(fired, what="the alert.firing webhook event")
        # Several evaluations later (each instance could lead one), still one of each.
        seen = [_evaluations(stack)]
        wait_until(
            lambda: seen.append(_evaluations(stack)) or len(set(seen)) > 3,
            what="three more evaluations",
        )
        alerts = http.get("/alerts", params={"feature": feature}).json()["data"]
    assert len(alerts) == 1 and alerts[0]["state"] == "open", alerts
    assert len(fired()) == 1, events
    assert fired()[0]["data"]["alert"]["id"] == alerts[0]["id"]
