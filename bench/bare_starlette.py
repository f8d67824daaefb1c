"""The floor for ``GET /features``: a bare Starlette app running the same SQL.

Same query (``queries()["list_features"]``), same pool and connection options as the
service's lifespan, the same JSON envelope through orjson with the same options; no
authentication, no dependency injection, no validation. ``bench/serve.py bare`` serves it
with the service's uvicorn options; the organization comes from BENCH_ORGANIZATION_ID.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minerva_ai.core.protocol import API_PREFIX
from minerva_ai.service.db import queries

PATH = f"{API_PREFIX}/features"
_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS


def create_app(
    database_url: str,
    organization_id: str,
    statement_timeout_ms: int = 5000,
    pool_max_size: int = 20,
) -> Starlette:
    query = queries()["list_features"]
    pool: AsyncConnectionPool[AsyncConnection[dict[str, Any]]] = AsyncConnectionPool(
        database_url,
        min_size=2,
        max_size=pool_max_size,
        open=False,
        connection_class=AsyncConnection[dict[str, Any]],
        kwargs={
            "autocommit": True,
            "row_factory": dict_row,
            "options": f"-c statement_timeout={statement_timeout_ms} -c timezone=UTC",
        },
    )

    async def list_features(request: Request) -> Response:
        limit = int(request.query_params.get("limit", "100"))
        async with pool.connection() as conn:
            cursor = await conn.execute(
                query,
                {
                    "organization_id": organization_id,
                    "status": None,
                    "search": None,
                    "after_name": None,
                    "limit": limit + 1,
                },
            )
            rows = await cursor.fetchall()
        items = rows[:limit]
        body = {"success": True, "data": items, "count": len(items), "next_cursor": None}
        return Response(orjson.dumps(body, option=_OPTIONS), media_type="application/json")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.open(wait=True, timeout=30)
        try:
            yield
        finally:
            await pool.close()

    return Starlette(routes=[Route(PATH, list_features)], lifespan=lifespan)


def from_env() -> Starlette:
    return create_app(os.environ["DATABASE_URL"], os.environ["BENCH_ORGANIZATION_ID"])
