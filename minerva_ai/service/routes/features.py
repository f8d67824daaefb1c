"""The feature registry: list, create, show, change and delete an organization's features."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from minerva_ai.service import store
from minerva_ai.service.apidoc import answers
from minerva_ai.service.deps import Reader, StateDep, Writer
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


def view(row: dict[str, Any], include_metrics: bool = False) -> dict[str, Any]:
    if not include_metrics:
        return row  # a fresh dict per row already: copying 1,000 of them costs ~10% of a list
    return {**row, "metrics": None}  # no metrics capability yet: never invented


@router.get("/features", response_model=PageOf[Feature], responses=answers(400, 401, 403, 503))
async def features_list(
    state: StateDep,
    principal: Reader,
    status: FeatureStatus | None = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
    include_metrics: bool = False,
    organization_id: Annotated[str | None, Query(description="must be the token's")] = None,
    limit: Limit = 100,
    cursor: str | None = None,
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
    return page([view(r, include_metrics) for r in rows], next_cursor)


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
    state: StateDep, principal: Reader, feature: str, include_metrics: bool = False
) -> JSONResponse:
    async with state.pool.connection() as conn:
        row = await store.get_feature(conn, principal.organization_id, feature)
    return ok(view(row, include_metrics))


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
