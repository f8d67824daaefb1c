"""The real-time socket: auth, subscribe/unsubscribe per channel and feature, heartbeats.

Protocol in docs/api/websocket.md. Each session has one writer task draining a bounded
outgoing queue, so pumps and replies never interleave frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from minerva_ai.core.protocol import (
    CLOSE_POLICY,
    CLOSE_UNAUTHENTICATED,
    FOLLOW_FILTERS,
    LATER_CHANNELS,
    LIVE_CHANNELS,
)
from minerva_ai.service import logs, store
from minerva_ai.service.bus import Subscription
from minerva_ai.service.deps import AppState, Principal, bearer_token, principal_for
from minerva_ai.service.errors import ApiError
from minerva_ai.service.log_follow import Overflow
from minerva_ai.service.responses import dumps

router = APIRouter(tags=["realtime"])
log = logging.getLogger("minerva_ai.service.websocket")

LOG_BATCHES_QUEUED = 8  # per logs subscription; beyond it the client gets `overflow`
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

    def send(self, kind: str, data: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.outgoing.put_nowait(dumps({"type": kind, "data": data}))

    def error(self, code: str, message: str) -> None:
        self.send("error", {"code": code, "message": message})

    def error_with_cursor(self, code: str, message: str, cursor: str) -> None:
        self.send("error", {"code": code, "message": message, "channel": "logs", "cursor": cursor})

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
            pumps = list(self.subscriptions.values())
            for task in tasks + pumps:
                task.cancel()
            await asyncio.gather(*tasks, *pumps, return_exceptions=True)

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
        if channel not in LIVE_CHANNELS:
            self.error("unknown_channel", f"unknown channel {channel!r} (try: settings, logs)")
            return
        ref = data.get("feature") or self.default_feature
        if not ref and channel == "settings":
            self.error("bad_message", "subscribe needs a `feature` (or ?featureId= on the URL)")
            return
        try:
            self.principal.require("read")
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
        key = (channel, feature_id or "*")
        if kind == "unsubscribe":
            existing = self.subscriptions.pop(key, None)
            if existing is not None:
                existing.cancel()
            self.send("unsubscribed", {"channel": channel, "feature_id": feature_id})
            return
        reply = {
            "channel": channel,
            "feature_id": feature_id,
            "feature": feature["name"] if feature else None,
        }
        if channel == "logs":
            await self._subscribe_logs(key, data, feature, reply)
        elif key not in self.subscriptions:
            sub = self.state.bus.subscribe(f"settings:{feature_id}", maxsize=100)
            self.subscriptions[key] = asyncio.create_task(self._settings_pump(sub))
            self.send("subscribed", reply)
        else:
            self.send("subscribed", reply)

    async def _settings_pump(self, sub: Subscription) -> None:
        try:
            while True:
                self.send("settings_update", await sub.get())
        finally:
            sub.close()

    async def _subscribe_logs(
        self,
        key: tuple[str, str],
        data: dict[str, Any],
        feature: dict[str, Any] | None,
        reply: dict[str, Any],
    ) -> None:
        assert self.principal is not None
        filters = data.get("filters") or {}
        after = data.get("after")
        if not isinstance(filters, dict) or (after is not None and not isinstance(after, str)):
            self.error("bad_message", "`filters` is an object and `after` a cursor string")
            return
        unknown = sorted(set(filters) - set(FOLLOW_FILTERS))
        if unknown:
            self.error(
                "bad_message",
                f"unknown filter {', '.join(unknown)} (allowed: {', '.join(FOLLOW_FILTERS)})",
            )
            return
        org_id = self.principal.organization_id
        try:
            log_filter = await logs.log_filter(
                self.state.pool,
                self.principal,
                feature=str(feature["id"]) if feature else None,
                since=None,
                until=None,
                **{k: filters.get(k) for k in FOLLOW_FILTERS},
            )
            start = logs.parse_cursor(after, "after")
            async with self.state.pool.connection() as conn:
                if start is None:
                    start = await logs.current_cursor(conn, org_id)
                expired = await logs.expired_before(conn, org_id, start)
        except ApiError as exc:
            self.error(exc.code, exc.message)
            return
        previous = self.subscriptions.pop(key, None)
        if previous is not None:
            previous.cancel()
        self.send("subscribed", {**reply, "after": str(start)})
        if expired:
            self.send(
                "gap",
                {
                    "channel": "logs",
                    "feature_id": reply["feature_id"],
                    "reason": "expired",
                    "before": expired,
                },
            )
        self.subscriptions[key] = asyncio.create_task(
            self._logs_pump(org_id, log_filter, start, reply["feature_id"])
        )

    async def _logs_pump(
        self, org_id: Any, log_filter: logs.LogFilter, after: int, feature_id: str | None
    ) -> None:
        """Send matching entries; on falling behind, say `overflow` with the cursor to resume."""
        last = after
        try:
            async for batch in self.state.follow.follow(
                org_id, log_filter, after, maxsize=LOG_BATCHES_QUEUED
            ):
                for row in batch:
                    frame = dumps({"type": "log", "data": logs.entry_view(row)})
                    await self.outgoing.put(frame)  # waits while the client reads slowly
                    last = row["seq"]
        except Overflow:
            await self.outgoing.put(
                dumps(
                    {
                        "type": "overflow",
                        "data": {"channel": "logs", "feature_id": feature_id, "cursor": str(last)},
                    }
                )
            )
        except Exception as exc:  # the database failed us: say so, with where to resume
            log.warning("logs subscription ended: %s", exc)
            self.error_with_cursor(
                "follow_failed",
                "reading logs failed; subscribe again with `after` = cursor",
                str(last),
            )


@router.websocket("/websocket")
async def websocket(ws: WebSocket) -> None:
    state: AppState = ws.app.state.minerva
    await ws.accept()
    await Session(ws, state, ws.query_params.get("featureId")).run()
