"""Metrics: a feature's current figures, its time series, and live updates over SSE.

The WebSocket's `metrics` channel (service/channels.py) sends the same `metrics_update`
data as the SSE streams here; both are fed by one computation per instance
(service/metrics_live.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from starlette.responses import StreamingResponse

from minerva_ai.service import logs, metrics, store
from minerva_ai.service.apidoc import answers
from minerva_ai.service.deps import AppState, Principal, Reader, StateDep
from minerva_ai.service.errors import bad_query
from minerva_ai.service.metrics_live import sse_frame
from minerva_ai.service.responses import JSONResponse, ok
from minerva_ai.service.routes.features import Window
from minerva_ai.service.routes.logs import Time
from minerva_ai.service.schemas import Envelope, Metrics, MetricsSeries

router = APIRouter(tags=["metrics"])

IncludeTests = Annotated[
    bool, Query(description="count calls made by `minerva-ai test` (source `test`) too")
]
ByModel = Annotated[
    str | None, Query(description="`model`: split the figures by the model that answered")
]
Step = Annotated[
    str,
    Query(
        description="the series' step, 1m to 1d (`1m`, `15m`, `1h`, `1d`)",
        json_schema_extra={"pattern": "^[1-9][0-9]{0,5}[mhd]$"},
    ),
]
_STREAM_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-sent events until the client leaves: `metrics_update` at once "
        "and every MINERVA_METRICS_INTERVAL seconds; a comment line as heartbeat.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
}


def _by_model(by: str | None) -> bool:
    if by is None:
        return False
    if by != "model":
        raise bad_query("by", f"by {by!r} is not a split: use by=model", "only `model`")
    return True


async def _feature_query(
    state: AppState, principal: Principal, feature: str, include_tests: bool, by: str | None
) -> metrics.Query:
    by_model = _by_model(by)
    async with state.pool.connection() as conn:
        row = await store.get_feature(conn, principal.organization_id, feature)
    return metrics.Query(principal.organization_id, [row["id"]], include_tests, by_model)


@router.get(
    "/features/{feature}/metrics/current",
    response_model=Envelope[Metrics],
    responses=answers(400, 401, 403, 404, 503),
)
async def metrics_current(
    state: StateDep,
    principal: Reader,
    feature: str,
    window: Window = "5m",
    by: ByModel = None,
    include_tests: IncludeTests = False,
) -> JSONResponse:
    """The feature's figures over the window, with health score, trend and status."""
    span = metrics.parse_span(window, "window", state.config.metrics_retention)
    query = await _feature_query(state, principal, feature, include_tests, by)
    async with state.pool.connection() as conn:
        (item,) = await metrics.current(conn, query, span)
    return ok(item)


@router.get(
    "/features/{feature}/metrics",
    response_model=Envelope[MetricsSeries],
    responses=answers(400, 401, 403, 404, 503),
)
async def metrics_series(
    state: StateDep,
    principal: Reader,
    feature: str,
    since: Time = None,
    until: Time = None,
    step: Step = "1m",
    by: ByModel = None,
    include_tests: IncludeTests = False,
) -> JSONResponse:
    """The feature's figures per step (every step present, empty ones with no_data);
    defaults: the last hour by minute. At most 10,000 points."""
    retention = state.config.metrics_retention
    span = metrics.parse_span(step, "step", metrics.STEP_MAX)
    first, last = logs.parse_query_time(since, "since"), logs.parse_query_time(until, "until")
    now = datetime.now(UTC)
    start, end = metrics.series_bounds(first, last, span, now)
    if start < metrics.minute_floor(now) - retention:
        message = f"since is past the metrics retention ({metrics.span_text(retention)})"
        raise bad_query("since", message, "past retention")
    query = await _feature_query(state, principal, feature, include_tests, by)
    async with state.pool.connection() as conn:
        return ok(await metrics.series(conn, query, start, end, span))


async def _stream(
    state: AppState, principal: Principal, span: timedelta, feature_id: UUID | None
) -> StreamingResponse:
    """`metrics_update` events until the client leaves, the server stops or the token is
    revoked; a heartbeat comment while nothing comes."""

    async def events() -> AsyncIterator[bytes]:
        # Watching starts with the body: a response never sent leaves no watcher behind.
        watcher = state.metrics.watch(principal.organization_id, span, feature_id)
        stopping = asyncio.ensure_future(state.stopping.wait())
        revoked = asyncio.Event()
        unwatch = state.live.watch(principal.token_id, revoked.set)
        ended = asyncio.ensure_future(revoked.wait())
        step: asyncio.Future[Any] | None = None
        try:
            while True:
                if step is None:
                    step = asyncio.ensure_future(watcher.next())
                done, _ = await asyncio.wait(
                    {step, stopping, ended},
                    timeout=state.config.ws_heartbeat_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if stopping in done or ended in done:
                    return
                if step not in done:
                    yield b": heartbeat\n\n"
                    continue
                data, step = step.result(), None
                yield sse_frame(data)
        finally:
            watcher.close()
            unwatch()
            for future in (stopping, ended, step):
                if future is not None:
                    future.cancel()
                    with contextlib.suppress(BaseException):
                        await future

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/features/{feature}/metrics/stream",
    response_class=StreamingResponse,
    responses={**_STREAM_ANSWER, **answers(400, 401, 403, 404, 503)},
)
async def metrics_stream(
    state: StateDep, principal: Reader, feature: str, window: Window = "5m"
) -> StreamingResponse:
    """Server-sent events: `metrics_update` with the feature's current metrics."""
    span = metrics.parse_span(window, "window", state.config.metrics_retention)
    async with state.pool.connection() as conn:
        row = await store.get_feature(conn, principal.organization_id, feature)
    return await _stream(state, principal, span, row["id"])


@router.get(
    "/metrics/stream",
    response_class=StreamingResponse,
    responses={**_STREAM_ANSWER, **answers(400, 401, 403, 503)},
)
async def metrics_stream_all(
    state: StateDep, principal: Reader, window: Window = "5m"
) -> StreamingResponse:
    """Server-sent events: `metrics_update` with every feature's current metrics."""
    span = metrics.parse_span(window, "window", state.config.metrics_retention)
    return await _stream(state, principal, span, None)
