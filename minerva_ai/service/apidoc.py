"""The OpenAPI document: FastAPI's, completed with what FastAPI cannot see.

Bodies that handlers parse themselves (for their own messages, NDJSON, or the If-Match
alternative to ``version``) are declared with ``request_body()``; every operation under
the API prefix needs a bearer token; a bad request answers our error envelope, never
FastAPI's ``HTTPValidationError``. ``docs/api/openapi.yaml`` is this document, and
``GET /openapi.json`` serves it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from minerva_ai.service.schemas import ErrorResponse

REF = "#/components/schemas/{model}"
_BODIES: dict[str, TypeAdapter[Any]] = {}

MEANINGS = {
    400: "Bad input: a query parameter, path parameter or header is malformed (`details` "
    "names it), or the body is not JSON.",
    401: "No token, or an unknown or revoked one (`WWW-Authenticate: Bearer`).",
    403: "The token lacks the scope this needs, or `organization_id` is not the token's.",
    404: "Not found, or not this organization's.",
    409: "Conflict: the name is taken, or the version the change is based on is not the "
    "current one (`details.current_version`).",
    413: "The body is larger than the limit (10 MiB by default).",
    422: "The body is well-formed JSON but invalid: `details` lists every problem with its field.",
    428: 'Say which version the change is based on: `version` in the body, or `If-Match: "v3"`.',
    503: "The database is unreachable, or the query ran past its time limit.",
}


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers an operation can give, for its ``responses``."""
    return {s: {"model": ErrorResponse, "description": MEANINGS[s]} for s in statuses}


def request_body(
    name: str, shape: Any, *, media_types: dict[str, str | None] | None = None
) -> dict[str, Any]:
    """``openapi_extra`` for an operation whose handler reads the body itself.

    ``shape`` (a model or a type) is published as component ``name``; ``media_types`` maps
    each accepted media type to a description of how the shape is carried in it
    (``None``: as JSON)."""
    _BODIES[name] = TypeAdapter(shape)
    content: dict[str, Any] = {}
    for media_type, how in (media_types or {"application/json": None}).items():
        if how is None:
            content[media_type] = {"schema": {"$ref": REF.format(model=name)}}
        else:
            content[media_type] = {"schema": {"type": "string", "description": how}}
    return {"requestBody": {"required": True, "content": content}}


def _plain(schema: Any) -> Any:
    """A schema without ``default: null``, as FastAPI writes it (null says nothing new)."""
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if not (k == "default" and v is None)}
    if isinstance(schema, list):
        return [_plain(v) for v in schema]
    return schema


def _add_bodies(components: dict[str, Any]) -> None:
    for name, adapter in _BODIES.items():
        schema = _plain(adapter.json_schema(ref_template=REF, mode="validation"))
        for ref_name, definition in schema.pop("$defs", {}).items():
            known = components.setdefault(ref_name, definition)
            if known != definition:  # one name, two shapes: the document would lie
                raise RuntimeError(f"two different schemas are both named {ref_name!r}")
        components[name] = schema


def _complete(operation: dict[str, Any], path: str, prefix: str) -> None:
    responses = operation["responses"]
    validation = responses.get("422", {}).get("content", {}).get("application/json", {})
    if validation.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
        del responses["422"]  # FastAPI's own, for an error our handler answers as 400
    if path.startswith(prefix):
        operation["security"] = [{"bearer": []}]


def build(app: FastAPI, prefix: str) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    _add_bodies(schemas)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token of the organization (`minerva-ai auth token create`).",
        }
    }
    for path, operations in document["paths"].items():
        for operation in operations.values():
            _complete(operation, path, prefix)
    components["schemas"] = dict(sorted(schemas.items()))
    return document


def install(app: FastAPI, prefix: str) -> None:
    """Serve ``build()`` as the app's document (computed once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app, prefix)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
