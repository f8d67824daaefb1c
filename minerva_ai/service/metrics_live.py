"""Live metrics on one instance: computed once per organization and window, sent to many.

Every WebSocket `metrics` subscription and SSE metrics stream of an organization with the
same window shares one group. Every ``metrics_interval_s`` the group runs one query for
the features its watchers want (all of them when one watcher wants every feature),
encodes each feature's figures once, and hands each watcher the bytes it wants. A watcher
keeps only the latest figures: a slow reader skips stale ones instead of queueing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from minerva_ai.service import metrics
from minerva_ai.service.db import Row
from minerva_ai.service.responses import dumps

log = logging.getLogger("minerva_ai.service.metrics")

ALL = None  # a watcher of every feature


class Watcher:
    """One subscriber's view: the latest encoded ``metrics_update`` data."""

    def __init__(self, group: _Group, feature_id: uuid.UUID | None) -> None:
        self.group = group
        self.feature_id = feature_id
        self.latest: bytes | None = None
        self.fresh = asyncio.Event()

    def offer(self, data: bytes | None) -> None:
        if data is not None:
            self.latest = data
            self.fresh.set()

    async def next(self) -> bytes:
        """The next figures (the latest, when several came while the reader was busy)."""
        await self.fresh.wait()
        self.fresh.clear()
        assert self.latest is not None
        return self.latest

    def close(self) -> None:
        self.group.watchers.discard(self)


class _Group:
    def __init__(self, hub: MetricsHub, key: tuple[uuid.UUID, timedelta]) -> None:
        self.hub = hub
        self.key = key
        self.watchers: set[Watcher] = set()
        self.frames: dict[uuid.UUID | None, bytes] = {}
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"metrics-{key[0]}-{key[1]}")

    def add(self, watcher: Watcher) -> None:
        self.watchers.add(watcher)
        if watcher.feature_id in self.frames:
            watcher.offer(self.frames[watcher.feature_id])
        else:
            self.wake.set()  # a feature not computed yet: compute now, not at the next tick

    async def _run(self) -> None:
        org_id, window = self.key
        while self.watchers:
            self.wake.clear()
            wanted = {w.feature_id for w in self.watchers}
            feature_ids = None if ALL in wanted else sorted(f for f in wanted if f is not None)
            try:
                self.frames = await self.hub.compute(org_id, window, feature_ids)
            except Exception as exc:  # the database failed: keep the last figures, retry
                log.warning("live metrics for organization %s failed: %s", org_id, exc)
            for watcher in list(self.watchers):
                watcher.offer(self.frames.get(watcher.feature_id))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.hub.interval_s)
        del self.hub.groups[self.key]


class MetricsHub:
    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[Row]], interval_s: float) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self.groups: dict[tuple[uuid.UUID, timedelta], _Group] = {}
        self.computations = 0  # queries run: the same for 1 or 1,000 watchers
        # Every feature's figures per (organization, window), computed at most once per
        # interval however many lists ask: (when computed, the computation).
        self.snapshots: dict[tuple[uuid.UUID, timedelta], tuple[float, asyncio.Future[Any]]] = {}

    async def snapshot(self, org_id: uuid.UUID, window: timedelta) -> list[dict[str, Any]]:
        """Every feature's current figures, at most ``interval_s`` old (their ``as_of``
        says when): concurrent callers share one computation."""
        loop = asyncio.get_running_loop()
        key, now = (org_id, window), loop.time()
        found = self.snapshots.get(key)
        if found is None or now - found[0] >= self.interval_s or _failed(found[1]):
            for old in [
                k for k, (at, _) in self.snapshots.items() if now - at > 10 * self.interval_s
            ]:
                del self.snapshots[old]
            found = (now, asyncio.ensure_future(self._current(org_id, window)))
            self.snapshots[key] = found
        items: list[dict[str, Any]] = await asyncio.shield(found[1])
        return items

    async def _current(self, org_id: uuid.UUID, window: timedelta) -> list[dict[str, Any]]:
        self.computations += 1
        async with self.pool.connection() as conn:
            return await metrics.current(conn, metrics.Query(org_id), window)

    def watch(self, org_id: uuid.UUID, window: timedelta, feature_id: uuid.UUID | None) -> Watcher:
        key = (org_id, window)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = _Group(self, key)
        watcher = Watcher(group, feature_id)
        group.add(watcher)
        return watcher

    async def compute(
        self, org_id: uuid.UUID, window: timedelta, feature_ids: list[uuid.UUID] | None
    ) -> dict[uuid.UUID | None, bytes]:
        """Each feature's figures encoded once, and (for watchers of all) all of them."""
        self.computations += 1
        now = datetime.now(UTC)
        async with self.pool.connection() as conn:
            items = await metrics.current(conn, metrics.Query(org_id, feature_ids), window, now)
        frames: dict[uuid.UUID | None, bytes] = {item["feature_id"]: dumps(item) for item in items}
        if feature_ids is None:
            frames[ALL] = dumps(
                {"window": metrics.span_text(window), "as_of": now, "features": items}
            )
        return frames

    async def close(self) -> None:
        tasks = [group.task for group in self.groups.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _failed(computation: asyncio.Future[Any]) -> bool:
    return computation.done() and (computation.cancelled() or computation.exception() is not None)


def ws_frame(data: bytes) -> bytes:
    return b'{"type":"metrics_update","data":' + data + b"}"


def sse_frame(data: bytes) -> bytes:
    return b"event: metrics_update\ndata: " + data + b"\n\n"
