"""Model and prompt tests: run one through the feature's providers and limits, list a
feature's past tests, show one."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from minerva_ai.service import model_tests, store, test_cache
from minerva_ai.service.apidoc import answers, request_body
from minerva_ai.service.db import queries
from minerva_ai.service.deps import Reader, StateDep, Writer
from minerva_ai.service.errors import ApiError
from minerva_ai.service.logs import ingest, parse_query_time
from minerva_ai.service.providers import call as calls
from minerva_ai.service.providers.limits import (
    Limits,
    LimitsUnavailable,
    RateLimited,
    Usage,
    Windows,
)
from minerva_ai.service.responses import JSONResponse, ok, page
from minerva_ai.service.schemas import CallStatus, Envelope, ErrorResponse, PageOf, TestResult

router = APIRouter(tags=["tests"])
Limit = Annotated[int, Query(ge=1, le=1000, description="tests per page")]
Time = Annotated[
    str | None,
    Query(description="ISO 8601 with an offset", json_schema_extra={"format": "date-time"}),
]
# The log sources whose attempts count against a feature's rate limits.
LIMITED_SOURCES = [model_tests.TEST_SOURCE]
RUN_ANSWERS: dict[int | str, dict[str, Any]] = {
    **answers(400, 401, 403, 404, 413, 422),
    429: {
        "model": ErrorResponse,
        "description": "A rate limit of the feature is reached: `details.limit` names it, "
        "`Retry-After` says when to try again.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
    503: {
        "model": ErrorResponse,
        "description": "The database is unreachable, or Redis, which keeps the rate limits, "
        "is (`limits_unavailable`: a feature with limits is never called without them).",
    },
}


@router.post(
    "/features/{feature}/test",
    response_model=Envelope[TestResult],
    responses=RUN_ANSWERS,
    openapi_extra=request_body("TestRequest", model_tests.TestRequestIn),
)
async def tests_run(
    request: Request, state: StateDep, principal: Writer, feature: str
) -> JSONResponse:
    """Call the feature's model (or `modelId`, or candidate `settings`) with text, a rendered
    prompt or an image. The answer is the result; a model that failed is a result too."""
    spec = model_tests.parse_request(await request.body())
    org_id = principal.organization_id
    async with state.pool.connection() as conn:
        plan = await model_tests.plan(conn, org_id, feature, spec, state.config.provider_keys)
    call_input = plan.call_input(spec.repeat)
    limits = Limits.of(plan.settings.get("rate_limits", {}))
    tokens = calls.estimate_tokens(plan.models, call_input)
    cost = calls.estimate_cost(plan.models, tokens)
    if limits.cost_per_day is not None and cost is None:
        raise ApiError(
            422,
            "the feature has a cost_per_day limit and a model of the chain has no known "
            "price: set `price` in its definition",
            "unpriced_model",
        )

    cache_key = None
    if spec.cache:
        cache_key = test_cache.key(org_id, plan.models, call_input)
        entry = await test_cache.get(state.limiter.redis, cache_key)
        if entry is not None:
            # A hit: the original answer (its latency and cost), stored as a test of its
            # own; no model call, no log entry, no rate limit used.
            test_id, request_id, created_at = model_tests.new_ids()
            view = model_tests.result_view(
                test_id, created_at, plan, spec, request_id, entry, cached=True
            )
            async with state.pool.connection() as conn:
                await model_tests.save(conn, org_id, view)
            return ok(view)

    async def usage(windows: Windows) -> Usage:
        async with state.pool.connection() as conn:
            row = await (
                await conn.execute(
                    queries()["provider_usage"],
                    {
                        "organization_id": org_id,
                        "feature_id": plan.feature["id"],
                        "sources": LIMITED_SOURCES,
                        "now": windows.now,
                        "minute_ago": windows.minute_ago,
                        "minute_start": windows.minute_start,
                        "day_start": windows.day_start,
                    },
                )
            ).fetchone()
        assert row is not None
        return Usage(row["requests"], row["tokens"], row["cost"])

    try:
        reservation = await state.limiter.reserve(
            str(plan.feature["id"]), limits, tokens, cost, usage
        )
    except RateLimited as exc:
        raise ApiError(
            429,
            f"the feature's {exc.limit} limit is reached; retry in {exc.retry_after} s",
            "rate_limited",
            {"limit": exc.limit, "retry_after": exc.retry_after},
            headers={"Retry-After": str(exc.retry_after)},
        ) from None
    except LimitsUnavailable as exc:
        raise ApiError(503, str(exc), "limits_unavailable", headers={"Retry-After": "1"}) from None
    test_id, request_id, created_at = model_tests.new_ids()
    started = time.perf_counter()
    outcome = await calls.call_chain(state.providers, plan.models, call_input)
    elapsed_ms = (time.perf_counter() - started) * 1000
    await state.limiter.settle(reservation, outcome.tokens_in + outcome.tokens_out, outcome.cost)
    answer = model_tests.answer_part(outcome, elapsed_ms)
    view = model_tests.result_view(test_id, created_at, plan, spec, request_id, answer)
    topic = f"logs:{org_id}"

    async def committed(seq: int) -> None:
        await state.bus.publish(topic, {"seq": seq})

    # The result and its attempts' log entries: one transaction, one round trip.
    async with state.pool.connection() as conn:
        await ingest(
            conn,
            state.partitions,
            org_id,
            model_tests.attempt_logs(view, created_at),
            state.config.log_retention,
            committed,
            features={view["feature_id"]: plan.feature["id"]},
            also=[model_tests.save_statement(org_id, view)],
        )
    if cache_key is not None and view["status"] == "success":  # errors are never cached
        await test_cache.put(state.limiter.redis, cache_key, answer, state.config.test_cache_ttl_s)
    return ok(view)


@router.get(
    "/features/{feature}/test/history",
    response_model=PageOf[TestResult],
    responses=answers(400, 401, 403, 404, 503),
)
async def tests_history(
    state: StateDep,
    principal: Reader,
    feature: str,
    status: CallStatus | None = None,
    model: Annotated[str | None, Query(max_length=64, description="the answering model")] = None,
    prompt: Annotated[
        str | None, Query(max_length=80, description="NAME (any version) or NAME@N")
    ] = None,
    since: Annotated[
        str | None,
        Query(description="ISO 8601 with an offset", json_schema_extra={"format": "date-time"}),
    ] = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> JSONResponse:
    """The feature's tests, newest first."""
    async with state.pool.connection() as conn:
        row = await store.get_feature(conn, principal.organization_id, feature)
        items, next_cursor = await model_tests.history(
            conn,
            principal.organization_id,
            row["id"],
            status=status,
            model=model,
            prompt=prompt,
            since=parse_query_time(since, "since"),
            cursor=cursor,
            limit=limit,
        )
    return page(items, next_cursor)


@router.get(
    "/tests/{test_id}",
    response_model=Envelope[TestResult],
    responses=answers(400, 401, 403, 404, 503),
)
async def tests_show(state: StateDep, principal: Reader, test_id: str) -> JSONResponse:
    async with state.pool.connection() as conn:
        return ok(await model_tests.get(conn, principal.organization_id, test_id))
