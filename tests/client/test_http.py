"""The HTTP client: errors -> exceptions, retries, pagination, the settings cache.

Canned answers come from ``httpx.MockTransport``; the rest talks to the live service.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from minerva_ai.client import AsyncClient, Client
from minerva_ai.core.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    ServiceError,
    UnreachableError,
    ValidationError,
)
from minerva_ai.core.protocol import API_PREFIX
from tests.conftest import LiveService

URL = "http://minerva.test"
TOKEN = "mnv_t"
Handler = Callable[[httpx.Request], httpx.Response]


def envelope_error(status: int, code: str, message: str, details: Any = None) -> httpx.Response:
    body = {"success": False, "error": {"code": code, "message": message, "details": details}}
    return httpx.Response(status, json=body)


def ok(data: Any, **extra: Any) -> httpx.Response:
    return httpx.Response(200, json={"success": True, "data": data, **extra})


class Recorder:
    """A MockTransport handler that answers from a list and records the requests."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def sync_client(handler: Handler, token: str | None = TOKEN, **kwargs: Any) -> Client:
    return Client(URL, token, transport=httpx.MockTransport(handler), **kwargs)


def async_client(handler: Handler, token: str | None = TOKEN, **kwargs: Any) -> AsyncClient:
    return AsyncClient(URL, token, transport=httpx.MockTransport(handler), **kwargs)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, ValidationError),
        (401, AuthError),
        (403, AuthError),
        (404, NotFoundError),
        (409, ConflictError),
        (413, ServiceError),
        (422, ValidationError),
        (500, ServiceError),
    ],
)
def test_error_envelopes_become_typed_exceptions(status: int, cls: type[ServiceError]) -> None:
    details = [{"field": "rate_limits.requests_per_minute", "message": "must be > 0"}]
    recorder = Recorder(envelope_error(status, "some_code", "it failed", details))
    with sync_client(recorder) as c, pytest.raises(ServiceError) as caught:
        c.features.get("photo-tagging")
    error = caught.value
    assert type(error) is cls
    assert (error.status, error.code, error.message, error.details) == (
        status,
        "some_code",
        "it failed",
        details,
    )
    assert error.url == f"{URL}{API_PREFIX}/features/photo-tagging"
    assert error.exit_code == 3


def test_an_error_without_an_envelope_still_says_the_status() -> None:
    recorder = Recorder(httpx.Response(500, text="<html>internal error</html>"))
    with sync_client(recorder) as c, pytest.raises(ServiceError) as caught:
        c.whoami()
    assert (caught.value.status, caught.value.code) == (500, "http_500")
    assert "500" in caught.value.message


def test_requests_carry_the_token_the_api_prefix_and_json() -> None:
    recorder = Recorder(httpx.Response(201, json={"success": True, "data": {"id": "1"}}))
    with sync_client(recorder) as c:
        c.features.create("photo-tagging", display_name="Photo tagging")
    request = recorder.requests[0]
    assert request.method == "POST"
    assert request.url.path == f"{API_PREFIX}/features"
    assert request.headers["Authorization"] == "Bearer mnv_t"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {"name": "photo-tagging", "display_name": "Photo tagging"}


def test_without_a_token_no_authorization_header_is_sent() -> None:
    recorder = Recorder(ok({}))
    with sync_client(recorder, token=None) as c:
        c.whoami()
    assert "Authorization" not in recorder.requests[0].headers


def test_feature_names_are_escaped_in_paths_and_filters_sent_as_params() -> None:
    recorder = Recorder(ok([], count=0))
    with sync_client(recorder) as c:
        c.features.list(status="active", search="a b", include_metrics=True)
        c.features.get("a/b")
    listing, single = recorder.requests
    assert listing.url.params["status"] == "active"
    assert listing.url.params["search"] == "a b"
    assert listing.url.params["include_metrics"] == "true"
    assert single.url.raw_path.decode().endswith("/features/a%2Fb")


def test_a_503_to_a_get_is_retried_until_it_succeeds() -> None:
    recorder = Recorder(
        envelope_error(503, "unavailable", "down"),
        envelope_error(503, "unavailable", "down"),
        ok({"organization": {"name": "acme"}}),
    )
    with sync_client(recorder) as c:
        assert c.whoami() == {"organization": {"name": "acme"}}
    assert len(recorder.requests) == 3


def test_a_503_to_a_post_is_not_retried() -> None:
    recorder = Recorder(envelope_error(503, "unavailable", "down"), ok({}))
    with sync_client(recorder) as c, pytest.raises(ServiceError) as caught:
        c.features.create("x")
    assert caught.value.status == 503
    assert len(recorder.requests) == 1


def test_a_read_error_is_retried_for_idempotent_methods_only() -> None:
    recorder = Recorder(httpx.ReadError("reset"), ok({"id": "t", "revoked": True}))
    with sync_client(recorder) as c:
        assert c.tokens.revoke("t") == {"id": "t", "revoked": True}
    assert len(recorder.requests) == 2

    recorder = Recorder(httpx.ReadError("reset"), ok({}))
    with sync_client(recorder) as c, pytest.raises(UnreachableError, match="reset"):
        c.tokens.create(scopes=["read"])
    assert len(recorder.requests) == 1


def test_a_refused_connection_is_retried_even_for_a_post() -> None:
    recorder = Recorder(httpx.ConnectError("refused"), ok({"id": "1"}))
    with sync_client(recorder) as c:
        assert c.features.create("x") == {"id": "1"}
    assert len(recorder.requests) == 2


def test_connection_errors_give_up_after_the_retry_window() -> None:
    recorder = Recorder(httpx.ConnectError("refused"))
    started = time.monotonic()
    with sync_client(recorder, retry_for=0.5) as c, pytest.raises(UnreachableError) as caught:
        c.whoami()
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 3
    assert len(recorder.requests) >= 3  # backed off, not hammered and not given up at once
    assert str(caught.value).startswith(
        f"cannot reach {URL}: is `minerva-ai server start` running?"
    )
    assert caught.value.exit_code == 4


def test_a_closed_port_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    expected = f"cannot reach http://127.0.0.1:{port}"
    with (
        Client(f"http://127.0.0.1:{port}", retry_for=0.2) as c,
        pytest.raises(UnreachableError, match=re.escape(expected)),
    ):
        c.health()


def bad_gateway() -> httpx.Response:
    """What nginx answers when no instance does: an HTML page, no X-Minerva-Instance."""
    page = "<html><head><title>502 Bad Gateway</title></head></html>"
    return httpx.Response(502, text=page, headers={"Content-Type": "text/html"})


def test_a_proxys_502_to_an_ingest_is_retried_until_an_instance_answers() -> None:
    stored = ok({"stored": 1, "duplicates": 0, "rejected": [], "cursor": "c1"})
    recorder = Recorder(bad_gateway(), bad_gateway(), stored)
    with sync_client(recorder) as c:
        c.logs.ingest([{"id": "e1", "message": "m"}])
    assert len(recorder.requests) == 3
    assert {r.content for r in recorder.requests} == {recorder.requests[0].content}


def test_a_proxys_502_is_unreachable_exit_4_when_no_instance_answers() -> None:
    recorder = Recorder(bad_gateway())
    with sync_client(recorder, retry_for=0.3) as c, pytest.raises(UnreachableError) as caught:
        c.whoami()
    assert len(recorder.requests) >= 2  # retried first: a GET is safe to resend
    assert caught.value.exit_code == 4
    assert "HTTP 502 from a proxy: no instance answered" in str(caught.value)


def test_a_proxys_502_to_a_post_that_is_not_idempotent_is_not_resent() -> None:
    recorder = Recorder(bad_gateway(), ok({"id": "1"}))
    with sync_client(recorder) as c, pytest.raises(UnreachableError):
        c.features.create("x")
    assert len(recorder.requests) == 1


def test_a_502_an_instance_sent_is_the_service_refusing() -> None:
    answer = envelope_error(502, "provider_error", "the model provider failed")
    answer.headers["X-Minerva-Instance"] = "web-1"
    recorder = Recorder(answer)
    with sync_client(recorder) as c, pytest.raises(ServiceError) as caught:
        c.whoami()
    assert caught.value.status == 502 and len(recorder.requests) == 1


def test_health_returns_the_body_of_a_503_at_once() -> None:
    down = {"status": "down", "postgres": "down"}
    recorder = Recorder(httpx.Response(503, json=down))
    with sync_client(recorder) as c:
        assert c.health() == down
    assert len(recorder.requests) == 1


def pages(request: httpx.Request) -> httpx.Response:
    """Items 0..6 in pages of the requested size, with a cursor to the next page."""
    start = int(request.url.params.get("cursor", "0"))
    size = int(request.url.params["limit"])
    items = [{"n": n} for n in range(start, min(start + size, 7))]
    following = start + size if start + size < 7 else None
    return ok(items, count=len(items), next_cursor=str(following) if following else None)


def test_paginate_follows_cursors_and_honours_the_limit() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return pages(request)

    with sync_client(handler) as c:
        assert [i["n"] for i in c.paginate("/features")] == list(range(7))
        assert seen[0].url.params["limit"] == "1000"
        seen.clear()
        assert [i["n"] for i in c.paginate("/features", {"status": "active"}, limit=5)] == [
            0,
            1,
            2,
            3,
            4,
        ]
        assert seen[0].url.params["status"] == "active"
        assert seen[0].url.params["limit"] == "5"
        seen.clear()
        batches = [len(page.items) for page in c.iter_pages("/x", limit=0)]
        assert batches == [7]


def test_paginate_asks_only_for_what_remains() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        start = int(request.url.params.get("cursor", "0"))
        items = [{"n": n} for n in range(start, start + 2)]  # the server pages by 2
        return ok(items, next_cursor=str(start + 2))

    with sync_client(handler) as c:
        assert len(list(c.paginate("/features", limit=5))) == 5
    assert [r.url.params["limit"] for r in seen] == ["5", "3", "1"]


def settings_server() -> tuple[Handler, list[httpx.Request], dict[str, Any]]:
    """Answers GET settings with an ETag, and 304 when If-None-Match matches."""
    state: dict[str, Any] = {"version": 3}
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        etag = f'"v{state["version"]}"'
        if request.headers.get("If-None-Match") == etag:
            return httpx.Response(304, headers={"ETag": etag})
        data = {"feature_id": "f1", "version": state["version"], "settings": {"rate_limits": {}}}
        return httpx.Response(200, json={"success": True, "data": data}, headers={"ETag": etag})

    return handler, seen, state


def test_get_settings_revalidates_with_the_etag_and_serves_the_cache_on_304() -> None:
    handler, seen, state = settings_server()
    with sync_client(handler) as c:
        first = c.get_settings("photo-tagging")
        assert "If-None-Match" not in seen[0].headers
        first["settings"]["rate_limits"]["mutated"] = True  # callers get copies
        second = c.get_settings("photo-tagging")
        assert seen[1].headers["If-None-Match"] == '"v3"'
        assert second == {"feature_id": "f1", "version": 3, "settings": {"rate_limits": {}}}
        state["version"] = 4
        third = c.get_settings("photo-tagging")
        assert third["version"] == 4
        assert c.get_settings("photo-tagging")["version"] == 4
        assert seen[-1].headers["If-None-Match"] == '"v4"'


@pytest.mark.anyio
async def test_async_client_maps_errors_and_retries_the_same_way() -> None:
    recorder = Recorder(
        envelope_error(503, "unavailable", "down"),
        envelope_error(409, "version_conflict", "stale", {"current_version": 5}),
    )
    async with async_client(recorder) as c:
        with pytest.raises(ConflictError) as caught:
            await c.settings.put("photo-tagging", {"rate_limits": {}}, base_version=4)
    assert caught.value.details == {"current_version": 5}
    assert len(recorder.requests) == 2  # PUT is idempotent: the 503 was retried
    assert json.loads(recorder.requests[0].content) == {
        "version": 4,
        "settings": {"rate_limits": {}},
    }


@pytest.mark.anyio
async def test_async_client_pages_and_caches() -> None:
    async with async_client(pages) as c:
        assert [i["n"] async for i in c.paginate("/features", limit=3)] == [0, 1, 2]
        assert len(await c.features.list()) == 7
    handler, seen, _ = settings_server()
    async with async_client(handler) as c:
        await c.get_settings("f")
        assert (await c.get_settings("f"))["version"] == 3
    assert seen[1].headers["If-None-Match"] == '"v3"'


@pytest.mark.anyio
async def test_async_client_gives_up_on_a_dead_service() -> None:
    recorder = Recorder(httpx.ConnectError("refused"))
    async with async_client(recorder, retry_for=0.3) as c:
        with pytest.raises(UnreachableError):
            await c.whoami()
    assert len(recorder.requests) >= 2


# ---- against the live service -------------------------------------------------------


def test_the_client_against_the_live_service(live_service: LiveService) -> None:
    with Client(live_service.url, live_service.token) as c:
        assert c.health()["postgres"] == "ok"
        assert c.whoami()["organization"]["id"] == live_service.org_id
        created = c.features.create("photo-tagging", display_name="Photo tagging")
        assert created["settings_version"] == 1
        c.features.create("moderation", status="maintenance")
        assert [f["name"] for f in c.features.list()] == ["moderation", "photo-tagging"]
        assert [f["name"] for f in c.features.list(status="maintenance")] == ["moderation"]
        assert c.features.update("moderation", status="active")["status"] == "active"

        v2 = c.settings.put("photo-tagging", {"rate_limits": {"requests_per_minute": 60}}, 1)
        assert v2["version"] == 2
        with pytest.raises(ConflictError) as conflict:
            c.settings.put("photo-tagging", {"rate_limits": {"requests_per_minute": 70}}, 1)
        assert conflict.value.code == "version_conflict"
        with pytest.raises(ValidationError) as invalid:
            c.settings.put("photo-tagging", {"rate_limits": {"requests_per_minute": -1}}, 2)
        assert invalid.value.status == 422
        assert any("requests_per_minute" in d["field"] for d in invalid.value.details)

        assert c.settings.version("photo-tagging", 1)["settings"]["rate_limits"] == {}
        history = c.settings.history("photo-tagging")
        assert [h["version"] for h in history] == [2, 1]
        rolled = c.settings.rollback("photo-tagging", 1)
        assert (rolled["version"], rolled["settings"]["rate_limits"]) == (3, {})

        assert c.get_settings("photo-tagging")["version"] == 3
        assert c.get_settings("photo-tagging")["version"] == 3  # served from a 304

        issued = c.tokens.create(scopes=["read"], name="reader")
        assert issued["token"].startswith("mnv_")
        assert "reader" in [t["name"] for t in c.tokens.list()]
        assert c.tokens.revoke(issued["id"])["revoked"] is True
        assert c.features.delete("moderation")["deleted"] is True
        with pytest.raises(NotFoundError):
            c.features.get("moderation")
    with Client(live_service.url, issued["token"]) as revoked, pytest.raises(AuthError):
        revoked.whoami()


@pytest.mark.anyio
async def test_the_async_client_against_the_live_service(live_service: LiveService) -> None:
    async with AsyncClient(live_service.url, live_service.token) as c:
        assert (await c.health())["postgres"] == "ok"
        created = await c.features.create("photo-tagging", description="tags")
        assert (await c.features.get(created["id"]))["name"] == "photo-tagging"
        updated = await c.features.update("photo-tagging", display_name="Photo tagging")
        assert updated["display_name"] == "Photo tagging"
        await c.settings.put("photo-tagging", {"rate_limits": {"requests_per_minute": 5}}, 1)
        assert (await c.settings.get("photo-tagging"))["version"] == 2
        assert [h["version"] for h in await c.settings.history("photo-tagging")] == [2, 1]
        assert (await c.settings.version("photo-tagging", 1))["settings"]["rate_limits"] == {}
        assert (await c.settings.rollback("photo-tagging", 1))["version"] == 3
        issued = await c.tokens.create(scopes=["ingest"], name="app")
        assert issued["scopes"] == ["ingest"]
        assert "app" in [t["name"] for t in await c.tokens.list()]
        assert (await c.tokens.revoke(issued["id"]))["revoked"] is True
        assert (await c.features.delete("photo-tagging"))["deleted"] is True
        assert await c.features.list() == []
