"""Live metrics: `metrics_update` on the WebSocket and the SSE streams, computed once per
instance whatever the number of subscribers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from minerva_ai.service import admin
from minerva_ai.service.app import create_app
from minerva_ai.service.deps import AppState
from tests.conftest import WAIT, LiveService, Servers, service_config
from tests.service.conftest import (
    Org,
    SseEvent,
    create_feature,
    expect,
    log_entry,
    post_logs,
    send,
    serving,
    sse_events,
    stamp,
    ws_open,
)


def calls(feature: str, count: int, status: str = "success") -> list[dict[str, Any]]:
    at = datetime.now(UTC) - timedelta(seconds=2)
    return [
        log_entry(feature, "call", timestamp=stamp(at), status=status, latency_ms=120.0)
        for _ in range(count)
    ]


async def next_update(
    ws: ClientConnection, until: Callable[[dict[str, Any]], bool] = lambda _: True
) -> dict[str, Any]:
    """The next `metrics_update` whose data satisfies ``until`` (others are skipped)."""
    async with asyncio.timeout(WAIT):
        while True:
            data = await expect(ws, "metrics_update")
            if until(data):
                return data


async def next_event(
    events: AsyncIterator[SseEvent], until: Callable[[dict[str, Any]], bool] = lambda _: True
) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        while True:
            event = await anext(events)
            assert event.event == "metrics_update", event
            if until(event.data):
                data: dict[str, Any] = event.data
                return data


def test_a_feature_subscription_sees_traffic(org: Org) -> None:
    with org.client() as http:
        create_feature(http, "tagger")

        async def scenario() -> None:
            async with ws_open(org.service, org.token) as ws:
                await expect(ws, "authenticated")
                await send(ws, "subscribe", channel="metrics", feature="tagger", window="15m")
                subscribed = await expect(ws, "subscribed")
                assert subscribed["channel"] == "metrics" and subscribed["window"] == "15m"
                first = await next_update(ws)  # at once, before any traffic
                assert first["feature"] == "tagger" and first["status"] == "no_data"
                await asyncio.to_thread(post_logs, http, calls("tagger", 3, "error"))
                seen = await next_update(ws, lambda d: d["requests"] == 3)
                assert seen["errors"] == 3 and seen["status"] == "error"
                assert seen["window"] == "15m"
                await send(ws, "unsubscribe", channel="metrics", feature="tagger")
                assert (await expect(ws, "unsubscribed"))["channel"] == "metrics"

        asyncio.run(scenario())


def test_a_subscription_to_every_feature(org: Org) -> None:
    with org.client() as http:
        create_feature(http, "tagger")
        create_feature(http, "summary")

        async def scenario() -> None:
            async with ws_open(org.service, org.token) as ws:
                await expect(ws, "authenticated")
                await send(ws, "subscribe", channel="metrics")
                assert (await expect(ws, "subscribed"))["feature_id"] is None
                first = await next_update(ws)
                assert [f["feature"] for f in first["features"]] == ["summary", "tagger"]
                await asyncio.to_thread(post_logs, http, calls("summary", 2))
                seen = await next_update(ws, lambda d: d["features"][0]["requests"] == 2)
                assert seen["features"][1]["requests"] == 0
                assert seen["window"] == "5m"

        asyncio.run(scenario())


def test_a_bad_window_is_an_error_on_the_socket(org: Org) -> None:
    async def scenario() -> None:
        async with ws_open(org.service, org.token) as ws:
            await expect(ws, "authenticated")
            await send(ws, "subscribe", channel="metrics", window="10s")
            error = await expect(ws, "error")
            assert error["code"] == "bad_message" and "window" in error["message"]
            await send(ws, "subscribe", channel="metrics", feature="nope")
            assert (await expect(ws, "error"))["code"] == "not_found"

    asyncio.run(scenario())


def test_the_sse_streams_send_the_same_updates(org: Org) -> None:
    with org.client() as http:
        create_feature(http, "tagger")

        async def scenario() -> None:
            headers = {"Authorization": f"Bearer {org.token}"}
            async with httpx.AsyncClient(
                base_url=org.service.api, headers=headers, timeout=WAIT
            ) as client:
                async with (
                    client.stream("GET", "/features/tagger/metrics/stream") as one,
                    client.stream("GET", "/metrics/stream", params={"window": "1h"}) as every,
                ):
                    assert one.status_code == every.status_code == 200
                    assert one.headers["content-type"].startswith("text/event-stream")
                    feature_events, all_events = sse_events(one), sse_events(every)
                    assert (await next_event(feature_events))["requests"] == 0
                    await asyncio.to_thread(post_logs, http, calls("tagger", 4))
                    seen = await next_event(feature_events, lambda d: d["requests"] == 4)
                    assert seen["status"] == "healthy"
                    every_seen = await next_event(
                        all_events, lambda d: d["features"][0]["requests"] == 4
                    )
                    assert every_seen["window"] == "1h"
                missing = await client.get("/features/nope/metrics/stream")
                assert missing.status_code == 404
                bad = await client.get("/metrics/stream", params={"window": "0m"})
                assert bad.status_code == 400

        asyncio.run(scenario())


@pytest.fixture
def own_service(database_url: str, servers: Servers) -> Iterator[tuple[LiveService, AppState]]:
    """A service in this process, to count its metric computations."""
    config = service_config(database_url, servers.redis_url, metrics_interval_s=0.2)
    issued = admin.create_organization(database_url, "acme")
    app = create_app(config)
    with serving(app) as url:
        service = LiveService(
            url, database_url, servers.redis_url, str(issued.organization_id), issued.token, config
        )
        yield service, app.state.minerva


def test_many_subscribers_cost_one_computation(
    own_service: tuple[LiveService, AppState],
) -> None:
    service, state = own_service
    headers = {"Authorization": f"Bearer {service.token}"}
    with httpx.Client(base_url=service.api, headers=headers) as http:
        create_feature(http, "tagger")

    async def updates(subscribers: int, count: int) -> int:
        """Computations while ``subscribers`` sockets each receive ``count`` updates."""
        sockets = [ws_open(service, service.token) for _ in range(subscribers)]
        opened = [await s.__aenter__() for s in sockets]
        try:
            for ws in opened:
                await expect(ws, "authenticated")
                await send(ws, "subscribe", channel="metrics", feature="tagger")
                await expect(ws, "subscribed")
            before = state.metrics.computations
            for ws in opened:
                for _ in range(count):
                    await next_update(ws)
            return state.metrics.computations - before
        finally:
            for s in sockets:
                await s.__aexit__(None, None, None)

    async def scenario() -> None:
        alone = await updates(1, 5)
        crowd = await updates(40, 5)
        # each subscriber got 5 updates; the computations stay those of one subscriber
        # (a few more: the crowd's sockets read one after the other while ticks go on)
        assert alone <= 6
        assert crowd <= alone + 10, (alone, crowd)

    asyncio.run(scenario())


def test_feature_lists_share_one_computation_per_interval(
    database_url: str, servers: Servers
) -> None:
    config = service_config(database_url, servers.redis_url, metrics_interval_s=60)
    issued = admin.create_organization(database_url, "acme")
    app = create_app(config)
    with serving(app) as url:
        state: AppState = app.state.minerva
        headers = {"Authorization": f"Bearer {issued.token}"}
        with httpx.Client(base_url=url + "/api/platform/ai-management", headers=headers) as http:
            create_feature(http, "tagger")
            post_logs(http, calls("tagger", 2))
            before = state.metrics.computations

            def listed() -> list[dict[str, Any]]:
                response = http.get("/features", params={"include_metrics": "true"})
                assert response.status_code == 200, response.text
                return list(response.json()["data"])

            answers = [listed() for _ in range(20)]
            assert state.metrics.computations == before + 1
            assert {a[0]["metrics"]["as_of"] for a in answers} == {
                answers[0][0]["metrics"]["as_of"]
            }
            assert answers[0][0]["metrics"]["requests"] == 2
            # a feature created since the snapshot gets figures of its own at once
            create_feature(http, "summary")
            fresh = {f["name"]: f["metrics"] for f in listed()}
            assert fresh["summary"] is not None and fresh["summary"]["requests"] == 0
