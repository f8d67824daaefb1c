"""``follow_metrics`` and ``client.metrics``: live updates on every transport, and the
fallbacks of ``auto`` (a gatekeeper in front of the real service refuses the WebSocket,
then the metrics streams too, as a proxy might)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from minerva_ai.client import AsyncClient
from minerva_ai.client.metrics_follow import follow_metrics
from minerva_ai.client.realtime import Notice
from minerva_ai.core.errors import NotFoundError, ServiceError, ValidationError
from tests.conftest import WAIT, LiveService, Servers
from tests.logs_support import Gatekeeper, Org, entry, module_service, new_org, service_fixture

TRANSPORTS = ["ws", "sse", "poll"]
Update = dict[str, Any]


def calls(
    org: Org, feature: str, statuses: list[str], model: str = "gpt-a", source: str = "app"
) -> None:
    """Report calls as an application does: log entries with a status."""
    entries = [
        entry(
            feature,
            f"call {i}",
            "error" if status != "success" else "info",
            source=source,
            status=status,
            model=model,
            latency_ms=100 + 10 * i,
            tokens_in=10,
            tokens_out=5,
            cost=0.001,
        )
        for i, status in enumerate(statuses)
    ]
    with org.client() as client:
        assert client.logs.ingest(entries)["stored"] == len(entries)


class Follow:
    """A metrics follower on a live service, with the notices it heard."""

    def __init__(self, org: Org, feature: str | None, **options: Any) -> None:
        self.org = org
        self.feature = feature
        self.options = {"poll_interval": 0.1, "max_backoff": 0.5, **options}
        self.notices: list[Notice] = []
        self.updates: list[Update] = []

    def kinds(self) -> list[str]:
        return [n.kind for n in self.notices]

    def run(
        self, until: Callable[[Update], bool], during: Callable[[], Any] | None = None
    ) -> Update:
        """Follow until an update satisfies ``until``; ``during`` runs in a thread after
        the first update."""

        async def scenario() -> Update:
            async with AsyncClient(self.org.url, self.org.token) as client:
                stream = follow_metrics(
                    client, self.feature, on_notice=self.notices.append, **self.options
                )
                helper: asyncio.Future[Any] | None = None
                try:
                    with anyio.fail_after(WAIT):
                        async for update in stream:
                            self.updates.append(update)
                            if until(update):
                                return update
                            if helper is None and during is not None:
                                helper = asyncio.ensure_future(asyncio.to_thread(during))
                finally:
                    await stream.aclose()
                    if helper is not None:
                        await helper
                raise AssertionError("the stream ended")

        return asyncio.run(scenario())


def of(update: Update, feature: str) -> Update:
    """A feature's metrics in an org-wide update."""
    return next(m for m in update["features"] if m["feature"] == feature)


service = service_fixture()


@pytest.fixture
def org(service: LiveService) -> Org:
    return new_org(service)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_feature_update_follows_traffic(org: Org, transport: str) -> None:
    follow = Follow(org, "tagger", transport=transport)

    got = follow.run(
        lambda u: u["requests"] == 4,
        during=lambda: calls(org, "tagger", ["success", "success", "success", "error"]),
    )

    first = follow.updates[0]
    assert (first["feature"], first["window"], first["requests"], first["status"]) == (
        "tagger",
        "5m",
        0,
        "no_data",
    )
    assert (got["successes"], got["errors"], got["error_rate"]) == (3, 1, 25.0)
    assert got["health_score"] is not None and got["status"] != "no_data"
    assert follow.kinds()[0] == "connected"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_org_wide_update_lists_every_feature(org: Org, transport: str) -> None:
    follow = Follow(org, None, transport=transport, window="1h")

    got = follow.run(
        lambda u: of(u, "mod")["requests"] == 2,
        during=lambda: calls(org, "mod", ["success", "timeout"]),
    )

    assert got["window"] == "1h" and got["as_of"].endswith("Z")
    assert sorted(m["feature"] for m in got["features"]) == ["mod", "tagger"]
    assert of(got, "mod")["timeouts"] == 1
    assert of(got, "tagger")["status"] == "no_data"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_unknown_feature_is_an_error_not_a_reconnect(org: Org, transport: str) -> None:
    with pytest.raises(NotFoundError):
        Follow(org, "missing", transport=transport).run(lambda _: True)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_bad_window_is_refused(org: Org, transport: str) -> None:
    with pytest.raises(ValidationError, match="window"):
        Follow(org, "tagger", transport=transport, window="0m").run(lambda _: True)


def test_current_and_series_by_model(org: Org) -> None:
    calls(org, "tagger", ["error", "error"], model="primary")
    calls(org, "tagger", ["success"], model="fallback")
    calls(org, "tagger", ["success"], model="fallback", source="test")
    with org.client() as client:
        current = client.metrics.current("tagger", by="model")
        series = client.metrics.series("tagger", step="5m", by="model")
        tests_too = client.metrics.current("tagger", include_tests=True)

    models = {m["model"]: m for m in current["models"]}
    assert (models["primary"]["errors"], models["fallback"]["successes"]) == (2, 1)
    assert current["requests"] == 3
    assert series["step"] == "5m"
    by_model = {m["model"]: sum(p["requests"] for p in m["points"]) for m in series["models"]}
    assert by_model == {"primary": 2, "fallback": 1}
    assert tests_too["requests"] == 4  # with the call `minerva-ai test` made


# ------------------------------------------------------------------ transport fallback


class NoMetricsStreams:
    """In front of the service: the metrics SSE paths answer 404, as from a proxy."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path", "").endswith("/metrics/stream"):
            headers = [(b"content-type", b"text/plain")]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": b"no event streams here"})
            return
        await self.app(scope, receive, send)


no_websocket = service_fixture(websocket_status=404)


@pytest.fixture(scope="module")
def no_push(servers: Servers) -> Iterator[LiveService]:
    def gate(app: Any) -> Any:
        return Gatekeeper(NoMetricsStreams(app), websocket_status=403)

    with module_service(servers, gate) as live:
        yield live


@pytest.mark.parametrize("feature", ["tagger", None])
def test_auto_uses_sse_when_the_websocket_is_refused(
    no_websocket: LiveService, feature: str | None
) -> None:
    org = new_org(no_websocket)
    follow = Follow(org, feature)

    def requests(update: Update) -> int:
        return int((update if feature else of(update, "tagger"))["requests"])

    follow.run(lambda u: requests(u) == 2, during=lambda: calls(org, "tagger", ["success"] * 2))

    assert follow.kinds()[:2] == ["fallback", "connected"]
    assert "WebSocket was refused (HTTP 404)" in follow.notices[0].message
    assert "SSE" in follow.notices[1].message


@pytest.mark.parametrize("feature", ["tagger", None])
def test_auto_polls_when_sse_is_refused_too(no_push: LiveService, feature: str | None) -> None:
    org = new_org(no_push)
    follow = Follow(org, feature)

    def requests(update: Update) -> int:
        return int((update if feature else of(update, "tagger"))["requests"])

    got = follow.run(
        lambda u: requests(u) == 2, during=lambda: calls(org, "tagger", ["success"] * 2)
    )

    assert follow.kinds()[:3] == ["fallback", "fallback", "connected"]
    assert "metrics/stream answered 404" in follow.notices[1].message
    assert "polling" in follow.notices[2].message
    if feature is None:
        assert sorted(m["feature"] for m in got["features"]) == ["mod", "tagger"]


def test_a_chosen_transport_that_is_refused_is_an_error(no_push: LiveService) -> None:
    org = new_org(no_push)
    for transport in ("ws", "sse"):
        with pytest.raises(ServiceError, match=r"refused|answered 404"):
            Follow(org, "tagger", transport=transport).run(lambda _: True)
