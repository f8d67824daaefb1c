"""Logs: batch ingest, filtered pages (both directions), streamed export, SSE follow."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.responses import StreamingResponse

from minerva_ai.core.protocol import ExportFormat
from minerva_ai.service import logs, telemetry
from minerva_ai.service.apidoc import REF, answers, request_body
from minerva_ai.service.deps import Principal, Reader, StateDep, scope
from minerva_ai.service.errors import ApiError
from minerva_ai.service.log_follow import Overflow
from minerva_ai.service.responses import JSONResponse, dumps, ok
from minerva_ai.service.schemas import Envelope, IngestResult, LogEntryIn, LogPage

router = APIRouter(tags=["logs"])

Ingester = Annotated[Principal, scope("ingest")]
Limit = Annotated[int, Query(ge=1, le=1000, description="entries per page")]
NDJSON = "application/x-ndjson"
# Documented, not enforced by FastAPI: the handlers' own messages say more.
LogCursor = Annotated[
    str | None,
    Query(
        description="a log cursor (an entry's `cursor`)",
        json_schema_extra={"pattern": "^[0-9]{1,18}$"},
    ),
]
Time = Annotated[
    str | None,
    Query(description="ISO 8601 with an offset", json_schema_extra={"format": "date-time"}),
]
EXPORT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": NDJSON, "json": "application/json"}
_ENTRY = {"$ref": REF.format(model="LogEntry")}
EXPORT_CONTENT = {
    "application/json": {"schema": {"type": "array", "items": _ENTRY}},
    NDJSON: {"schema": {"type": "string", "description": "one LogEntry object per line"}},
    "text/csv": {
        "schema": {
            "type": "string",
            "description": "a header line, then one entry per line; cells that a spreadsheet "
            "would run as a formula start with ' unless csv_raw=true",
        }
    },
}


async def query_filter(
    state: StateDep,
    principal: Reader,
    feature: str | None = None,
    level: str | None = None,
    source: str | None = None,
    since: Time = None,
    until: Time = None,
    q: Annotated[str | None, Query(description="regex (docs/api/README.md#regex)")] = None,
    request_id: str | None = None,
) -> logs.LogFilter:
    """The filter query parameters of ``GET /logs`` and ``GET /logs/export``."""
    return await logs.log_filter(
        state.pool,
        principal,
        feature=feature,
        level=level,
        source=source,
        since=since,
        until=until,
        q=q,
        request_id=request_id,
    )


QueryFilter = Annotated[logs.LogFilter, Depends(query_filter)]


@router.post(
    "/logs",
    response_model=Envelope[IngestResult],
    responses=answers(400, 401, 403, 413, 422, 503),
    openapi_extra=request_body(
        "LogBatch",
        list[LogEntryIn] | LogEntryIn,
        media_types={"application/json": None, NDJSON: "one LogEntryIn object per line"},
    ),
)
async def logs_ingest(request: Request, state: StateDep, principal: Ingester) -> JSONResponse:
    """Store a JSON array (or NDJSON) of entries; bad ones are reported by position."""
    body = await request.body()
    ndjson = request.headers.get("content-type", "").split(";")[0].strip() == NDJSON
    parsed = logs.parse_body(body, ndjson)
    topic = f"logs:{principal.organization_id}"

    async def committed(seq: int) -> None:  # one notice per transaction; never fails
        await state.bus.publish(topic, {"seq": seq})

    async with state.pool.connection() as conn:
        result = await logs.ingest(
            conn,
            state.partitions,
            principal.organization_id,
            parsed,
            state.config.log_retention,
            committed,
        )
    telemetry.LOG_ENTRIES.labels("stored").inc(result.stored)
    telemetry.LOG_ENTRIES.labels("duplicate").inc(result.duplicates)
    telemetry.LOG_ENTRIES.labels("rejected").inc(len(result.rejected))
    if parsed and not result.stored and not result.duplicates:
        first = result.rejected[0]
        raise ApiError(
            422,
            f"no entry was accepted; the first problem: {first['error']}",
            "validation_failed",
            result.rejected,
        )
    return ok(result.as_dict())


@router.get("/logs", response_model=LogPage, responses=answers(400, 401, 403, 404, 503))
async def logs_list(
    state: StateDep,
    principal: Reader,
    filters: QueryFilter,
    limit: Limit = 100,
    cursor: LogCursor = None,
    after: LogCursor = None,
) -> JSONResponse:
    """Newest first (``cursor`` pages older); with ``after``, what committed since, oldest first."""
    after_seq = logs.parse_cursor(after, "after")
    before_seq = logs.parse_cursor(cursor, "cursor")
    head = after_seq
    async with state.pool.connection() as conn:
        if after_seq is not None:
            # Read before the page: every entry up to the head is committed (commits are
            # ordered per organization), so a page that is not full has seen all of them
            # and the poller may continue from the head, not rescan what did not match.
            head = await logs.current_cursor(conn, principal.organization_id)
        rows = await logs.list_logs(
            conn,
            principal.organization_id,
            filters,
            limit=limit,
            before=before_seq,
            after=after_seq,
        )
        gap = None
        if after_seq is not None:
            expired = await logs.expired_before(conn, principal.organization_id, after_seq)
            gap = {"reason": "expired", "before": expired} if expired else None
    items = [logs.entry_view(r) for r in rows]
    if after_seq is not None:
        last = int(items[-1]["cursor"]) if items else after_seq
        full = len(items) == limit
        next_cursor: str | None = str(last if full else max(last, head or 0))
    else:
        next_cursor = items[-1]["cursor"] if len(items) == limit else None
    body: dict[str, Any] = {
        "success": True,
        "data": items,
        "count": len(items),
        "next_cursor": next_cursor,
    }
    if gap:
        body["gap"] = gap
    return JSONResponse(body)


class _JsonArray:
    """Turn COPY's one-object-per-line output into a JSON array, chunk by chunk."""

    def __init__(self) -> None:
        self.started = False
        self.pending = False

    def feed(self, chunk: bytes) -> bytes:
        head = b"" if self.started else b"[\n"
        self.started = True
        if self.pending:
            head += b",\n"
        if chunk.endswith(b"\n"):
            self.pending = True
            return head + chunk[:-1].replace(b"\n", b",\n")
        self.pending = False
        return head + chunk.replace(b"\n", b",\n")

    def end(self) -> bytes:
        return (b"" if self.started else b"[") + b"\n]\n"


@router.get(
    "/logs/export",
    response_class=StreamingResponse,
    responses={
        200: {"description": "Every matching entry, oldest first.", "content": EXPORT_CONTENT},
        **answers(400, 401, 403, 404, 503),
    },
)
async def logs_export(
    state: StateDep,
    principal: Reader,
    filters: QueryFilter,
    format: ExportFormat = "jsonl",
    csv_raw: Annotated[bool, Query(description="do not neutralise formula cells")] = False,
) -> StreamingResponse:
    """Every matching entry, oldest first, streamed in constant memory (COPY TO STDOUT)."""
    statement = logs.export_statement(
        principal.organization_id, filters, "csv" if format == "csv" else "json", csv_raw
    )
    timeout_ms = int(state.config.export_timeout_s * 1000)

    async def stream() -> AsyncIterator[bytes]:
        wrapper = _JsonArray() if format == "json" else None
        async with state.pool.connection() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL statement_timeout = {timeout_ms}")
                    async for chunk in logs.export_chunks(conn, statement):
                        yield wrapper.feed(chunk) if wrapper else chunk
            except (asyncio.CancelledError, GeneratorExit):
                with contextlib.suppress(Exception):
                    await conn.cancel_safe()
                raise
        if wrapper:
            yield wrapper.end()

    name = f"logs-{datetime.now().strftime('%Y%m%dT%H%M%S')}.{format}"
    return StreamingResponse(
        stream(),
        media_type=EXPORT_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def sse_event(kind: str, data: Any, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: ".encode() + dumps(data) + b"\n\n"


@router.get(
    "/logs/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-sent events, until the client leaves: `log` (its id is the "
            "entry's cursor, its data a LogEntry), `gap`, `overflow`; a comment line as "
            "heartbeat. Resume with Last-Event-ID.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **answers(400, 401, 403, 404, 503),
    },
)
async def logs_stream(
    request: Request,
    state: StateDep,
    principal: Reader,
    feature: str | None = None,
    level: str | None = None,
    source: str | None = None,
    q: str | None = None,
    request_id: str | None = None,
    after: LogCursor = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events: `log` (id = cursor), `gap`, `overflow`; resume with Last-Event-ID."""
    filters = await logs.log_filter(  # no since/until: a stream follows from a cursor
        state.pool,
        principal,
        feature=feature,
        level=level,
        source=source,
        since=None,
        until=None,
        q=q,
        request_id=request_id,
    )
    start = logs.parse_cursor(last_event_id or after, "after")
    org_id = principal.organization_id
    heartbeat = state.config.ws_heartbeat_s
    if start is None:
        async with state.pool.connection() as conn:
            start = await logs.current_cursor(conn, org_id)

    async def stream() -> AsyncIterator[bytes]:
        async with state.pool.connection() as conn:
            expired = await logs.expired_before(conn, org_id, start)
        if expired:
            yield sse_event("gap", {"reason": "expired", "before": expired})
        follow = state.follow.follow(org_id, filters, start)
        stopping = asyncio.ensure_future(state.stopping.wait())
        revoked = asyncio.Event()  # the token was revoked, on any instance: the stream ends
        unwatch = state.live.watch(principal.token_id, revoked.set)
        ended = asyncio.ensure_future(revoked.wait())
        step: asyncio.Future[Any] | None = None
        last = start
        try:
            while True:
                if step is None:
                    step = asyncio.ensure_future(anext(follow))
                done, _ = await asyncio.wait(
                    {step, stopping, ended}, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED
                )
                if stopping in done or ended in done:
                    return
                if step not in done:
                    yield b": heartbeat\n\n"
                    continue
                batch, step = step.result(), None
                for row in batch:
                    view = logs.entry_view(row)
                    last = row["seq"]
                    yield sse_event("log", view, view["cursor"])
        except Overflow:
            yield sse_event("overflow", {"cursor": str(last)})
        finally:
            unwatch()
            stopping.cancel()
            ended.cancel()
            if step is not None:
                step.cancel()
                with contextlib.suppress(BaseException):
                    await step
            await follow.aclose()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
