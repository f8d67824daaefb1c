"""GET /api/health: version and the state of PostgreSQL and Redis."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from minerva_ai import __version__
from minerva_ai.core.protocol import HEALTH_PATH
from minerva_ai.service.deps import StateDep
from minerva_ai.service.responses import JSONResponse
from minerva_ai.service.schemas import Health

router = APIRouter(tags=["health"])


@router.get(
    HEALTH_PATH,
    response_model=Health,
    responses={503: {"model": Health, "description": "PostgreSQL is unreachable."}},
)
async def health(state: StateDep) -> JSONResponse:
    """503 only when PostgreSQL is unreachable; Redis down is 200 with `redis: degraded`."""
    try:
        async with asyncio.timeout(2):
            async with state.pool.connection() as conn:
                await conn.execute("SELECT 1")
        postgres = "ok"
    except Exception:
        postgres = "down"
    redis = "ok" if await state.bus.healthy() else "degraded"
    status = "down" if postgres == "down" else ("degraded" if redis != "ok" else "ok")
    body = {"status": status, "version": __version__, "postgres": postgres, "redis": redis}
    return JSONResponse(body, 503 if postgres == "down" else 200)
