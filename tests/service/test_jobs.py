"""Background jobs: one leader across instances, fenced writes, takeover after a leader
is killed or frozen (service/jobs.py)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from minerva_ai.service import admin
from minerva_ai.service.jobs import Fenced, Job, Jobs, Lease, take_lease
from tests.conftest import WAIT, Servers, run_cli, server_processes, wait_until
from tests.service.conftest import async_pool

JOB = "test-job"


async def eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def recording_job(holder: str) -> Job:
    """A job whose each run writes, in its fenced transaction, who ran it and when."""

    async def run(lease: Lease) -> None:
        async with lease.transaction() as conn:
            row = await (
                await conn.execute(
                    "INSERT INTO job_runs_seen (holder, epoch, started) "
                    "VALUES (%s, %s, clock_timestamp()) RETURNING id",
                    (holder, lease.epoch),
                )
            ).fetchone()
            await conn.execute("SELECT pg_sleep(0.02)")
            await conn.execute(
                "UPDATE job_runs_seen SET finished = clock_timestamp() WHERE id = %s", (row["id"],)
            )

    return Job(JOB, 0.01, run)


async def runs(pool: AsyncConnectionPool[Any]) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (await conn.execute("SELECT * FROM job_runs_seen ORDER BY started")).fetchall()


def assert_never_overlapping(rows: list[dict[str, Any]]) -> None:
    for before, after in itertools.pairwise(rows):
        assert after["started"] >= before["finished"], (before, after)


def test_one_instance_runs_a_job_and_another_takes_over_when_it_stops(database_url: str) -> None:
    async def scenario() -> None:
        async with async_pool(database_url) as pool:
            async with pool.connection() as conn:
                await conn.execute(
                    "CREATE TABLE job_runs_seen (id serial PRIMARY KEY, holder text, epoch bigint,"
                    " started timestamptz, finished timestamptz)"
                )
            # a lease long enough that no renewal misses it on a busy machine: the handover
            # here is a clean stop, which releases it at once
            instances = {h: Jobs(pool, [recording_job(h)], ttl_s=5.0, holder=h) for h in "ab"}
            for jobs in instances.values():
                jobs.start()
            try:
                first = await eventually(
                    lambda: _holders_after(pool, 20), "20 runs of the first leader"
                )
                assert len(first) == 1, f"runs by {first}: the job ran on both instances"
                leader = first.pop()
                other = "b" if leader == "a" else "a"
                await instances[leader].close()  # a clean stop hands the lease over at once
                await eventually(lambda: _runs_by(pool, other, 10), "10 runs by the other")
            finally:
                for jobs in instances.values():
                    await jobs.close()
            done = await runs(pool)
            assert_never_overlapping(done)
            holders = [r["holder"] for r in done]
            switch = holders.index(other)
            assert set(holders[:switch]) == {leader} and set(holders[switch:]) == {other}
            assert {r["epoch"] for r in done[switch:]} == {done[0]["epoch"] + 1}

    asyncio.run(scenario())


async def _holders_after(pool: AsyncConnectionPool[Any], count: int) -> set[str] | None:
    done = await runs(pool)
    return {r["holder"] for r in done} if len(done) >= count else None


async def _runs_by(pool: AsyncConnectionPool[Any], holder: str, count: int) -> bool:
    return sum(r["holder"] == holder for r in await runs(pool)) >= count


def test_a_leader_past_its_lease_is_fenced_out(database_url: str) -> None:
    async def scenario() -> None:
        async with async_pool(database_url) as pool:
            frozen = await take_lease(pool, JOB, "a", ttl_s=3)
            assert frozen is not None and frozen.epoch == 1
            assert await take_lease(pool, JOB, "b", ttl_s=5) is None  # held: not b's
            async with frozen.transaction() as conn:  # while held, its writes go through
                await conn.execute("SELECT 1")
            # "a" stops renewing (frozen); once the lease expires, "b" takes it
            taken = await eventually(lambda: take_lease(pool, JOB, "b", ttl_s=5), "b's lease")
            assert taken.epoch == 2
            with pytest.raises(Fenced):
                async with frozen.transaction():
                    pytest.fail("a fenced leader's transaction ran")
            assert not await frozen.renew()
            assert frozen.lost.is_set()
            async with taken.transaction() as conn:
                await conn.execute("SELECT 1")

    asyncio.run(scenario())


def test_a_takeover_waits_for_the_old_leaders_open_transaction(database_url: str) -> None:
    # The lease expires while its holder's fenced transaction is still writing: the next
    # leader gets the lease only after that transaction has ended.
    async def scenario() -> None:
        async with async_pool(database_url) as pool:
            old = await take_lease(pool, JOB, "a", ttl_s=2)
            assert old is not None
            started = asyncio.Event()

            async def slow_write() -> Any:
                async with old.transaction() as conn:
                    started.set()
                    await conn.execute("SELECT pg_sleep(3)")  # past the lease
                    last = await conn.execute("SELECT clock_timestamp() AS at")
                    return (await last.fetchone())["at"]

            writing = asyncio.create_task(slow_write())
            await started.wait()  # the transaction holds the lease row
            new = await eventually(lambda: take_lease(pool, JOB, "b", ttl_s=5), "b's lease")
            ended = await writing
            assert new.epoch == 2
            async with pool.connection() as conn:
                lease = await (
                    await conn.execute("SELECT acquired_at FROM job_leases WHERE name = %s", (JOB,))
                ).fetchone()
            assert lease["acquired_at"] > ended

    asyncio.run(scenario())


# Real instances: `minerva-ai server start` on the same database, killed or frozen.


def _leader(database_url: str) -> dict[str, Any] | None:
    jobs = {j["name"]: j for j in admin.job_status(database_url)}
    job = jobs.get("log-maintenance")
    return job if job and job["held"] and job["last_run_at"] else None


def _pid(holder: str) -> int:
    return int(holder.split(":")[1])


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill", "freeze"])
def test_a_killed_or_frozen_leader_is_replaced(
    how: str, database_url: str, servers: Servers, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": servers.redis_url,
        "MINERVA_JOB_LEASE": "2",
        "MINERVA_SECRET_KEY": "w1Sw0tKx3Jm0bTqvnF8gq4kUj2yq9p3r5W8cX6dZ7aE=",  # one for all
    }
    with server_processes(tmp_path) as start:
        instances = [start(env=env), start(env=env)]
        for instance in instances:
            instance.wait_serving()
        first = wait_until(lambda: _leader(database_url), what="a leader of log-maintenance")
        leader = next(i for i in instances if i.pid == _pid(first["holder"]))
        other = next(i for i in instances if i is not leader)
        stopped_at = time.monotonic()
        leader.process.send_signal(signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        try:
            second = wait_until(
                lambda: (j := _leader(database_url)) and j["epoch"] > first["epoch"] and j,
                what="another instance to lead",
            )
            took = time.monotonic() - stopped_at
            assert _pid(second["holder"]) == other.pid
            assert second["epoch"] == first["epoch"] + 1
        finally:
            if how == "freeze":
                leader.process.send_signal(signal.SIGCONT)
        print(f"takeover after {how}: {took:.2f} s (lease 2 s)")
        if how == "freeze":
            # Resumed, the old leader finds its lease taken and stands down.
            wait_until(lambda: "lease lost" in leader.output(), what="the old leader to notice")
            assert _pid(_leader(database_url)["holder"]) == other.pid
    listed = run_cli("server", "jobs", "-o", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert '"log-maintenance"' in listed.stdout


def test_server_jobs_lists_each_job(database_url: str, tmp_path: Path) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO job_leases (name, holder, epoch, acquired_at, expires_at, last_run_at,"
            " last_duration_ms, last_error) VALUES ('log-maintenance', 'host:1:abc', 3, now(),"
            " now() + interval '1 minute', now(), 12.5, 'OperationalError: boom')"
        )
    listed = run_cli("server", "jobs", env={**os.environ, "DATABASE_URL": database_url})
    assert listed.returncode == 0, listed.stderr
    [row] = listed.stdout.splitlines()  # piped: tab-separated, no header
    assert row.split("\t")[:4] == ["log-maintenance", "host:1:abc", "3", "true"]
    assert row.split("\t")[-2:] == ["12.5", "OperationalError: boom"]
