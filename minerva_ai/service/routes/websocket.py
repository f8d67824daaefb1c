"""The real-time socket: auth, subscribe/unsubscribe per channel and feature, heartbeats.

Protocol in docs/api/websocket.md. Each session has one writer task draining a bounded
outgoing queue, so pumps and replies never interleave frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from minerva_ai.core.protocol import CLOSE_POLICY, CLOSE_UNAUTHENTICATED
from minerva_ai.service import store
from minerva_ai.service.channels import CHANNELS, Subscribe
from minerva_ai.service.deps import AppState, Principal, bearer_token, principal_for
from minerva_ai.service.errors import ApiError
from minerva_ai.service.responses import dumps

router = APIRouter(tags=["realtime"])
log = logging.getLogger("minerva_ai.service.websocket")

MAX_MESSAGE_BYTES = 64 * 1024


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Session:
    def __init__(self, ws: WebSocket, state: AppState, default_feature: str | None) -> None:
        self.ws = ws
        self.state = state
        self.default_feature = default_feature
        self.principal: Principal | None = None
        self.outgoing: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1000)
        self.subscriptions: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.authenticated = asyncio.Event()
        self._unwatch: Callable[[], None] = lambda: None
        self._closing: asyncio.Task[None] | None = None

    def send(self, kind: str, data: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.outgoing.put_nowait(dumps({"type": kind, "data": data}))

    async def put(self, frame: bytes) -> None:
        """Queue a frame, waiting while the client reads slowly (pumps do)."""
        await self.outgoing.put(frame)

    def error(self, code: str, message: str, **extra: Any) -> None:
        self.send("error", {"code": code, "message": message, **extra})

    async def run(self) -> None:
        token = bearer_token(self.ws.headers.get("authorization"))
        if token is not None and not await self._authenticate(token):
            await self._flush_and_close(CLOSE_UNAUTHENTICATED)
            return
        tasks = [
            asyncio.create_task(self._writer()),
            asyncio.create_task(self._heartbeat()),
            asyncio.create_task(self._auth_deadline()),
        ]
        try:
            await self._reader()
        finally:
            self._unwatch()
            if self._closing is not None:
                tasks.append(self._closing)
            pumps = list(self.subscriptions.values())
            for task in tasks + pumps:
                task.cancel()
            await asyncio.gather(*tasks, *pumps, return_exceptions=True)

    def _revoked(self) -> None:
        """The token was revoked (on any instance): the socket closes with 4401."""
        self.error("unauthorized", "the token was revoked")
        self._closing = asyncio.create_task(self._close_unauthenticated())

    async def _close_unauthenticated(self) -> None:
        await asyncio.sleep(0)  # the writer sends what is queued first
        with contextlib.suppress(RuntimeError):
            await self._flush_and_close(CLOSE_UNAUTHENTICATED)

    async def _flush_and_close(self, code: int) -> None:
        while not self.outgoing.empty():
            await self.ws.send_text(self.outgoing.get_nowait().decode())
        await self.ws.close(code)

    async def _authenticate(self, token: str) -> bool:
        try:
            self.principal = await principal_for(self.state, token)
        except ApiError as exc:
            self.error("unauthorized", exc.message)
            return False
        self.authenticated.set()
        self._unwatch()
        self._unwatch = self.state.live.watch(self.principal.token_id, self._revoked)
        self.send("authenticated", {"organization_id": str(self.principal.organization_id)})
        return True

    async def _writer(self) -> None:
        while True:
            frame = await self.outgoing.get()
            await self.ws.send_text(frame.decode())

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.state.config.ws_heartbeat_s)
            self.send("heartbeat", {"time": _now()})

    async def _auth_deadline(self) -> None:
        try:
            await asyncio.wait_for(self.authenticated.wait(), self.state.config.ws_auth_timeout_s)
        except TimeoutError:
            self.error("unauthorized", "no valid `auth` message in time")
            await self._close_unauthenticated()

    async def _reader(self) -> None:
        while True:
            try:
                received = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if received["type"] == "websocket.disconnect":
                return
            text = received.get("text")
            if text is None:
                self.error("bad_message", "messages are JSON text frames, not binary ones")
                continue
            if len(text.encode()) > MAX_MESSAGE_BYTES:
                self.error("bad_message", f"messages are limited to {MAX_MESSAGE_BYTES} bytes")
                with contextlib.suppress(RuntimeError):
                    await self._flush_and_close(CLOSE_POLICY)
                return
            try:
                message = orjson.loads(text)
                kind, data = message["type"], message.get("data") or {}
                if not isinstance(kind, str) or not isinstance(data, dict):
                    raise TypeError
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self.error("bad_message", 'expected {"type": "...", "data": {...}}')
                continue
            await self._handle(kind, data)
            if self.ws.client_state is WebSocketState.DISCONNECTED:
                return

    async def _handle(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "auth":
            await self._authenticate(str(data.get("token", "")))
        elif kind == "ping":
            self.send("pong", {"time": _now()})
        elif self.principal is None:
            self.error("unauthorized", "send an `auth` message first")
        elif kind in ("subscribe", "unsubscribe"):
            await self._subscription(kind, data)
        else:
            self.error("bad_message", f"unknown message type {kind!r}")

    async def _subscription(self, kind: str, data: dict[str, Any]) -> None:
        assert self.principal is not None
        name = data.get("channel")
        found = CHANNELS.get(name) if isinstance(name, str) else None
        if found is None:
            known = ", ".join(CHANNELS)
            self.error("unknown_channel", f"unknown channel {name!r} (channels: {known})")
            return
        ref = data.get("feature") or self.default_feature
        if not ref and found.needs_feature:
            self.error("bad_message", "subscribe needs a `feature` (or ?featureId= on the URL)")
            return
        try:
            self.principal.require(found.scope)
            feature = None
            if ref:
                async with self.state.pool.connection() as conn:
                    feature = await store.get_feature(
                        conn, self.principal.organization_id, str(ref)
                    )
        except ApiError as exc:
            self.error(exc.code, exc.message)
            return
        feature_id = str(feature["id"]) if feature else None
        key = (found.name, feature_id or "*")
        if kind == "unsubscribe":
            existing = self.subscriptions.pop(key, None)
            if existing is not None:
                existing.cancel()
            self.send("unsubscribed", {"channel": found.name, "feature_id": feature_id})
            return
        reply = {
            "channel": found.name,
            "feature_id": feature_id,
            "feature": feature["name"] if feature else None,
        }
        await found.subscribe(Subscribe(self, self.principal, key, data, feature, reply))


@router.websocket("/websocket")
async def websocket(ws: WebSocket) -> None:
    state: AppState = ws.app.state.minerva
    await ws.accept()
    await Session(ws, state, ws.query_params.get("featureId")).run()
