"""Alerts against the database: the evaluator opening and closing alerts, acknowledge and
resolve, silences and maintenance, renotification, rule edits, the `alerts` channel and
its cursor, and the rules' and silences' bad input. The evaluator runs on an injected
clock (``alerts.evaluate(conn, now=...)``); the service's own job is off."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from minerva_ai.service import admin, alerts
from minerva_ai.service.app import create_app
from tests.conftest import LiveService, Servers, service_config
from tests.service.conftest import (
    assert_error,
    async_pool,
    client,
    create_feature,
    expect,
    fields_of,
    log_entry,
    post_logs,
    put_settings,
    send,
    serving,
    stamp,
    ws_open,
)

RULE = {"name": "errors", "metric": "error_rate", "operator": ">", "threshold": 5, "window": "1m"}


@dataclass
class Alerting:
    service: LiveService
    http: httpx.Client

    def evaluate(self, now: datetime | None = None) -> list[Any]:
        async def run() -> list[Any]:
            async with (
                async_pool(self.service.database_url) as pool,
                pool.connection() as conn,
            ):
                return await alerts.evaluate(conn, now=now)

        return asyncio.run(run())

    def calls(self, status: str, count: int = 10, feature: str = "tagger") -> None:
        at = stamp(seconds=2)
        post_logs(
            self.http,
            [
                log_entry(feature, "call", timestamp=at, status=status, latency_ms=100.0)
                for _ in range(count)
            ],
        )

    def rules(self, *rules: dict[str, Any], feature: str = "tagger") -> None:
        version = self.http.get(f"/features/{feature}").json()["data"]["settings_version"]
        saved = put_settings(
            self.http, feature, version, {"monitoring": {"alert_rules": list(rules)}}
        )
        assert saved.status_code == 200, saved.text

    def sql(self, statement: str, *args: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.service.database_url, row_factory=dict_row) as conn:
            return conn.execute(statement, args).fetchall()  # type: ignore[arg-type]

    def notifications(self) -> list[dict[str, Any]]:
        """The outbox in the order of the transitions (renotifications last)."""
        return self.sql(
            "SELECT event, silenced_by, silenced_reason, payload FROM alert_notifications "
            "ORDER BY transition_seq NULLS LAST, created_at"
        )

    def one_alert(self, **params: Any) -> dict[str, Any]:
        [alert] = self.http.get("/alerts", params=params).json()["data"]
        return dict(alert)


@pytest.fixture
def alerting(database_url: str, servers: Servers) -> Iterator[Alerting]:
    config = service_config(database_url, servers.redis_url, run_jobs=False)
    issued = admin.create_organization(database_url, "acme")
    with serving(create_app(config)) as url:
        service = LiveService(
            url, database_url, servers.redis_url, str(issued.organization_id), issued.token, config
        )
        with client(service) as http:
            create_feature(http, "tagger")
            yield Alerting(service, http)


def test_a_breach_opens_an_alert(alerting: Alerting) -> None:
    alerting.rules(RULE)
    alerting.calls("success")
    alerting.evaluate()
    assert alerting.http.get("/alerts").json()["data"] == []
    alerting.calls("error", 5)
    alerting.evaluate()
    alert = alerting.one_alert(state="open")
    assert (alert["rule"], alert["severity"], alert["feature"]) == ("errors", "warning", "tagger")
    assert alert["value"] == pytest.approx(100 * 5 / 15) and alert["threshold"] == 5
    alerting.evaluate()  # still breaching: nothing new
    assert len(alerting.notifications()) == 1
    # no traffic since: the window holds no requests, which is no data, not a recovery
    alerting.evaluate(now=datetime.now(UTC) + timedelta(minutes=2))
    detail = alerting.http.get(f"/alerts/{alert['id']}").json()["data"]
    assert detail["state"] == "open"
    assert [(t["event"], t["from_state"], t["to_state"]) for t in detail["transitions"]] == [
        ("breach", "ok", "firing"),
        ("no_data", "firing", "no_data"),
    ]
    assert detail["transitions"][1]["reason"] == "no requests in the window"
    [sent] = alerting.notifications()
    payload = sent["payload"]
    assert payload["type"] == "alert.firing" and payload["data"]["alert"]["id"] == alert["id"]
    assert payload["data"]["transition"]["event"] == "breach"


def test_recovery_with_traffic_resolves_once(alerting: Alerting) -> None:
    alerting.rules({**RULE, "window": "5m"})
    alerting.calls("error", 3)
    alerting.evaluate()
    alert = alerting.one_alert(state="open")
    alerting.calls("success", 100)
    alerting.evaluate()
    alerting.evaluate()
    detail = alerting.http.get(f"/alerts/{alert['id']}").json()["data"]
    assert detail["state"] == "resolved" and detail["resolved_by"] == "evaluator"
    assert [t["event"] for t in detail["transitions"]] == ["breach", "recover"]
    assert [n["event"] for n in alerting.notifications()] == ["alert.firing", "alert.resolved"]


def test_acknowledge_then_resolve_by_hand(alerting: Alerting) -> None:
    alerting.rules({**RULE, "for": "1m", "window": "5m"})
    alerting.calls("error", 5)
    now = datetime.now(UTC)
    alerting.evaluate(now)
    alerting.evaluate(now + timedelta(seconds=61))
    alert = alerting.one_alert(state="open")
    path = f"/alerts/{alert['id']}"
    acked = alerting.http.post(path + "/acknowledge", json={"note": "looking"})
    assert acked.status_code == 200
    assert acked.json()["data"]["acknowledge_note"] == "looking"
    assert acked.json()["data"]["acknowledged_by"].startswith("token ")
    again = alerting.http.post(path + "/acknowledge", json={"note": "twice"})
    assert again.status_code == 200 and again.json()["data"]["acknowledge_note"] == "looking"
    resolved = alerting.http.post(path + "/resolve", json={"note": "rolled back"})
    assert resolved.status_code == 200 and resolved.json()["data"]["state"] == "resolved"
    for verb in ("acknowledge", "resolve"):
        error = assert_error(alerting.http.post(f"{path}/{verb}"), 409, "conflict")
        assert "is resolved" in error["message"]
    events = [t["event"] for t in alerting.http.get(path).json()["data"]["transitions"]]
    assert events == ["breach", "acknowledge", "resolve"]  # the alert's (pending had none)
    # still breaching: pending again, a new alert only once `for` has elapsed again
    resolved_at = datetime.fromisoformat(resolved.json()["data"]["resolved_at"])
    alerting.evaluate(resolved_at + timedelta(seconds=30))
    assert alerting.http.get("/alerts", params={"state": "open"}).json()["data"] == []
    alerting.evaluate(resolved_at + timedelta(seconds=61))
    assert len(alerting.http.get("/alerts", params={"state": "open"}).json()["data"]) == 1
    kinds = [n["event"] for n in alerting.notifications()]
    assert kinds == ["alert.firing", "alert.acknowledged", "alert.resolved", "alert.firing"]


def test_silences_and_maintenance_suppress_notifications_not_state(alerting: Alerting) -> None:
    alerting.rules(RULE)
    made = alerting.http.post(
        "/silences", json={"feature": "tagger", "duration": "1h", "comment": "deploying"}
    )
    assert made.status_code == 201, made.text
    silence = made.json()["data"]
    assert silence["active"] and silence["feature"] == "tagger"
    alerting.calls("error", 5)
    alerting.evaluate()
    assert alerting.one_alert(state="open")["severity"] == "warning"  # the state changed
    [held] = alerting.notifications()
    assert str(held["silenced_by"]) == silence["id"]
    expired = alerting.http.delete(f"/silences/{silence['id']}")
    assert expired.status_code == 200 and expired.json()["data"]["active"] is False
    assert alerting.http.get("/silences").json()["data"] == []
    listed = alerting.http.get("/silences", params={"include_expired": "true"}).json()["data"]
    assert [s["id"] for s in listed] == [silence["id"]]
    # a feature in maintenance is silenced implicitly
    assert alerting.http.patch("/features/tagger", json={"status": "maintenance"}).is_success
    alerting.calls("success", 100)
    alerting.evaluate()
    resolved = alerting.notifications()[-1]
    assert resolved["event"] == "alert.resolved"
    assert resolved["silenced_reason"] == "the feature is in maintenance"


def test_renotify_until_acknowledged(alerting: Alerting) -> None:
    alerting.rules({**RULE, "window": "10m", "renotify": "5m"})
    alerting.calls("error", 5)
    now = datetime.now(UTC)
    alerting.evaluate(now)
    alerting.evaluate(now + timedelta(minutes=4))
    assert [n["event"] for n in alerting.notifications()] == ["alert.firing"]
    alerting.evaluate(now + timedelta(minutes=5, seconds=1))
    assert [n["event"] for n in alerting.notifications()] == ["alert.firing", "alert.renotify"]
    alert = alerting.one_alert(state="open")
    alerting.http.post(f"/alerts/{alert['id']}/acknowledge")
    alerting.evaluate(now + timedelta(minutes=11))
    kinds = [n["event"] for n in alerting.notifications()]
    assert sorted(kinds) == ["alert.acknowledged", "alert.firing", "alert.renotify"]


def test_a_deleted_or_disabled_rule_resolves_its_alert(alerting: Alerting) -> None:
    alerting.rules(RULE, {**RULE, "name": "other", "threshold": 99})
    alerting.calls("error", 5)
    alerting.calls("success", 10)  # 33% errors: over 5, not over 99
    alerting.evaluate()
    alert = alerting.one_alert(state="open")
    alerting.rules({**RULE, "name": "other", "threshold": 99})
    alerting.evaluate()
    detail = alerting.http.get(f"/alerts/{alert['id']}").json()["data"]
    assert detail["state"] == "resolved"
    assert detail["transitions"][-1]["event"] == "rule_deleted"
    alerting.rules({**RULE, "name": "other", "threshold": 1})
    alerting.evaluate()
    second = alerting.one_alert(state="open")
    alerting.rules({**RULE, "name": "other", "threshold": 1, "enabled": False})
    alerting.evaluate()
    detail = alerting.http.get(f"/alerts/{second['id']}").json()["data"]
    assert detail["state"] == "resolved"
    assert detail["transitions"][-1]["event"] == "rule_disabled"


def test_the_rules_with_their_state_and_a_rule_tried_now(alerting: Alerting) -> None:
    alerting.rules(RULE, {**RULE, "name": "quiet", "threshold": 99})
    alerting.calls("error", 5)
    alerting.calls("success", 10)
    tried = alerting.http.get("/features/tagger/alert-rules/errors/evaluation")
    assert tried.status_code == 200, tried.text
    data = tried.json()["data"]
    assert (data["state"], data["would_be"], data["events"]) == ("ok", "firing", ["breach"])
    assert data["value"] == pytest.approx(100 / 3)
    assert data["reason"] == "error_rate 33.3333 over 1m > 5"
    assert alerting.http.get("/alerts").json()["data"] == []  # trying changes nothing
    alerting.evaluate()
    listed = alerting.http.get("/features/tagger/alert-rules").json()["data"]
    assert [(r["rule"]["name"], r["current"]["state"]) for r in listed] == [
        ("errors", "firing"),
        ("quiet", "ok"),
    ]
    missing = alerting.http.get("/features/tagger/alert-rules/nope/evaluation")
    assert_error(missing, 404, "not_found")


def test_the_alerts_channel_resumes_by_cursor(alerting: Alerting) -> None:
    alerting.rules(RULE)
    service = alerting.service

    async def scenario() -> None:
        async with ws_open(service, service.token) as ws:
            await expect(ws, "authenticated")
            await send(ws, "subscribe", channel="alerts")
            start = (await expect(ws, "subscribed"))["after"]
            alerting.calls("error", 5)
            await asyncio.to_thread(alerting.evaluate)
            message = await expect(ws, "alert")
            assert message["transition"]["event"] == "breach"
            assert message["alert"]["state"] == "open"
            first = message["cursor"]
        alerting.calls("success", 100)
        await asyncio.to_thread(alerting.evaluate)
        async with ws_open(service, service.token) as ws:  # resume from before both
            await expect(ws, "authenticated")
            await send(ws, "subscribe", channel="alerts", after=start)
            assert (await expect(ws, "subscribed"))["after"] == start
            seen = [await expect(ws, "alert"), await expect(ws, "alert")]
            assert [m["transition"]["event"] for m in seen] == ["breach", "recover"]
            assert seen[0]["cursor"] == first
            for bad in ("x1", "²"):  # "²".isdigit(), yet no cursor
                await send(ws, "subscribe", channel="alerts", after=bad)
                assert (await expect(ws, "error"))["code"] == "bad_message"
            await send(ws, "ping")
            await expect(ws, "pong")  # the session lives on

    asyncio.run(scenario())
    polled = alerting.http.get("/alerts/transitions", params={"after": "0"}).json()
    assert [t["event"] for t in polled["data"]] == ["breach", "recover"]
    assert polled["next_cursor"] == polled["data"][-1]["cursor"]


def test_an_open_alert_sets_the_features_status(alerting: Alerting) -> None:
    alerting.rules({**RULE, "window": "5m", "severity": "critical", "threshold": 0.05})
    alerting.calls("success", 999)
    alerting.calls("error", 1)  # 0.1%: a healthy score, and over the rule's threshold
    before = alerting.http.get("/features/tagger/metrics/current").json()["data"]
    assert (before["status"], before["open_alerts"]) == ("healthy", 0)
    alerting.evaluate()
    after = alerting.http.get("/features/tagger/metrics/current").json()["data"]
    assert (after["status"], after["open_alerts"]) == ("error", 1)
    listed = alerting.http.get("/features", params={"include_metrics": "true"}).json()["data"]
    assert listed[0]["metrics"]["open_alerts"] == 1


@pytest.mark.parametrize(
    ("rule", "field", "words"),
    [
        ({"metric": "happiness"}, "metric", "error_rate"),
        ({"operator": "=="}, "operator", ">"),
        ({"severity": "page"}, "severity", "critical"),
        ({"no_data": "maybe"}, "no_data", "alerting"),
        ({"window": "0m"}, "window", "pattern"),
        ({"window": "90s"}, "window", "whole minutes"),
        ({"for": "5s"}, "for", "MINERVA_ALERT_INTERVAL"),
        ({"threshold": 101}, "threshold", "percent"),
        ({"warning_threshold": -1, "operator": "<"}, "warning_threshold", "percent"),
        ({"metric": "p95_ms", "threshold": -5}, "threshold", "not negative"),
        ({"window": "99999999999d"}, "window", "at most 90d"),
        ({"renotify": "100d"}, "renotify", "at most 90d"),
    ],
)
def test_bad_rules_name_the_field(
    alerting: Alerting, rule: dict[str, Any], field: str, words: str
) -> None:
    response = put_settings(
        alerting.http, "tagger", 1, {"monitoring": {"alert_rules": [{**RULE, **rule}]}}
    )
    error = assert_error(response, 422, "validation_failed")
    where = f"monitoring.alert_rules[0].{field}"
    assert where in fields_of(error), error
    assert any(words in d["message"] for d in error["details"] if d["field"] == where), error


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"comment": "x"}, "ends_at"),
        ({"comment": "x", "duration": "1h", "ends_at": stamp(minutes=-30)}, "ends_at"),
        ({"comment": "x", "ends_at": stamp(minutes=5)}, "ends_at"),
        ({"comment": "x", "duration": "100d"}, "ends_at"),
        ({"comment": "x", "duration": "2x"}, "duration"),
        ({"duration": "1h"}, "comment"),
    ],
)
def test_bad_silences_name_the_field(alerting: Alerting, body: dict[str, Any], field: str) -> None:
    response = alerting.http.post("/silences", json=body)
    assert response.status_code == 422, response.text
    assert any(field in f for f in fields_of(response.json()["error"])), response.text


def test_unknown_alerts_and_silences_are_404(alerting: Alerting) -> None:
    for path in ("/alerts/nope", "/alerts/00000000-0000-0000-0000-000000000000"):
        assert_error(alerting.http.get(path), 404, "not_found")
    assert_error(alerting.http.delete("/silences/nope"), 404, "not_found")
    unknown = {"feature": "ghost", "duration": "1h", "comment": "x"}
    assert_error(alerting.http.post("/silences", json=unknown), 404, "not_found")


def test_a_latency_percentile_rule(alerting: Alerting) -> None:
    # the evaluator reads latency histograms only for windows whose rules need them
    p95 = {"name": "slow", "metric": "p95_ms", "operator": ">", "threshold": 80, "window": "5m"}
    alerting.rules(p95, {**RULE, "window": "15m"})
    alerting.calls("success", 20)  # 100 ms each
    alerting.evaluate()
    [alert] = alerting.http.get("/alerts", params={"state": "open"}).json()["data"]
    assert alert["rule"] == "slow" and 100 <= alert["value"] < 125  # the 100-125 ms bucket
