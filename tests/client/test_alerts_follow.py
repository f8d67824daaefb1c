"""``follow_alerts``: every transition once, in commit order, over the WebSocket and by
polling; the feature filter; resuming after a restart of the service; ``auto`` polling
when a proxy refuses the WebSocket. Evaluation runs when the test says."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from minerva_ai.client import AsyncClient
from minerva_ai.client.alerts_follow import follow_alerts
from minerva_ai.client.realtime import Notice
from minerva_ai.core.errors import NotFoundError, UsageError
from tests.alerts_support import RULE, Alerting, alerting_service, free_port
from tests.conftest import WAIT, Servers
from tests.logs_support import Gatekeeper

TRANSPORTS = ["ws", "poll"]
Events = list[dict[str, Any]]


@pytest.fixture
def alerting(database_url: str, servers: Servers) -> Iterator[Alerting]:
    with alerting_service(database_url, servers.redis_url, port=free_port()) as found:
        found.rules(RULE)
        found.calls("error", 5)
        yield found


class Follow:
    """A follower of ``alerting``'s service, with the notices it heard."""

    def __init__(self, alerting: Alerting, after: str | None, **options: Any) -> None:
        self.alerting = alerting
        self.after = after
        self.options = {"poll_interval": 0.1, "max_backoff": 0.5, **options}
        self.notices: list[Notice] = []
        self.events: Events = []

    def kinds(self) -> list[str]:
        return [n.kind for n in self.notices]

    def run(self, count: int, during: Callable[[], Any] | None = None) -> Events:
        """Follow until ``count`` events; ``during`` runs in a thread once connected."""

        async def helper() -> None:
            while "connected" not in self.kinds():
                await asyncio.sleep(0.02)
            if during is not None:
                await asyncio.to_thread(during)

        async def scenario() -> None:
            service = self.alerting.service
            async with AsyncClient(service.url, service.token) as client:
                stream = follow_alerts(
                    client, self.after, on_notice=self.notices.append, **self.options
                )
                task = asyncio.ensure_future(helper())
                try:
                    with anyio.fail_after(WAIT * 2):
                        async for event in stream:
                            self.events.append(event)
                            if len(self.events) >= count:
                                break
                        await stream.aclose()
                        await task
                finally:
                    task.cancel()

        asyncio.run(scenario())
        return self.events


def cursors(events: Events) -> list[str]:
    return [e["cursor"] for e in events]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_backfill_then_live_each_once_in_commit_order(alerting: Alerting, transport: str) -> None:
    alerting.cycle()  # breach, acknowledge, resolve: before the cursor
    start = alerting.head()
    alerting.cycle()  # after it: backfilled
    backfill = len(alerting.transitions(start))
    follow = Follow(alerting, start, transport=transport)
    got = follow.run(backfill + 3, during=alerting.cycle)
    assert cursors(got) == [t["cursor"] for t in alerting.transitions(start)]
    first = got[0]
    assert first["transition"]["event"] == "breach" and first["transition"]["feature"] == "tagger"
    assert first["alert"]["id"] == first["transition"]["alert_id"]
    assert "transitions" not in first["alert"]  # the alert, not its detail
    assert follow.kinds()[0] == "connected"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_without_a_cursor_it_starts_at_the_newest(alerting: Alerting, transport: str) -> None:
    alerting.cycle()
    old = alerting.head()
    got = Follow(alerting, None, transport=transport).run(3, during=alerting.cycle)
    assert cursors(got) == [t["cursor"] for t in alerting.transitions(old)]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_feature_only_its_transitions(alerting: Alerting, transport: str) -> None:
    assert alerting.http.post("/features", json={"name": "mod"}).status_code == 201
    alerting.rules(RULE, feature="mod")
    alerting.calls("error", 5, feature="mod")
    start = alerting.head()

    def both() -> None:
        alerting.cycle("tagger")
        alerting.cycle("mod")

    got = Follow(alerting, start, transport=transport, feature="mod").run(3, during=both)
    assert {e["transition"]["feature"] for e in got} == {"mod"}
    assert [e["transition"]["event"] for e in got] == ["breach", "acknowledge", "resolve"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_unknown_feature_is_an_error_not_a_reconnect(alerting: Alerting, transport: str) -> None:
    with pytest.raises(NotFoundError):
        Follow(alerting, "0", transport=transport, feature="missing").run(1)


def test_sse_is_not_offered(alerting: Alerting) -> None:
    with pytest.raises(UsageError):
        Follow(alerting, "0", transport="sse").run(1)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_it_resumes_after_a_restart_with_nothing_lost_or_repeated(
    alerting: Alerting, transport: str
) -> None:
    start = alerting.head()

    def restart() -> None:
        alerting.cycle()
        alerting.stop()
        alerting.evaluate()  # a new alert opens while the service is down
        alerting.start_again()
        alerting.cycle()  # acknowledged and resolved after the restart

    follow = Follow(alerting, start, transport=transport)
    got = follow.run(6, during=restart)
    assert cursors(got) == [t["cursor"] for t in alerting.transitions(start)]
    assert [e["transition"]["event"] for e in got][3:] == ["breach", "acknowledge", "resolve"]
    if transport == "ws":  # a poller's request retries ride out a short outage
        assert "lost" in follow.kinds() and "reconnected" in follow.kinds()


@pytest.fixture
def no_websocket(database_url: str, servers: Servers) -> Iterator[Alerting]:
    def refuse(app: Any) -> Gatekeeper:
        return Gatekeeper(app, websocket_status=404)

    with alerting_service(database_url, servers.redis_url, wrap=refuse) as found:
        found.rules(RULE)
        found.calls("error", 5)
        yield found


def test_auto_polls_when_the_websocket_is_refused(no_websocket: Alerting) -> None:
    start = no_websocket.head()
    follow = Follow(no_websocket, start)
    got = follow.run(3, during=no_websocket.cycle)
    assert [e["transition"]["event"] for e in got] == ["breach", "acknowledge", "resolve"]
    assert follow.kinds()[:2] == ["fallback", "connected"]
    assert "polling" in follow.notices[0].message
