"""The WebSocket's channels: each is a name, the scope it needs, and what subscribing does.

A channel registers itself with ``@channel(...)``. The session (``routes/websocket.py``)
looks the name up here, checks the scope, resolves the feature and hands the channel a
``Subscribe``; the channel answers ``subscribed`` and starts its pump, a task the session
cancels on ``unsubscribe`` or when the socket closes. Unknown names are answered with
``error`` ``unknown_channel``. The protocol is docs/api/websocket.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from weakref import WeakKeyDictionary

from minerva_ai.core.protocol import FOLLOW_FILTERS
from minerva_ai.service import alerts, logs, metrics
from minerva_ai.service.bus import Subscription
from minerva_ai.service.deps import AppState
from minerva_ai.service.errors import ApiError
from minerva_ai.service.log_follow import FollowHub, Overflow
from minerva_ai.service.metrics_live import ws_frame
from minerva_ai.service.principal import Principal
from minerva_ai.service.responses import dumps

log = logging.getLogger("minerva_ai.service.websocket")

LOG_BATCHES_QUEUED = 8  # per logs subscription; beyond it the client gets `overflow`
SETTINGS_QUEUED = 100  # per settings subscription; beyond it the client gets `overflow`
LOG_FRAMES_CACHED = 20_000  # log frames encoded once per instance, whatever the followers


class Socket(Protocol):
    """What a channel needs of the session it serves."""

    state: AppState
    subscriptions: dict[tuple[str, str], asyncio.Task[None]]

    def send(self, kind: str, data: dict[str, Any]) -> None: ...

    async def put(self, frame: bytes) -> None: ...

    def error(self, code: str, message: str, **extra: Any) -> None: ...


@dataclass(frozen=True)
class Subscribe:
    """A checked ``subscribe``: who asked, for which feature, with what."""

    socket: Socket
    principal: Principal
    key: tuple[str, str]  # (channel, feature id or "*"): one subscription per key
    data: dict[str, Any]  # the message's data: filters, after...
    feature: dict[str, Any] | None
    reply: dict[str, Any]  # channel, feature_id, feature: the `subscribed` answer

    def start(self, pump: Awaitable[None], **reply: Any) -> None:
        """Answer ``subscribed`` and run ``pump`` in place of an earlier subscription."""
        previous = self.socket.subscriptions.pop(self.key, None)
        if previous is not None:
            previous.cancel()
        self.socket.send("subscribed", {**self.reply, **reply})
        self.socket.subscriptions[self.key] = asyncio.ensure_future(pump)


@dataclass(frozen=True)
class Channel:
    name: str
    scope: str
    subscribe: Callable[[Subscribe], Awaitable[None]]
    needs_feature: bool = False
    resumable: bool = False  # takes `after`, a cursor to resume from


CHANNELS: dict[str, Channel] = {}


def channel(
    name: str, *, scope: str = "read", needs_feature: bool = False, resumable: bool = False
) -> Callable[[Callable[[Subscribe], Awaitable[None]]], Callable[[Subscribe], Awaitable[None]]]:
    """Register the decorated coroutine as what subscribing to ``name`` does."""

    def register(
        subscribe: Callable[[Subscribe], Awaitable[None]],
    ) -> Callable[[Subscribe], Awaitable[None]]:
        CHANNELS[name] = Channel(name, scope, subscribe, needs_feature, resumable)
        return subscribe

    return register


def frame(kind: str, data: dict[str, Any]) -> bytes:
    return dumps({"type": kind, "data": data})


def _follow_failed(socket: Socket, channel: str, last: int, exc: Exception) -> None:
    """A resumable subscription ended on a database error: say where to resume."""
    log.warning("%s subscription ended: %s", channel, exc)
    socket.error(
        "follow_failed",
        f"reading {channel} failed; subscribe again with `after` = cursor",
        channel=channel,
        cursor=str(last),
    )


# settings: each new version of a feature's settings, on every instance


@channel("settings", needs_feature=True)
async def subscribe_settings(request: Subscribe) -> None:
    if request.key in request.socket.subscriptions:
        request.socket.send("subscribed", request.reply)
        return
    topic = f"settings:{request.reply['feature_id']}"
    updates = request.socket.state.bus.subscribe(topic, maxsize=SETTINGS_QUEUED)
    request.start(_settings_pump(request, updates))


async def _settings_pump(request: Subscribe, updates: Subscription) -> None:
    """Each version as it comes; when some were lost (the client read too slowly, or this
    instance lost Redis for a while), `overflow`: the client reads the settings afresh."""
    try:
        while True:
            update = await updates.get()
            if updates.overflowed:
                updates.reset()
                await request.socket.put(frame("overflow", request.reply))
            elif update is not None:
                await request.socket.put(frame("settings_update", update))
    finally:
        updates.close()


# logs: the organization's log entries as they commit, resumable by cursor


class _LogFrames:
    """Each log entry's frame, encoded once per instance however many follow it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.frames: OrderedDict[int, bytes] = OrderedDict()

    def get(self, row: dict[str, Any]) -> bytes:
        seq = row["seq"]
        encoded = self.frames.get(seq)
        if encoded is None:
            encoded = self.frames[seq] = frame("log", logs.entry_view(row))
            if len(self.frames) > self.size:
                self.frames.popitem(last=False)
        return encoded


# One cache per app (its FollowHub): cursors are unique within one database only.
_LOG_FRAMES: WeakKeyDictionary[FollowHub, _LogFrames] = WeakKeyDictionary()


@channel("logs", resumable=True)
async def subscribe_logs(request: Subscribe) -> None:
    socket, feature = request.socket, request.feature
    filters = request.data.get("filters") or {}
    after = request.data.get("after")
    if not isinstance(filters, dict) or (after is not None and not isinstance(after, str)):
        socket.error("bad_message", "`filters` is an object and `after` a cursor string")
        return
    unknown = sorted(set(filters) - set(FOLLOW_FILTERS))
    if unknown:
        socket.error(
            "bad_message",
            f"unknown filter {', '.join(unknown)} (allowed: {', '.join(FOLLOW_FILTERS)})",
        )
        return
    org_id = request.principal.organization_id
    try:
        log_filter = await logs.log_filter(
            socket.state.pool,
            request.principal,
            feature=str(feature["id"]) if feature else None,
            since=None,
            until=None,
            **{k: filters.get(k) for k in FOLLOW_FILTERS},
        )
        start = logs.parse_cursor(after, "after")
        async with socket.state.pool.connection() as conn:
            if start is None:
                start = await logs.current_cursor(conn, org_id)
            expired = await logs.expired_before(conn, org_id, start)
    except ApiError as exc:
        socket.error(exc.code, exc.message)
        return
    request.start(_logs_pump(request, log_filter, start, expired), after=str(start))


async def _logs_pump(
    request: Subscribe, log_filter: logs.LogFilter, after: int, expired: datetime | None
) -> None:
    """Send matching entries; on falling behind, say `overflow` with the cursor to resume."""
    socket, feature_id = request.socket, request.reply["feature_id"]
    if expired:
        gap = {"channel": "logs", "feature_id": feature_id, "reason": "expired", "before": expired}
        await socket.put(frame("gap", gap))
    last = after
    org_id = request.principal.organization_id
    frames = _LOG_FRAMES.setdefault(socket.state.follow, _LogFrames(LOG_FRAMES_CACHED))
    try:
        async for batch in socket.state.follow.follow(
            org_id, log_filter, after, maxsize=LOG_BATCHES_QUEUED
        ):
            for row in batch:
                await socket.put(frames.get(row))  # waits while the client reads slowly
                last = row["seq"]
    except Overflow:
        overflow = {"channel": "logs", "feature_id": feature_id, "cursor": str(last)}
        await socket.put(frame("overflow", overflow))
    except Exception as exc:  # the database failed us: say so, with where to resume
        _follow_failed(socket, "logs", last, exc)


# metrics: a feature's current metrics (or every feature's), every few seconds


@channel("metrics")
async def subscribe_metrics(request: Subscribe) -> None:
    window = request.data.get("window", "5m")
    state = request.socket.state
    try:
        if not isinstance(window, str):
            raise ApiError(400, "`window` is a string such as 5m, 1h or 1d", "bad_message")
        span = metrics.parse_span(window, "window", state.config.metrics_retention)
    except ApiError as exc:
        request.socket.error("bad_message", exc.message)
        return
    request.start(_metrics_pump(request, span), window=metrics.span_text(span))


async def _metrics_pump(request: Subscribe, span: timedelta) -> None:
    feature = request.feature
    # Watching starts here, in the pump: a pump cancelled before it runs leaves no watcher.
    watcher = request.socket.state.metrics.watch(
        request.principal.organization_id, span, feature["id"] if feature else None
    )
    try:
        while True:
            await request.socket.put(ws_frame(await watcher.next()))
    finally:
        watcher.close()


# alerts: every transition of the organization's alerts (or a feature's), resumable by cursor

ALERT_PAGE = 500
ALERT_POLL_S = 2.0  # a safety net: a notice lost with a Redis restart costs seconds


@channel("alerts", resumable=True)
async def subscribe_alerts(request: Subscribe) -> None:
    socket, org_id = request.socket, request.principal.organization_id
    after = request.data.get("after")
    if after is not None and not (
        isinstance(after, str) and after.isascii() and after.isdigit() and len(after) < 19
    ):
        socket.error("bad_message", f"`after` {after!r} is not a transition cursor")
        return
    if after is None:
        try:
            async with socket.state.pool.connection() as conn:
                after = str(await alerts.current_cursor(conn, org_id))
        except Exception as exc:
            socket.error("follow_failed", f"reading alerts failed ({exc}); subscribe again")
            return
    notices = socket.state.bus.subscribe(alerts.TOPIC.format(organization_id=org_id), 100)
    request.start(_alerts_pump(request, notices, int(after)), after=after)


async def _alerts_pump(request: Subscribe, notices: Subscription, after: int) -> None:
    """Each transition after the cursor once, in commit order: read on every notice that
    some were written (and every few seconds, in case a notice was lost)."""
    socket, org_id = request.socket, request.principal.organization_id
    feature = request.feature
    last = after
    try:
        while True:
            async with socket.state.pool.connection() as conn:
                rows = await alerts.transitions_after(conn, org_id, last, ALERT_PAGE)
                found = await alerts.alerts_by_id(
                    conn, (r["alert_id"] for r in rows if r["alert_id"])
                )
            for row in rows:
                last = row["seq"]
                if feature is not None and row["feature_id"] != feature["id"]:
                    continue
                alert = found.get(row["alert_id"]) if row["alert_id"] else None
                event = {
                    "alert": alerts.alert_view(alert) if alert else None,
                    "transition": alerts.transition_view(row),
                    "cursor": str(row["seq"]),
                }
                await socket.put(frame("alert", event))
            if len(rows) == ALERT_PAGE:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(notices.get(), ALERT_POLL_S)
            notices.reset()
    except Exception as exc:  # the database failed us: say so, with where to resume
        _follow_failed(socket, "alerts", last, exc)
    finally:
        notices.close()
