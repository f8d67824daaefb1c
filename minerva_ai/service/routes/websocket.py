"""The real-time socket: auth, subscribe/unsubscribe per channel and feature, heartbeats.

Protocol in docs/api/websocket.md. Each session has one writer task draining a bounded
outgoing queue, so pumps and replies never interleave frames.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from minerva_ai.service import store
from minerva_ai.service.bus import Subscription
from minerva_ai.service.deps import AppState, Principal, bearer_token, principal_for
from minerva_ai.service.errors import ApiError
from minerva_ai.service.responses import dumps

router = APIRouter(tags=["realtime"])

CHANNELS = ("settings",)
LATER_CHANNELS = ("logs", "metrics", "alerts")
CLOSE_UNAUTHENTICATED = 4401
CLOSE_POLICY = 1008
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
        self.subscriptions: dict[tuple[str, str], tuple[Subscription, asyncio.Task[None]]] = {}
        self.authenticated = asyncio.Event()

    def send(self, kind: str, data: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.outgoing.put_nowait(dumps({"type": kind, "data": data}))

    def error(self, code: str, message: str) -> None:
        self.send("error", {"code": code, "message": message})

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
            for task in tasks + [t for _, t in self.subscriptions.values()]:
                task.cancel()
            for sub, _ in self.subscriptions.values():
                sub.close()
            await asyncio.gather(*tasks, return_exceptions=True)

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
            await asyncio.sleep(0)
            with contextlib.suppress(RuntimeError):
                await self._flush_and_close(CLOSE_UNAUTHENTICATED)

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
        channel = data.get("channel")
        if channel in LATER_CHANNELS:
            self.error("unknown_channel", f"channel {channel!r} is not available yet")
            return
        if channel not in CHANNELS:
            self.error("unknown_channel", f"unknown channel {channel!r} (try: settings)")
            return
        ref = data.get("feature") or self.default_feature
        if not ref:
            self.error("bad_message", "subscribe needs a `feature` (or ?featureId= on the URL)")
            return
        try:
            self.principal.require("read")
            async with self.state.pool.connection() as conn:
                feature = await store.get_feature(conn, self.principal.organization_id, str(ref))
        except ApiError as exc:
            self.error(exc.code, exc.message)
            return
        key = (channel, str(feature["id"]))
        if kind == "unsubscribe":
            existing = self.subscriptions.pop(key, None)
            if existing is not None:
                existing[0].close()
                existing[1].cancel()
            self.send("unsubscribed", {"channel": channel, "feature_id": str(feature["id"])})
            return
        if key not in self.subscriptions:
            sub = self.state.bus.subscribe(f"settings:{feature['id']}", maxsize=100)
            self.subscriptions[key] = (sub, asyncio.create_task(self._pump(sub)))
        self.send(
            "subscribed",
            {"channel": channel, "feature_id": str(feature["id"]), "feature": feature["name"]},
        )

    async def _pump(self, sub: Subscription) -> None:
        while True:
            event = await sub.get()
            self.send("settings_update", event)


@router.websocket("/websocket")
async def websocket(ws: WebSocket) -> None:
    state: AppState = ws.app.state.minerva
    await ws.accept()
    await Session(ws, state, ws.query_params.get("featureId")).run()
