"""A feature's versioned settings: read (with ETag), write on a base version, history, rollback."""

from __future__ import annotations

import re
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Path, Query, Request
from starlette.responses import Response

from minerva_ai.service import store
from minerva_ai.service.apidoc import answers, request_body
from minerva_ai.service.deps import AppState, Principal, Reader, StateDep, Writer
from minerva_ai.service.errors import ApiError
from minerva_ai.service.feature_settings import validate_sections
from minerva_ai.service.responses import JSONResponse, ok, page
from minerva_ai.service.schemas import (
    MAX_VERSION,
    Envelope,
    HistoryEntry,
    PageOf,
    Rollback,
    SettingsVersion,
    SettingsWrite,
)

router = APIRouter(tags=["settings"])

_ETAG = re.compile(r'^(?:W/)?"?v?(\d+)"?$')
ETAG_HEADER = {
    "ETag": {
        "description": 'The version, as `"v<version>"`: send it back in If-None-Match or If-Match.',
        "schema": {"type": "string", "pattern": '^"v[0-9]+"$'},
    }
}


def _with_etag(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The answers of an operation whose 200 is a settings version, with its ETag."""
    return {200: {"headers": ETAG_HEADER}, **answers(*statuses)}


def etag(version: int) -> str:
    return f'"v{version}"'


def _none_match(header: str, version: int) -> bool:
    """Whether If-None-Match names this version: a list, weak tags (a proxy that compresses
    weakens ETags) and ``*`` all count, as RFC 9110 says."""
    current = etag(version)
    return any(
        tag.strip() == "*" or tag.strip().removeprefix("W/") == current for tag in header.split(",")
    )


def _version_from_etag(value: str) -> int:
    match = _ETAG.match(value.strip())
    if match is None:
        raise ApiError(
            400, f'If-Match {value!r} is not a settings version (expected "v3")', "bad_request"
        )
    return int(match.group(1))


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}", "bad_request") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", "bad_request")
    return body


def _refuse_unknown(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(
            422,
            f"unknown field {', '.join(unknown)}",
            details=[
                {"field": name, "message": f"unknown field (allowed: {', '.join(allowed)})"}
                for name in unknown
            ],
        )


def _positive(body: dict[str, Any], name: str, what: str = "") -> int | None:
    """``body[name]`` as a version number; None when absent or null; 422 otherwise."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 3.0 is an integer in JSON Schema
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_VERSION:
        raise ApiError(
            422,
            f"{name}{what} must be a positive integer (at most {MAX_VERSION})",
            details=[{"field": name, "message": f"must be an integer from 1 to {MAX_VERSION}"}],
        )
    return value


def _base_version(body: dict[str, Any], if_match: str | None) -> int:
    version = _positive(body, "version")
    if version is None and if_match is not None:
        return _version_from_etag(if_match)
    if version is None:
        raise ApiError(
            428,
            "say which version your change is based on: `version` in the body "
            'or an If-Match: "v<version>" header',
            "precondition_required",
        )
    return version


async def _publish(state: AppState, feature: dict[str, Any], view: dict[str, Any]) -> None:
    await state.bus.publish(f"settings:{feature['id']}", {**view, "feature": feature["name"]})


async def _write(
    state: AppState,
    principal: Principal,
    feature_ref: str,
    base: int,
    sections: dict[str, Any],
    rollback_of: int | None = None,
    dry_run: bool = False,
) -> JSONResponse:
    async with state.pool.connection() as conn:
        feature = await store.get_feature(conn, principal.organization_id, feature_ref)
        row, diff, written = await store.write_settings(
            conn, principal, feature, base, sections, rollback_of, dry_run
        )
    view = store.settings_view(row)
    if written:
        await _publish(state, feature, view)
    if dry_run:
        return ok({**view, "diff": diff, "dry_run": True})
    return ok(view, headers={"ETag": etag(row["version"])})


@router.get(
    "/features/{feature}/settings",
    response_model=Envelope[SettingsVersion],
    responses={
        200: {"headers": ETAG_HEADER},
        304: {"description": "Not modified: If-None-Match names the current version."},
        **answers(400, 401, 403, 404, 503),
    },
)
async def settings_get(
    state: StateDep,
    principal: Reader,
    feature: str,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    async with state.pool.connection() as conn:
        row = await store.get_feature(conn, principal.organization_id, feature)
        if if_none_match is not None and _none_match(if_none_match, row["settings_version"]):
            return Response(status_code=304, headers={"ETag": etag(row["settings_version"])})
        settings = await store.get_settings(conn, row["id"], row["settings_version"])
    return ok(store.settings_view(settings), headers={"ETag": etag(settings["version"])})


@router.put(
    "/features/{feature}/settings",
    response_model=Envelope[SettingsVersion],
    responses=_with_etag(400, 401, 403, 404, 409, 413, 422, 428, 503),
    openapi_extra=request_body("SettingsWrite", SettingsWrite),
)
async def settings_put(
    request: Request,
    state: StateDep,
    principal: Writer,
    feature: str,
    if_match: Annotated[str | None, Header()] = None,
    dry_run: Annotated[bool, Query(description="validate and diff, write nothing")] = False,
) -> JSONResponse:
    """Replace the sections the body names; sections it leaves out are kept.

    A change that changes nothing writes no version (the answer is the base version);
    `dry_run=true` validates and answers the version that would be written, with `diff`.
    """
    body = await _json_body(request)
    _refuse_unknown(body, ("version", "settings"))
    base = _base_version(body, if_match)
    sections, problems = validate_sections(
        body.get("settings", {}), state.config.provider_keys, state.config.alert_interval_s
    )
    if problems:
        message = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise ApiError(422, f"invalid settings: {message}", details=problems)
    return await _write(state, principal, feature, base, sections, dry_run=dry_run)


@router.get(
    "/features/{feature}/settings/history",
    response_model=PageOf[HistoryEntry],
    responses=answers(400, 401, 403, 404, 503),
)
async def settings_history(
    state: StateDep,
    principal: Reader,
    feature: str,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> JSONResponse:
    async with state.pool.connection() as conn:
        row = await store.get_feature(conn, principal.organization_id, feature)
        items, next_cursor = await store.settings_history(conn, row["id"], cursor, limit)
    return page(items, next_cursor)


@router.get(
    "/features/{feature}/settings/versions/{version}",
    response_model=Envelope[SettingsVersion],
    responses=_with_etag(400, 401, 403, 404, 503),
)
async def settings_version(
    state: StateDep,
    principal: Reader,
    feature: str,
    version: Annotated[int, Path(ge=1, le=MAX_VERSION)],
) -> JSONResponse:
    async with state.pool.connection() as conn:
        row = await store.get_feature(conn, principal.organization_id, feature)
        settings = await store.get_settings(conn, row["id"], version)
    return ok(store.settings_view(settings), headers={"ETag": etag(settings["version"])})


@router.post(
    "/features/{feature}/settings/rollback",
    response_model=Envelope[SettingsVersion],
    responses=_with_etag(400, 401, 403, 404, 409, 413, 422, 503),
    openapi_extra=request_body("Rollback", Rollback),
)
async def settings_rollback(
    request: Request, state: StateDep, principal: Writer, feature: str
) -> JSONResponse:
    """Create a new version equal to an old one (history is never rewritten)."""
    body = await _json_body(request)
    _refuse_unknown(body, ("version", "base_version"))
    target = _positive(body, "version", " (the one to roll back to)")
    if target is None:
        raise ApiError(
            422,
            "version (the one to roll back to) is required",
            details=[{"field": "version", "message": "required"}],
        )
    base = _positive(body, "base_version")
    async with state.pool.connection() as conn:
        row = await store.get_feature(conn, principal.organization_id, feature)
        if target > row["settings_version"]:
            # The feature exists (a 404 would say it does not): the body names no version.
            raise ApiError(
                422,
                f"version {target} does not exist: the latest is {row['settings_version']}",
                details=[{"field": "version", "message": "no such version"}],
            )
        old = await store.get_settings(conn, row["id"], target)
    base = base or row["settings_version"]
    return await _write(state, principal, feature, base, old["settings"], rollback_of=target)
