"""Request dependencies: the app's state, the caller's identity and scope checks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from starlette.requests import HTTPConnection

from minerva_ai.service.bus import Bus
from minerva_ai.service.config import ServiceConfig
from minerva_ai.service.db import Row, queries
from minerva_ai.service.errors import ApiError, refuse_nul
from minerva_ai.service.live_tokens import LiveTokens
from minerva_ai.service.log_follow import FollowHub
from minerva_ai.service.logs import Partitions
from minerva_ai.service.metrics_live import MetricsHub
from minerva_ai.service.principal import Principal as Principal  # the routes' import
from minerva_ai.service.providers.call import Providers
from minerva_ai.service.providers.limits import Limiter
from minerva_ai.service.tokens import hash_token


@dataclass
class AppState:
    """What the lifespan owns: created at start, closed at shutdown, nothing at import."""

    config: ServiceConfig
    pool: AsyncConnectionPool[AsyncConnection[Row]]
    bus: Bus
    follow: FollowHub
    live: LiveTokens
    metrics: MetricsHub
    providers: Providers
    limiter: Limiter
    partitions: Partitions = field(default_factory=Partitions)
    # Set on SIGTERM, MINERVA_DRAIN_DELAY before `stopping`: /api/health/ready answers 503.
    draining: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when the server starts shutting down: streams end instead of holding it up.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


async def app_state(request: Request) -> AppState:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a hop per request.
    state: AppState = request.app.state.minerva
    return state


StateDep = Annotated[AppState, Depends(app_state)]


async def nul_free(connection: HTTPConnection) -> None:
    """No path or query parameter holds a NUL character (400 naming it): every route's."""
    for name, value in connection.path_params.items():
        refuse_nul(value, f"path parameter {name}")
    for name, value in connection.query_params.multi_items():
        refuse_nul(value, f"query parameter {name}")


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def principal_for(state: AppState, token: str | None) -> Principal:
    """The principal a token stands for; 401 when missing, unknown or revoked."""
    if token is None:
        raise ApiError(
            401,
            "missing bearer token: send `Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    async with state.pool.connection() as conn:
        row = await (
            await conn.execute(queries()["authenticate_token"], {"token_hash": hash_token(token)})
        ).fetchone()
        if row is None:
            raise ApiError(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
        if row["touch_due"]:
            await conn.execute(queries()["touch_token"], {"id": row["id"]})
    return Principal(
        row["organization_id"],
        row["organization_name"],
        row["id"],
        row["name"],
        tuple(row["scopes"]),
    )


async def authenticate(request: Request, state: StateDep) -> Principal:
    principal = await principal_for(state, bearer_token(request.headers.get("authorization")))
    claimed = request.query_params.get("organization_id")
    if claimed is not None and claimed not in (
        str(principal.organization_id),
        principal.organization_name,
    ):
        raise ApiError(
            403, "organization_id does not match the token's organization", "organization_mismatch"
        )
    return principal


def scope(name: str) -> Any:
    """A dependency: the caller, who must hold ``name``."""

    async def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        principal.require(name)
        return principal

    return Depends(dependency)


Reader = Annotated[Principal, scope("read")]
Writer = Annotated[Principal, scope("write")]
Admin = Annotated[Principal, scope("admin")]
AnyToken = Annotated[Principal, Depends(authenticate)]
