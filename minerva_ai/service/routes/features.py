"""The feature registry: list, create, show, change and delete an organization's features."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from minerva_ai.service import metrics, store
from minerva_ai.service.apidoc import answers
from minerva_ai.service.deps import AppState, Principal, Reader, StateDep, Writer
from minerva_ai.service.responses import JSONResponse, ok, page
from minerva_ai.service.schemas import (
    Envelope,
    Feature,
    FeatureCreate,
    FeatureDeleted,
    FeatureStatus,
    FeatureUpdate,
    PageOf,
)

router = APIRouter(tags=["features"])
Limit = Annotated[int, Query(ge=1, le=1000, description="items per page")]


def view(row: dict[str, Any]) -> dict[str, Any]:
    return row  # a fresh dict per row already: copying 1,000 of them costs ~10% of a list


Window = Annotated[
    str,
    Query(
        description="with include_metrics: the metrics window (`5m`, `1h`, `1d`)",
        json_schema_extra={"pattern": "^[1-9][0-9]{0,5}[mhd]$"},
    ),
]


async def with_metrics(
    state: AppState, principal: Principal, rows: list[dict[str, Any]], window: str
) -> list[dict[str, Any]]:
    """The features with their current metrics: every feature's, computed in one query
    at most once per MINERVA_METRICS_INTERVAL per instance however many lists ask (the
    plan's batch; each item's `as_of` says when)."""
    span = metrics.parse_span(window, "window", state.config.metrics_retention)
    if not rows:
        return rows
    found = await state.metrics.snapshot(principal.organization_id, span)
    by_id = {item["feature_id"]: item for item in found}
    newer = [row["id"] for row in rows if row["id"] not in by_id]
    if newer:  # created since the snapshot: computed now
        async with state.pool.connection() as conn:
            query = metrics.Query(principal.organization_id, newer)
            by_id.update((i["feature_id"], i) for i in await metrics.current(conn, query, span))
    return [{**row, "metrics": by_id.get(row["id"])} for row in rows]


async def _list(
    state: AppState,
    principal: Principal,
    status: FeatureStatus | None,
    search: str | None,
    limit: int,
    cursor: str | None,
    window: str | None,
) -> JSONResponse:
    async with state.pool.connection() as conn:
        rows, next_cursor = await store.list_features(
            conn,
            principal.organization_id,
            status=status,
            search=search,
            cursor=cursor,
            limit=limit,
        )
    if window is not None:
        rows = await with_metrics(state, principal, rows, window)
    return page(rows, next_cursor)


@router.get("/features", response_model=PageOf[Feature], responses=answers(400, 401, 403, 503))
async def features_list(
    state: StateDep,
    principal: Reader,
    status: FeatureStatus | None = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
    include_metrics: bool = False,
    window: Window = "5m",
    organization_id: Annotated[str | None, Query(description="must be the token's")] = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> JSONResponse:
    """The organization's features by name; with include_metrics, each one's current metrics."""
    metrics.parse_span(window, "window", state.config.metrics_retention)
    return await _list(
        state, principal, status, search, limit, cursor, window if include_metrics else None
    )


@router.get(
    "/features/optimized",
    response_model=PageOf[Feature],
    responses=answers(400, 401, 403, 503),
)
async def features_optimized(
    state: StateDep,
    principal: Reader,
    status: FeatureStatus | None = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
    window: Window = "5m",
    limit: Limit = 100,
    cursor: str | None = None,
) -> JSONResponse:
    """The plan's batched list: the features with their current metrics, as
    `GET /features?include_metrics=true`."""
    return await _list(state, principal, status, search, limit, cursor, window)


@router.post(
    "/features",
    status_code=201,
    response_model=Envelope[Feature],
    responses=answers(400, 401, 403, 409, 413, 422, 503),
)
async def features_create(state: StateDep, principal: Writer, body: FeatureCreate) -> JSONResponse:
    fields = body.model_dump()
    fields["display_name"] = fields["display_name"] or body.name
    async with state.pool.connection() as conn:
        row = await store.create_feature(conn, principal, fields)
    return ok(view(row), 201)


@router.get(
    "/features/{feature}",
    response_model=Envelope[Feature],
    responses=answers(400, 401, 403, 404, 503),
)
async def features_show(
    state: StateDep,
    principal: Reader,
    feature: str,
    include_metrics: bool = False,
    window: Window = "5m",
) -> JSONResponse:
    metrics.parse_span(window, "window", state.config.metrics_retention)
    async with state.pool.connection() as conn:
        row = await store.get_feature(conn, principal.organization_id, feature)
    if include_metrics:
        (row,) = await with_metrics(state, principal, [row], window)
    return ok(view(row))


@router.patch(
    "/features/{feature}",
    response_model=Envelope[Feature],
    responses=answers(400, 401, 403, 404, 413, 422, 503),
)
async def features_update(
    state: StateDep, principal: Writer, feature: str, body: FeatureUpdate
) -> JSONResponse:
    async with state.pool.connection() as conn:
        row = await store.update_feature(
            conn, principal.organization_id, feature, body.model_dump(exclude_none=True)
        )
    return ok(view(row))


@router.delete(
    "/features/{feature}",
    response_model=Envelope[FeatureDeleted],
    responses=answers(400, 401, 403, 404, 503),
)
async def features_delete(state: StateDep, principal: Writer, feature: str) -> JSONResponse:
    async with state.pool.connection() as conn:
        row = await store.delete_feature(conn, principal.organization_id, feature)
    return ok({"id": row["id"], "name": row["name"], "deleted": True})
