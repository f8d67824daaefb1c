"""Follow a log stream: WebSocket, else SSE, else polling; resume by cursor.

``follow_logs`` yields every entry committed after a cursor exactly once, in commit
order. Whatever breaks (a restart, a dropped connection, another instance behind the
load balancer, a slow reader told ``overflow``), it reconnects with backoff and resumes
after the last cursor it yielded. ``auto`` detects what the service offers: a refused
WebSocket handshake (or a socket without the ``logs`` channel) falls back to SSE, an SSE
path that is missing or broken while the rest of the API answers falls back to polling
``GET /logs?after=``. The chain itself, ``Follower``, is shared with the metrics follower
(``metrics_follow``). httpx and websockets are imported here, never by ``--help``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
)
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


class Refused(Exception):
    """This transport is not offered here: try the next one."""


class Lost(Exception):
    """The connection failed or ended: reconnect (a log follower: after the last cursor)."""


class FellBehind(Exception):
    """The service dropped us for reading too slowly: resume at once."""


@dataclass
class Event:
    """What a transport yields: ``connected`` (subscribed, or the first answer), or an
    ``item`` for the follower's user."""

    kind: Literal["connected", "item"]
    data: JSON


@contextlib.contextmanager
def polling_errors(label: str) -> Iterator[None]:
    """A poll that cannot reach the service, or gets a 5xx, has lost its connection."""
    try:
        yield
    except UnreachableError as exc:
        raise Lost(exc.reason) from None
    except ServiceError as exc:
        if exc.status >= 500:
            raise Lost(f"{label} answered {exc.status}") from None
        raise


class Follower:
    """A follow session: the first transport of the chain that works (WebSocket, SSE,
    polling), reconnecting with backoff, telling ``on_notice`` what happens.

    A subclass opens each transport (``_websocket``, ``_sse``, ``_poll``: async
    generators of ``Event``), builds its ``_subscription`` frame, ``_probe``s the rest of
    the API, and may say where it is (``_position``) in its notices.
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        feature: str | None,
        transport: str,
        on_notice: Callable[[Notice], None] | None,
        poll_interval: float,
        max_backoff: float,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r} (use: {', '.join(TRANSPORTS)})")
        self.client = client
        self.feature = feature
        self.chain: list[Transport] = (
            ["ws", "sse", "poll"] if transport == "auto" else [cast(Transport, transport)]
        )
        self.auto = transport == "auto"
        self.on_notice = on_notice
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.worked: set[Transport] = set()

    def _notice(self, kind: str, message: str) -> None:
        if self.on_notice is not None:
            self.on_notice(Notice(kind, message))

    def _position(self) -> str:
        """Where the follower stands, for its notices (``" after cursor 42"``)."""
        return ""

    def _subscription(self) -> str:
        raise NotImplementedError

    async def _probe(self) -> None:
        """A plain request to the API (raises when the service cannot answer it)."""
        raise NotImplementedError

    def _websocket(self) -> AsyncGenerator[Event, None]:
        raise NotImplementedError

    def _sse(self) -> AsyncGenerator[Event, None]:
        raise NotImplementedError

    def _poll(self) -> AsyncGenerator[Event, None]:
        raise NotImplementedError

    async def _follow(self) -> AsyncGenerator[JSON, None]:
        """The data of every ``item`` event, across reconnects and fallbacks."""
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
                        yield event.data
                raise Lost("the service ended the stream")
            except FellBehind:
                self._notice("overflow", f"fell behind the service; resuming{self._position()}")
                continue
            except Refused as exc:
                if index + 1 >= len(self.chain):
                    raise ServiceError(0, "transport_refused", str(exc)) from None
                index += 1
                self._notice("fallback", f"{exc}; trying {TRANSPORT_NAMES[self.chain[index]]}")
                continue
            except Lost as exc:
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
            self._notice("connected", f"following via {name}{self._position()}")
        else:
            took = time.monotonic() - lost_at
            self._notice(
                "reconnected",
                f"reconnected via {name} after {took:.1f} s; resuming{self._position()}",
            )

    async def _open(self, kind: Transport) -> AsyncGenerator[Event, None]:
        opener = {"ws": self._websocket, "sse": self._sse, "poll": self._poll}[kind]
        try:
            async with contextlib.aclosing(opener()) as events:
                async for event in events:
                    yield event
        except Lost:
            if self.auto and kind not in self.worked and kind != "poll" and await self._api_up():
                raise Refused(
                    f"{TRANSPORT_NAMES[kind]} fails while the rest of the API answers"
                ) from None
            raise

    async def _api_up(self) -> bool:
        try:
            await self._probe()
        except (UnreachableError, ServiceError):
            return False
        return True

    async def _socket_frames(self, channel: str) -> AsyncGenerator[tuple[str, JSON], None]:
        """``(type, data)`` of each message on a socket subscribed to ``channel``.

        ``overflow`` re-subscribes (then is passed on); ``error`` raises; a close that
        reconnecting may mend is ``Lost``, a socket without ``channel`` is ``Refused``.
        """
        from websockets.exceptions import ConnectionClosed

        url = self.client.websocket_url(self.feature)
        try:
            socket = await websocket.connect(url, self.client.auth_headers())
        except websocket.HandshakeLost as exc:
            raise Lost(exc.reason) from None
        except websocket.HandshakeRefused as exc:
            raise Refused(exc.reason) from None
        async with socket:
            try:  # the service may close the socket before the subscription is sent
                await socket.send(self._subscription())
                async for raw in socket:
                    kind, data = websocket.websocket_message(raw)
                    if kind == "overflow":
                        await socket.send(self._subscription())
                    elif kind == "error" and data.get("code") == "unknown_channel":
                        message = data.get("message") or "unknown_channel"
                        raise Refused(f"the WebSocket has no {channel} channel ({message})")
                    elif kind == "error":
                        raise websocket.message_error(data, url)
                    yield kind, data
            except ConnectionClosed:
                pass
        code = socket.close_code
        closed = websocket.close_error(code, socket.close_reason, url)
        if closed is not None:
            raise closed
        reason = f"the WebSocket closed (code {code})" if code else "the WebSocket broke off"
        raise Lost(reason + (": the service is restarting" if code == CLOSE_RESTARTING else ""))

    async def _sse_stream(
        self, call: Call, missing: Callable[[], Awaitable[object]]
    ) -> AsyncGenerator[tuple[str, str], None]:
        """``("", "")`` once the stream is open, then ``(event, data)`` of each event.

        A 404/405/501 is ``Refused`` after ``missing()`` (which raises when the answer
        meant a missing feature rather than a missing path); a 5xx or a broken
        connection is ``Lost``.
        """
        label = f"GET {call.path}"
        try:
            async with self.client.stream(call, timeout=SSE_TIMEOUT) as response:
                content_type = response.headers.get("content-type", "")
                if not content_type.startswith("text/event-stream"):
                    raise Refused(f"{label} answered {content_type or 'no type'}")
                yield "", ""
                async for kind, data in _sse_events(response):
                    yield kind, data
        except ServiceError as exc:
            if exc.status in (404, 405, 501):
                await missing()
                raise Refused(f"{label} answered {exc.status}") from None
            if exc.status >= 500:
                raise Lost(f"{label} answered {exc.status}") from None
            raise
        except UnreachableError as exc:
            raise Lost(exc.reason) from None
        except httpx.TransportError as exc:
            raise Lost(str(exc) or type(exc).__name__) from None


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


class LogFollower(Follower):
    """One follow session of the log; ``entries()`` is the stream. Use ``follow_logs``."""

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
        super().__init__(
            client,
            feature=feature,
            transport=transport,
            on_notice=on_notice,
            poll_interval=poll_interval,
            max_backoff=max_backoff,
        )
        self.last = after
        self.filters = _follow_filters(filters)
        self.on_gap = on_gap
        self.gaps_seen: set[str] = set()
        # Until its first entry, a follower that starts at the head or at the beginning
        # has missed nothing: what retention dropped before then is not a gap to it.
        self.fresh_start = after is None or after == BEGINNING

    def _position(self) -> str:
        return f" after cursor {self.last}"

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
        async with contextlib.aclosing(self._follow()) as items:
            async for item in items:
                self.last = str(item["cursor"])
                self.fresh_start = False
                yield item

    async def _probe(self) -> None:
        await self.client.logs.list(limit=1)

    # ------------------------------------------------------------------ WebSocket

    async def _websocket(self) -> AsyncGenerator[Event, None]:
        async with contextlib.aclosing(self._socket_frames("logs")) as frames:
            async for kind, data in frames:
                if kind == "subscribed":
                    yield Event("connected", data)
                elif kind == "log":
                    yield Event("item", data)
                elif kind == "gap":
                    self._gap({k: v for k, v in data.items() if k in ("reason", "before")})
                elif kind == "overflow":
                    self._notice("overflow", f"fell behind the service; resuming{self._position()}")

    def _subscription(self) -> str:
        data: JSON = {"after": self.last}
        if self.feature is not None:
            data["feature"] = self.feature
        if self.filters:
            data["filters"] = self.filters
        return websocket.subscription("logs", **data)

    # ------------------------------------------------------------------ SSE

    async def _sse(self) -> AsyncGenerator[Event, None]:
        params = {**self.filters, "feature": self.feature}
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(self.last)}
        call = Call("GET", "/logs/stream", params, headers=headers)

        async def missing() -> None:  # not this path, or not this feature: GET /logs tells
            await self.client.logs.list({"feature": self.feature}, limit=1)

        async with contextlib.aclosing(self._sse_stream(call, missing)) as events:
            async for kind, data in events:
                if kind == "":
                    yield Event("connected", {})
                elif kind == "log":
                    yield Event("item", orjson.loads(data))
                elif kind == "gap":
                    self._gap(orjson.loads(data))
                elif kind == "overflow":
                    raise FellBehind

    # ------------------------------------------------------------------ polling

    async def _poll(self) -> AsyncGenerator[Event, None]:
        params = {**self.filters, "feature": self.feature}
        connected = False
        while True:
            assert self.last is not None
            with polling_errors("GET /logs"):
                page = await self.client.logs.after(self.last, params, limit=POLL_LIMIT)
            if not connected:
                connected = True
                yield Event("connected", {})
            if page.gap:
                self._gap(page.gap)
            for entry in page.items:
                yield Event("item", entry)
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
