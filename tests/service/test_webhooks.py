"""Webhooks: endpoints and secrets, fan-out of the alert outbox, Standard Webhooks signatures
(checked with the `standardwebhooks` package), retries, the SSRF rule (service/webhooks.py,
service/webhook_delivery.py, routes/webhooks.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from minerva_ai.core.errors import ConfigError
from minerva_ai.service import admin, alerts
from minerva_ai.service.app import create_app
from minerva_ai.service.config import ServiceConfig, provide_secret_key
from minerva_ai.service.webhooks import ROTATION_OVERLAP, deliveries_of
from tests.conftest import LiveService, Servers, ThreadedServer, service_config, wait_until
from tests.service.conftest import (
    Org,
    assert_error,
    async_pool,
    create_feature,
    log_entry,
    new_org,
    post_logs,
    put_settings,
)

# ---------------------------------------------------------------- a receiver on loopback


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records every request. ``answers[path]`` lists the
    statuses to answer in turn (then the last again); ``"hang"`` holds the answer until
    released."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    answers: dict[str, list[int | str]] = field(default_factory=dict)
    hanging: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with state.lock:
                state.received.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                planned = state.answers.get(self.path) or [200]
                answer = planned.pop(0) if len(planned) > 1 else planned[0]
            if answer == "hang":
                with state.lock:
                    state.hanging += 1
                state.release.wait(30)
                with state.lock:
                    state.hanging -= 1
                answer = 200
            self.send_response(int(answer))
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- a service with seams


class Clock:
    """The delivery clock, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Names:
    """The resolver the service is given: names of the test's own, no system lookup."""

    def __init__(self) -> None:
        self.table: dict[str, list[str]] = {}

    async def __call__(self, host: str, port: int) -> list[str]:
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


@dataclass
class Hooks:
    live: LiveService
    org: Org
    clock: Clock
    names: Names
    feature: dict[str, Any]

    def http(self, token: str | None = None) -> httpx.Client:
        return self.org.client(token)

    def create(self, name: str, url: str, **fields: Any) -> dict[str, Any]:
        with self.http() as http:
            response = http.post("/webhooks", json={"name": name, "url": url, **fields})
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()["data"]
        return created

    def notify(
        self,
        severity: str = "critical",
        labels: dict[str, str] | None = None,
        silenced: bool = False,
        feature_id: str | None = None,
    ) -> str:
        """An alert and a notification in the outbox, as the evaluator writes them."""
        now = datetime.now(UTC)
        with psycopg.connect(self.live.database_url, autocommit=True) as conn:
            alert = conn.execute(
                "INSERT INTO alerts (organization_id, feature_id, rule, metric, state, severity,"
                " value, threshold, labels, settings_version, opened_at)"
                " VALUES (%s, %s, %s, 'error_rate', 'open', %s, 12.5, 5, %s, 2, %s) RETURNING id",
                (
                    self.org.id,
                    feature_id or self.feature["id"],
                    f"rule-{uuid.uuid4().hex[:6]}",
                    severity,
                    Jsonb(labels or {}),
                    now,
                ),
            ).fetchone()
            assert alert is not None
            payload = {
                "type": "alert.firing",
                "timestamp": now.isoformat().replace("+00:00", "Z"),
                "data": {
                    "alert": {
                        "id": str(alert[0]),
                        "feature_id": self.feature["id"],
                        "feature": self.feature["name"],
                        "rule": "errors",
                        "metric": "error_rate",
                        "state": "open",
                        "severity": severity,
                        "value": 12.5,
                        "threshold": 5,
                        "labels": labels or {},
                        "runbook_url": None,
                    },
                    "transition": None,
                },
            }
            row = conn.execute(
                "INSERT INTO alert_notifications (organization_id, alert_id, event, created_at,"
                " severity, payload, silenced_reason) VALUES (%s, %s, 'firing', %s, %s, %s, %s)"
                " RETURNING id",
                (
                    self.org.id,
                    alert[0],
                    now,
                    severity,
                    Jsonb(payload),
                    "maintenance" if silenced else None,
                ),
            ).fetchone()
        assert row is not None
        return str(row[0])

    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.live.database_url, row_factory=dict_row) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def attempts(self, notification_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT d.webhook_name, a.attempt, a.status_code, a.error, a.next_retry_at"
            " FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id"
            " WHERE d.notification_id = %s ORDER BY d.webhook_name, a.attempt",
            notification_id,
        )


def start_hooks(servers: Servers, database_url: str, **overrides: Any) -> Iterator[Hooks]:
    clock, names = Clock(), Names()
    settings = {
        "webhook_clock": clock,
        "webhook_resolver": names,
        "webhook_interval_s": 0.05,
        "webhook_timeout_s": 3.0,
        "alert_interval_s": 3600.0,  # the tests that evaluate rules do it themselves
        **overrides,
    }
    config = service_config(database_url, servers.redis_url, **settings)
    issued = admin.create_organization(database_url, "acme")
    with ThreadedServer(create_app(config)) as url:
        live = LiveService(
            url, database_url, servers.redis_url, str(issued.organization_id), issued.token, config
        )
        org = Org(live, str(issued.organization_id), "acme", issued.token)
        with org.client() as http:
            feature = create_feature(http, "tagger")
        yield Hooks(live, org, clock, names, feature)


@pytest.fixture
def hooks(servers: Servers, database_url: str) -> Iterator[Hooks]:
    """A service that may call loopback receivers (MINERVA_WEBHOOK_ALLOW=127.0.0.0/8)."""
    yield from start_hooks(servers, database_url, webhook_allow=("127.0.0.0/8",))


@pytest.fixture
def guarded(servers: Servers, database_url: str) -> Iterator[Hooks]:
    """A service with the SSRF rule and nothing allowed."""
    yield from start_hooks(servers, database_url)


def verify(secret: str, got: Received) -> Any:
    return StandardWebhook(secret).verify(got.body.decode(), got.headers)


# ---------------------------------------------------------------- endpoints and secrets


def test_the_secret_is_answered_once_and_never_listed_logged_or_stored_in_clear(
    hooks: Hooks, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = hooks.create("ops", receiver.url + "/ops", min_severity="warning")
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(secret) > 30
    assert created["min_severity"] == "warning" and created["format"] == "json"
    with hooks.http() as http:
        listed = http.get("/webhooks")
        rotated = http.post(f"/webhooks/{created['id']}/rotate-secret").json()["data"]
        after = http.get("/webhooks")
    assert listed.status_code == 200
    [shown] = listed.json()["data"]
    assert "secret" not in shown and shown["id"] == created["id"]
    assert shown["previous_secret_expires_at"] is None
    assert after.json()["data"][0]["previous_secret_expires_at"] is not None
    for text in (listed.text, after.text):
        assert secret not in text and rotated["secret"] not in text
    dump = hooks.query(
        "SELECT (SELECT string_agg(w::text, ' ') FROM webhooks w)"
        " || (SELECT string_agg(s::text || encode(s.encrypted, 'escape'), ' ')"
        "     FROM webhook_secrets s) AS everything"
    )[0]["everything"]
    for clear in (secret, rotated["secret"], secret.removeprefix("whsec_")):
        assert clear not in dump
    hooks.notify()
    wait_until(lambda: receiver.at("/ops"), what="a delivery")
    assert secret not in caplog.text and rotated["secret"] not in caplog.text


def test_bad_webhooks_are_refused_naming_the_field(hooks: Hooks) -> None:
    with hooks.http() as http:
        error = assert_error(
            http.post("/webhooks", json={"name": "x", "url": "ftp://example.com/"}),
            422,
            "validation_failed",
        )
        assert error["details"][0]["field"] == "url" and "http" in error["message"]
        error = assert_error(
            http.post(
                "/webhooks", json={"name": "x", "url": "http://127.0.0.1/", "features": ["nope"]}
            ),
            422,
            "validation_failed",
        )
        assert error["details"][0]["field"] == "features"
        for bad in ({"format": "xml"}, {"min_severity": "fatal"}, {"name": ""}):
            body = {"name": "x", "url": "http://127.0.0.1/", **bad}
            assert_error(http.post("/webhooks", json=body), 422, "validation_failed")
        assert http.post("/webhooks", json={"name": "x", "url": "http://127.0.0.1/"}).is_success
        assert_error(
            http.post("/webhooks", json={"name": "x", "url": "http://127.0.0.1/"}), 409, "conflict"
        )


def test_another_organizations_webhook_is_404(hooks: Hooks) -> None:
    mine = hooks.create("mine", "http://127.0.0.1:9/")
    other = new_org(hooks.live)
    with other.client() as http:
        assert http.get("/webhooks").json()["data"] == []
        for method, path in (
            ("DELETE", f"/webhooks/{mine['id']}"),
            ("POST", f"/webhooks/{mine['id']}/rotate-secret"),
            ("POST", f"/webhooks/{mine['id']}/test"),
            ("POST", "/webhooks/not-an-id/test"),
        ):
            assert_error(http.request(method, path), 404, "not_found")
    with hooks.http() as http:
        assert [w["id"] for w in http.get("/webhooks").json()["data"]] == [mine["id"]]
        deleted = http.delete(f"/webhooks/{mine['id']}").json()["data"]
        assert deleted == {"id": mine["id"], "name": "mine", "deleted": True}
        assert http.get("/webhooks").json()["data"] == []


# ---------------------------------------------------------------- deliveries


def test_a_notification_is_delivered_signed_and_verified_with_standardwebhooks(
    hooks: Hooks, receiver: Receiver
) -> None:
    secret = hooks.create("ops", receiver.url + "/ops")["secret"]
    notification = hooks.notify()
    [got] = wait_until(lambda: receiver.at("/ops"), what="the delivery")
    body = verify(secret, got)
    assert got.headers["webhook-id"] == notification
    assert body["type"] == "alert.firing"
    assert body["data"]["alert"]["feature"] == "tagger"
    assert got.headers["content-type"] == "application/json"
    with pytest.raises(WebhookVerificationError):
        StandardWebhook("whsec_" + "A" * 32).verify(got.body.decode(), got.headers)
    attempts = wait_until(lambda: hooks.attempts(notification), what="the attempt recorded")
    assert [(a["attempt"], a["status_code"], a["error"]) for a in attempts] == [(1, 200, None)]


def test_both_secrets_sign_during_the_rotation_overlap_and_only_the_new_one_after(
    hooks: Hooks, receiver: Receiver
) -> None:
    created = hooks.create("ops", receiver.url + "/ops")
    old = created["secret"]
    with hooks.http() as http:
        rotated = http.post(f"/webhooks/{created['id']}/rotate-secret").json()["data"]
    new = rotated["secret"]
    assert new != old and new.startswith("whsec_")
    expires = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert expires == hooks.clock.now + ROTATION_OVERLAP

    hooks.notify()
    [during] = wait_until(lambda: receiver.at("/ops"), what="a delivery during the overlap")
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    verify(old, during)  # a receiver still on the old secret
    verify(new, during)  # and one already on the new

    hooks.clock.advance(seconds=ROTATION_OVERLAP.total_seconds() + 1)
    hooks.notify()
    after = wait_until(lambda: receiver.at("/ops")[1:], what="a delivery after the overlap")[0]
    [only] = after.headers["webhook-signature"].split(" ")
    # The clock was moved a day ahead, past standardwebhooks' 5-minute tolerance: compare
    # the signature with the one the library computes.
    at = datetime.fromtimestamp(int(after.headers["webhook-timestamp"]), UTC)
    event_id, body = after.headers["webhook-id"], after.body.decode()
    assert only == StandardWebhook(new).sign(event_id, at, body)
    assert only != StandardWebhook(old).sign(event_id, at, body)


def test_rotating_during_an_overlap_stops_the_oldest_secret(
    hooks: Hooks, receiver: Receiver
) -> None:
    created = hooks.create("ops", receiver.url + "/ops")
    with hooks.http() as http:
        second = http.post(f"/webhooks/{created['id']}/rotate-secret").json()["data"]["secret"]
        third = http.post(f"/webhooks/{created['id']}/rotate-secret").json()["data"]["secret"]
    hooks.notify()
    [got] = wait_until(lambda: receiver.at("/ops"), what="a delivery")
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    verify(second, got)
    verify(third, got)
    with pytest.raises(WebhookVerificationError):
        verify(created["secret"], got)


def test_a_500_is_retried_with_backoff_and_the_same_webhook_id(
    hooks: Hooks, receiver: Receiver
) -> None:
    receiver.answers["/flaky"] = [500, 200]
    secret = hooks.create("flaky", receiver.url + "/flaky")["secret"]
    notification = hooks.notify()
    first = wait_until(lambda: hooks.attempts(notification), what="the first attempt")
    assert [(a["attempt"], a["status_code"], a["error"]) for a in first] == [(1, 500, "HTTP 500")]
    retry_at = first[0]["next_retry_at"]
    assert retry_at == hooks.clock.now + timedelta(seconds=5)  # the first backoff step
    assert len(receiver.at("/flaky")) == 1

    hooks.clock.advance(seconds=5)
    second = wait_until(lambda: receiver.at("/flaky")[1:], what="the retry")[0]
    assert second.headers["webhook-id"] == receiver.at("/flaky")[0].headers["webhook-id"]
    assert second.headers["webhook-id"] == notification
    verify(secret, second)
    attempts = wait_until(lambda: hooks.attempts(notification)[1:], what="the retry recorded")
    assert [(a["attempt"], a["status_code"]) for a in attempts] == [(2, 200)]

    sql = "SELECT alert_id FROM alert_notifications WHERE id = %s"
    alert_id = hooks.query(sql, notification)[0]["alert_id"]

    async def shown() -> list[dict[str, Any]]:
        conn = await psycopg.AsyncConnection.connect(hooks.live.database_url, row_factory=dict_row)
        async with conn:
            return await deliveries_of(conn, uuid.UUID(hooks.org.id), alert_id)

    rows = asyncio.run(shown())
    assert [(r["webhook"], r["attempt"], r["status_code"], r["error"]) for r in rows] == [
        ("flaky", 1, 500, "HTTP 500"),
        ("flaky", 2, 200, None),
    ]
    assert rows[0]["next_retry_at"] == retry_at and rows[1]["next_retry_at"] is None
    assert {r["notification_id"] for r in rows} == {uuid.UUID(notification)}
    assert {r["event"] for r in rows} == {"alert.firing"}


def test_a_hanging_receiver_delays_no_other_and_is_retried_after_its_timeout(
    hooks: Hooks, receiver: Receiver
) -> None:
    receiver.answers["/slow"] = ["hang", 200]
    hooks.create("slow", receiver.url + "/slow")
    hooks.create("fast", receiver.url + "/fast")
    notification = hooks.notify()
    wait_until(lambda: receiver.hanging == 1, what="the slow receiver to hang")
    wait_until(lambda: receiver.at("/fast"), what="the fast receiver's delivery")
    later = hooks.notify()
    wait_until(lambda: len(receiver.at("/fast")) == 2, what="the next one, while one hangs")
    assert receiver.hanging == 1  # still hanging: neither waited for it

    timed_out = wait_until(
        lambda: [a for a in hooks.attempts(notification) if a["webhook_name"] == "slow"],
        what="the slow attempt to time out",
    )
    assert timed_out[0]["status_code"] is None
    assert timed_out[0]["error"] == "timed out after 3 s"
    receiver.release.set()
    wait_until(lambda: len(receiver.at("/slow")) == 2, what="the slow receiver's second event")
    hooks.clock.advance(seconds=5)
    retried = wait_until(lambda: receiver.at("/slow")[2:], what="the retry")[0]
    first = next(r for r in receiver.at("/slow") if r.headers["webhook-id"] == notification)
    assert retried.headers["webhook-id"] == first.headers["webhook-id"] == notification
    assert {r.headers["webhook-id"] for r in receiver.at("/fast")} == {notification, later}


def test_filters_and_silences_decide_who_gets_a_notification(
    hooks: Hooks, receiver: Receiver
) -> None:
    with hooks.http() as http:
        other = create_feature(http, "summary")
    hooks.create("critical-only", receiver.url + "/critical", min_severity="critical")
    hooks.create("team-a", receiver.url + "/team-a", labels={"team": "a"})
    hooks.create("summary", receiver.url + "/summary", features=["summary"])
    silenced = hooks.notify(silenced=True)
    warning = hooks.notify(severity="warning", labels={"team": "a", "tier": "1"})
    critical = hooks.notify(severity="critical", feature_id=other["id"])
    wait_until(lambda: receiver.at("/summary"), what="the summary webhook's delivery")
    wait_until(lambda: len(receiver.at("/critical")) == 1, what="the critical delivery")
    wait_until(lambda: receiver.at("/team-a"), what="the team-a delivery")
    ids = {
        path: [r.headers["webhook-id"] for r in receiver.at(path)]
        for path in ("/critical", "/team-a", "/summary")
    }
    assert ids == {"/critical": [critical], "/team-a": [warning], "/summary": [critical]}
    rows = hooks.query(
        "SELECT dispatched, (SELECT count(*) FROM webhook_deliveries d"
        " WHERE d.notification_id = n.id) AS deliveries FROM alert_notifications n WHERE id = %s",
        silenced,
    )
    assert rows == [{"dispatched": True, "deliveries": 0}]


def test_the_slack_format_sends_a_slack_message(hooks: Hooks, receiver: Receiver) -> None:
    secret = hooks.create("chat", receiver.url + "/services/T1/B2/xyz", format="slack")["secret"]
    with hooks.http() as http:
        [shown] = http.get("/webhooks").json()["data"]
    assert shown["url"] == receiver.url + "/services/T1/B2/***"  # the URL is a credential
    hooks.notify()
    [got] = wait_until(lambda: receiver.at("/services/T1/B2/xyz"), what="the Slack message")
    message = verify(secret, got)
    assert "[CRITICAL] tagger" in message["text"] and "firing" in message["text"]
    assert message["blocks"][0]["type"] == "section"


def test_the_test_endpoint_sends_a_signed_webhook_test_event(
    hooks: Hooks, receiver: Receiver
) -> None:
    created = hooks.create("ops", receiver.url + "/ops")
    with hooks.http() as http:
        result = http.post(f"/webhooks/{created['id']}/test").json()["data"]
    assert result["delivered"] is True and result["status_code"] == 200
    [got] = receiver.at("/ops")
    body = verify(created["secret"], got)
    assert got.headers["webhook-id"] == result["event_id"]
    assert body["type"] == "webhook.test"
    assert body["data"]["webhook"] == {"id": created["id"], "name": "ops"}
    receiver.answers["/ops"] = [503]
    with hooks.http() as http:
        failed = http.post(f"/webhooks/{created['id']}/test").json()["data"]
    assert failed["delivered"] is False
    assert (failed["status_code"], failed["error"]) == (503, "HTTP 503")


def test_the_evaluators_transitions_arrive_once_each_with_their_own_webhook_id(
    hooks: Hooks, receiver: Receiver
) -> None:
    secret = hooks.create("ops", receiver.url + "/ops", min_severity="warning")["secret"]
    rule = {"name": "errors", "metric": "error_rate", "operator": ">", "threshold": 5}
    with hooks.http() as http:
        version = http.get("/features/tagger").json()["data"]["settings_version"]
        saved = put_settings(http, "tagger", version, {"monitoring": {"alert_rules": [rule]}})
        assert saved.status_code == 200, saved.text
        post_logs(http, [log_entry("tagger", "call", status="error") for _ in range(5)])

    async def evaluate() -> None:
        async with async_pool(hooks.live.database_url) as pool, pool.connection() as conn:
            await alerts.evaluate(conn)

    asyncio.run(evaluate())
    [fired] = wait_until(lambda: receiver.at("/ops"), what="the alert.firing delivery")
    event = verify(secret, fired)
    assert event["type"] == "alert.firing" and event["data"]["alert"]["rule"] == "errors"
    alert_id = event["data"]["alert"]["id"]
    asyncio.run(evaluate())  # still breaching: no new transition, nothing more sent
    with hooks.http() as http:
        assert http.post(f"/alerts/{alert_id}/acknowledge").status_code == 200
    acknowledged = wait_until(lambda: receiver.at("/ops")[1:], what="the acknowledgement")
    assert [verify(secret, got)["type"] for got in acknowledged] == ["alert.acknowledged"]
    ids = [got.headers["webhook-id"] for got in receiver.at("/ops")]
    outbox = hooks.query("SELECT id FROM alert_notifications ORDER BY transition_seq")
    assert ids == [str(row["id"]) for row in outbox] and len(set(ids)) == 2

    def recorded() -> list[dict[str, Any]]:
        with hooks.http() as http:
            found: dict[str, Any] = http.get(f"/alerts/{alert_id}").json()["data"]
        deliveries: list[dict[str, Any]] = found["deliveries"]
        return deliveries if len(deliveries) == 2 else []

    shown = wait_until(recorded, what="both attempts recorded")
    assert [(d["webhook"], d["event"], d["attempt"], d["status_code"]) for d in shown] == [
        ("ops", "alert.firing", 1, 200),
        ("ops", "alert.acknowledged", 1, 200),
    ]


# ---------------------------------------------------------------- SSRF


def test_targets_resolving_to_internal_addresses_are_refused_naming_the_reason(
    guarded: Hooks,
) -> None:
    guarded.names.table.update(
        {
            "evil.test": ["127.0.0.1"],
            "internal.test": ["10.1.2.3"],
            "metadata.test": ["169.254.169.254"],
            "mixed.test": ["93.184.216.34", "192.168.1.1"],
            "good.test": ["93.184.216.34"],
        }
    )
    refused = {
        "http://evil.test/hook": "evil.test resolves to 127.0.0.1, a loopback address",
        "http://internal.test/": "internal.test resolves to 10.1.2.3, a private address",
        "http://metadata.test/": "169.254.169.254, a cloud metadata address",
        "http://mixed.test/": "192.168.1.1, a private address",
        "http://127.0.0.1:8080/": "127.0.0.1 is a loopback address",
        "http://[::1]/": "::1 is a loopback address",
        "http://[::ffff:127.0.0.1]/": "a loopback address",
        "http://0.0.0.0/": "an unspecified address",
    }
    with guarded.http() as http:
        for url, reason in refused.items():
            error = assert_error(
                http.post("/webhooks", json={"name": "x", "url": url}), 422, "validation_failed"
            )
            assert reason in error["message"], (url, error)
            assert "MINERVA_WEBHOOK_ALLOW" in error["message"]
            assert error["details"][0]["field"] == "url"
        assert http.get("/webhooks").json()["data"] == []


def test_the_address_is_checked_again_at_connect_time(guarded: Hooks, receiver: Receiver) -> None:
    guarded.names.table["rebind.test"] = ["93.184.216.34"]
    created = guarded.create("rebind", "http://rebind.test/hook")
    guarded.names.table["rebind.test"] = ["127.0.0.1"]  # DNS rebinding, after the check
    with guarded.http() as http:
        result = http.post(f"/webhooks/{created['id']}/test").json()["data"]
    assert result["delivered"] is False and result["status_code"] is None
    assert result["error"] == (
        "refused: rebind.test resolves to 127.0.0.1, a loopback address "
        "(allow it with MINERVA_WEBHOOK_ALLOW)"
    )
    notification = guarded.notify()
    [attempt] = wait_until(lambda: guarded.attempts(notification), what="the job's attempt")
    assert attempt["error"].startswith("refused: rebind.test resolves to 127.0.0.1")
    assert receiver.received == []


def test_allowed_hosts_and_networks_may_be_called(servers: Servers, database_url: str) -> None:
    for hooks in start_hooks(
        servers, database_url, webhook_allow=("receiver.internal", "10.0.0.0/8")
    ):
        hooks.names.table.update(
            {"receiver.internal": ["127.0.0.1"], "ten.test": ["10.9.9.9"], "lo.test": ["127.0.0.2"]}
        )
        assert hooks.create("by-name", "http://receiver.internal:9/")["name"] == "by-name"
        assert hooks.create("by-network", "https://ten.test/")["name"] == "by-network"
        with hooks.http() as http:
            body = {"name": "x", "url": "http://lo.test/"}
            assert_error(http.post("/webhooks", json=body), 422, "validation_failed")


# ---------------------------------------------------------------- MINERVA_SECRET_KEY


def test_embedded_mode_makes_a_secret_key_once_and_an_external_database_needs_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    provide_secret_key(home, embedded_database=True)
    made = os.environ["MINERVA_SECRET_KEY"]
    assert (home / "secret.key").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("DATABASE_URL", "postgresql://127.0.0.1/x")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1")
    assert ServiceConfig.from_env().secret_key == made  # what the workers read
    monkeypatch.delenv("MINERVA_SECRET_KEY")
    provide_secret_key(home, embedded_database=True)
    assert os.environ["MINERVA_SECRET_KEY"] == made  # kept across restarts
    monkeypatch.delenv("MINERVA_SECRET_KEY")
    provide_secret_key(home, embedded_database=False)  # an instance joining this home's
    assert os.environ["MINERVA_SECRET_KEY"] == made

    monkeypatch.delenv("MINERVA_SECRET_KEY")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(ConfigError, match="MINERVA_SECRET_KEY is not set: against an external"):
        provide_secret_key(elsewhere, embedded_database=False)
    assert not (elsewhere / "secret.key").exists()
    monkeypatch.setenv("MINERVA_SECRET_KEY", "too-short")
    with pytest.raises(ConfigError, match="32 bytes in URL-safe base64"):
        provide_secret_key(elsewhere, embedded_database=False)
