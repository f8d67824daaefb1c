"""Metrics: rollups exact against the raw entries, the health score on hand-built windows,
the series and its bounds, the batched feature list, and retention of the rollups."""

from __future__ import annotations

import asyncio
import math
import random
import threading
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest

from minerva_ai.core.errors import ConfigError
from minerva_ai.service import admin, metrics
from minerva_ai.service.app import create_app
from minerva_ai.service.config import ServiceConfig
from minerva_ai.service.jobs import take_lease
from minerva_ai.service.locks import JobName
from minerva_ai.service.metrics import LATENCY_BOUNDS
from tests.conftest import LiveService, Servers, ThreadedServer, service_config
from tests.service.conftest import (
    Org,
    assert_error,
    async_pool,
    client,
    create_feature,
    fields_of,
    log_entry,
    new_org,
    post_logs,
    put_settings,
    stamp,
)

FEATURES = ("tagger", "summary", "search")
MODELS = ("gpt-4o", "claude", None)


def call(feature: str, at: datetime, status: str = "success", **fields: Any) -> dict[str, Any]:
    """A call: a log entry with a status, at ``at``."""
    level = "info" if status == "success" else "error"
    return log_entry(feature, f"call {status}", timestamp=stamp(at), status=status, level=level) | {
        "latency_ms": 100.0,
        **fields,
    }


def bucket(latency: float) -> int:
    return sum(1 for bound in LATENCY_BOUNDS if bound <= latency)


def exact_percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def current(http: httpx.Client, feature: str, **params: Any) -> dict[str, Any]:
    response = http.get(f"/features/{feature}/metrics/current", params=params)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


@pytest.fixture
def second_instance(shared_service: LiveService) -> Iterator[LiveService]:
    """Another instance of the shared service: the same database and Redis."""
    config = service_config(shared_service.database_url, shared_service.redis_url)
    with ThreadedServer(create_app(config)) as url:
        yield LiveService(
            url,
            shared_service.database_url,
            shared_service.redis_url,
            shared_service.org_id,
            shared_service.token,
            config,
        )


def generated_day(now: datetime, count: int) -> list[dict[str, Any]]:
    """A day of calls over three features and models, with tests and plain logs mixed in."""
    rng = random.Random(7)
    entries = []
    for i in range(count):
        at = now - timedelta(seconds=rng.uniform(60, 86_000))
        status = rng.choices(["success", "error", "timeout", None], [80, 8, 4, 8])[0]
        model = rng.choice(MODELS)
        fields: dict[str, Any] = {
            "latency_ms": round(rng.lognormvariate(6, 0.8), 3),
            "tokens_in": rng.randint(0, 900),
            "tokens_out": rng.randint(0, 400),
            "cost": round(rng.uniform(0, 0.02), 6),
            "request_id": f"r{i // 2}",  # attempts of one call share a request id
            "source": "test" if rng.random() < 0.1 else "api",
        }
        if model is not None:
            fields["model"] = model
        if rng.random() < 0.05:
            del fields["latency_ms"]
        entry = call(rng.choice(FEATURES), at, status or "success", **fields)
        if status is None:
            del entry["status"]
        entries.append(entry)
    return entries


def raw_calls(database_url: str, org_id: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT f.name AS feature, l.model, l.source, l.status, l.latency_ms, l.tokens_in,"
            " l.tokens_out, l.cost::numeric AS cost, l.timestamp FROM logs l"
            " JOIN features f ON f.id = l.feature_id"
            " WHERE l.organization_id = %s AND l.status IS NOT NULL",
            (org_id,),
        ).fetchall()
        columns = ["feature", "model", "source", "status", "latency_ms", "tokens_in"]
        columns += ["tokens_out", "cost", "timestamp"]
    return [dict(zip(columns, row, strict=True)) for row in rows]


def test_a_day_of_traffic_from_two_instances_adds_up_exactly(
    org: Org, second_instance: LiveService
) -> None:
    now = datetime.now(UTC)
    entries = generated_day(now, 3000)
    with org.client() as a, client(second_instance, org.token) as b:
        for name in FEATURES:
            create_feature(a, name)
        # half through each instance, at the same time, in batches
        halves = [(a, entries[0::2]), (b, entries[1::2])]

        def send(http: httpx.Client, part: list[dict[str, Any]]) -> None:
            for start in range(0, len(part), 250):
                assert post_logs(http, part[start : start + 250])["rejected"] == []

        threads = [threading.Thread(target=send, args=half) for half in halves]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # the same ids again: nothing is counted twice
        again = post_logs(a, entries[:500])
        assert again["stored"] == 0 and again["duplicates"] == 500

        rows = raw_calls(org.service.database_url, org.id)
        since = (now - timedelta(days=1, minutes=10)).replace(second=0, microsecond=0)
        for name in FEATURES:
            mine = [r for r in rows if r["feature"] == name]
            production = [r for r in mine if r["source"] != "test"]
            for include_tests, expected in ((False, production), (True, mine)):
                response = a.get(
                    f"/features/{name}/metrics",
                    params={
                        "since": stamp(since),
                        "until": stamp(now + timedelta(minutes=1)),
                        "step": "1h",
                        "include_tests": str(include_tests).lower(),
                        "by": "model",
                    },
                )
                assert response.status_code == 200, response.text
                series = response.json()["data"]
                points = series["points"]
                assert len(points) == 25 and points[0]["time"] == stamp(since)
                assert sum(p["requests"] for p in points) == len(expected)
                for status_name, status in (
                    ("successes", "success"),
                    ("errors", "error"),
                    ("timeouts", "timeout"),
                ):
                    assert sum(p[status_name] for p in points) == sum(
                        1 for r in expected if r["status"] == status
                    ), status_name
                assert sum(p["tokens_in"] for p in points) == sum(r["tokens_in"] for r in expected)
                assert sum(p["tokens_out"] for p in points) == sum(
                    r["tokens_out"] for r in expected
                )
                # each point's cost is the exact (numeric) sum, rounded once to a float
                by_hour: dict[datetime, Decimal] = defaultdict(Decimal)
                for r in expected:
                    start = since + (r["timestamp"] - since) // timedelta(hours=1) * timedelta(
                        hours=1
                    )
                    by_hour[start] += r["cost"]
                for point in points:
                    start = datetime.fromisoformat(point["time"])
                    assert point["cost"] == float(by_hour.get(start, Decimal(0)))
                # per model: the calls that named it (null: none)
                models = {m["model"]: m["points"] for m in series["models"]}
                assert set(models) == {r["model"] for r in expected}
                for model, model_points in models.items():
                    assert sum(p["requests"] for p in model_points) == sum(
                        1 for r in expected if r["model"] == model
                    )

            # the percentiles of the whole day: each in the bucket of the exact value
            day = current(a, name, window="1d")
            latencies = [r["latency_ms"] for r in production if r["latency_ms"] is not None]
            assert day["requests"] == len(production)
            assert day["response_time"] == pytest.approx(sum(latencies) / len(latencies))
            for field, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
                assert bucket(day[field]) == bucket(exact_percentile(latencies, q)), field


def test_a_late_entry_lands_in_its_minute(org: Org) -> None:
    now = datetime.now(UTC)
    three_hours_ago = (now - timedelta(hours=3)).replace(second=0, microsecond=0)
    params = {"since": stamp(three_hours_ago), "until": stamp(three_hours_ago, minutes=-1)}
    with org.client() as http:
        create_feature(http, "tagger")
        post_logs(http, [call("tagger", now - timedelta(seconds=5))])
        before = http.get("/features/tagger/metrics", params=params).json()["data"]["points"]
        assert [p["requests"] for p in before] == [0]
        post_logs(http, [call("tagger", three_hours_ago + timedelta(seconds=30))])
        after = http.get("/features/tagger/metrics", params=params).json()["data"]["points"]
        assert [p["requests"] for p in after] == [1]
        assert after[0]["time"] == stamp(three_hours_ago)


def test_logs_without_a_status_are_not_calls(api: httpx.Client) -> None:
    create_feature(api, "tagger")
    post_logs(api, [log_entry("tagger", "just a log")])
    assert current(api, "tagger")["requests"] == 0


# Hand-built windows. A window of 5m is the five whole minutes before the current one plus
# the current one so far; entries sit a few minutes in, so a minute that turns while the
# test runs leaves them in the same window.


def minute_ago(minutes: int) -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=minutes)


def test_no_traffic_is_no_data(api: httpx.Client) -> None:
    create_feature(api, "tagger")
    data = current(api, "tagger")
    assert data["requests"] == 0 and data["requests_per_minute"] == 0
    for field in ("success_rate", "error_rate", "uptime", "response_time", "p95_ms"):
        assert data[field] is None, field
    assert data["health_score"] is None and data["trend"] is None
    assert data["status"] == "no_data"
    assert data["slo"] == {"success_rate": 99.5, "response_time_ms": 1000}


def test_all_errors_is_an_error(api: httpx.Client) -> None:
    create_feature(api, "tagger")
    at = minute_ago(2) + timedelta(seconds=20)
    post_logs(api, [call("tagger", at, "error", latency_ms=100.0) for _ in range(4)])
    data = current(api, "tagger")
    assert data["requests"] == 4 and data["errors"] == 4
    assert data["success_rate"] == 0 and data["error_rate"] == 100 and data["uptime"] == 0
    # 0.3 x 0 + 0.3 x 0 + 0.2 x (1 - 100/1000) + 0.2 x 0
    assert data["health_score"] == 18.0
    assert data["status"] == "error"


def test_uptime_leaves_out_minutes_without_requests(api: httpx.Client) -> None:
    create_feature(api, "tagger")
    good = [call("tagger", minute_ago(4) + timedelta(seconds=10)) for _ in range(3)]
    mixed = [call("tagger", minute_ago(2) + timedelta(seconds=10)) for _ in range(3)]
    mixed.append(call("tagger", minute_ago(2) + timedelta(seconds=10), "timeout"))
    post_logs(api, good + mixed)
    data = current(api, "tagger")
    # two minutes had calls (the others are left out); one met the 99.5% objective
    assert data["uptime"] == 50.0
    assert data["success_rate"] == pytest.approx(600 / 7)
    assert data["error_rate"] == pytest.approx(100 / 7)
    # the error-rate term: max(0, 1 - 14.3 / 5) = 0
    expected = 0.3 * (50 / 99.9) + 0.3 * (600 / 7 / 99.5) + 0.2 * 0.9 + 0
    assert data["health_score"] == round(100 * expected, 1) == 58.9
    assert data["status"] == "error"
    # the objective is the feature's: at 75% the mixed minute (3 of 4) meets it too
    saved = put_settings(api, "tagger", 1, {"monitoring": {"slo": {"success_rate": 75}}})
    assert saved.status_code == 200, saved.text
    relaxed = current(api, "tagger")
    assert relaxed["uptime"] == 100.0
    assert relaxed["slo"] == {"success_rate": 75, "response_time_ms": 1000}


def test_health_trend_compares_with_the_span_before(api: httpx.Client) -> None:
    create_feature(api, "tagger")
    earlier = minute_ago(8) + timedelta(seconds=10)
    now_ish = minute_ago(2) + timedelta(seconds=10)
    post_logs(api, [call("tagger", earlier, latency_ms=50.0) for _ in range(5)])
    post_logs(api, [call("tagger", now_ish, latency_ms=900.0) for _ in range(5)])
    data = current(api, "tagger")
    assert data["health_score"] == 82.0  # 30 + 30 + 0.2 x (1 - 900/1000) x 100 + 20
    assert data["trend"] == "down" and data["status"] == "warning"
    post_logs(api, [call("tagger", now_ish, latency_ms=50.0) for _ in range(95)])
    better = current(api, "tagger")
    assert better["trend"] == "flat" and better["status"] == "healthy"
    assert better["requests_per_minute"] == pytest.approx(100 / 5, rel=0.2)


def test_split_by_model(api: httpx.Client) -> None:
    create_feature(api, "tagger")
    at = minute_ago(1) + timedelta(seconds=5)
    post_logs(
        api,
        [call("tagger", at, "error", model="primary") for _ in range(3)]
        + [call("tagger", at, model="fallback") for _ in range(3)]
        + [call("tagger", at)],
    )
    data = current(api, "tagger", by="model")
    models = {m["model"]: m for m in data["models"]}
    assert set(models) == {"primary", "fallback", None}
    assert models["primary"]["error_rate"] == 100 and models["primary"]["status"] == "error"
    assert models["fallback"]["success_rate"] == 100
    assert data["requests"] == 7 and data["errors"] == 3


def test_the_feature_list_carries_everyones_metrics(api: httpx.Client) -> None:
    for name in FEATURES:
        create_feature(api, name)
    at = minute_ago(1) + timedelta(seconds=5)
    post_logs(api, [call("tagger", at, "error"), call("summary", at)])
    listed = api.get("/features", params={"include_metrics": "true", "window": "15m"})
    assert listed.status_code == 200, listed.text
    by_name = {f["name"]: f["metrics"] for f in listed.json()["data"]}
    assert by_name["tagger"]["errors"] == 1 and by_name["tagger"]["window"] == "15m"
    assert by_name["summary"]["status"] == "healthy"
    assert by_name["search"]["status"] == "no_data"
    plain = api.get("/features").json()["data"]
    assert all("metrics" not in f for f in plain)
    optimized = api.get("/features/optimized", params={"window": "15m"})
    assert optimized.status_code == 200
    assert [f["metrics"]["requests"] for f in optimized.json()["data"]] == [
        f["metrics"]["requests"] for f in listed.json()["data"]
    ]
    one = api.get("/features/tagger", params={"include_metrics": "true"}).json()["data"]
    assert one["metrics"]["errors"] == 1


def test_test_calls_are_kept_apart(api: httpx.Client) -> None:
    create_feature(api, "tagger")
    at = minute_ago(1) + timedelta(seconds=5)
    post_logs(api, [call("tagger", at), call("tagger", at, "error", source="test")])
    assert current(api, "tagger")["requests"] == 1
    assert current(api, "tagger", include_tests="true")["requests"] == 2


def test_series_has_every_step(api: httpx.Client) -> None:
    create_feature(api, "tagger")
    post_logs(api, [call("tagger", minute_ago(3) + timedelta(seconds=5))])
    points = api.get("/features/tagger/metrics").json()["data"]["points"]
    assert len(points) in (60, 61)  # the last hour by minute (61 when now is mid-minute)
    assert sum(p["requests"] for p in points) == 1
    assert [p["status"] for p in points].count("no_data") == len(points) - 1


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("current", {"window": "0m"}, "query parameter window"),
        ("current", {"window": "-5m"}, "query parameter window"),
        ("current", {"window": "30s"}, "query parameter window"),
        ("current", {"window": "1000d"}, "query parameter window"),
        ("current", {"by": "region"}, "query parameter by"),
        ("series", {"step": "30s"}, "query parameter step"),
        ("series", {"step": "2d"}, "query parameter step"),
        ("series", {"step": "0m"}, "query parameter step"),
        ("series", {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),
        ("series", {"since": stamp(days=60), "step": "1m"}, "query parameter step"),
        ("series", {"since": stamp(days=200), "step": "1d"}, "query parameter since"),
        ("series", {"since": "yesterday"}, "query parameter since"),
    ],
)
def test_bad_windows_and_steps_name_the_parameter(
    api: httpx.Client, path: str, params: dict[str, str], field: str
) -> None:
    create_feature(api, "tagger")
    url = "/features/tagger/metrics" + ("/current" if path == "current" else "")
    error = assert_error(api.get(url, params=params), 400, "bad_request")
    assert any(field in f for f in fields_of(error)), error


def test_unknown_feature_is_404(api: httpx.Client) -> None:
    for url in ("/features/nope/metrics/current", "/features/nope/metrics"):
        assert_error(api.get(url), 404, "not_found")


def test_slo_outside_its_range_is_refused(api: httpx.Client) -> None:
    create_feature(api, "tagger")
    bad = {"monitoring": {"slo": {"success_rate": 101, "response_time_ms": -1}}}
    response = put_settings(api, "tagger", 1, bad)
    error = assert_error(response, 422, "validation_failed")
    assert set(fields_of(error)) == {
        "monitoring.slo.success_rate",
        "monitoring.slo.response_time_ms",
    }


def test_optimized_is_a_reserved_name(api: httpx.Client) -> None:
    response = api.post("/features", json={"name": "optimized"})
    error = assert_error(response, 422, "validation_failed")
    assert "reserved" in error["message"] + str(error["details"])


def test_a_reader_reads_metrics_of_its_own_organization_only(shared_service: LiveService) -> None:
    mine, theirs = new_org(shared_service), new_org(shared_service)
    with mine.client() as admin_http, theirs.client() as other:
        create_feature(admin_http, "tagger")
        post_logs(admin_http, [call("tagger", minute_ago(1) + timedelta(seconds=5))])
        with mine.client(mine.make_token(["read"])) as reader:
            assert current(reader, "tagger")["requests"] == 1
        create_feature(other, "tagger")
        assert current(other, "tagger")["requests"] == 0
        ingest_only = mine.make_token(["ingest"])
        with mine.client(ingest_only) as ingester:
            assert_error(ingester.get("/features/tagger/metrics/current"), 403, "forbidden")


def test_retention_removes_old_rollups_only(database_url: str, servers: Servers) -> None:
    # A service of its own, jobs off: the test runs the retention job as its leader.
    config = service_config(database_url, servers.redis_url, run_jobs=False)
    issued = admin.create_organization(database_url, "acme")
    with ThreadedServer(create_app(config)) as url:
        service = LiveService(
            url, database_url, servers.redis_url, str(issued.organization_id), issued.token, config
        )
        with client(service) as http:
            create_feature(http, "tagger")
            post_logs(http, [call("tagger", datetime.now(UTC) - timedelta(days=3))])
            post_logs(http, [call("tagger", minute_ago(1))])

    def minutes() -> int:
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT count(*) FROM metric_minutes").fetchone()
        assert row is not None
        return int(row[0])

    assert minutes() == 2

    async def expire() -> int:
        async with async_pool(database_url) as pool:
            lease = await take_lease(pool, JobName.METRICS_RETENTION, "test", 60)
            assert lease is not None
            try:
                async with pool.connection() as conn:
                    return await metrics.expire(conn, timedelta(days=2), lease.fence)
            finally:
                await lease.release()

    assert asyncio.run(expire()) == 1
    assert minutes() == 1


def test_metrics_are_kept_at_least_as_long_as_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://127.0.0.1/x")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1")
    monkeypatch.setenv("MINERVA_LOG_RETENTION", "120d")
    with pytest.raises(ConfigError, match=r"MINERVA_METRICS_RETENTION \(90d\) must be at least"):
        ServiceConfig.from_env()
    monkeypatch.setenv("MINERVA_METRICS_RETENTION", "400d")
    assert ServiceConfig.from_env().metrics_retention == timedelta(days=400)


def test_the_worked_example_of_the_docs(api: httpx.Client) -> None:
    # docs/metrics.md#worked-example, in the minutes before this one and this one so far
    create_feature(api, "summary")
    now = minute_ago(0)
    minutes = [
        (now - timedelta(minutes=4), ["success"] * 3, [100.0, 120.0, 140.0]),
        (now - timedelta(minutes=2), ["success"] * 3 + ["timeout"], [200.0, 220.0, 240.0, 3e4]),
        (now, ["success"] * 3, [100.0, 100.0, 100.0]),
    ]
    post_logs(
        api,
        [
            call("summary", at, status, latency_ms=latency)
            for at, statuses, latencies in minutes
            for status, latency in zip(statuses, latencies, strict=True)
        ],
    )
    data = current(api, "summary")
    assert (data["requests"], data["successes"], data["timeouts"]) == (10, 9, 1)
    assert (data["success_rate"], data["error_rate"]) == (90, 10)
    assert data["uptime"] == pytest.approx(200 / 3)
    assert data["response_time"] == 3132
    assert data["health_score"] == 47.2 and data["status"] == "error"
    assert 100 <= data["p50_ms"] < 125
