"""Helpers of the logs tests: entries, a service shared by a module, a gatekeeper app.

``Gatekeeper`` stands where a reverse proxy would: in front of the real service, it
refuses the WebSocket handshake or the SSE path, or cuts an export short, and passes
everything else through untouched. Nothing of ours is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from minerva_ai.client import Client
from tests.conftest import (
    MINERVA_AI,
    WAIT,
    LiveService,
    Servers,
    ThreadedServer,
    running_service,
    scratch_database,
)


def stamp(seconds_ago: float = 0.0) -> str:
    moment = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def entry(feature: str, message: str, level: str = "info", **fields: Any) -> dict[str, Any]:
    return {
        "timestamp": stamp(),
        "feature": feature,
        "level": level,
        "message": message,
        "source": "test",
        **fields,
    }


@dataclass
class Org:
    """An organization of its own on a running service, with features to log for."""

    url: str
    token: str
    id: str
    database_url: str

    def client(self, **kwargs: Any) -> Client:
        return Client(self.url, self.token, **kwargs)

    def env(self) -> dict[str, str]:
        return {"MINERVA_URL": self.url, "MINERVA_TOKEN": self.token}


def new_org(service: LiveService, features: tuple[str, ...] = ("tagger", "mod")) -> Org:
    org_id, token = service.make_org(f"org-{uuid.uuid4().hex[:10]}")
    org = Org(service.url, token, org_id, service.database_url)
    with org.client() as client:
        for name in features:
            client.features.create(name)
    return org


@contextlib.contextmanager
def module_service(
    servers: Servers, wrap: Callable[[Any], Any] | None = None
) -> Iterator[LiveService]:
    """A service on a database of its own, for the tests of one module (new org each)."""
    with (
        scratch_database(servers, "minerva_logs") as database_url,
        running_service(database_url, servers.redis_url, wrap) as live,
    ):
        yield live


def service_fixture(**gate: Any) -> Any:
    """A module-scoped fixture of a ``module_service``, behind ``Gatekeeper(app, **gate)``
    when ``gate`` is given; named as it is assigned: ``no_push = service_fixture(...)``."""

    @pytest.fixture(scope="module")
    def fixture(servers: Servers) -> Iterator[LiveService]:
        wrap = (lambda app: Gatekeeper(app, **gate)) if gate else None
        with module_service(servers, wrap) as live:
            yield live

    return fixture


class PortServer(ThreadedServer):
    """A ThreadedServer on a port of our choosing (to restart a service where it was)."""

    def __init__(self, app: object, port: int) -> None:
        super().__init__(app)
        self.server.config.port = port


class Gatekeeper:
    """An ASGI app in front of the service, refusing what a proxy might refuse."""

    def __init__(
        self,
        app: Any,
        *,
        websocket_status: int | None = None,
        sse_status: int | None = None,
        cut_exports: bool = False,
        stall: threading.Event | None = None,
        stall_exports: threading.Event | None = None,
    ) -> None:
        self.app = app
        self.websocket_status = websocket_status
        self.sse_status = sse_status
        self.cut_exports = cut_exports
        self.stall = stall
        self.stall_exports = stall_exports

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "websocket" and self.websocket_status is not None:
            await receive()  # websocket.connect
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": self.websocket_status,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "websocket.http.response.body", "body": b"no websockets here"})
            return
        if scope["type"] == "http" and path.endswith("/logs/stream") and self.sse_status:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.sse_status,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "http.response.body", "body": b"no event streams here"})
            return
        if scope["type"] == "http" and path.endswith("/logs/export") and self.cut_exports:
            await self.app(scope, receive, _cut_after_first_body(send))
            return
        if scope["type"] == "http" and path.endswith("/logs/export") and self.stall_exports:
            await self.app(scope, receive, _held_after_first_body(send, self.stall_exports))
            return
        if scope["type"] == "websocket" and self.stall is not None:
            await self.app(scope, receive, _stalling(send, self.stall))
            return
        await self.app(scope, receive, send)


def _stalling(send: Any, stall: threading.Event) -> Any:
    """A send that holds frames while ``stall`` is set: a client that stopped reading."""

    async def held(message: dict[str, Any]) -> None:
        while stall.is_set() and message["type"] == "websocket.send":
            await asyncio.sleep(0.01)
        await send(message)

    return held


def _held_after_first_body(send: Any, stall: threading.Event) -> Any:
    """A send that lets the head and the first body chunk through, then holds the rest
    while ``stall`` is set: an export that is still running."""
    bodies = 0

    async def held(message: dict[str, Any]) -> None:
        nonlocal bodies
        if message["type"] == "http.response.body":
            bodies += 1
            while bodies > 1 and stall.is_set():
                await asyncio.sleep(0.01)
        await send(message)

    return held


def _cut_after_first_body(send: Any) -> Any:
    """A send that lets the head and the first body chunk through, then breaks."""
    bodies = 0

    async def cut(message: dict[str, Any]) -> None:
        nonlocal bodies
        if message["type"] == "http.response.body":
            bodies += 1
            if bodies > 1:
                raise ConnectionResetError("the proxy dropped the connection")
            message = {**message, "more_body": True}
        await send(message)

    return cut


class CliProcess:
    """`minerva-ai ARGS` in a subprocess; its stdout and stderr lines collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str], stdin: bool = False) -> None:
        self.process = subprocess.Popen(
            [MINERVA_AI, *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **env},
            # As on a terminal: a runner started in the background inherits SIGINT ignored.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._collect, args=(pipe, lines), daemon=True)
            for pipe, lines in (
                (self.process.stdout, self.stdout),
                (self.process.stderr, self.stderr),
            )
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(pipe: Any, lines: list[str]) -> None:
        for raw in pipe:
            lines.append(raw.decode())

    def write(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode())
        self.process.stdin.flush()

    def close_stdin(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float = WAIT) -> int:
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        return code

    def interrupt(self, timeout: float = WAIT) -> int:
        if self.running():
            self.process.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def kill(self) -> None:
        """Make sure it is gone (a no-op after ``wait``), its pipes closed."""
        if self.running():
            self.process.kill()
        self.wait()

    def err(self) -> str:
        return "".join(self.stderr)
