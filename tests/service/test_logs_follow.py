"""Following logs live: the WebSocket `logs` channel, GET /logs/stream (SSE) and polling;
resume by cursor, no gaps and no duplicates across instances while a commit is held up,
Redis down, a slow consumer's bounded queue, and shutdown."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from minerva_ai.service import admin
from minerva_ai.service.app import create_app
from minerva_ai.service.deps import AppState
from tests.conftest import LiveService, Servers, ThreadedServer, service_config
from tests.service.conftest import (
    WAIT,
    Org,
    RestartableRedis,
    all_logs,
    create_feature,
    expect,
    log_entry,
    new_org,
    next_log_messages,
    post_logs,
    send,
    serving,
    sse_events,
    sse_log_entries,
    subscribe_logs,
    ws_log_entries,
    ws_open,
    ws_url,
)


def client_for(service: LiveService, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=service.api, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def sse_client(service: LiveService, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=service.api, headers={"Authorization": f"Bearer {token}"}, timeout=WAIT
    )


def numbered(feature: str, start: int, count: int, **fields: Any) -> list[dict[str, Any]]:
    return [log_entry(feature, f"n={n}", **fields) for n in range(start, start + count)]


async def aingest(http: httpx.Client, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Ingest from a thread, so the event loop (and its followers) keep running."""
    return await asyncio.to_thread(post_logs, http, entries)


def ids(entries: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in entries]


# The WebSocket logs channel


def test_a_subscription_without_a_cursor_starts_now(http: httpx.Client, org: Org) -> None:
    before = post_logs(http, numbered("tagger", 0, 3))

    async def scenario() -> None:
        async with ws_open(org.service, org.token) as ws:
            await expect(ws, "authenticated")
            subscribed = await subscribe_logs(ws, feature="tagger")
            assert subscribed["after"] == before["cursor"]
            tagger = http.get("/features/tagger").json()["data"]
            assert (subscribed["channel"], subscribed["feature_id"], subscribed["feature"]) == (
                "logs",
                tagger["id"],
                "tagger",
            )
            new = numbered("tagger", 3, 2) + numbered("summary", 5, 1) + numbered("tagger", 6, 1)
            await aingest(http, new)
            received = await ws_log_entries(ws, 3)
            listed = all_logs(http, feature="tagger")
            assert received == listed[3:]  # the entry as GET /logs has it, with cursor
            assert all(e["committed_at"].endswith("Z") for e in received)

    asyncio.run(scenario())


def test_a_subscription_for_the_whole_organization(http: httpx.Client, org: Org) -> None:
    async def scenario() -> None:
        async with ws_open(org.service, org.token) as ws:
            await expect(ws, "authenticated")
            subscribed = await subscribe_logs(ws)
            assert (subscribed["feature_id"], subscribed["feature"]) == (None, None)
            other = new_org(org.service)
            with other.client() as theirs:
                create_feature(theirs, "tagger")
                await aingest(theirs, numbered("tagger", 0, 2))  # not ours: never delivered
            mixed = numbered("tagger", 0, 2) + numbered("summary", 2, 2)
            await aingest(http, mixed)
            assert ids(await ws_log_entries(ws, 4)) == ids(mixed)

    asyncio.run(scenario())


def test_resume_after_a_cursor_gets_exactly_the_rest_then_live(
    http: httpx.Client, org: Org
) -> None:
    post_logs(http, numbered("tagger", 0, 10))
    listed = all_logs(http)

    async def scenario() -> None:
        async with ws_open(org.service, org.token) as ws:
            await expect(ws, "authenticated")
            subscribed = await subscribe_logs(ws, feature="tagger", after=listed[3]["cursor"])
            assert subscribed["after"] == listed[3]["cursor"]
            assert await ws_log_entries(ws, 6) == listed[4:]
            more = numbered("tagger", 10, 3)
            await aingest(http, more)
            assert ids(await ws_log_entries(ws, 3)) == ids(more)
            # resubscribing replaces the subscription: from the new cursor, once
            await subscribe_logs(ws, feature="tagger", after=listed[8]["cursor"])
            again = await ws_log_entries(ws, 4)
            assert ids(again) == [listed[9]["id"], *ids(more)]
            last = numbered("tagger", 13, 1)
            await aingest(http, last)
            assert ids(await ws_log_entries(ws, 1)) == ids(last)

    asyncio.run(scenario())


def test_filters_apply_to_backfill_and_live(http: httpx.Client, org: Org) -> None:
    def mix(start: int) -> list[dict[str, Any]]:
        return [
            log_entry("tagger", f"timeout {start}", level="error", source="api"),
            log_entry("tagger", f"timeout {start + 1}", level="info", source="api"),
            log_entry("tagger", f"refused {start + 2}", level="critical", source="worker"),
            log_entry("summary", f"timeout {start + 3}", level="error", source="api"),
        ]

    old = mix(0)
    post_logs(http, old)

    async def scenario() -> None:
        async with ws_open(org.service, org.token) as ws:
            await expect(ws, "authenticated")
            filters = {"level": "warn+", "q": "^timeout", "source": "api"}
            await subscribe_logs(ws, feature="tagger", filters=filters, after="0")
            assert ids(await ws_log_entries(ws, 1)) == [old[0]["id"]]
            new = mix(10)
            await aingest(http, new)
            assert ids(await ws_log_entries(ws, 1)) == [new[0]["id"]]
            marker = log_entry("tagger", "timeout marker", level="critical", source="api")
            await aingest(http, [*mix(20)[1:], marker])
            assert ids(await ws_log_entries(ws, 1)) == [marker["id"]]  # and nothing between

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        ({"filters": {"since": "2026-01-01T00:00:00Z"}}, "bad_message", "unknown filter since"),
        ({"filters": "level=error"}, "bad_message", "`filters` is an object"),
        ({"after": 5}, "bad_message", "cursor string"),
        ({"after": "abc"}, "bad_request", "not a log cursor"),
        ({"filters": {"q": "\\bword"}}, "bad_request", "\\b"),
        ({"filters": {"q": "(?i)x"}}, "bad_request", "(?"),
        ({"filters": {"level": "loud"}}, "bad_request", "unknown level 'loud'"),
        ({"feature": "ghost"}, "not_found", "ghost"),
    ],
)
def test_a_bad_logs_subscription_is_an_error_and_the_socket_lives_on(
    org: Org, data: dict[str, Any], code: str, words: str
) -> None:
    async def scenario() -> None:
        async with ws_open(org.service, org.token) as ws:
            await expect(ws, "authenticated")
            await send(ws, "subscribe", channel="logs", **data)
            error = await expect(ws, "error")
            assert error["code"] == code and words in error["message"], error
            await send(ws, "ping")
            await expect(ws, "pong")

    asyncio.run(scenario())


# SSE


def test_sse_starts_now_and_resumes_with_last_event_id_or_after(
    http: httpx.Client, org: Org
) -> None:
    post_logs(http, numbered("tagger", 0, 5))
    listed = all_logs(http)

    async def scenario() -> None:
        async with sse_client(org.service, org.token) as client:
            async with client.stream("GET", "/logs/stream") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                assert response.headers["cache-control"] == "no-store"
                events = sse_events(response)
                new = numbered("tagger", 5, 2)
                await aingest(http, new)
                assert ids(await sse_log_entries(events, 2)) == ids(new)
            everything = all_logs(http)
            resume = {"Last-Event-ID": listed[1]["cursor"]}
            async with client.stream("GET", "/logs/stream", headers=resume) as response:
                assert await sse_log_entries(sse_events(response), 5) == everything[2:]
            params = {"after": listed[3]["cursor"], "feature": "tagger"}
            async with client.stream("GET", "/logs/stream", params=params) as response:
                events = sse_events(response)
                assert await sse_log_entries(events, 3) == everything[4:]
                last = numbered("tagger", 7, 1)
                await aingest(http, last)
                assert ids(await sse_log_entries(events, 1)) == ids(last)

    asyncio.run(scenario())


def test_sse_sends_heartbeats_while_idle(org: Org) -> None:
    async def scenario() -> None:
        async with (
            sse_client(org.service, org.token) as client,
            client.stream("GET", "/logs/stream") as response,
        ):
            async with asyncio.timeout(WAIT):
                lines = response.aiter_lines()
                assert await anext(lines) == ": heartbeat"  # every 0.2 s in the tests
                assert await anext(lines) == ""
                assert await anext(lines) == ": heartbeat"

    asyncio.run(scenario())


def test_sse_refuses_a_bad_cursor(org: Org) -> None:
    with org.client() as http:
        response = http.get("/logs/stream", headers={"Last-Event-ID": "nope"})
    assert response.status_code == 400
    assert "not a log cursor" in response.json()["error"]["message"]


# No gaps, no duplicates: two writers on two instances while a commit is held up

HOLD_KEY = 4242
HOLD_TRIGGER = f"""
CREATE FUNCTION test_hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.message LIKE 'hold %' THEN
        PERFORM pg_advisory_xact_lock_shared({HOLD_KEY});
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_hold_commit BEFORE INSERT ON logs
    FOR EACH ROW EXECUTE FUNCTION test_hold_commit();
"""
WAITERS = """
SELECT classid, objid FROM pg_locks
WHERE locktype = 'advisory' AND NOT granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class Writer:
    """A thread ingesting numbered batches through one instance, recording what was acked."""

    name: str
    http: httpx.Client
    batches: int
    size: int
    hold_batch: int | None = None
    acked: list[str] | None = None
    error: BaseException | None = None

    def run(self) -> None:
        self.acked = []
        try:
            for b in range(self.batches):
                batch = [
                    log_entry("tagger", f"{self.name}-{b}-{i}", id=f"{self.name}-{b}-{i}")
                    for i in range(self.size)
                ]
                if b == self.hold_batch:
                    batch[1]["message"] = "hold " + batch[1]["message"]
                result = post_logs(self.http, batch)
                assert result["stored"] == self.size
                self.acked += [e["id"] for e in batch]
        except BaseException as exc:
            self.error = exc


def test_every_acknowledged_entry_reaches_every_follower_once_in_cursor_order(
    database_url: str, servers: Servers
) -> None:
    """Writers on instances A and B; one commit is held up inside the ingest path (a
    trigger blocks after the entry's cursor is drawn) while the other writer tries to
    commit after it. Followers: WebSocket on A, SSE and polling on B."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(HOLD_TRIGGER)
    issued = admin.create_organization(database_url, "acme")
    org_id, token = str(issued.organization_id), issued.token
    config = service_config(database_url, servers.redis_url)
    with (
        serving(create_app(config)) as url_a,
        serving(create_app(config)) as url_b,
    ):
        a = LiveService(url_a, database_url, servers.redis_url, org_id, token, config)
        b = LiveService(url_b, database_url, servers.redis_url, org_id, token, config)
        with client_for(a, token) as http_a, client_for(b, token) as http_b:
            create_feature(http_a, "tagger")
            writers = [
                Writer("w1", http_a, batches=30, size=10, hold_batch=8),
                Writer("w2", http_b, batches=30, size=10),
            ]
            received = asyncio.run(_follow_while_writing(a, b, writers))
            acked = [i for w in writers for i in w.acked or []]
            committed = all_logs(http_a)
    assert len(acked) == 600 and sorted(ids(committed)) == sorted(acked)
    for path, entries in received.items():
        assert len(entries) == len(set(ids(entries))), f"{path}: an entry came twice"
        assert ids(entries) == ids(committed), f"{path}: not every entry, or not in order"
        cursors = [int(e["cursor"]) for e in entries]
        assert cursors == sorted(cursors), path


async def _follow_while_writing(
    a: LiveService, b: LiveService, writers: list[Writer]
) -> dict[str, list[dict[str, Any]]]:
    total = sum(w.batches * w.size for w in writers)
    received: dict[str, list[dict[str, Any]]] = {"ws": [], "sse": [], "poll": []}

    async def ws_follower() -> None:
        async with ws_open(a, a.token) as ws:
            await expect(ws, "authenticated")
            await subscribe_logs(ws, after="0")
            ready["ws"].set()
            while len(received["ws"]) < total:
                message = await next_log_messages(ws, 1, timeout=60)
                assert message[0]["type"] == "log", message
                received["ws"].append(message[0]["data"])

    async def sse_follower() -> None:
        async with (
            sse_client(b, b.token) as client,
            client.stream("GET", "/logs/stream", params={"after": "0"}) as response,
        ):
            assert response.status_code == 200
            ready["sse"].set()
            async for event in sse_events(response):
                assert event.event == "log", event
                received["sse"].append(event.data)
                if len(received["sse"]) == total:
                    return

    def poller() -> None:
        after = "0"
        with client_for(b, b.token) as http:
            while len(received["poll"]) < total and not stop.is_set():
                page = http.get("/logs", params={"after": after, "limit": 50}).json()
                received["poll"] += page["data"]
                after = page["next_cursor"]

    def hold_and_write() -> None:
        with psycopg.connect(a.database_url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", (HOLD_KEY,))
            threads = [threading.Thread(target=w.run) for w in writers]
            for thread in threads:
                thread.start()
            held = writers[0]

            def blocked() -> list[tuple[int, int]]:
                return [tuple(r) for r in holder.execute(WAITERS).fetchall()]

            wait_for(lambda: (0, HOLD_KEY) in blocked() or held.error is not None, "the hold")
            acked_then = len(writers[1].acked or [])
            # The other writer commits after the held one: it waits for it, or (were the
            # cursor order broken) it commits ahead of it. Either way, hold it up a while.
            wait_for(
                lambda: len(blocked()) > 1 or len(writers[1].acked or []) >= acked_then + 30,
                "the second writer",
            )
            time.sleep(1.5)  # the held transaction stays open for seconds
            holder.execute("SELECT pg_advisory_unlock(%s)", (HOLD_KEY,))
            for thread in threads:
                thread.join(60)
        for writer in writers:
            if writer.error is not None:
                raise writer.error

    ready = {"ws": asyncio.Event(), "sse": asyncio.Event()}
    stop = threading.Event()
    followers = [asyncio.create_task(ws_follower()), asyncio.create_task(sse_follower())]
    async with asyncio.timeout(30):
        await ready["ws"].wait()
        await ready["sse"].wait()
    polling = asyncio.create_task(asyncio.to_thread(poller))
    try:
        await asyncio.to_thread(hold_and_write)
        async with asyncio.timeout(60):
            await asyncio.gather(*followers, polling)
    finally:
        stop.set()
        for task in (*followers, polling):
            task.cancel()
        await asyncio.gather(*followers, polling, return_exceptions=True)
    return received


def test_a_large_request_reaches_followers_transaction_by_transaction(
    database_url: str, servers: Servers
) -> None:
    """A request of 2,500 entries commits 1,000 at a time; a follower gets the first
    thousand while the rest of the request is still held up, not when it ends."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(HOLD_TRIGGER)
    issued = admin.create_organization(database_url, "acme")
    config = service_config(database_url, servers.redis_url)
    with serving(create_app(config)) as url:
        service = LiveService(url, database_url, "", str(issued.organization_id), "", config)
        with client_for(service, issued.token) as http:
            create_feature(http, "tagger")
            entries = numbered("tagger", 0, 2500)
            entries[1500]["message"] = "hold " + entries[1500]["message"]

            async def scenario() -> None:
                async with ws_open(service, issued.token) as ws:
                    await expect(ws, "authenticated")
                    await subscribe_logs(ws)
                    with psycopg.connect(database_url, autocommit=True) as holder:
                        holder.execute("SELECT pg_advisory_lock(%s)", (HOLD_KEY,))
                        ingesting = asyncio.create_task(aingest(http, entries))
                        # Well within the 5 s a pump waits for a notice before it polls.
                        first = await next_log_messages(ws, 1000, timeout=4)
                        assert [m["data"]["id"] for m in first] == ids(entries[:1000])
                        assert not ingesting.done()
                        holder.execute("SELECT pg_advisory_unlock(%s)", (HOLD_KEY,))
                        assert (await ingesting)["stored"] == 2500
                    rest = await next_log_messages(ws, 1500)
                    assert [m["data"]["id"] for m in rest] == ids(entries[1000:])

            asyncio.run(scenario())


def test_a_pump_that_cannot_read_at_first_keeps_trying(database_url: str, servers: Servers) -> None:
    """The database refuses the pump's first read (a lock outlasting the statement
    timeout); once it answers again, the follower gets its entries."""
    issued = admin.create_organization(database_url, "acme")
    config = service_config(database_url, servers.redis_url, statement_timeout_ms=500)
    app = create_app(config)
    with serving(app) as url:
        service = LiveService(url, database_url, "", str(issued.organization_id), "", config)
        state: AppState = app.state.minerva
        with client_for(service, issued.token) as http:
            create_feature(http, "tagger")

            async def scenario() -> None:
                async with ws_open(service, issued.token) as ws:
                    await expect(ws, "authenticated")
                    with psycopg.connect(database_url) as locker:
                        locker.execute("LOCK TABLE logs IN ACCESS EXCLUSIVE MODE")
                        await subscribe_logs(ws, after="0")
                        pump = await until_value(
                            lambda: state.follow.pumps.get(issued.organization_id), "a pump"
                        )

                        def waiting() -> bool:  # a read of logs waits for the lock
                            return bool(locker.execute(WAITING_FOR_LOGS).fetchone())

                        # the pump's first read waits for the lock, then times out
                        await asyncio.to_thread(wait_for, waiting, "the pump's read")
                        await asyncio.to_thread(wait_for, lambda: not waiting(), "the timeout")
                        assert not pump.ready.is_set()
                    entry = numbered("tagger", 0, 1)
                    await aingest(http, entry)
                    assert ids(await ws_log_entries(ws, 1)) == ids(entry)

            asyncio.run(scenario())


WAITING_FOR_LOGS = """
SELECT 1 FROM pg_locks WHERE relation = 'logs'::regclass AND NOT granted
"""


async def until_value(get: Callable[[], Any], what: str) -> Any:
    async with asyncio.timeout(WAIT):
        while (value := get()) is None:
            await asyncio.sleep(0.02)
    return value


# Redis down


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_with_redis_down_ingest_succeeds_and_followers_still_get_everything(
    org: Org, http: httpx.Client, servers: Servers
) -> None:
    """An instance whose Redis is unreachable: its own ingests reach its followers
    directly, and what another instance ingests reaches them by polling."""
    config = service_config(org.service.database_url, f"redis://127.0.0.1:{_closed_port()}/0")
    with serving(create_app(config)) as url:
        lonely = LiveService(url, config.database_url, config.redis_url, org.id, org.token, config)
        health = httpx.get(url + "/api/health").json()
        assert health["redis"] == "degraded"

        async def scenario() -> None:
            async with (
                ws_open(lonely, org.token) as ws,
                sse_client(lonely, org.token) as client,
                client.stream("GET", "/logs/stream") as response,
            ):
                await expect(ws, "authenticated")
                await subscribe_logs(ws)
                events = sse_events(response)
                with client_for(lonely, org.token) as through_lonely:
                    here = numbered("tagger", 0, 3)
                    assert (await aingest(through_lonely, here))["stored"] == 3
                assert ids(await ws_log_entries(ws, 3)) == ids(here)
                assert ids(await sse_log_entries(events, 3)) == ids(here)
                there = numbered("summary", 3, 2)  # through the shared service
                await aingest(http, there)
                assert ids(await ws_log_entries(ws, 2)) == ids(there)
                assert ids(await sse_log_entries(events, 2)) == ids(there)

        asyncio.run(scenario())


# A slow consumer, and the follow hub of one instance


@dataclass
class Inspectable:
    """A service of the tests' own on the shared database, whose state can be looked at."""

    service: LiveService
    app: FastAPI

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.minerva
        return state


@pytest.fixture(scope="module")
def inspectable(shared_service: LiveService, servers: Servers) -> Iterator[Inspectable]:
    config = service_config(shared_service.database_url, servers.redis_url)
    app = create_app(config)
    with serving(app) as url:
        yield Inspectable(
            LiveService(url, config.database_url, config.redis_url, "", "", config), app
        )


def followers_of(state: AppState, org_id: str) -> list[Any]:
    pump = state.follow.pumps.get(uuid.UUID(org_id))
    return list(pump.followers) if pump is not None else []


def test_followers_share_one_pump_that_stops_when_the_last_leaves(
    inspectable: Inspectable,
) -> None:
    org = new_org(inspectable.service)
    state = inspectable.state
    service = LiveService(
        inspectable.service.url, "", "", org.id, org.token, inspectable.service.config
    )
    with client_for(service, org.token) as http:
        create_feature(http, "tagger")

        async def scenario() -> None:
            async with (
                ws_open(service, org.token) as first,
                sse_client(service, org.token) as client,
            ):
                await expect(first, "authenticated")
                await subscribe_logs(first, feature="tagger")
                async with client.stream("GET", "/logs/stream") as response:
                    events = sse_events(response)
                    entry = numbered("tagger", 0, 1)
                    await aingest(http, entry)
                    assert ids(await sse_log_entries(events, 1)) == ids(entry)
                    assert ids(await ws_log_entries(first, 1)) == ids(entry)
                    assert len(followers_of(state, org.id)) == 2
                await until(lambda: len(followers_of(state, org.id)) == 1, "the SSE to leave")
                await send(first, "unsubscribe", channel="logs", feature="tagger")
                await expect(first, "unsubscribed")
                await until(lambda: uuid.UUID(org.id) not in state.follow.pumps, "no pump")

        asyncio.run(scenario())


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def tiny_window_socket(url: str) -> socket.socket:
    """A connected socket that can hold only a few KiB unread: a client that stops
    reading pushes back on the server at once."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.setblocking(False)
    return sock


def test_a_slow_consumer_gets_overflow_and_resumes_by_cursor(inspectable: Inspectable) -> None:
    org = new_org(inspectable.service)
    state = inspectable.state
    service = LiveService(
        inspectable.service.url, "", "", org.id, org.token, inspectable.service.config
    )
    http = client_for(service, org.token)
    tagger = create_feature(http, "tagger")
    sent: list[str] = []
    overflows = {"queue": "log_follower"}  # the service's metric (server start --metrics-bind)
    overflowed_before = REGISTRY.get_sample_value("minerva_queue_overflows_total", overflows) or 0

    async def scenario() -> None:
        sock = tiny_window_socket(service.url)
        async with ws_connect(
            ws_url(service),
            sock=sock,
            additional_headers={"Authorization": f"Bearer {org.token}"},
            max_queue=1,
            compression=None,  # deflate would let kernel buffers swallow megabytes
            open_timeout=WAIT,
        ) as ws:
            await expect(ws, "authenticated")
            await subscribe_logs(ws, feature="tagger")
            # Stop reading; ingest until the server gives up on this follower.
            n = 0
            while not any(f.overflowed for f in followers_of(state, org.id)):
                assert n < 40_000, "no overflow: is the follower's queue unbounded?"
                batch = [log_entry("tagger", f"n={n + i} " + "x" * 200) for i in range(250)]
                await aingest(http, batch)
                sent.extend(ids(batch))
                n += len(batch)
                for follower in followers_of(state, org.id):
                    assert follower.queue.qsize() <= follower.queue.maxsize
            # Still not reading: more entries do not queue up for it anywhere.
            [follower] = followers_of(state, org.id)
            queued = follower.queue.qsize()
            more = numbered("tagger", n, 500)
            await aingest(http, more)
            sent.extend(ids(more))
            assert follower.queue.qsize() <= queued
            overflowed = REGISTRY.get_sample_value("minerva_queue_overflows_total", overflows)
            assert overflowed == overflowed_before + 1  # counted once, however much more came
            # Read again: what was queued, then `overflow` with the cursor to resume from.
            got: list[dict[str, Any]] = []
            async with asyncio.timeout(30):
                while True:
                    [message] = await next_log_messages(ws, 1)
                    if message["type"] != "log":
                        break
                    got.append(message["data"])
            assert message["type"] == "overflow", message
            overflow = message["data"]
            assert (overflow["channel"], overflow["feature_id"]) == ("logs", tagger["id"])
            assert got and overflow["cursor"] == got[-1]["cursor"]
            assert ids(got) == sent[: len(got)]  # no gap, no repeat up to the cursor
            await until(lambda: uuid.UUID(org.id) not in state.follow.pumps, "the drop")
            # Resume from the cursor: exactly the rest, then live again.
            await subscribe_logs(ws, feature="tagger", after=overflow["cursor"])
            rest = await ws_log_entries(ws, len(sent) - len(got), timeout=60)
            assert ids(got + rest) == sent
            last = numbered("tagger", 10**6, 1)
            await aingest(http, last)
            assert ids(await ws_log_entries(ws, 1)) == ids(last)

    try:
        asyncio.run(scenario())
    finally:
        http.close()


# Shutdown


def test_shutdown_ends_sse_streams_promptly_and_closes_sockets_with_1012(
    org: Org, http: httpx.Client
) -> None:
    server = ThreadedServer(create_app(org.service.config))
    url = server.__enter__()
    # every route built now, alone (see `serving`)
    assert httpx.get(url + "/api/platform/ai-management/no-such-route").status_code == 404
    service = LiveService(
        url, org.service.database_url, org.service.redis_url, org.id, org.token, org.service.config
    )

    async def scenario() -> None:
        try:
            async with (
                ws_open(service, org.token) as ws,
                sse_client(service, org.token) as client,
                client.stream("GET", "/logs/stream") as response,
            ):
                await expect(ws, "authenticated")
                await subscribe_logs(ws, feature="tagger")
                events = sse_events(response)
                entry = numbered("tagger", 0, 1)
                await aingest(http, entry)
                assert ids(await sse_log_entries(events, 1)) == ids(entry)
                assert ids(await ws_log_entries(ws, 1)) == ids(entry)
                started = time.monotonic()
                stopping = asyncio.create_task(asyncio.to_thread(server.__exit__))
                with pytest.raises(StopAsyncIteration):  # the stream ends, cleanly
                    async with asyncio.timeout(WAIT):
                        await anext(events)
                # well before uvicorn's 10 s graceful timeout would have cut it
                assert time.monotonic() - started < 5
                with pytest.raises(ConnectionClosed) as closed:
                    async with asyncio.timeout(WAIT):
                        while True:
                            await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
                await asyncio.wait_for(stopping, 30)
        finally:
            server.server.should_exit = True

    asyncio.run(scenario())
    server.thread.join(30)
    assert not server.thread.is_alive()


def test_redis_going_away_and_coming_back_loses_nothing(
    org: Org, http: httpx.Client, tmp_path: Any
) -> None:
    """Followers of an instance keep receiving while its Redis is down (the pump reads
    the database), and push resumes when Redis is back: every entry exactly once."""
    redis = RestartableRedis(tmp_path)
    redis.start()
    config = service_config(org.service.database_url, redis.url)
    app = create_app(config)
    try:
        with serving(app) as url:
            instance = LiveService(url, config.database_url, redis.url, org.id, org.token, config)
            state: AppState = app.state.minerva

            def wait_for_bus(connected: bool) -> None:
                deadline = time.monotonic() + WAIT
                while state.bus.connected is not connected:
                    assert time.monotonic() < deadline, f"bus.connected never became {connected}"
                    time.sleep(0.02)

            async def scenario() -> None:
                async with ws_open(instance, org.token) as ws:
                    await expect(ws, "authenticated")
                    await subscribe_logs(ws)
                    with client_for(instance, org.token) as local:
                        before = numbered("tagger", 0, 2)
                        await aingest(local, before)
                        assert ids(await ws_log_entries(ws, 2)) == ids(before)
                        redis.stop()
                        await asyncio.to_thread(wait_for_bus, False)
                        down = numbered("tagger", 2, 2)
                        assert (await aingest(local, down))["stored"] == 2
                        elsewhere = numbered("summary", 4, 2)  # another instance's ingest
                        await aingest(http, elsewhere)
                        got = await ws_log_entries(ws, 4)
                        assert ids(got) == ids(down + elsewhere)
                        redis.start()
                        await asyncio.to_thread(wait_for_bus, True)
                        after = numbered("tagger", 6, 2)
                        await aingest(local, after)
                        assert ids(await ws_log_entries(ws, 2)) == ids(after)

            asyncio.run(scenario())
    finally:
        if redis.process.poll() is None:
            redis.stop()
