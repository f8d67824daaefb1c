"""The ASGI application: ``create_app()`` builds it; its lifespan owns the pool and the bus."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from minerva_ai import __version__
from minerva_ai.core.protocol import API_PREFIX
from minerva_ai.service import alerts, apidoc, errors, metrics, telemetry
from minerva_ai.service.bus import Bus
from minerva_ai.service.config import ServiceConfig
from minerva_ai.service.db import Row
from minerva_ai.service.deps import AppState, nul_free
from minerva_ai.service.instance import InstanceHeader
from minerva_ai.service.jobs import Job, Jobs, Lease
from minerva_ai.service.live_tokens import LiveTokens
from minerva_ai.service.locks import JobName
from minerva_ai.service.log_follow import FollowHub
from minerva_ai.service.logs import maintain
from minerva_ai.service.metrics_live import MetricsHub
from minerva_ai.service.providers.call import Providers
from minerva_ai.service.providers.limits import Limiter
from minerva_ai.service.responses import JSONResponse, error_body
from minerva_ai.service.routes import alerts as alerts_routes
from minerva_ai.service.routes import (
    features,
    health,
    logs,
    model_tests,
    settings,
    silences,
    test_runs,
    tokens,
    websocket,
)
from minerva_ai.service.routes import metrics as metrics_routes
from minerva_ai.service.routes import webhooks as webhook_routes
from minerva_ai.service.serving import UVICORN_OPTIONS as UVICORN_OPTIONS  # the tests' import
from minerva_ai.service.webhooks import Dispatcher

LOG_MAINTENANCE_EVERY_S = 3600
log = logging.getLogger("minerva_ai.service")


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


def background_jobs(state: AppState) -> list[Job]:
    """The periodic work one instance does for all (service/jobs.py)."""

    async def maintain_logs(lease: Lease) -> None:
        # Tomorrow's log partitions, and retention's drops.
        async with state.pool.connection() as conn:
            dropped = await maintain(
                conn, state.partitions, state.config.log_retention, fence=lease.fence
            )
        if dropped:
            log.info("log retention dropped %s", ", ".join(dropped))

    async def expire_metrics(lease: Lease) -> None:
        async with state.pool.connection() as conn:
            removed = await metrics.expire(conn, state.config.metrics_retention, lease.fence)
        if removed:
            log.info("metrics retention removed %d minute rollups", removed)

    async def evaluate_alerts(lease: Lease) -> None:
        async with state.pool.connection() as conn:
            changed = await alerts.evaluate(conn, fence=lease.fence)
        for organization_id in changed:
            await state.bus.publish(alerts.TOPIC.format(organization_id=organization_id), {})

    return [
        Job(JobName.LOG_MAINTENANCE, LOG_MAINTENANCE_EVERY_S, maintain_logs),
        Job(JobName.ALERT_EVALUATION, state.config.alert_interval_s, evaluate_alerts),
        Job(JobName.METRICS_RETENTION, LOG_MAINTENANCE_EVERY_S, expire_metrics),
        Job(
            JobName.WEBHOOK_DELIVERY, state.config.webhook_interval_s, Dispatcher(state.config).run
        ),
    ]


class Server(uvicorn.Server):
    """uvicorn that, told to stop, first turns readiness to 503 for MINERVA_DRAIN_DELAY
    while still serving (a load balancer polling /api/health/ready stops sending work), then
    tells the app it is stopping before it waits for open responses, so SSE streams and
    follows end at once instead of holding the shutdown up."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app: Any = self.config.loaded_app
        while app is not None and not isinstance(app, FastAPI):
            app = getattr(app, "app", None)
        state = getattr(app.state, "minerva", None) if app is not None else None
        if isinstance(state, AppState):
            state.draining.set()
            deadline = time.monotonic() + state.config.drain_delay_s
            while time.monotonic() < deadline and not self.force_exit:  # a second Ctrl-C
                await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            state.stopping.set()
        await super().shutdown(sockets)


_frozen = False


def freeze_startup_objects() -> None:
    """Once per process, when the service has started: what start-up made and keeps (modules,
    routes, models: over 100,000 objects) leaves the garbage collector's generations, so a
    full collection no longer walks it: 45 ms on the benchmark machine, a pause that every
    request in flight waited out (bench/model_tests.py)."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


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
            connection_class=telemetry.TimedConnection,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "options": f"-c statement_timeout={config.statement_timeout_ms} -c timezone=UTC",
            },
        )
        await pool.open(wait=True, timeout=30)
        bus = Bus(config.redis_url)
        await bus.start()
        state = AppState(
            config=config,
            pool=pool,
            bus=bus,
            follow=FollowHub(pool, bus, config.export_timeout_s),
            live=LiveTokens(pool, bus, config.token_recheck_s),
            metrics=MetricsHub(pool, config.metrics_interval_s),
            providers=Providers.create(config.provider_keys, config.provider_allow),
            limiter=Limiter.connect(config.redis_url, config.clock),
        )
        state.live.start()
        app.state.minerva = state
        jobs = Jobs(
            pool, background_jobs(state) if config.run_jobs else [], ttl_s=config.job_lease_s
        )
        jobs.start()
        freeze_startup_objects()
        try:
            async with telemetry.sampling(pool, lambda: bus.connected):
                yield
        finally:
            state.draining.set()
            state.stopping.set()
            await jobs.close()
            await state.metrics.close()
            await state.live.close()
            await state.follow.close()
            await state.providers.close()
            await state.limiter.close()
            await bus.close()
            await pool.close()

    app = FastAPI(
        title="minerva-ai",
        version=__version__,
        summary="Management plane for AI features in production",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        dependencies=[Depends(nul_free)],
        # operationId = the handler's name (`features_list`): what generated clients call it
        generate_unique_id_function=lambda route: route.name,
    )
    errors.install(app)
    apidoc.install(app, API_PREFIX)
    app.include_router(health.router)
    routers = (
        features,
        metrics_routes,
        settings,
        model_tests,
        test_runs,
        logs,
        alerts_routes,
        silences,
        tokens,
        websocket,
    )
    for module in routers:
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(webhook_routes.router, prefix=API_PREFIX)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(telemetry.Instrumented)  # outside BodyLimit: 413s are counted too
    app.add_middleware(InstanceHeader, instance=config.instance)  # outermost: on every answer
    return app
