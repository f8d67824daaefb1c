"""Webhook endpoints of the caller's organization: alerts' notifications are sent there."""

from __future__ import annotations

from fastapi import APIRouter

from minerva_ai.service.apidoc import answers
from minerva_ai.service.deps import Admin, Principal, Reader, StateDep
from minerva_ai.service.responses import JSONResponse, ok, page
from minerva_ai.service.schemas import (
    CreatedWebhook,
    Envelope,
    PageOf,
    Webhook,
    WebhookCreate,
    WebhookDeleted,
    WebhookSecret,
    WebhookTestResult,
)
from minerva_ai.service.webhooks import Webhooks, public

router = APIRouter(tags=["webhooks"])


def _actor(principal: Principal) -> str:
    return f"{principal.token_name} ({principal.token_id})"


@router.get("/webhooks", response_model=PageOf[Webhook], responses=answers(400, 401, 403, 503))
async def webhooks_list(state: StateDep, principal: Reader) -> JSONResponse:
    async with state.pool.connection() as conn:
        found = await Webhooks(state.config).list(conn, principal.organization_id)
    return page([public(w) for w in found], None)


@router.post(
    "/webhooks",
    status_code=201,
    response_model=Envelope[CreatedWebhook],
    responses=answers(400, 401, 403, 409, 413, 422, 503),
)
async def webhooks_create(state: StateDep, principal: Admin, body: WebhookCreate) -> JSONResponse:
    async with state.pool.connection() as conn:
        created = await Webhooks(state.config).create(
            conn, principal.organization_id, _actor(principal), body.model_dump()
        )
    return ok(public(created), 201)


@router.delete(
    "/webhooks/{webhook_id}",
    response_model=Envelope[WebhookDeleted],
    responses=answers(400, 401, 403, 404, 503),
)
async def webhooks_delete(state: StateDep, principal: Admin, webhook_id: str) -> JSONResponse:
    async with state.pool.connection() as conn:
        deleted = await Webhooks(state.config).delete(conn, principal.organization_id, webhook_id)
    return ok(deleted)


@router.post(
    "/webhooks/{webhook_id}/rotate-secret",
    response_model=Envelope[WebhookSecret],
    responses=answers(400, 401, 403, 404, 503),
)
async def webhooks_rotate_secret(
    state: StateDep, principal: Admin, webhook_id: str
) -> JSONResponse:
    async with state.pool.connection() as conn:
        rotated = await Webhooks(state.config).rotate(conn, principal.organization_id, webhook_id)
    return ok(rotated)


@router.post(
    "/webhooks/{webhook_id}/test",
    response_model=Envelope[WebhookTestResult],
    responses=answers(400, 401, 403, 404, 503),
)
async def webhooks_test(state: StateDep, principal: Admin, webhook_id: str) -> JSONResponse:
    async with state.pool.connection() as conn:
        result = await Webhooks(state.config).send_test(conn, principal.organization_id, webhook_id)
    return ok(result)
