"""A JSON request body checked against a pydantic model by hand (for the operations whose
body the service reads itself): 400 for what is not a JSON object, 422 naming every field."""

from __future__ import annotations

from typing import TypeVar

import orjson
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from minerva_ai.service.errors import ApiError

T = TypeVar("T")


def parse_body(body: bytes, adapter: TypeAdapter[T]) -> T:
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}", "bad_request") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "the body must be a JSON object", "bad_request")
    try:
        return adapter.validate_python(raw)
    except PydanticValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"]) or "body", "message": err["msg"]}
            for err in exc.errors(include_url=False)
        ]
        message = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise ApiError(422, message, details=problems) from None
