"""``follow_logs``: every entry once, in commit order, on every transport.

Live services throughout: a gatekeeper app in front of the real service plays the proxy
that refuses WebSockets or SSE; restarts are real uvicorn servers stopped and started
again on the same port, with a second instance writing meanwhile.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import psycopg
import pytest

from minerva_ai.client import AsyncClient
from minerva_ai.client.realtime import BEGINNING, Notice, follow_logs, head_cursor
from minerva_ai.core.errors import NotFoundError, ServiceError
from minerva_ai.service import admin
from minerva_ai.service.app import create_app
from tests.conftest import WAIT, LiveService, Servers, ThreadedServer, service_config
from tests.logs_support import (
    Gatekeeper,
    Org,
    PortServer,
    entry,
    module_service,
    new_org,
    service_fixture,
)

TRANSPORTS = ["ws", "sse", "poll"]
Entries = list[dict[str, Any]]


service = service_fixture()


@pytest.fixture
def org(service: LiveService) -> Org:
    return new_org(service)


def ingest(org: Org, messages: list[str], feature: str = "tagger", **fields: Any) -> None:
    with org.client() as client:
        totals = client.logs.ingest([entry(feature, m, **fields) for m in messages])
    assert totals["stored"] == len(messages), totals


def head(org: Org) -> str:
    async def ask() -> str:
        async with AsyncClient(org.url, org.token) as client:
            return await head_cursor(client)

    return asyncio.run(ask())


class Follow:
    """A follower on a live service, with what it heard besides the entries."""

    def __init__(self, url: str, token: str, after: str | None, **options: Any) -> None:
        self.url = url
        self.token = token
        self.after = after
        self.options = {"poll_interval": 0.1, "max_backoff": 0.5, **options}
        self.notices: list[Notice] = []
        self.gaps: list[dict[str, Any]] = []
        self.entries: Entries = []

    def kinds(self) -> list[str]:
        return [n.kind for n in self.notices]

    async def _helper(self, during: Callable[[Follow], Any] | None) -> None:
        if during is None:
            return
        while not any(n.kind == "connected" for n in self.notices):
            await asyncio.sleep(0.02)
        await asyncio.to_thread(during, self)

    def run(
        self,
        until: Callable[[Entries], bool],
        during: Callable[[Follow], Any] | None = None,
        timeout: float = WAIT,
    ) -> Entries:
        """Follow until ``until(entries)``; ``during`` runs in a thread once connected."""

        async def scenario() -> None:
            async with AsyncClient(self.url, self.token) as client:
                stream = follow_logs(
                    client,
                    self.after,
                    on_notice=self.notices.append,
                    on_gap=self.gaps.append,
                    **self.options,
                )
                helper = asyncio.ensure_future(self._helper(during))
                try:
                    with anyio.fail_after(timeout):
                        async for item in stream:
                            self.entries.append(item)
                            if until(self.entries):
                                break
                        await stream.aclose()
                        await helper
                finally:
                    helper.cancel()

        asyncio.run(scenario())
        return self.entries


def has(count: int) -> Callable[[Entries], bool]:
    return lambda entries: len(entries) >= count


def messages(entries: Entries) -> list[str]:
    return [e["message"] for e in entries]


def assert_commit_order(entries: Entries) -> None:
    cursors = [int(e["cursor"]) for e in entries]
    assert cursors == sorted(set(cursors)), "entries repeated or out of commit order"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_backfill_then_live_each_entry_once_in_commit_order(org: Org, transport: str) -> None:
    ingest(org, ["before"])
    start = head(org)
    ingest(org, [f"b{i}" for i in range(5)])
    follow = Follow(org.url, org.token, start, transport=transport)

    got = follow.run(has(10), during=lambda _: ingest(org, [f"c{i}" for i in range(5)], "mod"))

    assert messages(got) == [f"b{i}" for i in range(5)] + [f"c{i}" for i in range(5)]
    assert_commit_order(got)
    assert follow.kinds()[0] == "connected"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_filters_mean_on_the_live_path_what_they_mean_on_history(org: Org, transport: str) -> None:
    def write(_: Follow) -> None:
        with org.client() as client:
            client.logs.ingest(
                [entry("tagger", f"keep {level}", level) for level in ("info", "warn", "error")]
                + [entry("tagger", "skip error", "error"), entry("mod", "keep other", "error")]
                + [entry("tagger", "keep last", "critical")]
            )

    filters = {"level": "warn+", "q": "^keep"}
    follow = Follow(
        org.url, org.token, head(org), transport=transport, feature="tagger", filters=filters
    )
    got = follow.run(has(3), during=write)

    assert messages(got) == ["keep warn", "keep error", "keep last"]
    with org.client() as client:
        history = client.logs.list({**filters, "feature": "tagger"})
    assert messages(got) == messages(list(reversed(history)))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_unknown_feature_is_an_error_not_a_reconnect(org: Org, transport: str) -> None:
    follow = Follow(org.url, org.token, "0", transport=transport, feature="missing")
    with pytest.raises(NotFoundError):
        follow.run(has(1))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_cursor_older_than_retention_is_announced_once_as_a_gap(org: Org, transport: str) -> None:
    ingest(org, ["dropped later"])
    old = head(org)
    ingest(org, ["survivor"])
    with psycopg.connect(org.database_url, autocommit=True) as conn:
        conn.execute(  # what the retention job records when it drops the partition
            "INSERT INTO log_expired (organization_id, max_seq, before) "
            "VALUES (%s, %s, '2026-01-02T00:00:00Z')",
            (org.id, int(old) + 1),
        )
    follow = Follow(org.url, org.token, old, transport=transport)

    got = follow.run(has(2), during=lambda _: ingest(org, ["later"]))

    assert messages(got) == ["survivor", "later"]
    assert len(follow.gaps) == 1
    assert follow.gaps[0]["reason"] == "expired"


@pytest.mark.parametrize("after", [None, BEGINNING])
def test_a_follower_from_the_head_or_the_beginning_hears_of_no_old_gap(
    org: Org, after: str | None
) -> None:
    ingest(org, ["old"])
    with psycopg.connect(org.database_url, autocommit=True) as conn:
        conn.execute(  # retention dropped entries up to the newest one
            "INSERT INTO log_expired (organization_id, max_seq, before) "
            "VALUES (%s, %s, '2026-01-02T00:00:00Z')",
            (org.id, int(head(org))),
        )
    follow = Follow(org.url, org.token, after, transport="ws")
    got = follow.run(lambda got: "new" in messages(got), during=lambda _: ingest(org, ["new"]))
    assert messages(got) == (["old", "new"] if after == BEGINNING else ["new"])
    assert follow.gaps == []


@pytest.fixture(scope="module")
def stalled() -> threading.Event:
    return threading.Event()


@pytest.fixture(scope="module")
def stalling_service(servers: Servers, stalled: threading.Event) -> Iterator[LiveService]:
    with module_service(servers, lambda app: Gatekeeper(app, stall=stalled)) as live:
        yield live


def test_a_reader_that_falls_behind_is_told_overflow_and_still_gets_everything_once(
    stalling_service: LiveService, stalled: threading.Event
) -> None:
    org = new_org(stalling_service)
    batches, size = 12, 1000

    def flood(_: Follow) -> None:
        ingest(org, ["first"])
        stalled.set()  # frames stop leaving the service, as if the client stopped reading
        try:
            with org.client() as client:
                for b in range(batches):
                    client.logs.ingest([entry("tagger", f"f{b}-{i}") for i in range(size)])
        finally:
            stalled.clear()

    follow = Follow(org.url, org.token, head(org), transport="ws")
    got = follow.run(has(1 + batches * size), during=flood, timeout=120)

    assert "overflow" in follow.kinds()
    assert messages(got)[:2] == ["first", "f0-0"]
    assert len(got) == 1 + batches * size
    assert_commit_order(got)


# ------------------------------------------------------------------ transport fallback


no_websocket = service_fixture(websocket_status=404)
no_push = service_fixture(websocket_status=403, sse_status=404)


def test_auto_uses_sse_when_the_websocket_is_refused(no_websocket: LiveService) -> None:
    org = new_org(no_websocket)
    follow = Follow(org.url, org.token, head(org))

    got = follow.run(has(3), during=lambda _: ingest(org, ["a", "b", "c"]))

    assert messages(got) == ["a", "b", "c"]
    assert follow.kinds()[:2] == ["fallback", "connected"]
    assert "WebSocket was refused (HTTP 404)" in follow.notices[0].message
    assert "SSE" in follow.notices[1].message


def test_auto_polls_when_sse_is_refused_too(no_push: LiveService) -> None:
    org = new_org(no_push)
    follow = Follow(org.url, org.token, head(org))

    got = follow.run(has(3), during=lambda _: ingest(org, ["a", "b", "c"]))

    assert messages(got) == ["a", "b", "c"]
    assert follow.kinds()[:3] == ["fallback", "fallback", "connected"]
    assert "polling" in follow.notices[2].message


def test_a_chosen_transport_that_is_refused_is_an_error(no_push: LiveService) -> None:
    org = new_org(no_push)
    for transport in ("ws", "sse"):
        with pytest.raises(ServiceError, match=r"refused|answered 404"):
            Follow(org.url, org.token, "0", transport=transport).run(has(1))


# ------------------------------------------------------------------ restarts and instances


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_follow_resumes_after_a_restart_and_sees_what_another_instance_wrote(
    database_url: str, servers: Servers, transport: str
) -> None:
    config = service_config(database_url, servers.redis_url)
    issued = admin.create_organization(database_url, "acme")
    port = free_port()
    running = [PortServer(create_app(config), port)]
    with ThreadedServer(create_app(config)) as writer_url:
        writer = Org(writer_url, issued.token, str(issued.organization_id), database_url)
        with writer.client() as client:
            client.features.create("tagger")
        running[0].__enter__()

        def restart(_: Follow) -> None:
            ingest(writer, [f"a{i}" for i in range(3)])
            running[0].__exit__(None, None, None)  # a graceful stop: 1012, SSE ends
            ingest(writer, [f"b{i}" for i in range(3)])  # committed while it is down
            running.append(PortServer(create_app(config), port))
            running[-1].__enter__()
            ingest(writer, [f"c{i}" for i in range(3)])

        follow = Follow(f"http://127.0.0.1:{port}", issued.token, head(writer), transport=transport)
        try:
            got = follow.run(has(9), during=restart, timeout=60)
        finally:
            for server in running:
                server.__exit__(None, None, None)

    assert messages(got) == [f"{p}{i}" for p in "abc" for i in range(3)]
    assert_commit_order(got)
    if transport != "poll":  # a poller's request retries ride out a short outage
        assert "lost" in follow.kinds() and "reconnected" in follow.kinds()
