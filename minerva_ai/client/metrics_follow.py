"""Follow live metrics: WebSocket, else SSE, else polling (the log follower's chain).

``follow_metrics`` yields each ``metrics_update`` the service sends: one feature's current
metrics, or, without a feature, ``{"window", "as_of", "features": [...]}`` with every
feature's. Over polling it builds the same objects from ``GET .../metrics/current`` or
``GET /features?include_metrics=true``. A snapshot carries everything, so a reconnect
resumes with the next one: there is nothing to replay.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from minerva_ai.client import websocket
from minerva_ai.client.http import AsyncClient
from minerva_ai.client.realtime import Event, Follower, Notice, polling_errors
from minerva_ai.client.resources import Call, feature_path

JSON = dict[str, Any]
UPDATE = "metrics_update"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def overview(window: str, features: list[JSON]) -> JSON:
    """The org-wide update built from ``GET /features?include_metrics=true`` items."""
    metrics = [
        {"feature": item.get("name"), "feature_id": item.get("id"), **(item.get("metrics") or {})}
        for item in features
    ]
    times = [str(m["as_of"]) for m in metrics if m.get("as_of")]
    return {"window": window, "as_of": max(times) if times else _now(), "features": metrics}


class MetricsFollower(Follower):
    """One follow session of live metrics. Use ``follow_metrics``."""

    def __init__(
        self,
        client: AsyncClient,
        feature: str | None,
        window: str,
        *,
        transport: str,
        on_notice: Callable[[Notice], None] | None,
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
        self.window = window

    def updates(self) -> AsyncGenerator[JSON, None]:
        return self._follow()

    def _position(self) -> str:
        return f" (metrics of {self.feature or 'every feature'} over {self.window})"

    def _subscription(self) -> str:
        feature = {"feature": self.feature} if self.feature is not None else {}
        return websocket.subscription("metrics", window=self.window, **feature)

    async def _probe(self) -> None:
        await self.client.features.list(limit=1)

    async def _snapshot(self) -> JSON:
        if self.feature is not None:
            return await self.client.metrics.current(self.feature, window=self.window)
        features = await self.client.features.list(include_metrics=True, window=self.window)
        return overview(self.window, features)

    async def _websocket(self) -> AsyncGenerator[Event, None]:
        async with contextlib.aclosing(self._socket_frames("metrics")) as frames:
            async for kind, data in frames:
                if kind == "subscribed":
                    yield Event("connected", data)
                elif kind == UPDATE:
                    yield Event("item", data)

    async def _sse(self) -> AsyncGenerator[Event, None]:
        path = "/metrics/stream"
        if self.feature is not None:
            path = f"{feature_path(self.feature)}/metrics/stream"
        call = Call("GET", path, {"window": self.window}, headers={"Accept": "text/event-stream"})

        async def missing() -> None:  # a missing path, or a missing feature (raises)
            if self.feature is not None:
                await self.client.metrics.current(self.feature, window=self.window)

        async with contextlib.aclosing(self._sse_stream(call, missing)) as events:
            async for kind, data in events:
                if kind == "":
                    yield Event("connected", {})
                elif kind == UPDATE:
                    yield Event("item", orjson.loads(data))

    async def _poll(self) -> AsyncGenerator[Event, None]:
        connected = False
        while True:
            with polling_errors("GET metrics"):
                snapshot = await self._snapshot()
            if not connected:
                connected = True
                yield Event("connected", {})
            yield Event("item", snapshot)
            await asyncio.sleep(self.poll_interval)


def follow_metrics(
    client: AsyncClient,
    feature: str | None = None,
    *,
    window: str = "5m",
    transport: str = "auto",
    on_notice: Callable[[Notice], None] | None = None,
    poll_interval: float = 5.0,
    max_backoff: float = 5.0,
) -> AsyncGenerator[JSON, None]:
    """Each live metrics update over ``window``, until the consumer stops.

    With ``feature``: that feature's current metrics (``GET .../metrics/current``'s
    shape). Without: ``{"window", "as_of", "features": [...]}``, every feature's.
    ``transport``: ``auto`` (WebSocket, then SSE, then polling every ``poll_interval``
    seconds), ``ws``, ``sse`` or ``poll``. ``on_notice`` hears about connections,
    fallbacks and losses. What a reconnect cannot mend (401, an unknown feature, a bad
    window, every transport refused) is raised as ``ServiceError``.
    """
    follower = MetricsFollower(
        client,
        feature,
        window,
        transport=transport,
        on_notice=on_notice,
        poll_interval=poll_interval,
        max_backoff=max_backoff,
    )
    return follower.updates()
