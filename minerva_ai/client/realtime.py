"""Follow a log stream: WebSocket, else SSE, else polling; resume by cursor.

``follow_logs`` yields every entry committed after a cursor exactly once, in commit
order. Whatever breaks (a restart, a dropped connection, another instance behind the
load balancer, a slow reader told ``overflow``), it reconnects with backoff and resumes
after the last cursor it yielded. ``auto`` detects what the service offers: a refused
WebSocket handshake (or a socket without the ``logs`` channel) falls back to SSE, an SSE
path that is missing or broken while the rest of the API answers falls back to polling
``GET /logs?after=``. httpx and websockets are imported here, never by ``--help``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import httpx
import orjson

from minerva_ai.client import websocket
from minerva_ai.client.backoff import Backoff
from minerva_ai.client.http import AsyncClient
from minerva_ai.client.resources import Call, log_params
from minerva_ai.core.errors import ServiceError, UnreachableError
from minerva_ai.core.protocol import CLOSE_RESTARTING, FOLLOW_FILTERS, TRANSPORTS

JSON = dict[str, Any]
Transport = Literal["ws", "sse", "poll"]
TRANSPORT_NAMES = {"ws": "WebSocket", "sse": "SSE", "poll": "polling"}
# The cursor before the first entry: where a follower of an empty log starts.
BEGINNING = "0"
POLL_LIMIT = 1000
SSE_TIMEOUT = httpx.Timeout(10.0, read=90.0)  # the service sends a heartbeat every 15 s


@dataclass(frozen=True)
class Notice:
    """What the follower tells its user: ``connected``, ``fallback``, ``lost``,
    ``reconnected`` or ``overflow``, and a sentence saying it."""

    kind: str
    message: str


class _Refused(Exception):
    """This transport is not offered here: try the next one."""


class _Lost(Exception):
    """The connection failed or ended: reconnect, after the last cursor."""


class _Overflow(Exception):
    """The service dropped us for reading too slowly: resume at once."""


@dataclass
class _Event:
    kind: Literal["connected", "entry"]
    data: JSON


async def head_cursor(client: AsyncClient) -> str:
    """The cursor of the organization's newest entry (``BEGINNING`` when it has none)."""
    newest = await client.logs.list(limit=1)
    return str(newest[0]["cursor"]) if newest else BEGINNING


def _follow_filters(filters: Mapping[str, Any] | None) -> JSON:
    params = log_params(filters)
    extra = sorted(set(params) - set(FOLLOW_FILTERS))
    if extra:
        raise ValueError(f"a follower cannot filter on {', '.join(extra)}")
    return params


class LogFollower:
    """One follow session; ``entries()`` is the stream. Use ``follow_logs``."""

    def __init__(
        self,
        client: AsyncClient,
        after: str | None,
        *,
        feature: str | None,
        filters: Mapping[str, Any] | None,
        transport: str,
        on_notice: Callable[[Notice], None] | None,
        on_gap: Callable[[JSON], None] | None,
        poll_interval: float,
        max_backoff: float,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r} (use: {', '.join(TRANSPORTS)})")
        self.client = client
        self.last = after
        self.feature = feature
        self.filters = _follow_filters(filters)
        self.chain: list[Transport] = (
            ["ws", "sse", "poll"] if transport == "auto" else [cast(Transport, transport)]
        )
        self.auto = transport == "auto"
        self.on_notice = on_notice
        self.on_gap = on_gap
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.worked: set[Transport] = set()
        self.gaps_seen: set[str] = set()
        # Until its first entry, a follower that starts at the head or at the beginning
        # has missed nothing: what retention dropped before then is not a gap to it.
        self.fresh_start = after is None or after == BEGINNING

    def _notice(self, kind: str, message: str) -> None:
        if self.on_notice is not None:
            self.on_notice(Notice(kind, message))

    def _gap(self, data: JSON) -> None:
        key = orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()
        if self.fresh_start or key in self.gaps_seen:
            return
        self.gaps_seen.add(key)
        if self.on_gap is not None:
            self.on_gap(data)

    async def entries(self) -> AsyncGenerator[JSON, None]:
        if self.last is None:
            self.last = await head_cursor(self.client)
        index = 0
        backoff = self._backoff()
        lost_at: float | None = None
        while True:
            kind = self.chain[index]
            try:
                async with contextlib.aclosing(self._open(kind)) as events:
                    async for event in events:
                        if event.kind == "connected":
                            backoff = self._backoff()
                            self._connected(kind, lost_at)
                            lost_at = None
                            continue
                        self.last = str(event.data["cursor"])
                        self.fresh_start = False
                        yield event.data
                raise _Lost("the service ended the stream")
            except _Overflow:
                self._notice(
                    "overflow", f"fell behind the service; resuming after cursor {self.last}"
                )
                continue
            except _Refused as exc:
                if index + 1 >= len(self.chain):
                    raise ServiceError(0, "transport_refused", str(exc)) from None
                index += 1
                self._notice("fallback", f"{exc}; trying {TRANSPORT_NAMES[self.chain[index]]}")
                continue
            except _Lost as exc:
                if lost_at is None:
                    lost_at = time.monotonic()
                    self._notice("lost", f"connection lost ({exc}); reconnecting")
            delay = backoff.next_delay() or self.max_backoff
            await asyncio.sleep(delay)

    def _backoff(self) -> Backoff:
        return Backoff(float("inf"), initial=0.2, ceiling=self.max_backoff)

    def _connected(self, kind: Transport, lost_at: float | None) -> None:
        self.worked.add(kind)
        name = TRANSPORT_NAMES[kind]
        if lost_at is None:
            self._notice("connected", f"following via {name} after cursor {self.last}")
        else:
            took = time.monotonic() - lost_at
            self._notice(
                "reconnected",
                f"reconnected via {name} after {took:.1f} s; resuming after cursor {self.last}",
            )

    async def _open(self, kind: Transport) -> AsyncGenerator[_Event, None]:
        opener = {"ws": self._websocket, "sse": self._sse, "poll": self._poll}[kind]
        try:
            async for event in opener():
                yield event
        except _Lost:
            if self.auto and kind not in self.worked and kind != "poll" and await self._api_up():
                raise _Refused(
                    f"{TRANSPORT_NAMES[kind]} fails while the rest of the API answers"
                ) from None
            raise

    async def _api_up(self) -> bool:
        try:
            await self.client.logs.list(limit=1)
        except (UnreachableError, ServiceError):
            return False
        return True

    # ------------------------------------------------------------------ WebSocket

    async def _websocket(self) -> AsyncIterator[_Event]:
        from websockets.exceptions import ConnectionClosed

        url = self.client.websocket_url(self.feature)
        try:
            socket = await websocket.connect(url, self.client.auth_headers())
        except websocket.HandshakeLost as exc:
            raise _Lost(exc.reason) from None
        except websocket.HandshakeRefused as exc:
            raise _Refused(exc.reason) from None
        async with socket:
            try:  # the service may close the socket before the subscription is sent
                await socket.send(self._subscription())
                async for raw in socket:
                    kind, data = websocket.websocket_message(raw)
                    if kind == "subscribed":
                        yield _Event("connected", data)
                    elif kind == "log":
                        yield _Event("entry", data)
                    elif kind == "gap":
                        self._gap({k: v for k, v in data.items() if k in ("reason", "before")})
                    elif kind == "overflow":
                        await socket.send(self._subscription())
                        self._notice(
                            "overflow",
                            f"fell behind the service; resuming after cursor {self.last}",
                        )
                    elif kind == "error":
                        raise self._ws_error(data, url)
            except ConnectionClosed:
                pass
        code = socket.close_code
        closed = websocket.close_error(code, socket.close_reason, url)
        if closed is not None:
            raise closed
        reason = f"the WebSocket closed (code {code})" if code else "the WebSocket broke off"
        raise _Lost(reason + (": the service is restarting" if code == CLOSE_RESTARTING else ""))

    def _subscription(self) -> str:
        data: JSON = {"after": self.last}
        if self.feature is not None:
            data["feature"] = self.feature
        if self.filters:
            data["filters"] = self.filters
        return websocket.subscription("logs", **data)

    def _ws_error(self, data: JSON, url: str) -> Exception:
        if data.get("code") == "unknown_channel":
            message = data.get("message") or "unknown_channel"
            return _Refused(f"the WebSocket has no logs channel ({message})")
        return websocket.message_error(data, url)

    # ------------------------------------------------------------------ SSE

    async def _sse(self) -> AsyncIterator[_Event]:
        params = {**self.filters, "feature": self.feature}
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(self.last)}
        call = Call("GET", "/logs/stream", params, headers=headers)
        try:
            async with self.client.stream(call, timeout=SSE_TIMEOUT) as response:
                content_type = response.headers.get("content-type", "")
                if not content_type.startswith("text/event-stream"):
                    raise _Refused(f"GET /logs/stream answered {content_type or 'no type'}")
                yield _Event("connected", {})
                async for kind, data in _sse_events(response):
                    if kind == "log":
                        yield _Event("entry", orjson.loads(data))
                    elif kind == "gap":
                        self._gap(orjson.loads(data))
                    elif kind == "overflow":
                        raise _Overflow
        except ServiceError as exc:
            if exc.status in (404, 405, 501):
                # Not this path, or not this feature: GET /logs tells which.
                await self.client.logs.list({"feature": self.feature}, limit=1)
                raise _Refused(f"GET /logs/stream answered {exc.status}") from None
            if exc.status >= 500:
                raise _Lost(f"GET /logs/stream answered {exc.status}") from None
            raise
        except UnreachableError as exc:
            raise _Lost(exc.reason) from None
        except httpx.TransportError as exc:
            raise _Lost(str(exc) or type(exc).__name__) from None

    # ------------------------------------------------------------------ polling

    async def _poll(self) -> AsyncIterator[_Event]:
        params = {**self.filters, "feature": self.feature}
        connected = False
        while True:
            assert self.last is not None
            try:
                page = await self.client.logs.after(self.last, params, limit=POLL_LIMIT)
            except UnreachableError as exc:
                raise _Lost(exc.reason) from None
            except ServiceError as exc:
                if exc.status >= 500:
                    raise _Lost(f"GET /logs answered {exc.status}") from None
                raise
            if not connected:
                connected = True
                yield _Event("connected", {})
            if page.gap:
                self._gap(page.gap)
            for entry in page.items:
                yield _Event("entry", entry)
            if len(page.items) < POLL_LIMIT:
                await asyncio.sleep(self.poll_interval)


async def _sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """``(event, data)`` of each server-sent event; comments (heartbeats) are skipped."""
    kind = "message"
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield kind, "\n".join(data)
            kind, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)


def follow_logs(
    client: AsyncClient,
    after: str | None = None,
    *,
    feature: str | None = None,
    filters: Mapping[str, Any] | None = None,
    transport: str = "auto",
    on_notice: Callable[[Notice], None] | None = None,
    on_gap: Callable[[JSON], None] | None = None,
    poll_interval: float = 1.0,
    max_backoff: float = 5.0,
) -> AsyncGenerator[JSON, None]:
    """Every entry committed after ``after`` (default: the newest now), in commit order,
    each once, until the consumer stops.

    ``filters``: ``level``, ``source``, ``q``, ``request_id``, as on ``GET /logs``.
    ``transport``: ``auto`` (WebSocket, then SSE, then polling), ``ws``, ``sse`` or
    ``poll``. ``on_notice`` hears about connections, fallbacks, losses and overflows;
    ``on_gap`` gets ``{"reason": "expired", "before"}`` once per gap retention made
    after a cursor it was given (``BEGINNING`` or no cursor: nothing before to miss).
    Errors that a reconnect cannot mend (401, an unknown feature, a bad filter, every
    transport refused) are raised as ``ServiceError``.
    """
    follower = LogFollower(
        client,
        after,
        feature=feature,
        filters=filters,
        transport=transport,
        on_notice=on_notice,
        on_gap=on_gap,
        poll_interval=poll_interval,
        max_backoff=max_backoff,
    )
    return follower.entries()
