"""Helpers for the service tests: one shared service, a fresh organization per test.

Starting a service per test costs ~0.4 s; an organization costs milliseconds and is a
clean namespace (features, tokens and settings are all organization-scoped), so most
tests run as a new organization on the session's shared service. Tests that stop,
break or reconfigure a service use ``live_service`` or start their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from tests.conftest import (
    LiveService,
    Servers,
    ThreadedServer,
    running_service,
    scratch_database,
)

# Building an SSL context costs ~30 ms per client; loopback http needs none, so share one.
_SSL = ssl.create_default_context()


def client(live: LiveService, token: str | None = None) -> httpx.Client:
    """An HTTP client on the API base path, sending ``token`` (the admin's by default)."""
    headers = {"Authorization": f"Bearer {token or live.token}"}
    return httpx.Client(base_url=live.api, headers=headers, timeout=15, verify=_SSL)


def create_feature(api: httpx.Client, name: str, **fields: Any) -> dict[str, Any]:
    response = api.post("/features", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    feature: dict[str, Any] = response.json()["data"]
    return feature


def put_settings(
    api: httpx.Client, feature: str, version: int, sections: dict[str, Any]
) -> httpx.Response:
    return api.put(f"/features/{feature}/settings", json={"version": version, "settings": sections})


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the error envelope with this status and code; return its error."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"success", "error"}, body
    assert body["success"] is False
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    return error


def fields_of(error: dict[str, Any]) -> list[str]:
    return [problem["field"] for problem in error["details"]]


@dataclass
class Org:
    """An organization of its own on a running service, with its first admin token."""

    service: LiveService
    id: str
    name: str
    token: str

    def client(self, token: str | None = None) -> httpx.Client:
        return client(self.service, token or self.token)

    def make_token(self, scopes: list[str]) -> str:
        return self.service.make_token(scopes, org=self.name)


def new_org(service: LiveService) -> Org:
    name = f"org-{uuid.uuid4().hex[:10]}"
    org_id, token = service.make_org(name)
    return Org(service, org_id, name, token)


@pytest.fixture(scope="session")
def shared_service(servers: Servers) -> Iterator[LiveService]:
    """One service on a database of its own, shared by every test that only needs an org."""
    with (
        scratch_database(servers, "minerva_shared") as database_url,
        running_service(database_url, servers.redis_url) as live,
    ):
        yield live


@pytest.fixture
def org(shared_service: LiveService) -> Org:
    """A fresh organization on the shared service: nothing in it but its admin token."""
    return new_org(shared_service)


@pytest.fixture
def api(org: Org) -> Iterator[httpx.Client]:
    """The admin of this test's organization, over HTTP."""
    with org.client() as http:
        yield http


# WebSocket helpers: every wait is bounded, generously, so a busy machine is not a failure.
WAIT = 10.0


def ws_url(service: LiveService, query: str = "") -> str:
    return service.api.replace("http://", "ws://", 1) + "/websocket" + query


def ws_open(service: LiveService, token: str | None = None, query: str = "") -> Any:
    """Connect (as an async context manager), with the token in the header when given."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return ws_connect(ws_url(service, query), additional_headers=headers, open_timeout=WAIT)


async def send(ws: ClientConnection, kind: str, **data: Any) -> None:
    await ws.send(orjson.dumps({"type": kind, "data": data}).decode())


async def receive(ws: ClientConnection, timeout: float = WAIT) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
    assert set(message) == {"type", "data"}, message
    return message


async def expect(ws: ClientConnection, kind: str, timeout: float = WAIT) -> dict[str, Any]:
    """The data of the next message other than a heartbeat, which must be of ``kind``."""
    async with asyncio.timeout(timeout):
        while True:
            message = await receive(ws, timeout)
            if message["type"] != "heartbeat" or kind == "heartbeat":
                break
    assert message["type"] == kind, message
    data: dict[str, Any] = message["data"]
    return data


# Logs: entries, ingest, and the ways of following them (WebSocket, SSE, polling).

# The fields of a log entry (docs/api/README.md), in the order of the CSV export's columns.
LOG_ENTRY_FIELDS = (
    "id",
    "timestamp",
    "level",
    "message",
    "source",
    "feature",
    "request_id",
    "model",
    "latency_ms",
    "tokens_in",
    "tokens_out",
    "cost",
    "status",
    "attributes",
    "cursor",
    "committed_at",
)


@pytest.fixture
def http(org: Org) -> Iterator[httpx.Client]:
    """The admin of a fresh organization, with features "tagger" and "summary"."""
    with org.client() as client:
        create_feature(client, "tagger")
        create_feature(client, "summary")
        yield client


def stamp(moment: datetime | None = None, **ago: float) -> str:
    """An ISO 8601 time in UTC with ``Z``: ``moment`` (now by default) minus ``ago``."""
    moment = (moment or datetime.now(UTC)) - timedelta(**ago)
    return moment.isoformat().replace("+00:00", "Z")


def log_entry(feature: str, message: str, **fields: Any) -> dict[str, Any]:
    """A valid entry with an id of its own; ``fields`` override or add."""
    entry = {
        "id": uuid.uuid4().hex,
        "timestamp": stamp(seconds=1),
        "feature": feature,
        "level": "info",
        "message": message,
        "source": "api",
    }
    return {**entry, **fields}


def post_logs(
    http: httpx.Client, entries: list[Any], *, ndjson: bool = False, status: int = 200
) -> dict[str, Any]:
    """POST /logs; the answer's ``data`` (or ``error`` when ``status`` is not 200)."""
    if ndjson:
        response = http.post(
            "/logs",
            content=b"\n".join(orjson.dumps(e) for e in entries) + b"\n",
            headers={"Content-Type": "application/x-ndjson"},
        )
    else:
        response = http.post("/logs", json=entries)
    assert response.status_code == status, response.text
    result: dict[str, Any] = response.json()["data" if status == 200 else "error"]
    return result


def all_logs(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every matching entry, oldest first, by polling ``after`` until nothing is left."""
    entries: list[dict[str, Any]] = []
    after = "0"
    while True:
        response = http.get("/logs", params={**params, "after": after, "limit": 1000})
        assert response.status_code == 200, response.text
        body = response.json()
        entries += body["data"]
        if not body["data"]:
            return entries
        after = body["next_cursor"]


@dataclass
class SseEvent:
    event: str
    id: str | None
    data: Any


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """The events of a server-sent-events response (comments, such as heartbeats, skipped)."""
    event: str = "message"
    event_id: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield SseEvent(event, event_id, orjson.loads("\n".join(data)))
            event, event_id, data = "message", None, []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "id":
                event_id = value
            elif name == "data":
                data.append(value)


async def subscribe_logs(ws: ClientConnection, **data: Any) -> dict[str, Any]:
    await send(ws, "subscribe", channel="logs", **data)
    return await expect(ws, "subscribed")


async def ws_log_entries(
    ws: ClientConnection, count: int, timeout: float = WAIT
) -> list[dict[str, Any]]:
    """The next ``count`` entries on a socket; any message but a heartbeat or `log` fails."""
    messages = await next_log_messages(ws, count, timeout)
    assert [m["type"] for m in messages] == ["log"] * count, [
        m for m in messages if m["type"] != "log"
    ][:3]
    return [m["data"] for m in messages]


async def sse_log_entries(events: AsyncIterator[SseEvent], count: int) -> list[dict[str, Any]]:
    """The next ``count`` entries of an SSE stream; any other event fails."""
    entries: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT):
        while len(entries) < count:
            event = await anext(events)
            assert event.event == "log", event
            assert event.id == event.data["cursor"]
            entries.append(event.data)
    return entries


async def next_log_messages(
    ws: ClientConnection, count: int, timeout: float = WAIT
) -> list[dict[str, Any]]:
    """The next ``count`` messages other than heartbeats (log, overflow, gap, error...)."""
    messages: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(messages) < count:
            message = await receive(ws, timeout)
            if message["type"] != "heartbeat":
                messages.append(message)
    return messages


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """A ThreadedServer whose routes are all built before the test uses it.

    FastAPI builds its routes on the first request that reaches them, inside
    ``warnings.catch_warnings()``, which is not thread-safe: two service threads doing so
    at once can lose the filter that hides a pydantic warning, which pytest then raises
    (a 500). One request that tries every route, made alone, builds them all.
    """
    with ThreadedServer(app) as url:  # ThreadedServer builds every route before it answers
        yield url


class RestartableRedis:
    """A Redis of this test's own on a fixed loopback port, to stop and start again."""

    def __init__(self, tmp: Any) -> None:
        from minerva_ai.service.embedded import free_port, redis_server_binary

        self.port = free_port()
        self.binary = str(redis_server_binary())
        self.dir = str(tmp)
        self.process: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import subprocess

        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + WAIT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                assert time.monotonic() < deadline, "redis did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(WAIT)


@contextlib.asynccontextmanager
async def async_pool(database_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A small pool on ``database_url``, as the service's: autocommit, rows as dicts."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url,
        min_size=1,
        max_size=6,
        open=False,
        kwargs={"autocommit": True, "row_factory": dict_row},
    )
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()
