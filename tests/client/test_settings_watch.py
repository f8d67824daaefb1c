"""``AsyncClient.watch_settings``: live versions, catching up after a reconnect without
repeats, and the service's refusals as exceptions.

Scripted WebSocket servers (websockets' ``serve``) play the service, beside the live one.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve

from minerva_ai.client import AsyncClient
from minerva_ai.core.errors import AuthError, NotFoundError, UnreachableError
from minerva_ai.core.protocol import WEBSOCKET_PATH
from tests.conftest import LiveService

TOKEN = "mnv_t"


@pytest.mark.anyio
async def test_watch_settings_yields_each_new_version_live(live_service: LiveService) -> None:
    subscribed = asyncio.Event()

    def log(message: str) -> None:
        # the watcher reads the current settings right after it has subscribed
        if "/settings ->" in message:
            subscribed.set()

    async with AsyncClient(live_service.url, live_service.token, log=log) as watcher_client:
        async with AsyncClient(live_service.url, live_service.token) as writer:
            await writer.features.create("photo-tagging")
            updates = watcher_client.watch_settings("photo-tagging")
            with anyio.fail_after(20):
                first = asyncio.ensure_future(anext(updates))
                await subscribed.wait()
                await writer.settings.put("photo-tagging", {"rate_limits": {"cost_per_day": 5}}, 1)
                update = await first
                assert update["version"] == 2
                assert update["feature"] == "photo-tagging"
                assert update["settings"]["rate_limits"]["cost_per_day"] == 5
                await writer.settings.put("photo-tagging", {"rate_limits": {"cost_per_day": 6}}, 2)
                assert (await anext(updates))["version"] == 3
            await updates.aclose()  # type: ignore[attr-defined]
        # the cache was refreshed from the messages: no request needed to know version 3
        cached = await watcher_client.get_settings("photo-tagging")
        assert cached["version"] == 3


@pytest.mark.anyio
async def test_watch_settings_reconnects_and_catches_up_without_repeats() -> None:
    """First socket: subscribed, then the service restarts (1012). Version 2 is published
    meanwhile; the second socket repeats version 2 and then sends version 3."""
    headers: list[str | None] = []
    paths: list[str] = []
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        headers.append(ws.request.headers.get("Authorization"))
        paths.append(ws.request.path)
        await ws.recv()
        subscribed = {"channel": "settings", "feature_id": "f1", "feature": "photo-tagging"}
        await ws.send(json.dumps({"type": "subscribed", "data": subscribed}))
        if connections == 1:
            await ws.close(1012, "restarting")
            return
        for version in (2, 3):
            data = {
                "feature_id": "f1",
                "feature": "photo-tagging",
                "version": version,
                "settings": {},
                "created_at": "2026-11-26T00:00:00Z",
                "author": None,
            }
            await ws.send(json.dumps({"type": "settings_update", "data": data}))
        await ws.wait_closed()

    http_versions = [1, 2]

    def http(request: httpx.Request) -> httpx.Response:
        version = http_versions.pop(0) if len(http_versions) > 1 else http_versions[0]
        data = {"feature_id": "f1", "version": version, "settings": {}}
        return httpx.Response(200, json={"success": True, "data": data})

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        transport = httpx.MockTransport(http)
        async with AsyncClient(f"http://127.0.0.1:{port}", "mnv_t", transport=transport) as c:
            updates = c.watch_settings("photo-tagging")
            with anyio.fail_after(10):
                versions = [(await anext(updates))["version"] for _ in range(2)]
            await updates.aclose()  # type: ignore[attr-defined]
    assert versions == [2, 3]
    assert headers == ["Bearer mnv_t", "Bearer mnv_t"]
    assert all("mnv_t" not in path for path in paths)
    assert paths[0] == f"{WEBSOCKET_PATH}?featureId=photo-tagging"


@pytest.mark.anyio
async def test_watch_settings_raises_the_services_errors() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        error = {"code": "not_found", "message": "no feature 'nope'"}
        await ws.send(json.dumps({"type": "error", "data": error}))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with AsyncClient(f"http://127.0.0.1:{port}", "mnv_t") as c:
            with anyio.fail_after(10), pytest.raises(NotFoundError, match="no feature"):
                await anext(c.watch_settings("nope"))


@pytest.mark.anyio
async def test_watch_settings_with_a_bad_token_is_an_auth_error(live_service: LiveService) -> None:
    async with AsyncClient(live_service.url, "mnv_" + "x" * 43) as c:
        with anyio.fail_after(20), pytest.raises(AuthError):
            await anext(c.watch_settings("photo-tagging"))


@pytest.mark.anyio
async def test_watch_settings_maps_a_refused_upgrade_and_an_auth_close() -> None:
    from http import HTTPStatus

    def forbid(connection: ServerConnection, request: Any) -> Any:
        return connection.respond(HTTPStatus.FORBIDDEN, "forbidden\n")

    async def close_unauthenticated(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.close(4401, "not authenticated")

    async with serve(close_unauthenticated, "127.0.0.1", 0, process_request=forbid) as server:
        port = server.sockets[0].getsockname()[1]
        async with AsyncClient(f"http://127.0.0.1:{port}", TOKEN) as c:
            with anyio.fail_after(10), pytest.raises(AuthError) as refused:
                await anext(c.watch_settings("photo-tagging"))
    assert refused.value.status == 403

    async with serve(close_unauthenticated, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with AsyncClient(f"http://127.0.0.1:{port}", TOKEN) as c:
            with anyio.fail_after(10), pytest.raises(AuthError, match="not authenticated"):
                await anext(c.watch_settings("photo-tagging"))


@pytest.mark.anyio
async def test_watch_settings_without_reconnect_ends_when_the_socket_closes() -> None:
    async def restart(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.close(1012, "restarting")

    async with serve(restart, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with AsyncClient(f"http://127.0.0.1:{port}", TOKEN) as c:
            with anyio.fail_after(10):
                assert [u async for u in c.watch_settings("f", reconnect=False)] == []


@pytest.mark.anyio
async def test_watch_settings_gives_up_on_a_dead_service() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with AsyncClient(f"http://127.0.0.1:{port}", TOKEN, retry_for=0.3) as c:
        with anyio.fail_after(10), pytest.raises(UnreachableError, match="cannot reach"):
            await anext(c.watch_settings("f"))
