"""Silences: while one matches an alert, its notifications are recorded but not sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from psycopg.types.json import Jsonb

from minerva_ai.core.timeparse import parse_duration
from minerva_ai.service import store
from minerva_ai.service.alert_schemas import Silence, SilenceCreate
from minerva_ai.service.apidoc import answers
from minerva_ai.service.db import Row, queries
from minerva_ai.service.deps import Reader, StateDep, Writer
from minerva_ai.service.errors import ApiError
from minerva_ai.service.responses import JSONResponse, ok, page
from minerva_ai.service.schemas import Envelope, PageOf

router = APIRouter(tags=["silences"])
MAX_SILENCE_DAYS = 90


def silence_view(row: Row, now: datetime) -> dict[str, Any]:
    keys = ("id", "feature_id", "feature", "rule", "severity", "labels", "starts_at", "ends_at")
    view = {key: row[key] for key in keys}
    view.update(comment=row["comment"], created_by=row["created_by"], created_at=row["created_at"])
    view["active"] = row["starts_at"] <= now < row["ends_at"]
    return view


def _unprocessable(field: str, message: str) -> ApiError:
    return ApiError(422, f"{field}: {message}", details=[{"field": field, "message": message}])


@router.post(
    "/silences",
    status_code=201,
    response_model=Envelope[Silence],
    responses=answers(400, 401, 403, 404, 413, 422, 503),
)
async def silences_create(state: StateDep, principal: Writer, body: SilenceCreate) -> JSONResponse:
    """Silence a feature's alerts (or every feature's), optionally only a rule, a severity
    or labels, from `starts_at` (now) until `ends_at` or for `duration`."""
    now = datetime.now(UTC)
    starts = body.starts_at or now
    if starts.tzinfo is None:
        raise _unprocessable("starts_at", "needs an offset (Z or +HH:MM)")
    if (body.ends_at is None) == (body.duration is None):
        raise _unprocessable("ends_at", "give ends_at or duration (one of them)")
    ends = body.ends_at or starts + parse_duration(body.duration or "0m")
    if ends.tzinfo is None:
        raise _unprocessable("ends_at", "needs an offset (Z or +HH:MM)")
    if ends <= max(starts, now):
        raise _unprocessable("ends_at", "must be after starts_at and in the future")
    if ends - starts > timedelta(days=MAX_SILENCE_DAYS):
        raise _unprocessable("ends_at", f"a silence lasts at most {MAX_SILENCE_DAYS} days")
    async with state.pool.connection() as conn:
        feature = None
        if body.feature is not None:
            feature = await store.get_feature(conn, principal.organization_id, body.feature)
        row = await (
            await conn.execute(
                queries()["insert_silence"],
                {
                    "organization_id": principal.organization_id,
                    "feature_id": feature["id"] if feature else None,
                    "rule": body.rule,
                    "severity": body.severity,
                    "labels": Jsonb(body.labels),
                    "starts_at": starts,
                    "ends_at": ends,
                    "comment": body.comment,
                    "created_by": f"token {principal.token_name} ({principal.token_id})",
                },
            )
        ).fetchone()
    assert row is not None
    return ok(silence_view({**row, "feature": feature["name"] if feature else None}, now), 201)


@router.get("/silences", response_model=PageOf[Silence], responses=answers(400, 401, 403, 503))
async def silences_list(
    state: StateDep,
    principal: Reader,
    include_expired: Annotated[bool, Query(description="also silences that have ended")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    """The organization's silences, latest ending first: active and upcoming ones, or all."""
    now = datetime.now(UTC)
    async with state.pool.connection() as conn:
        rows = await (
            await conn.execute(
                queries()["list_silences"],
                {
                    "organization_id": principal.organization_id,
                    "active_at": None if include_expired else now,
                    "limit": limit,
                },
            )
        ).fetchall()
    return page([silence_view(r, now) for r in rows], None)


@router.delete(
    "/silences/{silence_id}",
    response_model=Envelope[Silence],
    responses=answers(400, 401, 403, 404, 503),
)
async def silences_expire(state: StateDep, principal: Writer, silence_id: str) -> JSONResponse:
    """Expire a silence now (it stays listed with include_expired)."""
    now = datetime.now(UTC)
    ident = store.as_uuid(silence_id)
    async with state.pool.connection() as conn:
        done = None
        if ident is not None:
            done = await (
                await conn.execute(
                    queries()["expire_silence"],
                    {"id": ident, "organization_id": principal.organization_id, "at": now},
                )
            ).fetchone()
        if done is None:
            raise ApiError(404, f"silence {silence_id!r} not found")
        row = await (await conn.execute(queries()["silence_by_id"], {"id": ident})).fetchone()
    assert row is not None
    return ok(silence_view(row, now))
