"""API tokens of the caller's organization, and who the caller is."""

from __future__ import annotations

from fastapi import APIRouter

from minerva_ai.service import store
from minerva_ai.service.apidoc import answers
from minerva_ai.service.deps import Admin, AnyToken, StateDep
from minerva_ai.service.responses import JSONResponse, ok, page
from minerva_ai.service.schemas import (
    Envelope,
    IssuedToken,
    PageOf,
    Token,
    TokenCreate,
    TokenRevoked,
    Whoami,
)

router = APIRouter(tags=["auth"])


@router.get("/auth/whoami", response_model=Envelope[Whoami], responses=answers(400, 401, 403, 503))
async def whoami(state: StateDep, principal: AnyToken) -> JSONResponse:
    async with state.pool.connection() as conn:
        tokens = await store.list_tokens(conn, principal.organization_id)
    token = next(t for t in tokens if t["id"] == principal.token_id)
    return ok(
        {
            "organization": {"id": principal.organization_id, "name": principal.organization_name},
            "token": token,
        }
    )


@router.get("/tokens", response_model=PageOf[Token], responses=answers(400, 401, 403, 503))
async def tokens_list(state: StateDep, principal: Admin) -> JSONResponse:
    async with state.pool.connection() as conn:
        tokens = await store.list_tokens(conn, principal.organization_id)
    return page(tokens, None)


@router.post(
    "/tokens",
    status_code=201,
    response_model=Envelope[IssuedToken],
    responses=answers(400, 401, 403, 413, 422, 503),
)
async def tokens_create(state: StateDep, principal: Admin, body: TokenCreate) -> JSONResponse:
    scopes: list[str] = list(dict.fromkeys(body.scopes))
    async with state.pool.connection() as conn:
        token = await store.create_token(
            conn, principal.organization_id, body.name or f"{'+'.join(scopes)} token", scopes
        )
    return ok(token, 201)


@router.delete(
    "/tokens/{token_id}",
    response_model=Envelope[TokenRevoked],
    responses=answers(400, 401, 403, 404, 503),
)
async def tokens_revoke(state: StateDep, principal: Admin, token_id: str) -> JSONResponse:
    async with state.pool.connection() as conn:
        row = await store.revoke_token(conn, principal.organization_id, token_id)
    await state.live.announce(row["id"])  # its WebSockets and SSE streams end, everywhere
    return ok({"id": row["id"], "revoked": True, "revoked_at": row["revoked_at"]})
