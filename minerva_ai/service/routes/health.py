"""Health: GET /api/health (dependencies), /api/health/live (the process answers) and
/api/health/ready (this instance should be sent traffic)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from fastapi import APIRouter
from psycopg import AsyncConnection
from psycopg.abc import Query
from psycopg.rows import dict_row

from minerva_ai import __version__
from minerva_ai.core.protocol import HEALTH_PATH
from minerva_ai.service.db import queries, schema_problem
from minerva_ai.service.deps import AppState, StateDep
from minerva_ai.service.responses import JSONResponse
from minerva_ai.service.schemas import Health, Liveness, Readiness

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 2.0  # a check that waits longer (a full pool, a lock) counts as failed


async def _query(state: AppState, query: Query) -> list[Any]:
    """``query``'s rows within CHECK_TIMEOUT_S, on a pool connection. The pool's idle
    connections may all be dead after a PostgreSQL restart (each fails once, then the pool
    drops it): on such a failure, a connection of its own says what PostgreSQL is now."""
    async with asyncio.timeout(CHECK_TIMEOUT_S):
        try:
            async with state.pool.connection() as conn:
                return await (await conn.execute(query)).fetchall()
        except psycopg.OperationalError:
            async with await AsyncConnection.connect(
                state.config.database_url, row_factory=dict_row
            ) as fresh:
                return await (await fresh.execute(query)).fetchall()


@router.get(
    HEALTH_PATH,
    response_model=Health,
    responses={503: {"model": Health, "description": "PostgreSQL is unreachable."}},
)
async def health(state: StateDep) -> JSONResponse:
    """503 only when PostgreSQL is unreachable; Redis down is 200 with `redis: degraded`."""
    try:
        await _query(state, "SELECT 1")
        postgres = "ok"
    except Exception:
        postgres = "down"
    redis = "ok" if await state.bus.healthy() else "degraded"
    status = "down" if postgres == "down" else ("degraded" if redis != "ok" else "ok")
    body = {"status": status, "version": __version__, "postgres": postgres, "redis": redis}
    return JSONResponse(body, 503 if postgres == "down" else 200)


@router.get(f"{HEALTH_PATH}/live", response_model=Liveness)
async def health_live(state: StateDep) -> JSONResponse:
    """Always 200 while the process serves requests; touches neither PostgreSQL nor Redis
    (a liveness probe that failed with the database would restart every instance at once)."""
    body = {"status": "alive", "version": __version__, "instance": state.config.instance}
    return JSONResponse(body)


async def _not_ready_because(state: AppState) -> str | None:
    if state.draining.is_set():
        return "draining: the instance is shutting down"
    try:
        rows = await _query(state, queries()["applied_migrations"])
    except TimeoutError:
        return await _why_no_connection(state)
    except Exception as exc:
        return f"PostgreSQL is unreachable: {_first_line(exc)}"
    return schema_problem({row["version"] for row in rows})


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]


async def _why_no_connection(state: AppState) -> str:
    """The pool gave no connection in time: PostgreSQL down, or every connection busy."""
    try:
        conn = await AsyncConnection.connect(
            state.config.database_url, connect_timeout=int(CHECK_TIMEOUT_S)
        )
    except Exception as exc:
        return f"PostgreSQL is unreachable: {_first_line(exc)}"
    await conn.close()
    return f"no PostgreSQL connection of the pool was free within {CHECK_TIMEOUT_S:g} s"


@router.get(
    f"{HEALTH_PATH}/ready",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": "Draining, PostgreSQL unreachable, or a schema this version "
            "does not expect: `reason` says which.",
        }
    },
)
async def health_ready(state: StateDep) -> JSONResponse:
    """200 when this instance should get traffic: PostgreSQL answers, its schema is the one
    this version expects, and the instance is not shutting down. Redis down is still ready
    (ingest and queries go on)."""
    reason = await _not_ready_because(state)
    body = {
        "status": "not_ready" if reason else "ready",
        "version": __version__,
        "instance": state.config.instance,
        "reason": reason,
    }
    return JSONResponse(body, 503 if reason else 200)
