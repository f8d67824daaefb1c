"""A revoked token loses its live connections on every instance: its WebSockets close with
4401 and its SSE streams end, at once through the bus, and within MINERVA_TOKEN_RECHECK
where no announcement arrives (service/live_tokens.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed

from minerva_ai.service.app import create_app
from tests.conftest import LiveService, Servers, ThreadedServer, service_config
from tests.service.conftest import WAIT, Org, expect, sse_events, subscribe_logs, ws_open


def read_token(org: Org) -> dict[str, Any]:
    with org.client() as http:
        response = http.post("/tokens", json={"scopes": ["read"], "name": "follower"})
    assert response.status_code == 201, response.text
    issued: dict[str, Any] = response.json()["data"]
    return issued


def revoke_over_http(org: Org, token_id: str) -> None:
    with org.client() as http:  # through the first instance
        assert http.delete(f"/tokens/{token_id}").status_code == 200


def revoke_in_the_database(org: Org, token_id: str) -> None:
    # As if the announcement were lost (Redis down): only the periodic check can tell.
    with psycopg.connect(org.service.database_url, autocommit=True) as conn:
        conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE id = %s", (token_id,))


@pytest.mark.parametrize(
    ("revoke", "recheck_s"),
    [(revoke_over_http, 600.0), (revoke_in_the_database, 0.2)],
    ids=["announced", "checked"],
)
def test_a_revoked_token_loses_its_websocket_and_sse_stream_on_another_instance(
    org: Org, servers: Servers, revoke: Any, recheck_s: float
) -> None:
    config = service_config(org.service.database_url, servers.redis_url, token_recheck_s=recheck_s)
    issued = read_token(org)
    with ThreadedServer(create_app(config)) as url:
        other = LiveService(url, config.database_url, config.redis_url, org.id, org.token, config)

        async def scenario() -> None:
            headers = {"Authorization": f"Bearer {issued['token']}"}
            async with (
                ws_open(other, issued["token"]) as ws,
                httpx.AsyncClient(base_url=other.api, headers=headers, timeout=WAIT) as http,
                http.stream("GET", "/logs/stream") as response,
            ):
                await expect(ws, "authenticated")
                await subscribe_logs(ws)
                assert response.status_code == 200
                events = sse_events(response)
                await asyncio.to_thread(revoke, org, issued["id"])
                error = await expect(ws, "error")
                assert (error["code"], error["message"]) == (
                    "unauthorized",
                    "the token was revoked",
                )
                with pytest.raises(ConnectionClosed) as closed:
                    async with asyncio.timeout(WAIT):
                        while True:
                            await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
                async with asyncio.timeout(WAIT):  # the stream ends: no more events
                    assert [e async for e in events if e.event != "heartbeat"] == []
            # and it is refused from now on, on this instance too
            async with ws_open(other, issued["token"]) as ws:
                assert (await expect(ws, "error"))["code"] == "unauthorized"

        asyncio.run(scenario())


def test_other_tokens_keep_their_streams(org: Org) -> None:
    kept, revoked = read_token(org), read_token(org)

    async def scenario() -> None:
        async with ws_open(org.service, kept["token"]) as ws:
            await expect(ws, "authenticated")
            await subscribe_logs(ws)
            await asyncio.to_thread(revoke_over_http, org, revoked["id"])
            await ws.send('{"type": "ping", "data": {}}')
            await expect(ws, "pong")

    asyncio.run(scenario())
