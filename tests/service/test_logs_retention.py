"""Retention: daily partitions created ahead and dropped whole, and a cursor older than
what was dropped answered with an explicit gap on every read path (HTTP, WS, SSE)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from minerva_ai.service import admin
from minerva_ai.service.app import create_app
from minerva_ai.service.jobs import Fenced, take_lease
from minerva_ai.service.locks import JobName
from minerva_ai.service.logs import Partitions, maintain
from tests.conftest import LiveService, Servers, service_config, wait_until
from tests.service.conftest import (
    SseEvent,
    async_pool,
    create_feature,
    expect,
    log_entry,
    next_log_messages,
    post_logs,
    serving,
    sse_events,
    stamp,
    subscribe_logs,
    ws_open,
)

TODAY = datetime.now(UTC).date()
OLD_DAY = TODAY - timedelta(days=5)
RETENTION = timedelta(days=1)


@dataclass
class Retained:
    service: LiveService
    http: httpx.Client
    other_token: str  # an organization whose every entry is in the old partition


def old_rows(database_url: str, org_id: str, day: date, count: int) -> list[int]:
    """Entries written straight into ``day``'s partition (as if kept by a longer retention)."""
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT minerva_log_partition(%s)", (day,))
        rows = conn.execute(
            "INSERT INTO logs (organization_id, feature_id, seq, client_id, timestamp, "
            "committed_at, level, message) "
            "SELECT %s, f.id, nextval('log_seq'), 'old-' || n, %s::date + interval '1 hour', "
            "now(), 'info', 'old ' || n "
            "FROM features f, generate_series(1, %s) n "
            "WHERE f.organization_id = %s AND f.name = 'tagger' RETURNING seq",
            (org_id, day, count, org_id),
        ).fetchall()
    return sorted(r[0] for r in rows)


def partitions(database_url: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'logs'::regclass ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]


def run_maintain(database_url: str, retention: timedelta = RETENTION) -> list[str]:
    """What the log-maintenance job does, as the leader of its lease."""

    async def run() -> list[str]:
        async with async_pool(database_url) as pool:
            lease = await take_lease(pool, JobName.LOG_MAINTENANCE, "test", ttl_s=60)
            assert lease is not None
            try:
                async with pool.connection() as conn:
                    return await maintain(conn, Partitions(), retention, fence=lease.fence)
            finally:
                await lease.release()

    return asyncio.run(run())


def part(day: date) -> str:
    return f"logs_p{day:%Y%m%d}"


@pytest.fixture
def retained(database_url: str, servers: Servers) -> Iterator[Retained]:
    # Its jobs off: the tests run the log-maintenance job themselves (run_maintain).
    config = service_config(
        database_url, servers.redis_url, log_retention=RETENTION, run_jobs=False
    )
    issued = admin.create_organization(database_url, "acme")
    other = admin.create_organization(database_url, "other")
    with serving(create_app(config)) as url:
        service = LiveService(
            url, database_url, servers.redis_url, str(issued.organization_id), issued.token, config
        )
        with httpx.Client(
            base_url=service.api, headers={"Authorization": f"Bearer {issued.token}"}, timeout=15
        ) as http:
            create_feature(http, "tagger")
            with httpx.Client(
                base_url=service.api, headers={"Authorization": f"Bearer {other.token}"}
            ) as theirs:
                create_feature(theirs, "tagger")
            yield Retained(service, http, other.token)


def test_a_starting_service_creates_partitions_ahead(retained: Retained) -> None:
    url = retained.service.database_url
    ahead = [part(TODAY + timedelta(days=days)) for days in range(4)]  # today and 3 more
    with serving(create_app(replace(retained.service.config, run_jobs=True))):
        wait_until(lambda: set(ahead) <= set(partitions(url)), what="partitions ahead")
    assert run_maintain(url) == []


def test_entries_older_than_the_retention_window_are_refused(retained: Retained) -> None:
    kept = log_entry("tagger", "kept", timestamp=stamp(hours=20))
    result = post_logs(retained.http, [kept, log_entry("tagger", "gone", timestamp=stamp(days=2))])
    assert result["stored"] == 1
    [rejected] = result["rejected"]
    assert rejected["index"] == 1 and rejected["field"] == "timestamp"
    assert "older than the retention window" in rejected["error"]


def test_dropped_entries_are_an_explicit_gap_on_every_path(retained: Retained) -> None:
    service, http = retained.service, retained.http
    first = post_logs(http, [log_entry("tagger", "before")])["cursor"]
    old = old_rows(service.database_url, service.org_id, OLD_DAY, 3)
    other_org = admin_org_id(service.database_url, "other")
    old_rows(service.database_url, other_org, OLD_DAY, 2)
    last = post_logs(http, [log_entry("tagger", "after")])["cursor"]
    assert int(first) < old[0] and old[-1] < int(last)
    assert len(all_after(http, "0")["data"]) == 5

    assert run_maintain(service.database_url) == [part(OLD_DAY)]
    assert part(OLD_DAY) not in partitions(service.database_url)
    before = f"{OLD_DAY + timedelta(days=1)}T00:00:00Z"
    with psycopg.connect(service.database_url) as conn:
        expired = conn.execute(
            "SELECT organization_id::text, max_seq, before FROM log_expired ORDER BY max_seq"
        ).fetchall()
    end = datetime.combine(OLD_DAY + timedelta(days=1), datetime.min.time(), UTC)
    assert sorted(expired) == sorted(
        [(service.org_id, old[-1], end), (other_org, old[-1] + 2, end)]
    )

    gap = {"reason": "expired", "before": before}
    for cursor in ("0", first, str(old[1])):  # entries after these were dropped
        page = all_after(http, cursor)
        assert page["gap"] == gap, cursor
        expected = ["before", "after"] if cursor == "0" else ["after"]
        assert [e["message"] for e in page["data"]] == expected
    for cursor in (str(old[-1]), last):  # nothing dropped after these: no gap
        assert "gap" not in all_after(http, cursor)
    assert [e["message"] for e in all_after(http, str(old[-1]))["data"]] == ["after"]

    async def live() -> None:
        async with ws_open(service, service.token) as ws:
            await expect(ws, "authenticated")
            subscribed = await subscribe_logs(ws, after=first)
            assert await expect(ws, "gap") == {
                "channel": "logs",
                "feature_id": None,
                "reason": "expired",
                "before": before,
            }
            [message] = await next_log_messages(ws, 1)
            assert (message["type"], message["data"]["message"]) == ("log", "after")
            assert subscribed["after"] == first
        async with (
            httpx.AsyncClient(
                base_url=service.api, headers={"Authorization": f"Bearer {service.token}"}
            ) as client,
            client.stream("GET", "/logs/stream", headers={"Last-Event-ID": first}) as response,
        ):
            events = sse_events(response)
            assert await anext(events) == SseEvent("gap", None, gap)
            event = await anext(events)
            assert (event.event, event.data["message"]) == ("log", "after")

    asyncio.run(asyncio.wait_for(live(), 30))


def test_a_follower_starting_now_is_not_told_of_a_gap(retained: Retained) -> None:
    """An organization all of whose entries expired: following from now misses nothing."""
    service = retained.service
    org_id = admin_org_id(service.database_url, "other")
    old_rows(service.database_url, org_id, OLD_DAY, 2)
    assert run_maintain(service.database_url) == [part(OLD_DAY)]
    token = retained.other_token
    theirs = httpx.Client(base_url=service.api, headers={"Authorization": f"Bearer {token}"})

    async def live() -> None:
        async with (
            ws_open(service, token) as ws,
            httpx.AsyncClient(
                base_url=service.api, headers={"Authorization": f"Bearer {token}"}
            ) as client,
            client.stream("GET", "/logs/stream") as response,
        ):
            await expect(ws, "authenticated")
            await subscribe_logs(ws)
            events = sse_events(response)
            await asyncio.to_thread(post_logs, theirs, [log_entry("tagger", "new")])
            [message] = await next_log_messages(ws, 1)
            assert message["type"] == "log", message
            event = await anext(events)
            assert event.event == "log", event

    with theirs:
        asyncio.run(asyncio.wait_for(live(), 30))
        assert all_after(theirs, "0")["gap"]["reason"] == "expired"  # a real gap, from 0


def test_only_the_leader_of_the_job_drops_partitions(retained: Retained) -> None:
    service = retained.service
    old_rows(service.database_url, service.org_id, OLD_DAY, 1)

    async def run() -> None:
        async with async_pool(service.database_url) as pool:
            # an instance that led the job, then froze past its lease
            stale = await take_lease(pool, JobName.LOG_MAINTENANCE, "stale", ttl_s=0.2)
            assert stale is not None
            while (leader := await take_lease(pool, JobName.LOG_MAINTENANCE, "new", 60)) is None:
                await asyncio.sleep(0.05)
            async with pool.connection() as conn:
                with pytest.raises(Fenced):
                    await maintain(conn, Partitions(), RETENTION, fence=stale.fence)
                assert part(OLD_DAY) in partitions(service.database_url)
                dropped = await maintain(conn, Partitions(), RETENTION, fence=leader.fence)
            assert dropped == [part(OLD_DAY)]

    asyncio.run(asyncio.wait_for(run(), 60))


def test_a_starting_service_drops_what_is_past_retention(
    retained: Retained, servers: Servers
) -> None:
    service = retained.service
    old_rows(service.database_url, service.org_id, OLD_DAY, 1)
    kept_day = TODAY - timedelta(days=1)
    old_rows(service.database_url, service.org_id, kept_day, 1)
    with serving(create_app(replace(service.config, run_jobs=True))):
        wait_until(
            lambda: part(OLD_DAY) not in partitions(service.database_url),
            what="the expired partition to be dropped",
        )
    assert part(kept_day) in partitions(service.database_url)
    messages = [e["message"] for e in all_after(retained.http, "0")["data"]]
    assert messages == ["old 1"]  # the day still within retention, kept whole


def all_after(http: httpx.Client, cursor: str) -> dict[str, Any]:
    response = http.get("/logs", params={"after": cursor, "limit": 1000})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def admin_org_id(database_url: str, name: str) -> str:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT id::text FROM organizations WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return str(row[0])
