"""The tokens behind this instance's open WebSockets and SSE streams, and what ends each
stream when its token is revoked, on every instance.

A revocation is announced on the bus (``tokens:revoked``) and every instance checks the
tokens it serves at once; without Redis, each instance also checks every
``MINERVA_TOKEN_RECHECK`` seconds (10), so a revoked token's streams end within that,
on instances that never heard of the revocation too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from uuid import UUID

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from minerva_ai.service.bus import Bus
from minerva_ai.service.db import Row, queries

log = logging.getLogger("minerva_ai.service")

REVOKED_TOPIC = "tokens:revoked"


class LiveTokens:
    def __init__(
        self, pool: AsyncConnectionPool[AsyncConnection[Row]], bus: Bus, recheck_s: float
    ) -> None:
        self.pool = pool
        self.bus = bus
        self.recheck_s = recheck_s
        self._streams: dict[UUID, set[Callable[[], None]]] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, token_id: UUID | None, on_revoked: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_revoked`` once the token is revoked; the answer stops watching."""
        if token_id is None:  # the server's own principal: never revoked
            return lambda: None
        self._streams.setdefault(token_id, set()).add(on_revoked)

        def unwatch() -> None:
            streams = self._streams.get(token_id)
            if streams is not None:
                streams.discard(on_revoked)
                if not streams:
                    del self._streams[token_id]

        return unwatch

    async def announce(self, token_id: UUID) -> None:
        """Tell every instance that ``token_id`` was revoked."""
        await self.bus.publish(REVOKED_TOPIC, {"id": str(token_id)})

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="revoked-tokens")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        announcements = self.bus.subscribe(REVOKED_TOPIC, maxsize=100)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(announcements.get(), self.recheck_s)
                announcements.reset()  # one check answers every announcement so far
                try:
                    await self.check()
                except Exception as exc:  # the database may be down: next time
                    log.warning("checking live tokens failed: %s", exc)
        finally:
            announcements.close()

    async def check(self) -> None:
        """End the streams of every watched token that is revoked now."""
        if not self._streams:
            return
        async with self.pool.connection() as conn:
            rows = await (
                await conn.execute(queries()["revoked_among"], {"ids": list(self._streams)})
            ).fetchall()
        for row in rows:
            for on_revoked in list(self._streams.pop(row["id"], ())):
                on_revoked()
