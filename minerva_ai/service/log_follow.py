"""Live log following on one instance: one pump per organization, many followers.

A pump wakes on the Redis notice that a batch committed (or every second while Redis is
unreachable), reads ``seq > last`` from PostgreSQL once, and hands the rows to each local
follower. A follower registers with the pump *before* it backfills from PostgreSQL, then
drops whatever it already sent: nothing is missed, nothing repeated. A follower whose
queue fills is marked overflowed and dropped; its client resumes from its cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from minerva_ai.service import telemetry
from minerva_ai.service.bus import Bus
from minerva_ai.service.db import Row
from minerva_ai.service.logs import LogFilter, current_cursor, list_logs

log = logging.getLogger("minerva_ai.service.logs")

PAGE = 1000
POLL_WITHOUT_REDIS_S = 1.0
POLL_WITH_REDIS_S = 5.0  # a safety net: a notice lost with a Redis restart costs seconds


class Overflow(Exception):
    """The follower fell too far behind; resume from ``cursor``."""

    def __init__(self, cursor: int) -> None:
        super().__init__(f"overflow after cursor {cursor}")
        self.cursor = cursor


class Follower:
    def __init__(self, filters: LogFilter, after: int, maxsize: int) -> None:
        self.filters = filters
        self.compiled = filters.compiled
        self.last = after
        self.queue: asyncio.Queue[list[Row]] = asyncio.Queue(maxsize)
        self.overflowed = False

    def offer(self, rows: list[Row]) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(rows)
        except asyncio.QueueFull:
            telemetry.QUEUE_OVERFLOWS.labels("log_follower").inc()
            self.overflowed = True


class Pump:
    def __init__(self, hub: FollowHub, org_id: uuid.UUID) -> None:
        self.hub = hub
        self.org_id = org_id
        self.followers: set[Follower] = set()
        self.last = 0
        self.ready = asyncio.Event()
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"log-pump-{org_id}")

    async def _run(self) -> None:
        sub = self.hub.bus.subscribe(f"logs:{self.org_id}", maxsize=10_000)
        try:
            while not self.ready.is_set():
                try:
                    async with self.hub.pool.connection() as conn:
                        self.last = await current_cursor(conn, self.org_id)
                    self.ready.set()
                except Exception as exc:  # followers wait on `ready`: never leave them hanging
                    log.warning("log pump for %s could not start: %s", self.org_id, exc)
                    await asyncio.sleep(POLL_WITHOUT_REDIS_S)
            while True:
                await self._wait(sub)
                await self._drain()
        finally:
            sub.close()

    async def _wait(self, sub: Any) -> None:
        timeout = POLL_WITH_REDIS_S if self.hub.bus.connected else POLL_WITHOUT_REDIS_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sub.get(), timeout)
        while not sub.queue.empty():  # one read serves every notice already queued
            sub.queue.get_nowait()

    async def _drain(self) -> None:
        while True:
            try:
                async with self.hub.pool.connection() as conn:
                    rows = await list_logs(
                        conn, self.org_id, LogFilter(), limit=PAGE, after=self.last
                    )
            except Exception as exc:  # the database is down: try again on the next wake
                log.warning("log pump for %s could not read: %s", self.org_id, exc)
                return
            if not rows:
                return
            self.last = rows[-1]["seq"]
            for follower in list(self.followers):
                follower.offer(rows)
            if len(rows) < PAGE:
                return


class FollowHub:
    """Every pump of this instance; pumps stop when their last follower leaves."""

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[Row]],
        bus: Bus,
        backfill_timeout_s: float = 3600,
    ) -> None:
        self.pool = pool
        self.bus = bus
        # A backfill may read far back: it runs under the export limit, not the 5 s one.
        self.backfill_timeout_ms = int(backfill_timeout_s * 1000)
        self.pumps: dict[uuid.UUID, Pump] = {}

    async def close(self) -> None:
        for pump in self.pumps.values():
            pump.task.cancel()
        await asyncio.gather(*(p.task for p in self.pumps.values()), return_exceptions=True)
        self.pumps.clear()

    def _attach(self, org_id: uuid.UUID, follower: Follower) -> Pump:
        pump = self.pumps.get(org_id)
        if pump is None or pump.task.done():
            pump = self.pumps[org_id] = Pump(self, org_id)
        pump.followers.add(follower)
        return pump

    def _detach(self, org_id: uuid.UUID, follower: Follower) -> None:
        pump = self.pumps.get(org_id)
        if pump is None:
            return
        pump.followers.discard(follower)
        if not pump.followers:
            pump.task.cancel()
            del self.pumps[org_id]

    async def follow(
        self, org_id: uuid.UUID, filters: LogFilter, after: int, maxsize: int = 100
    ) -> AsyncGenerator[list[Row], None]:
        """Batches of matching rows after ``after``, in commit order, until cancelled.

        Raises Overflow when the consumer falls more than ``maxsize`` batches behind.
        """
        follower = Follower(filters, after, maxsize)
        pump = self._attach(org_id, follower)
        try:
            await pump.ready.wait()
            while True:  # backfill: everything committed before we registered, and more
                async with self.pool.connection() as conn, conn.transaction():
                    await conn.execute(
                        f"SET LOCAL statement_timeout = {self.backfill_timeout_ms}"  # an int
                    )
                    rows = await list_logs(conn, org_id, filters, limit=PAGE, after=follower.last)
                if rows:
                    follower.last = rows[-1]["seq"]
                    yield rows
                if len(rows) < PAGE:
                    break
            while True:
                if follower.overflowed:
                    raise Overflow(follower.last)
                batch = await follower.queue.get()
                fresh = [
                    r
                    for r in batch
                    if r["seq"] > follower.last and filters.matches(r, follower.compiled)
                ]
                if batch:
                    follower.last = max(follower.last, batch[-1]["seq"])
                if fresh:
                    yield fresh
        finally:
            self._detach(org_id, follower)
