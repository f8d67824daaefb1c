"""A feature's rate limits on test calls (service/providers/limits.py): requests per minute
exact across two instances and 200 concurrent callers, token and cost reservations settled
to the real usage, counters rebuilt from PostgreSQL after Redis loses them, and 503
``limits_unavailable`` while Redis is down."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import redis

from minerva_ai.core.protocol import API_PREFIX
from minerva_ai.service import admin
from minerva_ai.service.app import create_app
from minerva_ai.service.providers.limits import NANO, PREFIX
from tests.conftest import Servers, ThreadedServer, service_config, wait_until
from tests.service.conftest import RestartableRedis, assert_error, create_feature, put_settings

CALLERS = 200
RPM = 50


class Clock:
    """The limiter's time, driven by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def instances(
    database_url: str, redis_url: str, clock: Clock, count: int = 2
) -> Iterator[tuple[list[str], str]]:
    """``count`` service instances on one database and Redis; their API URLs and a token."""
    config = service_config(database_url, redis_url, clock=clock, pool_max_size=10)
    token = admin.create_organization(database_url, "acme").token
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(ThreadedServer(create_app(config))) for _ in range(count)]
        yield [url + API_PREFIX for url in urls], token


def client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def limited_feature(http: httpx.Client, name: str, limits: dict[str, Any], **sim: Any) -> str:
    feature = create_feature(http, name)
    definition = {"provider": "simulator", "latency_ms": 0, **sim}
    sections = {
        "models": {"primary": "sim", "definitions": {"sim": definition}},
        "rate_limits": limits,
    }
    assert put_settings(http, name, 1, sections).status_code == 200
    return str(feature["id"])


async def burst(urls: list[str], token: str, feature: str, count: int) -> list[httpx.Response]:
    """``count`` test calls at once, spread over the instances."""
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(headers=headers, timeout=60, limits=limits) as http:
        calls = [
            http.post(f"{urls[i % len(urls)]}/features/{feature}/test", json={"content": f"q{i}"})
            for i in range(count)
        ]
        return list(await asyncio.gather(*calls))


def test_requests_per_minute_are_exact_across_instances(
    database_url: str, servers: Servers
) -> None:
    clock = Clock()
    with instances(database_url, servers.redis_url, clock) as (urls, token):
        with client(urls[0], token) as http:
            limited_feature(http, "burst", {"requests_per_minute": RPM})
        answers = asyncio.run(burst(urls, token, "burst", CALLERS))
        statuses = [a.status_code for a in answers]
        assert statuses.count(200) == RPM, statuses
        assert statuses.count(429) == CALLERS - RPM
        for refused in (a for a in answers if a.status_code == 429):
            error = assert_error(refused, 429, "rate_limited")
            # One request every 60/50 = 1.2 s after the burst: retry in 2 (whole) seconds.
            assert refused.headers["Retry-After"] == "2"
            assert error["details"] == {"limit": "requests_per_minute", "retry_after": 2}
        with client(urls[1], token) as http:
            clock.now += 1.201  # one interval later: exactly one more
            assert http.post("/features/burst/test", json={"content": "x"}).status_code == 200
            assert_error(
                http.post("/features/burst/test", json={"content": "x"}), 429, "rate_limited"
            )
            history = http.get("/features/burst/test/history", params={"limit": 1000}).json()
            assert history["count"] == RPM + 1  # only the calls let through were made


def test_tokens_and_cost_are_reserved_then_settled(database_url: str, servers: Servers) -> None:
    clock = Clock()
    store = redis.Redis.from_url(servers.redis_url)
    price = {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}
    with (
        instances(database_url, servers.redis_url, clock, count=1) as (urls, token),
        client(urls[0], token) as http,
    ):
        feature_id = limited_feature(
            http,
            "tok",
            {"tokens_per_minute": 150, "cost_per_day": 5},
            latency_ms=300,
            parameters={"max_tokens": 100},
            price=price,
            output="ok",
        )
        minute, day = int(clock.now // 60), int(clock.now // 86400)
        tpm_key = f"{PREFIX}{feature_id}:tpm:{minute}"
        cost_key = f"{PREFIX}{feature_id}:cost:{day}"
        first: list[httpx.Response] = []
        slow = threading.Thread(
            target=lambda: first.append(http.post("/features/tok/test", json={"content": "a"}))
        )
        slow.start()
        # While the first call runs, its estimate (input + max_tokens) is held...
        reserved = int(wait_until(lambda: store.get(tpm_key), what="the reservation"))
        assert reserved > 100
        with client(urls[0], token) as other:
            second = other.post("/features/tok/test", json={"content": "b"})
        error = assert_error(second, 429, "rate_limited")
        assert error["details"]["limit"] == "tokens_per_minute"
        slow.join(30)
        # ...and then replaced by what it really used.
        used = first[0].json()["data"]
        assert used["status"] == "success"
        real = used["tokens"]["input"] + used["tokens"]["output"]
        assert int(store.get(tpm_key) or 0) == real < reserved
        assert int(store.get(cost_key) or 0) == round(used["output"]["cost"] * NANO)
        third = http.post("/features/tok/test", json={"content": "c"})
        assert third.status_code == 200, third.text


def test_redis_down_refuses_limited_calls_and_limits_hold_when_it_returns(
    database_url: str, tmp_path: Any
) -> None:
    store = RestartableRedis(tmp_path)
    store.start()
    clock = Clock()
    try:
        with (
            instances(database_url, store.url, clock, count=1) as (urls, token),
            client(urls[0], token) as http,
        ):
            limited_feature(http, "lim", {"requests_per_minute": 2})
            limited_feature(http, "free", {})
            call = {"content": "x"}
            assert http.post("/features/lim/test", json=call).status_code == 200
            assert http.post("/features/lim/test", json=call).status_code == 200
            assert_error(http.post("/features/lim/test", json=call), 429, "rate_limited")
            store.stop()
            down = http.post("/features/lim/test", json=call)
            error = assert_error(down, 503, "limits_unavailable")
            assert "Redis" in error["message"]
            assert http.post("/features/free/test", json=call).status_code == 200
            store.start()  # empty: the counters are rebuilt from what PostgreSQL recorded
            back = wait_until(
                lambda: (r := http.post("/features/lim/test", json=call)).status_code != 503 and r,
                what="limits back",
            )
            assert_error(back, 429, "rate_limited")
            clock.now += 30.001  # 60/2 s later, one more call
            assert http.post("/features/lim/test", json=call).status_code == 200
    finally:
        with contextlib.suppress(Exception):
            store.stop()


def test_one_instance_decides_for_many_more_callers_than_connections(servers: Servers) -> None:
    from minerva_ai.service.providers.limits import (
        MAX_CONNECTIONS,
        Limiter,
        Limits,
        RateLimited,
        Usage,
    )

    async def nothing(_: Any) -> Usage:
        return Usage(0, 0, 0.0)

    async def scenario() -> list[str]:
        limiter = Limiter.connect(servers.redis_url, Clock())
        feature = f"many-{time.time_ns()}"

        async def one() -> str:
            try:
                await limiter.reserve(feature, Limits(requests_per_minute=70), 10, None, nothing)
            except RateLimited:
                return "limited"
            return "ok"

        try:
            return list(await asyncio.gather(*(one() for _ in range(MAX_CONNECTIONS * 6))))
        finally:
            await limiter.close()

    verdicts = asyncio.run(scenario())
    # Callers wait for a connection instead of being refused (redis-py's own pool refuses
    # the 101st concurrent command, which would have been a 503).
    assert verdicts.count("ok") == 70 and verdicts.count("limited") == MAX_CONNECTIONS * 6 - 70


def test_lost_token_and_cost_counters_are_rebuilt_from_postgresql(
    database_url: str, servers: Servers
) -> None:
    clock = Clock()
    store = redis.Redis.from_url(servers.redis_url)
    price = {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}
    with (
        instances(database_url, servers.redis_url, clock, count=1) as (urls, token),
        client(urls[0], token) as http,
    ):
        feature_id = limited_feature(
            http,
            "rebuilt",
            {"tokens_per_minute": 100_000, "cost_per_day": 50},
            parameters={"max_tokens": 10},
            price=price,
            output="twelve chars",
        )
        used = [http.post("/features/rebuilt/test", json={"content": f"q{i}"}) for i in range(3)]
        results = [r.json()["data"] for r in used]
        tokens = sum(r["tokens"]["input"] + r["tokens"]["output"] for r in results)
        cost = sum(r["output"]["cost"] for r in results)
        minute, day = int(clock.now // 60), int(clock.now // 86400)
        tpm_key = f"{PREFIX}{feature_id}:tpm:{minute}"
        cost_key = f"{PREFIX}{feature_id}:cost:{day}"
        assert int(store.get(tpm_key) or 0) == tokens
        store.delete(tpm_key, cost_key)  # what a Redis restart does
        after = http.post("/features/rebuilt/test", json={"content": "q9"}).json()["data"]
        # Rebuilt from the attempts' log entries, then this call settled on top.
        spent = after["tokens"]["input"] + after["tokens"]["output"]
        assert int(store.get(tpm_key) or 0) == tokens + spent
        rebuilt_cost = int(store.get(cost_key) or 0)
        assert abs(rebuilt_cost - round((cost + after["output"]["cost"]) * NANO)) <= 3
