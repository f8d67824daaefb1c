"""JSON through orjson, in the envelopes of the API contract (docs/api/README.md)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette import responses

_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=_OPTIONS)


class JSONResponse(responses.JSONResponse):
    """Starlette's, encoded by orjson (FastAPI documents a JSONResponse's model)."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def ok(data: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"success": True, "data": data}, status_code, headers)


def page(items: list[Any], next_cursor: str | None) -> JSONResponse:
    return JSONResponse(
        {"success": True, "data": items, "count": len(items), "next_cursor": next_cursor}
    )


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"success": False, "error": {"code": code, "message": message, "details": details}}
