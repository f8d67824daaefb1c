"""The ASGI application: ``create_app()`` builds it; its lifespan owns the pool and the bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from minerva_ai import __version__
from minerva_ai.service import errors
from minerva_ai.service.bus import Bus
from minerva_ai.service.config import ServiceConfig
from minerva_ai.service.db import Row
from minerva_ai.service.deps import AppState
from minerva_ai.service.responses import JSONResponse, error_body
from minerva_ai.service.routes import features, health, settings, tokens, websocket

API_PREFIX = "/api/platform/ai-management"


def _size(limit: int) -> str:
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if limit >= factor and limit % factor == 0:
            return f"{limit // factor} {unit}"
    return f"{limit} bytes"


class BodyLimit:
    """Refuse bodies over the limit with 413 before a handler reads them whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self) -> JSONResponse:
        return JSONResponse(
            error_body(
                "payload_too_large",
                f"request bodies are limited to {_size(self.limit)} ({self.limit} bytes)",
            ),
            413,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._too_large()(scope, receive, send)
            return
        received = 0
        too_large = started = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                too_large = True
                raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # FastAPI turns a failed body read into its own 400: once the body has run
            # over, whatever the app answers is replaced by the 413.
            nonlocal started
            if too_large and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large or started:
                raise
        if too_large and not started:
            await self._too_large()(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def create_app(config: ServiceConfig | None = None) -> FastAPI:
    """Build the service; configuration comes from the environment unless given."""
    config = config or ServiceConfig.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool: AsyncConnectionPool[AsyncConnection[Row]] = AsyncConnectionPool(
            config.database_url,
            min_size=2,
            max_size=config.pool_max_size,
            timeout=5,  # a request waits at most this for a connection, then answers 503
            open=False,
            connection_class=AsyncConnection[Row],
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "options": f"-c statement_timeout={config.statement_timeout_ms} -c timezone=UTC",
            },
        )
        await pool.open(wait=True, timeout=30)
        bus = Bus(config.redis_url)
        await bus.start()
        app.state.minerva = AppState(config=config, pool=pool, bus=bus)
        try:
            yield
        finally:
            await bus.close()
            await pool.close()

    app = FastAPI(
        title="minerva-ai",
        version=__version__,
        summary="Management plane for AI features in production",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    errors.install(app)
    app.include_router(health.router)
    for module in (features, settings, tokens, websocket):
        app.include_router(module.router, prefix=API_PREFIX)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    return app


# How every uvicorn that serves this app is configured (supervisor, workers, tests).
UVICORN_OPTIONS: dict[str, object] = {
    "http": "httptools",
    "ws": "websockets-sansio",
    "loop": "uvloop",
    "timeout_graceful_shutdown": 10,
    "log_level": "warning",
    "proxy_headers": False,
}
