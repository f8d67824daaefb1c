"""Suite runs: store one (``minerva-ai test suite`` does after each run), list them, show one."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request

from minerva_ai.service import test_runs
from minerva_ai.service.apidoc import answers, request_body
from minerva_ai.service.deps import Reader, StateDep, Writer
from minerva_ai.service.errors import bad_query
from minerva_ai.service.responses import JSONResponse, ok, page
from minerva_ai.service.schemas import Envelope, PageOf
from minerva_ai.service.test_runs import HEX64, RunStatus, TestRun

router = APIRouter(tags=["tests"])
Limit = Annotated[int, Query(ge=1, le=1000, description="runs per page")]


@router.post(
    "/test-runs",
    status_code=201,
    response_model=Envelope[TestRun],
    responses=answers(400, 401, 403, 404, 413, 422, 503),
    openapi_extra=request_body("TestRunCreate", test_runs.TestRunIn),
)
async def test_runs_create(request: Request, state: StateDep, principal: Writer) -> JSONResponse:
    """Store a suite run. Every test id of its cases must be a test of the feature, and its
    totals, pass rate and status must agree with its cases."""
    run = test_runs.parse(await request.body())
    async with state.pool.connection() as conn:
        return ok(await test_runs.create(conn, principal.organization_id, run), 201)


@router.get(
    "/test-runs",
    response_model=PageOf[TestRun],
    responses=answers(400, 401, 403, 404, 503),
)
async def test_runs_list(
    state: StateDep,
    principal: Reader,
    feature_id: Annotated[
        str | None, Query(max_length=200, description="the feature's id or name")
    ] = None,
    suite_hash: Annotated[str | None, Query(max_length=64)] = None,
    status: RunStatus | None = None,
    fingerprint: Annotated[
        str | None,
        Query(
            max_length=64,
            description="a hex fingerprint, or `live`: the feature's current one (needs "
            "feature_id)",
        ),
    ] = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> JSONResponse:
    """Suite runs, newest first (without their cases: `GET /test-runs/{id}` has them)."""
    if fingerprint is not None and fingerprint != "live" and not _hex(fingerprint):
        raise bad_query(
            "fingerprint", "fingerprint is 64 hex digits or `live`", "not a fingerprint"
        )
    async with state.pool.connection() as conn:
        items, next_cursor = await test_runs.listing(
            conn,
            principal.organization_id,
            feature=feature_id,
            suite_hash=suite_hash,
            status=status,
            fingerprint_filter=fingerprint,
            cursor=cursor,
            limit=limit,
        )
    return page(items, next_cursor)


def _hex(value: str) -> bool:
    return re.fullmatch(HEX64, value) is not None


@router.get(
    "/test-runs/{run_id}",
    response_model=Envelope[TestRun],
    responses=answers(400, 401, 403, 404, 503),
)
async def test_runs_show(state: StateDep, principal: Reader, run_id: str) -> JSONResponse:
    """One suite run with its cases."""
    async with state.pool.connection() as conn:
        return ok(await test_runs.get(conn, principal.organization_id, run_id))
