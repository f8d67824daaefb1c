"""Errors the service answers with, and the handlers that turn anything into the envelope."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from minerva_ai.service.responses import JSONResponse, error_body

log = logging.getLogger("minerva_ai.service")

_DEFAULT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_failed",
    428: "precondition_required",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(Exception):
    """An answer other than success: status, code, message and optional details."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _DEFAULT_CODES.get(status, "error")
        self.message = message
        self.details = details
        self.headers = headers


def refuse_nul(value: str | None, field: str) -> None:
    """400 when ``value`` holds a NUL character, which PostgreSQL cannot store or compare."""
    if value is not None and "\x00" in value:
        raise ApiError(
            400,
            f"{field} contains a NUL character",
            "bad_request",
            [{"field": field, "message": "contains a NUL character"}],
        )


def bad_query(name: str, message: str, problem: str) -> ApiError:
    """400 for a query parameter: ``message`` for people, ``problem`` beside its name."""
    return ApiError(
        400, message, "bad_request", [{"field": f"query parameter {name}", "message": problem}]
    )


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def _respond(err: ApiError) -> JSONResponse:
    return JSONResponse(error_body(err.code, err.message, err.details), err.status, err.headers)


def _location(loc: tuple[Any, ...]) -> str:
    where = {"query": "query parameter ", "path": "path parameter ", "header": "header "}
    prefix = where.get(str(loc[0]), "") if loc else ""
    rest = [str(p) for p in loc[1:]] if loc and loc[0] in (*where, "body") else list(map(str, loc))
    if not rest:  # the whole body (or a whole group) is what is wrong
        return str(loc[0]) if loc else "body"
    return prefix + ".".join(rest)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path: Starlette's 405 names only the first
    route's, and a path such as /features has one route per method. A path the API names
    literally (/features/optimized) has its own methods, not those of /features/{feature}."""
    literal = request.app.openapi()["paths"].get(request.url.path)
    if literal is not None:
        return ", ".join(m for m in _METHODS if m.lower() in literal)
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _respond(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return _respond(ApiError(exc.status_code, str(exc.detail), headers=headers))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return _respond(ApiError(400, "the body is not valid JSON", "bad_request"))
        problems = [
            {"field": _location(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()
        ]
        status = 422 if any(e["loc"] and e["loc"][0] == "body" for e in exc.errors()) else 400
        message = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return _respond(ApiError(status, message, details=problems))

    @app.exception_handler(psycopg.errors.QueryCanceled)
    async def query_timeout(_: Request, exc: psycopg.errors.QueryCanceled) -> JSONResponse:
        return _respond(
            ApiError(503, "the query ran past its time limit; narrow the filters", "query_timeout")
        )

    @app.exception_handler(psycopg.OperationalError)
    async def database_down(_: Request, exc: psycopg.OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return _respond(ApiError(503, "the database is unavailable", headers={"Retry-After": "1"}))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _respond(ApiError(500, "internal error", "internal"))
