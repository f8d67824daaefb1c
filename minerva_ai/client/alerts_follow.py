"""Follow alert transitions: the ``alerts`` WebSocket channel, else polling (no SSE).

``follow_alerts`` yields ``{"alert", "transition", "cursor"}`` for every transition
committed after a cursor, once each, in commit order. On any disconnect it reconnects with
backoff and resumes after the last cursor it yielded, so a restart of the service loses
or repeats nothing. Polling reads ``GET /alerts/transitions?after=`` (and each alert the
transitions name, so that an event has the same shape on both transports).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any

from minerva_ai.client import websocket
from minerva_ai.client.http import AsyncClient
from minerva_ai.client.realtime import BEGINNING, Event, Follower, Notice, polling_errors
from minerva_ai.core.errors import NotFoundError, UsageError

JSON = dict[str, Any]
ALERT_TRANSPORTS = ("auto", "ws", "poll")
POLL_LIMIT = 1000
_DETAIL_ONLY = ("transitions", "deliveries", "settings_changes")


async def alerts_head(client: AsyncClient) -> str:
    """The cursor of the organization's newest transition (``BEGINNING`` when none)."""
    cursor = BEGINNING
    while True:
        page = await client.alerts.transitions(cursor, limit=POLL_LIMIT)
        cursor = page.next_cursor
        if len(page.items) < POLL_LIMIT:
            return cursor


class AlertFollower(Follower):
    """One follow session of alert transitions. Use ``follow_alerts``."""

    def __init__(
        self,
        client: AsyncClient,
        after: str | None,
        *,
        feature: str | None,
        transport: str,
        on_notice: Callable[[Notice], None] | None,
        poll_interval: float,
        max_backoff: float,
    ) -> None:
        if transport not in ALERT_TRANSPORTS:
            raise UsageError(
                f"alerts are followed over {', '.join(ALERT_TRANSPORTS)}, not {transport!r}"
            )
        super().__init__(
            client,
            feature=feature,
            transport=transport,
            on_notice=on_notice,
            poll_interval=poll_interval,
            max_backoff=max_backoff,
        )
        if self.auto:
            self.chain = ["ws", "poll"]
        self.last = after
        self._feature_id: str | None = None

    def _position(self) -> str:
        return f" after cursor {self.last}" if self.last is not None else ""

    async def events(self) -> AsyncGenerator[JSON, None]:
        async with contextlib.aclosing(self._follow()) as items:
            async for item in items:
                cursor = str(item["cursor"])
                if self.last is not None and int(cursor) <= int(self.last):
                    continue  # sent again by a subscription that replaced an older one
                self.last = cursor
                yield item

    async def _probe(self) -> None:
        await self.client.alerts.transitions(self.last, limit=1)

    # ------------------------------------------------------------------ WebSocket

    def _subscription(self) -> str:
        data: JSON = {}
        if self.last is not None:
            data["after"] = self.last
        if self.feature is not None:
            data["feature"] = self.feature
        return websocket.subscription("alerts", **data)

    async def _websocket(self) -> AsyncGenerator[Event, None]:
        async with contextlib.aclosing(self._socket_frames("alerts")) as frames:
            async for kind, data in frames:
                if kind == "subscribed":
                    if self.last is None and data.get("after") is not None:
                        self.last = str(data["after"])
                    yield Event("connected", data)
                elif kind == "alert":
                    yield Event("item", data)
                elif kind == "overflow":
                    self._notice("overflow", f"fell behind the service; resuming{self._position()}")

    # ------------------------------------------------------------------ polling

    async def _poll(self) -> AsyncGenerator[Event, None]:
        with polling_errors("GET /alerts/transitions"):
            if self.feature is not None and self._feature_id is None:
                self._feature_id = str((await self.client.features.get(self.feature))["id"])
            if self.last is None:
                self.last = await alerts_head(self.client)
        position = self.last
        yield Event("connected", {"after": position})
        while True:
            with polling_errors("GET /alerts/transitions"):
                page = await self.client.alerts.transitions(position, limit=POLL_LIMIT)
                wanted = [
                    t
                    for t in page.items
                    if self._feature_id is None or t.get("feature_id") == self._feature_id
                ]
                alerts = await self._alerts({t["alert_id"] for t in wanted if t.get("alert_id")})
            for transition in wanted:
                alert = alerts.get(transition.get("alert_id") or "")
                cursor = str(transition["cursor"])
                yield Event("item", {"alert": alert, "transition": transition, "cursor": cursor})
            position = page.next_cursor
            if len(page.items) < POLL_LIMIT:
                await asyncio.sleep(self.poll_interval)

    async def _alerts(self, ids: set[str]) -> dict[str, JSON]:
        """Each alert as the channel sends it (without the detail of ``GET /alerts/{id}``)."""
        found: dict[str, JSON] = {}
        for alert_id in sorted(ids):
            try:
                detail = await self.client.alerts.get(alert_id)
            except NotFoundError:
                continue
            found[alert_id] = {k: v for k, v in detail.items() if k not in _DETAIL_ONLY}
        return found


def follow_alerts(
    client: AsyncClient,
    after: str | None = None,
    *,
    feature: str | None = None,
    transport: str = "auto",
    on_notice: Callable[[Notice], None] | None = None,
    poll_interval: float = 2.0,
    max_backoff: float = 5.0,
) -> AsyncGenerator[JSON, None]:
    """Every alert transition committed after ``after`` (default: the newest now), in
    commit order, each once, until the consumer stops: ``{"alert", "transition", "cursor"}``
    (``alert`` is None for a transition of no alert, e.g. ``pending``).

    ``feature``: only that feature's (name or id). ``transport``: ``auto`` (the WebSocket,
    then polling every ``poll_interval`` seconds), ``ws`` or ``poll``. ``on_notice`` hears
    about connections, fallbacks and losses. What a reconnect cannot mend (401, an unknown
    feature, a bad cursor, every transport refused) is raised as ``ServiceError``.
    """
    follower = AlertFollower(
        client,
        after,
        feature=feature,
        transport=transport,
        on_notice=on_notice,
        poll_interval=poll_interval,
        max_backoff=max_backoff,
    )
    return follower.events()
