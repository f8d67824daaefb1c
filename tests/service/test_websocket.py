"""The WebSocket, with a real client: auth, subscribe, settings_update across instances,
heartbeats, errors and the close codes of docs/api/websocket.md."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from minerva_ai.client import AsyncClient
from minerva_ai.service.app import create_app
from tests.conftest import LiveService, Servers, ThreadedServer, service_config
from tests.service.conftest import (
    WAIT,
    Org,
    RestartableRedis,
    create_feature,
    expect,
    new_org,
    put_settings,
    send,
    ws_open,
)

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def closed_with(ws: ClientConnection) -> int:
    """Wait (bounded) for the server to close; return the close code it sent."""
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(WAIT):
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None, "the server did not send a close frame"
    return closed.value.rcvd.code


async def subscribed(ws: ClientConnection, feature: str) -> dict[str, Any]:
    await send(ws, "subscribe", channel="settings", feature=feature)
    return await expect(ws, "subscribed")


def put(org: Org, feature: str, version: int, sections: dict[str, Any]) -> dict[str, Any]:
    """A settings write over HTTP (a thread of its own, so the event loop keeps running)."""
    with org.client() as http:
        response = put_settings(http, feature, version, sections)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def aput(org: Org, feature: str, version: int, sections: dict[str, Any]) -> dict[str, Any]:
    return await asyncio.to_thread(put, org, feature, version, sections)


def limits(n: int) -> dict[str, Any]:
    return {"rate_limits": {"requests_per_minute": n}}


@pytest.fixture
def tagger(org: Org) -> dict[str, Any]:
    with org.client() as http:
        return create_feature(http, "tagger")


@pytest.fixture(scope="module")
def strict_auth(shared_service: LiveService, servers: Servers) -> Iterator[LiveService]:
    """A second instance whose sockets must authenticate within 0.3 s."""
    config = service_config(shared_service.database_url, servers.redis_url, ws_auth_timeout_s=0.3)
    with ThreadedServer(create_app(config)) as url:
        yield LiveService(
            url, config.database_url, config.redis_url, "", shared_service.token, config
        )


def test_auth_by_header(org: Org) -> None:
    async def scenario() -> None:
        async with ws_open(org.service, org.token) as ws:
            assert await expect(ws, "authenticated") == {"organization_id": org.id}

    asyncio.run(scenario())


def test_auth_by_first_message(org: Org) -> None:
    async def scenario() -> None:
        async with ws_open(org.service) as ws:
            await send(ws, "auth", token=org.token)
            assert await expect(ws, "authenticated") == {"organization_id": org.id}
            await send(ws, "ping")
            assert ISO_Z.match((await expect(ws, "pong"))["time"])

    asyncio.run(scenario())


@pytest.mark.parametrize("token", ["mnv_not-a-token", "garbage"])
def test_a_bad_header_token_is_an_error_then_4401(org: Org, token: str) -> None:
    async def scenario() -> None:
        async with ws_open(org.service, token) as ws:
            assert (await expect(ws, "error"))["code"] == "unauthorized"
            assert await closed_with(ws) == 4401

    asyncio.run(scenario())


def test_a_revoked_token_is_refused(org: Org) -> None:
    with org.client() as http:
        created = http.post("/tokens", json={"scopes": ["read"]}).json()["data"]
        http.delete(f"/tokens/{created['id']}")

    async def scenario() -> None:
        async with ws_open(org.service, created["token"]) as ws:
            assert (await expect(ws, "error"))["code"] == "unauthorized"
            assert await closed_with(ws) == 4401

    asyncio.run(scenario())


def test_a_bad_auth_message_is_an_error_and_the_deadline_still_closes(
    strict_auth: LiveService,
) -> None:
    async def scenario() -> None:
        async with ws_open(strict_auth) as ws:
            await send(ws, "auth", token="mnv_wrong")
            assert (await expect(ws, "error"))["code"] == "unauthorized"
            assert (await expect(ws, "error"))["code"] == "unauthorized"  # the deadline's
            assert await closed_with(ws) == 4401

    asyncio.run(scenario())


def test_no_auth_in_time_closes_4401(strict_auth: LiveService) -> None:
    async def scenario() -> None:
        async with ws_open(strict_auth) as ws:
            error = await expect(ws, "error")
            assert error["code"] == "unauthorized"
            assert "in time" in error["message"]
            assert await closed_with(ws) == 4401

    asyncio.run(scenario())


def test_before_auth_only_auth_and_ping_are_answered(org: Org, tagger: Any) -> None:
    async def scenario() -> None:
        async with ws_open(org.service) as ws:
            await send(ws, "subscribe", channel="settings", feature="tagger")
            assert (await expect(ws, "error"))["code"] == "unauthorized"
            await send(ws, "ping")
            await expect(ws, "pong")
            await send(ws, "auth", token=org.token)
            await expect(ws, "authenticated")
            assert (await subscribed(ws, "tagger"))["feature"] == "tagger"

    asyncio.run(scenario())


def test_a_token_in_the_url_is_not_accepted(org: Org, tagger: Any) -> None:
    async def scenario() -> None:
        for query in (f"?token={org.token}", f"?access_token={org.token}"):
            async with ws_open(org.service, query=query) as ws:
                await send(ws, "subscribe", channel="settings", feature="tagger")
                assert (await expect(ws, "error"))["code"] == "unauthorized"

    asyncio.run(scenario())


def test_subscribe_then_a_put_sends_settings_update(org: Org, tagger: dict[str, Any]) -> None:
    async def scenario() -> None:
        async with ws_open(org.service, org.token) as ws:
            await expect(ws, "authenticated")
            assert await subscribed(ws, "tagger") == {
                "channel": "settings",
                "feature_id": tagger["id"],
                "feature": "tagger",
            }
            written = await aput(org, "tagger", 1, limits(7))
            update = await expect(ws, "settings_update")
            assert update["version"] == 2
            assert update == {**written, "feature": "tagger"}
            assert set(update) == {
                "feature_id",
                "feature",
                "version",
                "settings",
                "created_at",
                "author",
            }
            assert update["settings"]["rate_limits"] == {"requests_per_minute": 7}

            with org.client() as http:
                rolled = await asyncio.to_thread(
                    http.post, "/features/tagger/settings/rollback", json={"version": 1}
                )
            assert rolled.status_code == 200
            update = await expect(ws, "settings_update")
            assert update["version"] == 3
            assert update["settings"]["rate_limits"] == {}

    asyncio.run(scenario())


def test_subscribe_by_id_and_by_the_feature_id_query(org: Org, tagger: dict[str, Any]) -> None:
    async def scenario() -> None:
        async with ws_open(org.service, org.token, query="?featureId=tagger") as ws:
            await expect(ws, "authenticated")
            await send(ws, "subscribe", channel="settings")
            assert (await expect(ws, "subscribed"))["feature_id"] == tagger["id"]
            await aput(org, "tagger", 1, limits(1))
            assert (await expect(ws, "settings_update"))["version"] == 2
        async with ws_open(org.service, org.token) as ws:
            await expect(ws, "authenticated")
            assert (await subscribed(ws, tagger["id"]))["feature"] == "tagger"
            await aput(org, "tagger", 2, limits(2))
            assert (await expect(ws, "settings_update"))["version"] == 3

    asyncio.run(scenario())


def test_subscribing_twice_delivers_each_version_once(org: Org, tagger: Any) -> None:
    async def scenario() -> None:
        async with ws_open(org.service, org.token) as ws:
            await expect(ws, "authenticated")
            await subscribed(ws, "tagger")
            await subscribed(ws, tagger["id"])
            await aput(org, "tagger", 1, limits(1))
            await aput(org, "tagger", 2, limits(2))
            assert (await expect(ws, "settings_update"))["version"] == 2
            assert (await expect(ws, "settings_update"))["version"] == 3

    asyncio.run(scenario())


def test_every_subscriber_gets_the_update_and_only_of_its_feature(org: Org, tagger: Any) -> None:
    with org.client() as http:
        create_feature(http, "other")

    async def scenario() -> None:
        async with (
            ws_open(org.service, org.token) as first,
            ws_open(org.service, org.token) as second,
            ws_open(org.service, org.token) as bystander,
        ):
            for ws in (first, second, bystander):
                await expect(ws, "authenticated")
            await subscribed(first, "tagger")
            await subscribed(second, "tagger")
            await subscribed(bystander, "other")
            await aput(org, "tagger", 1, limits(1))
            await aput(org, "other", 1, limits(1))
            for ws in (first, second):
                assert (await expect(ws, "settings_update"))["feature"] == "tagger"
            assert (await expect(bystander, "settings_update"))["feature"] == "other"

    asyncio.run(scenario())


def test_unsubscribe_stops_updates(org: Org, tagger: Any) -> None:
    with org.client() as http:
        create_feature(http, "other")

    async def scenario() -> None:
        async with (
            ws_open(org.service, org.token) as ws,
            ws_open(org.service, org.token) as witness,
        ):
            await expect(ws, "authenticated")
            await expect(witness, "authenticated")
            await subscribed(ws, "tagger")
            await subscribed(ws, "other")
            await subscribed(witness, "tagger")
            await send(ws, "unsubscribe", channel="settings", feature="tagger")
            assert await expect(ws, "unsubscribed") == {
                "channel": "settings",
                "feature_id": tagger["id"],
            }
            await aput(org, "tagger", 1, limits(1))
            # The witness proves the update was published; "other" is written after it,
            # so had "tagger"'s update reached ws, it would have come first.
            assert (await expect(witness, "settings_update"))["feature"] == "tagger"
            await aput(org, "other", 1, limits(1))
            assert (await expect(ws, "settings_update"))["feature"] == "other"

    asyncio.run(scenario())


def test_heartbeats_arrive(org: Org) -> None:
    async def scenario() -> None:
        async with ws_open(org.service, org.token) as ws:
            await expect(ws, "authenticated")
            for _ in range(2):
                beat = await expect(ws, "heartbeat", timeout=WAIT)
                assert set(beat) == {"time"} and ISO_Z.match(beat["time"])

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (
            {"type": "subscribe", "data": {"channel": "gossip", "feature": "tagger"}},
            "unknown_channel",
        ),
        (
            {"type": "subscribe", "data": {"channel": "LOGS", "feature": "tagger"}},
            "unknown_channel",  # names are case-sensitive
        ),
        ({"type": "subscribe", "data": {"channel": "settings"}}, "bad_message"),
        ({"type": "subscribe", "data": {"channel": "settings", "feature": "ghost"}}, "not_found"),
        ({"type": "unsubscribe", "data": {"channel": "settings", "feature": "ghost"}}, "not_found"),
        ({"type": "dance", "data": {}}, "bad_message"),
        ({"data": {}}, "bad_message"),
        ({"type": "subscribe", "data": "settings"}, "bad_message"),
        ({"type": 5, "data": {}}, "bad_message"),
        (["subscribe"], "bad_message"),
        ("not json at all", "bad_message"),
        (b'{"type": "ping", "data": {}}', "bad_message"),
    ],
)
def test_bad_messages_are_errors_and_the_socket_lives_on(
    org: Org, tagger: Any, message: Any, code: str
) -> None:
    async def scenario() -> None:
        async with ws_open(org.service, org.token) as ws:
            await expect(ws, "authenticated")
            if isinstance(message, bytes | str):
                await ws.send(message)
            else:
                await ws.send(orjson.dumps(message).decode())
            error = await expect(ws, "error")
            assert error["code"] == code
            assert error["message"]
            await send(ws, "ping")
            await expect(ws, "pong")
            assert (await subscribed(ws, "tagger"))["feature"] == "tagger"

    asyncio.run(scenario())


def test_a_message_over_the_limit_is_refused_with_1008(org: Org) -> None:
    async def scenario() -> None:
        async with ws_open(org.service, org.token) as ws:
            await expect(ws, "authenticated")
            await send(ws, "ping", padding="x" * 70_000)
            assert (await expect(ws, "error"))["code"] == "bad_message"
            assert await closed_with(ws) == 1008

    asyncio.run(scenario())


def test_an_update_reaches_a_client_of_another_instance(
    org: Org, tagger: Any, servers: Servers
) -> None:
    config = service_config(org.service.database_url, servers.redis_url)
    with ThreadedServer(create_app(config)) as url:
        second = LiveService(url, config.database_url, config.redis_url, org.id, org.token, config)

        async def scenario() -> None:
            async with (
                ws_open(second, org.token) as there,
                ws_open(org.service, org.token) as here,
            ):
                await expect(there, "authenticated")
                await expect(here, "authenticated")
                await subscribed(there, "tagger")
                await subscribed(here, "tagger")
                written = await aput(org, "tagger", 1, limits(3))  # through the first
                assert await expect(there, "settings_update") == {**written, "feature": "tagger"}
                assert (await expect(here, "settings_update"))["version"] == 2
                # and the other way round
                with httpx.Client(
                    base_url=second.api, headers={"Authorization": f"Bearer {org.token}"}
                ) as http:
                    response = await asyncio.to_thread(put_settings, http, "tagger", 2, limits(4))
                assert response.status_code == 200
                assert (await expect(here, "settings_update"))["version"] == 3
                assert (await expect(there, "settings_update"))["version"] == 3

        asyncio.run(scenario())


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_with_redis_down_updates_still_reach_local_clients(database_url: str) -> None:
    config = service_config(database_url, f"redis://127.0.0.1:{_closed_port()}/0")
    with ThreadedServer(create_app(config)) as url:
        service = LiveService(url, database_url, config.redis_url, "", "", config)
        org = new_org(service)
        with org.client() as http:
            create_feature(http, "tagger")

        async def scenario() -> None:
            async with ws_open(service, org.token) as ws:
                await expect(ws, "authenticated")
                await subscribed(ws, "tagger")
                await aput(org, "tagger", 1, limits(1))
                assert (await expect(ws, "settings_update"))["version"] == 2

        asyncio.run(scenario())


def test_shutdown_closes_sockets_with_1012(org: Org, tagger: Any) -> None:
    server = ThreadedServer(create_app(org.service.config))
    url = server.__enter__()
    service = LiveService(
        url, org.service.database_url, org.service.redis_url, org.id, org.token, org.service.config
    )

    async def scenario() -> None:
        try:
            async with (
                ws_open(service, org.token) as idle,
                ws_open(service, org.token) as busy,
            ):
                await expect(idle, "authenticated")
                await expect(busy, "authenticated")
                await subscribed(busy, "tagger")
                stopping = asyncio.create_task(asyncio.to_thread(server.__exit__))
                assert await closed_with(idle) == 1012
                assert await closed_with(busy) == 1012
                await asyncio.wait_for(stopping, 30)
        finally:
            server.server.should_exit = True

    asyncio.run(scenario())
    assert not server.thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/api/health")


def test_a_scope_too_weak_is_an_error_and_the_socket_lives_on(org: Org, tagger: Any) -> None:
    ingest_only = org.make_token(["ingest"])

    async def scenario() -> None:
        async with ws_open(org.service, ingest_only) as ws:
            await expect(ws, "authenticated")
            await send(ws, "subscribe", channel="settings", feature="tagger")
            assert (await expect(ws, "error"))["code"] == "forbidden"
            await send(ws, "ping")
            await expect(ws, "pong")

    asyncio.run(scenario())


# Settings updates are never dropped silently


def watcher(url: str, token: str) -> tuple[AsyncClient, asyncio.Event]:
    """A client whose event is set once a watch has subscribed (it then reads the settings
    over HTTP: what is written after that is an update)."""
    subscribed = asyncio.Event()

    def log(message: str) -> None:
        if "/settings ->" in message:
            subscribed.set()

    return AsyncClient(url, token, log=log), subscribed


def test_a_settings_watcher_that_stops_reading_ends_with_the_latest_version(
    org: Org, tagger: Any
) -> None:
    async def scenario() -> None:
        client, subscribed = watcher(org.service.url, org.token)
        async with client:
            updates = client.watch_settings("tagger")
            first = asyncio.create_task(anext(updates))
            async with asyncio.timeout(WAIT):
                await subscribed.wait()
                await aput(org, "tagger", 1, limits(1))
                assert (await first)["version"] == 2
            # the watcher reads nothing while 300 versions are written
            for version in range(2, 302):
                await aput(org, "tagger", version, limits(version))
            seen = []
            async with asyncio.timeout(WAIT * 3):
                while not seen or seen[-1] < 302:
                    seen.append((await anext(updates))["version"])
            assert seen == sorted(set(seen)), "a version was repeated or came out of order"
            await updates.aclose()

    asyncio.run(scenario())


def test_settings_watchers_catch_up_on_what_was_written_while_redis_was_down(
    org: Org, tagger: Any, tmp_path: Any
) -> None:
    """Redis down: a write through instance B reaches only B's sockets. When A's bus is
    back, A's settings subscribers get `overflow`, and a watcher reads the version."""
    redis = RestartableRedis(tmp_path)
    redis.start()
    configs = [service_config(org.service.database_url, redis.url) for _ in "ab"]
    apps = [create_app(config) for config in configs]
    try:
        with ThreadedServer(apps[0]) as url_a, ThreadedServer(apps[1]) as url_b:
            buses = [app.state.minerva.bus for app in apps]
            a, b = (
                Org(
                    LiveService(url, configs[0].database_url, redis.url, org.id, org.token, config),
                    org.id,
                    org.name,
                    org.token,
                )
                for url, config in ((url_a, configs[0]), (url_b, configs[1]))
            )

            async def connected(up: bool) -> None:
                while any(bus.connected is not up for bus in buses):
                    await asyncio.sleep(0.02)

            async def scenario() -> None:
                client, watching = watcher(a.service.url, org.token)
                async with client, ws_open(a.service, org.token) as ws:
                    await expect(ws, "authenticated")
                    await subscribed(ws, "tagger")
                    updates = client.watch_settings("tagger")
                    async with asyncio.timeout(WAIT):
                        await connected(True)
                        first = asyncio.create_task(anext(updates))
                        await watching.wait()
                        await aput(b, "tagger", 1, limits(1))
                        assert (await first)["version"] == 2
                        assert (await expect(ws, "settings_update"))["version"] == 2
                        redis.stop()
                        await connected(False)
                        await aput(b, "tagger", 2, limits(2))  # B cannot tell A
                        redis.start()
                        await connected(True)
                        lost = await expect(ws, "overflow")
                        assert (lost["channel"], lost["feature"]) == ("settings", "tagger")
                        assert (await anext(updates))["version"] == 3
                    await updates.aclose()

            asyncio.run(scenario())
    finally:
        if redis.process.poll() is None:
            redis.stop()
