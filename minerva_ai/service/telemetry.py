"""The service's own Prometheus metrics: defined once here, recorded where things happen.

They are exposed only on the separate address of `server start --metrics-bind` (never on
the public port: they add up every organization's traffic). With ``--workers N`` each
worker writes its values to files under ``PROMETHEUS_MULTIPROC_DIR`` (the supervisor makes
that directory before any worker starts) and the supervisor's metrics server adds them
up (``serve_metrics``). Without ``--metrics-bind`` the values stay in the process, unread.
Names follow Prometheus' conventions: ``minerva_`` prefix, ``_total`` counters, ``_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from minerva_ai.core.protocol import API_PREFIX
from minerva_ai.service.db import Row, queries

SAMPLE_EVERY_S = 1.0  # pool and Redis state are sampled this often by each worker

# Latency buckets from a fast cached read (1 ms) to a long export page (30 s).
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

HTTP_REQUESTS = Counter(
    "minerva_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "minerva_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method and route template "
    "(streams count until they end).",
    ["method", "route"],
    buckets=_LATENCY,
)
LOG_ENTRIES = Counter(
    "minerva_log_entries_ingested",
    "Log entries received by POST /logs, by outcome (stored, duplicate, rejected).",
    ["outcome"],
)
WEBSOCKET_CLIENTS = Gauge(
    "minerva_websocket_clients",
    "WebSocket connections open now.",
    multiprocess_mode="livesum",
)
SSE_CLIENTS = Gauge(
    "minerva_sse_clients",
    "Server-sent event streams open now, by route template.",
    ["route"],
    multiprocess_mode="livesum",
)
QUEUE_OVERFLOWS = Counter(
    "minerva_queue_overflows",
    "Bounded queues that overflowed: a log follower (WebSocket or SSE) that fell behind, or "
    "a subscriber of the Redis fan-out (its client is told to read afresh).",
    ["queue"],
)
JOB_RUNS = Counter(
    "minerva_job_runs",
    "Runs of a background job on this instance (it led the job), by job.",
    ["job_name"],
)
JOB_FAILURES = Counter(
    "minerva_job_failures",
    "Runs of a background job that raised an error, by job.",
    ["job_name"],
)
JOB_DURATION = Histogram(
    "minerva_job_run_duration_seconds",
    "How long a background job's run took, by job.",
    ["job_name"],
    buckets=_LATENCY,
)
JOB_LAG = Gauge(
    "minerva_job_lag_seconds",
    "How late the last run of a job started after it was due (0 when on time), by job.",
    ["job_name"],
    multiprocess_mode="livemax",
)
JOB_LAST_SUCCESS = Gauge(
    "minerva_job_last_success_timestamp_seconds",
    "When a job's last successful run ended (Unix time), by job.",
    ["job_name"],
    multiprocess_mode="max",
)
POOL_CONNECTIONS = Gauge(
    "minerva_db_pool_connections",
    "PostgreSQL connections of the pools, by state (open, idle, max).",
    ["state"],
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "minerva_db_pool_requests_waiting",
    "Requests waiting now for a PostgreSQL connection from a pool.",
    multiprocess_mode="livesum",
)
POOL_WAITS = Counter(
    "minerva_db_pool_waits",
    "Requests that had to wait for a PostgreSQL connection (the pool had none idle).",
)
POOL_WAIT_SECONDS = Counter(
    "minerva_db_pool_wait_seconds",
    "Time requests spent waiting for a PostgreSQL connection (whole milliseconds per wait, "
    "as psycopg_pool counts them).",
)
POOL_TIMEOUTS = Counter(
    "minerva_db_pool_timeouts",
    "Requests that got no PostgreSQL connection in time (answered 503).",
)
DB_QUERY_DURATION = Histogram(
    "minerva_db_query_duration_seconds",
    "PostgreSQL statements run by the service, by named query (sql/queries/*.sql; "
    "`other` for statements built in code).",
    ["query"],
    buckets=_LATENCY,
)
REDIS_UP = Gauge(
    "minerva_redis_up",
    "1 while the instance's Redis pub/sub connection is up, 0 while live updates between "
    "instances are paused (the lowest of the workers).",
    multiprocess_mode="livemin",
)
REDIS_PUBLISH_FAILURES = Counter(
    "minerva_redis_publish_failures",
    "Publishes to Redis that failed (delivered on this instance only).",
)


# ---------------------------------------------------------------- HTTP, WebSocket and SSE


def _route(scope: Scope) -> str:
    """The matched route's template (`/api/.../features/{feature_id}`), never the raw path:
    a label per id would be a series per id. FastAPI leaves the router's own path in
    ``scope["route"]``, without the prefix it was included under."""
    path = getattr(scope.get("route"), "path", None)
    if not isinstance(path, str):
        return "unmatched"
    requested = str(scope.get("path", ""))
    if not path.startswith(API_PREFIX) and API_PREFIX + "/" in requested + "/":
        return API_PREFIX + path
    return path


class Instrumented:
    """ASGI middleware, outermost: counts and times every request by route template and
    status, and keeps the number of open WebSockets and SSE streams."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # labels() takes a lock and builds a key each time: keep the children it returns
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                HTTP_REQUESTS.labels(method, route, str(status)),
                HTTP_DURATION.labels(method, route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        stream: Gauge | None = None

        async def observed_send(message: Message) -> None:
            nonlocal status, stream
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = dict(message.get("headers") or ())
                if headers.get(b"content-type", b"").startswith(b"text/event-stream"):
                    stream = SSE_CLIENTS.labels(_route(scope))
                    stream.inc()
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            if stream is not None:
                stream.dec()
            self._observe(scope["method"], _route(scope), status, time.perf_counter() - started)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        accepted = False

        async def observed_send(message: Message) -> None:
            nonlocal accepted
            if message["type"] == "websocket.accept" and not accepted:
                accepted = True
                WEBSOCKET_CLIENTS.inc()
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            if accepted:
                WEBSOCKET_CLIENTS.dec()


# ---------------------------------------------------------------- PostgreSQL


class TimedConnection(AsyncConnection[Row]):
    """The pool's connections: each ``execute`` is timed under the named query it ran."""

    _names: dict[int, str] | None = None  # the identity of a (cached) query -> its name
    _timers: dict[str, Any] = {}  # noqa: RUF012 (shared by every connection on purpose)

    @classmethod
    def _timer(cls, query: object) -> Any:
        if cls._names is None:
            cls._names = {id(sql): name for name, sql in queries().items()}
        name = cls._names.get(id(query), "other")
        timer = cls._timers.get(name)
        if timer is None:  # created on first use: no empty series for queries never run
            timer = cls._timers[name] = DB_QUERY_DURATION.labels(name)
        return timer

    async def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await super().execute(query, *args, **kwargs)
        finally:
            self._timer(query).observe(time.perf_counter() - started)


# ---------------------------------------------------------------- what is sampled


def sample_pool(pool: AsyncConnectionPool[Any]) -> None:
    """The pool's gauges now, and its counters since the last sample."""
    stats = pool.pop_stats()
    POOL_CONNECTIONS.labels("open").set(stats.get("pool_size", 0))
    POOL_CONNECTIONS.labels("idle").set(stats.get("pool_available", 0))
    POOL_CONNECTIONS.labels("max").set(stats.get("pool_max", 0))
    POOL_WAITING.set(stats.get("requests_waiting", 0))
    POOL_WAITS.inc(stats.get("requests_queued", 0))
    POOL_WAIT_SECONDS.inc(stats.get("requests_wait_ms", 0) / 1000)
    POOL_TIMEOUTS.inc(stats.get("requests_errors", 0))


@contextlib.asynccontextmanager
async def sampling(pool: AsyncConnectionPool[Any], redis_up: Any) -> AsyncIterator[None]:
    """Sample the pool and Redis (``redis_up()``: bool) every second while inside."""

    async def loop() -> None:
        while True:
            sample_pool(pool)
            REDIS_UP.set(1 if redis_up() else 0)
            await asyncio.sleep(SAMPLE_EVERY_S)

    task = asyncio.create_task(loop(), name="telemetry-sampler")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ---------------------------------------------------------------- background jobs


def job_ran(name: str, due: float, started: float, ended: float, failed: bool) -> None:
    """Record one run of job ``name`` (times from ``time.time()``)."""
    JOB_RUNS.labels(name).inc()
    JOB_DURATION.labels(name).observe(max(0.0, ended - started))
    JOB_LAG.labels(name).set(max(0.0, started - due))
    if failed:
        JOB_FAILURES.labels(name).inc()
    else:
        JOB_LAST_SUCCESS.labels(name).set(ended)
