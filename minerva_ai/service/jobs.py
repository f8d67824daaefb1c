"""Background jobs that run once across instances, led through a lease row in PostgreSQL.

Every instance runs a loop per job. The loop takes the job's lease when it is free or
expired (a row of ``job_leases``: holder, epoch, expiry), and while it holds it, runs the
job every ``interval_s`` and renews the lease every ``ttl / 3``. A leader that cannot renew
in time (killed, frozen, cut off from the database) loses the lease when it expires, and
another instance takes it with ``epoch + 1``; all times are the database's clock.

Fencing: a job writes only inside ``lease.transaction()``, which first locks the lease row
(``FOR KEY SHARE``) and checks holder, epoch and expiry, so a leader frozen past its lease
finds the row taken and writes nothing (``Fenced``). The lock also holds a takeover back
(it locks the row ``FOR UPDATE``) until the transaction ends, and the transaction's
``idle_in_transaction_session_timeout`` ends one whose process froze while holding it.

Bound: a dead or frozen leader is replaced within ``ttl + ttl / 3`` (20 s by default,
``MINERVA_JOB_LEASE``), plus a frozen leader's open transaction, which PostgreSQL ends
after ``ttl``. docs/deployment.md says the same for operators.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from minerva_ai.service import telemetry
from minerva_ai.service.db import Row, queries
from minerva_ai.service.locks import JobName

log = logging.getLogger("minerva_ai.service.jobs")

Conn = AsyncConnection[Row]


class Fenced(Exception):
    """This instance no longer leads the job: its write was refused."""


def instance_id() -> str:
    """Who holds a lease: host, pid and a random suffix (a pid is reused after a restart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class Lease:
    """A job's lease as its holder sees it."""

    name: str
    holder: str
    epoch: int
    ttl_s: float
    pool: AsyncConnectionPool[Conn]
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    def key(self) -> dict[str, object]:
        return {"name": self.name, "holder": self.holder, "epoch": self.epoch}

    async def fence(self, conn: Conn) -> None:
        """Inside a transaction: go on only while this lease is the job's (else ``Fenced``)."""
        row = await (await conn.execute(queries()["fence_lease"], self.key())).fetchone()
        if row is None:
            self.lost.set()
            raise Fenced(f"{self.holder} no longer leads {self.name} (epoch {self.epoch})")

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """A fenced transaction: where a job does its writes."""
        timeout_ms = int(self.ttl_s * 1000)
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(queries()["job_transaction_timeout"], {"timeout": f"{timeout_ms}ms"})
            await self.fence(conn)
            yield conn

    async def renew(self) -> bool:
        async with self.pool.connection() as conn:
            params = {**self.key(), "ttl": timedelta(seconds=self.ttl_s)}
            row = await (await conn.execute(queries()["renew_lease"], params)).fetchone()
        return row is not None

    async def release(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(queries()["release_lease"], self.key())


@dataclass(frozen=True)
class Job:
    """Work that one instance does every ``interval_s``, writing through its lease."""

    name: JobName | str
    interval_s: float
    run: Callable[[Lease], Awaitable[None]]


async def take_lease(
    pool: AsyncConnectionPool[Conn], name: str, holder: str, ttl_s: float
) -> Lease | None:
    """The lease of job ``name`` for ``holder`` when it is free or expired; else None."""
    params = {"name": name, "holder": holder, "ttl": timedelta(seconds=ttl_s)}
    async with pool.connection() as conn, conn.transaction():
        # A leader's open fenced transaction holds the row: wait for it, but not forever.
        await conn.execute(queries()["job_lock_timeout"], {"timeout": f"{int(ttl_s * 1000)}ms"})
        row = await (await conn.execute(queries()["take_lease"], params)).fetchone()
    if row is None:
        return None
    return Lease(str(name), holder, row["epoch"], ttl_s, pool)


class Jobs:
    """The jobs of one instance: started and stopped with the app."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Conn],
        jobs: list[Job],
        *,
        ttl_s: float = 15.0,
        holder: str | None = None,
    ) -> None:
        self.pool = pool
        self.jobs = jobs
        self.ttl_s = ttl_s
        self.holder = holder or instance_id()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for job in self.jobs:
            self._tasks.append(asyncio.create_task(self._lead(job), name=f"job {job.name}"))

    async def close(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _pause(self, seconds: float, *also: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(e.wait()) for e in (self._stopping, *also)]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def _lead(self, job: Job) -> None:
        """Take the lease whenever it is free, and run the job while holding it."""
        while not self._stopping.is_set():
            lease = None
            try:
                lease = await take_lease(self.pool, str(job.name), self.holder, self.ttl_s)
            except Exception as exc:  # the database may be down: try again later
                log.warning("job %s: could not take its lease: %s", job.name, exc)
            if lease is None:
                await self._pause(self.ttl_s / 3)
                continue
            log.info("job %s: led by %s (epoch %s)", job.name, self.holder, lease.epoch)
            renewal = asyncio.create_task(self._renew(lease))
            try:
                await self._run_while_held(job, lease)
            finally:
                renewal.cancel()
                await asyncio.gather(renewal, return_exceptions=True)
                if self._stopping.is_set() and not lease.lost.is_set():
                    with contextlib.suppress(Exception):  # others take over at once
                        await asyncio.shield(lease.release())

    async def _renew(self, lease: Lease) -> None:
        while not lease.lost.is_set():
            await asyncio.sleep(lease.ttl_s / 3)
            try:
                held = await asyncio.wait_for(lease.renew(), lease.ttl_s / 3)
            except Exception as exc:
                log.warning("job %s: could not renew its lease: %s", lease.name, exc)
                continue  # still ours until it expires; the next renewal may succeed
            if not held:
                log.warning("job %s: lease lost (epoch %s)", lease.name, lease.epoch)
                lease.lost.set()

    async def _run_while_held(self, job: Job, lease: Lease) -> None:
        due = time.time()
        while not (lease.lost.is_set() or self._stopping.is_set()):
            started_at = time.time()
            started = time.perf_counter()
            error: str | None = None
            try:
                await job.run(lease)
            except Fenced:
                return
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.warning("job %s failed: %s", job.name, error)
            duration_ms = (time.perf_counter() - started) * 1000
            telemetry.job_ran(
                str(job.name), due, started_at, started_at + duration_ms / 1000, error is not None
            )
            due = started_at + duration_ms / 1000 + job.interval_s
            with contextlib.suppress(Exception):
                async with self.pool.connection() as conn:
                    await conn.execute(
                        queries()["record_job_run"],
                        {**lease.key(), "duration_ms": duration_ms, "error": error},
                    )
            await self._pause(job.interval_s, lease.lost)
