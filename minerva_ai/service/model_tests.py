"""Model and prompt tests: what a request asks (parse), what it runs on (live settings, a
prompt as it was in version N, or candidate settings that are validated and not stored),
and what it leaves behind (a stored result, and a log entry per attempt, source ``test``)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID, uuid4

import orjson
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from minerva_ai.core.fingerprint import fingerprint
from minerva_ai.core.templates import PROMPT_REF
from minerva_ai.service import store
from minerva_ai.service.bodies import parse_body
from minerva_ai.service.db import Row, queries
from minerva_ai.service.errors import ApiError, not_found
from minerva_ai.service.feature_settings import validate_sections
from minerva_ai.service.logs import Statement
from minerva_ai.service.providers import call as calls
from minerva_ai.service.providers.policy import KeyPolicy
from minerva_ai.service.providers.templates import MissingVariables, render
from minerva_ai.service.providers.types import CallInput, Image

Conn = store.Conn
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # what Anthropic accepts; OpenAI takes more
MAX_CONTENT_CHARS = 256 * 1024
IMAGE_TYPES = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}
CANDIDATE_SECTIONS = ("models", "prompts")
TEST_SOURCE = "test"
ANSWER_KEYS = (
    "status",
    "output",
    "tokens",
    "model",
    "provider",
    "provider_model",
    "error",
    "attempts",
    "simulated",
)


class ImageIn(BaseModel):
    """An image input: a URL (passed to the provider untouched, never fetched by the
    service) or base64 ``data`` with its ``media_type``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    url: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=8192)
    data: str | None = None
    media_type: Literal["image/png", "image/jpeg", "image/gif", "image/webp"] | None = None


class TestRequestIn(BaseModel):
    """``POST /features/{id}/test`` (``settings`` is checked as a settings write is)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["model", "prompt"] = "model"
    content: str = Field(default="", max_length=MAX_CONTENT_CHARS)
    variables: dict[str, str] = Field(default_factory=dict)
    modelId: str | None = Field(default=None, max_length=64)
    prompt: str | None = Field(
        default=None, description="a prompt name, or NAME@N: the prompt as in version N"
    )
    image: ImageIn | None = None
    settings: dict[str, Any] | None = Field(
        default=None, description="candidate models/prompts sections: validated, not stored"
    )
    repeat: int = Field(default=0, ge=0, le=1_000_000, description="the simulator's repeat index")
    cache: bool = Field(
        default=False,
        description="answer from the shared response cache when it has this call's answer "
        "(no model call, no log entry, no rate limit used); store a new answer there",
    )


_REQUEST = TypeAdapter(TestRequestIn)


def parse_request(body: bytes) -> TestRequestIn:
    request = parse_body(body, _REQUEST)
    for name, value in [("content", request.content), *request.variables.items()]:
        if "\x00" in value or "\x00" in name:
            raise ApiError(
                422,
                f"{name} contains a NUL character",
                details=[{"field": name, "message": "contains a NUL character"}],
            )
    return request


def image_input(image: ImageIn | None) -> tuple[Image | None, dict[str, Any] | None]:
    """The image to send, and what the stored result says of it (never the data)."""
    if image is None:
        return None, None
    if (image.url is None) == (image.data is None):
        raise _invalid("image", "give either url or data (with media_type)")
    if image.url is not None:
        return Image(url=image.url), {"url": image.url}
    if image.media_type is None:
        raise _invalid("image.media_type", "required with data")
    try:
        decoded = base64.b64decode(image.data or "", validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("image.data", "is not base64") from None
    if len(decoded) > MAX_IMAGE_BYTES:
        raise ApiError(
            413,
            f"image.data is {len(decoded)} bytes; images are limited to {MAX_IMAGE_BYTES} bytes",
            "payload_too_large",
            [{"field": "image.data", "message": f"larger than {MAX_IMAGE_BYTES} bytes"}],
        )
    if not decoded.startswith(IMAGE_TYPES[image.media_type]) or (
        image.media_type == "image/webp" and decoded[8:12] != b"WEBP"
    ):
        raise _invalid("image.data", f"is not a {image.media_type} image")
    return Image(data=image.data, media_type=image.media_type), {
        "media_type": image.media_type,
        "bytes": len(decoded),
    }


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, f"{field}: {message}", details=[{"field": field, "message": message}])


@dataclass
class Plan:
    """Everything a test call needs, resolved and checked before anything is spent."""

    feature: Row
    settings: dict[str, Any]
    settings_version: int
    candidate_hash: str | None
    prompt: str | None
    messages: list[tuple[str, str]]
    models: list[tuple[str, dict[str, Any]]]
    image: Image | None
    image_view: dict[str, Any] | None

    def call_input(self, repeat: int) -> CallInput:
        return CallInput(tuple(self.messages), self.image, repeat)


def _candidate(raw: dict[str, Any], keys: KeyPolicy) -> tuple[dict[str, Any], str]:
    unknown = sorted(set(raw) - set(CANDIDATE_SECTIONS))
    problems = [
        {"field": f"settings.{name}", "message": "a test can try models and prompts only"}
        for name in unknown
    ]
    clean, found = validate_sections({k: v for k, v in raw.items() if k not in unknown}, keys)
    problems += [{**p, "field": f"settings.{p['field']}"} for p in found]
    if problems:
        message = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise ApiError(422, f"the candidate settings are invalid: {message}", details=problems)
    digest = hashlib.sha256(orjson.dumps(clean, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return clean, f"sha256:{digest[:16]}"


async def _prompt(
    conn: Conn, feature: Row, settings: dict[str, Any], ref: str
) -> tuple[dict[str, Any], str]:
    match = PROMPT_REF.match(ref)
    if match is None:
        raise _invalid("prompt", "expected NAME or NAME@VERSION (e.g. summarize@3)")
    name, version = match.group(1), match.group(2)
    prompts = settings.get("prompts", {})
    where = "the settings"
    if version is not None:
        row = await store.get_settings(conn, feature["id"], int(version))
        prompts, where = row["settings"].get("prompts", {}), f"settings version {version}"
    if name not in prompts:
        known = ", ".join(sorted(prompts)) or "none"
        raise not_found(f"prompt {name!r} in {where} (prompts: {known})")
    return prompts[name], ref


def _messages(request: TestRequestIn, prompt: dict[str, Any] | None) -> list[tuple[str, str]]:
    variables = dict(request.variables)
    if prompt is not None:
        if request.content and "input" not in variables:
            variables["input"] = request.content
        if "messages" in prompt:
            templates = [(m["role"], m["content"]) for m in prompt["messages"]]
        else:
            templates = [("user", prompt["template"])]
    elif request.type == "prompt":
        if not request.content:
            raise _invalid("content", "a prompt test without `prompt` needs the template here")
        templates = [("user", request.content)]
    else:
        if not request.content and request.image is None:
            raise _invalid("content", "say what to send to the model")
        return [("user", request.content)]
    missing: list[str] = []
    rendered: list[tuple[str, str]] = []
    for role, template in templates:
        try:
            rendered.append((role, render(template, variables)))
        except MissingVariables as exc:
            missing += [n for n in exc.names if n not in missing]
    if missing:
        raise ApiError(
            400,
            f"missing variable{'s' if len(missing) > 1 else ''}: {', '.join(missing)}",
            "missing_variables",
            [{"field": f"variables.{name}", "message": "missing"} for name in missing],
        )
    return rendered


async def plan(
    conn: Conn, org_id: UUID, feature_ref: str, request: TestRequestIn, keys: KeyPolicy
) -> Plan:
    feature = await (
        await conn.execute(
            queries()["feature_for_test"],
            {"organization_id": org_id, "ref": feature_ref, "ref_id": store.as_uuid(feature_ref)},
        )
    ).fetchone()
    if feature is None:
        raise not_found(f"feature {feature_ref!r}")
    settings = dict(feature["settings"])
    candidate_hash = None
    if request.settings is not None:
        clean, candidate_hash = _candidate(request.settings, keys)
        settings.update(clean)
    prompt, prompt_ref = (None, None)
    if request.prompt is not None:
        prompt, prompt_ref = await _prompt(conn, feature, settings, request.prompt)
    image, image_view = image_input(request.image)
    messages = _messages(request, prompt)
    if not any(role == "user" for role, _ in messages):
        # A chat prompt of system lines only: the input is what the user says (and where
        # an image goes).
        messages.append(("user", request.content))
    try:
        models = calls.chain(settings.get("models", {}), request.modelId)
    except KeyError as exc:
        if exc.args[0] is None:
            raise _invalid("modelId", "the feature has no primary model: name one") from None
        known = ", ".join(sorted(settings.get("models", {}).get("definitions", {}))) or "none"
        raise not_found(f"model {request.modelId!r} (models: {known})") from None
    refusals = calls.key_refusals(keys, models)
    if refusals:
        raise ApiError(
            422,
            "; ".join(refusals),
            "key_not_allowed",
            [{"field": r.split(": ", 1)[0], "message": r.split(": ", 1)[1]} for r in refusals],
        )
    return Plan(
        feature,
        settings,
        feature["settings_version"],
        candidate_hash,
        prompt_ref,
        messages,
        models,
        image,
        image_view,
    )


def answer_part(outcome: calls.CallResult, elapsed_ms: float) -> dict[str, Any]:
    """What the model chain gave: the part of a result the response cache keeps."""
    final = outcome.final
    return {
        "status": final.status,
        "output": {
            "response": final.response,
            "processingTime": round(elapsed_ms, 3),
            "cost": outcome.cost,
        },
        "tokens": {"input": outcome.tokens_in, "output": outcome.tokens_out},
        "model": final.model,
        "provider": final.provider,
        "provider_model": final.provider_model,
        "error": final.error,
        "attempts": [a.as_dict() for a in outcome.attempts],
        "simulated": outcome.simulated,
    }


def result_view(
    test_id: UUID,
    created_at: datetime,
    plan: Plan,
    request: TestRequestIn,
    request_id: str,
    answer: dict[str, Any],
    cached: bool = False,
) -> dict[str, Any]:
    """A test result: ``answer`` (``answer_part``, new or from the cache) and how it came
    about."""
    return {
        "id": str(test_id),
        "feature_id": str(plan.feature["id"]),
        "feature": plan.feature["name"],
        "type": request.type,
        **{k: answer[k] for k in ANSWER_KEYS},
        "prompt": plan.prompt,
        "rendered_prompt": "\n\n".join(content for _, content in plan.messages),
        "messages": [{"role": role, "content": content} for role, content in plan.messages],
        "input": request.content,
        "variables": request.variables,
        "image": plan.image_view,
        "repeat": request.repeat,
        "settings_version": plan.settings_version,
        "candidate_hash": plan.candidate_hash,
        "fingerprint": fingerprint(plan.settings),
        "cached": cached,
        "request_id": request_id,
        "created_at": created_at,
    }


def attempt_logs(view: dict[str, Any], finished: datetime) -> list[tuple[dict[str, Any], Any]]:
    """One log entry per attempt, as ``logs.ingest`` takes them."""
    entries: list[tuple[dict[str, Any], Any]] = []
    for i, attempt in enumerate(view["attempts"]):
        failed = attempt["status"] != "success"
        what = attempt["error"]["message"] if failed else f"{attempt['tokens']['output']} tokens"
        entries.append(
            (
                {"index": i},
                {
                    "id": f"test:{view['id']}:{i}",
                    "timestamp": finished.isoformat(),
                    "feature": view["feature_id"],
                    "level": "error" if failed else "info",
                    "message": f"test {attempt['status']}: model {attempt['model']}: {what}",
                    "source": TEST_SOURCE,
                    "request_id": view["request_id"],
                    "model": attempt["model"],
                    "latency_ms": attempt["latency_ms"],
                    "tokens_in": attempt["tokens"]["input"],
                    "tokens_out": attempt["tokens"]["output"],
                    "cost": attempt["cost"],
                    "status": attempt["status"],
                    "attributes": {
                        "test_id": view["id"],
                        "attempt": i,
                        "provider": attempt["provider"],
                        "simulated": attempt["simulated"],
                        "error_kind": attempt["error"]["kind"] if failed else None,
                    },
                },
            )
        )
    return entries


def new_ids() -> tuple[UUID, str, datetime]:
    return uuid4(), uuid4().hex, datetime.now(UTC)


def save_statement(org_id: UUID, view: dict[str, Any]) -> Statement:
    """Storing the result: run by ``logs.ingest`` in the transaction of its attempts' logs."""
    return (
        queries()["insert_model_test"],
        {
            "id": view["id"],
            "organization_id": org_id,
            "feature_id": view["feature_id"],
            "created_at": view["created_at"],
            "status": view["status"],
            "model": view["model"],
            "prompt": view["prompt"],
            "request_id": view["request_id"],
            "result": Jsonb(
                view, dumps=lambda v: orjson.dumps(v, option=orjson.OPT_UTC_Z).decode()
            ),
        },
    )


async def save(conn: Conn, org_id: UUID, view: dict[str, Any]) -> None:
    await conn.execute(*save_statement(org_id, view))


def _stored(row: Row) -> dict[str, Any]:
    # Results stored before the cache and fingerprints existed lack those two fields.
    return {
        "cached": False,
        "fingerprint": None,
        **row["result"],
        "created_at": row["created_at"],
        "feature": row["feature"],
    }


async def get(conn: Conn, org_id: UUID, test_id: str) -> dict[str, Any]:
    try:
        ident = UUID(test_id)
    except ValueError:
        raise not_found(f"test {test_id!r}") from None
    row = await (
        await conn.execute(queries()["get_model_test"], {"organization_id": org_id, "id": ident})
    ).fetchone()
    if row is None:
        raise not_found(f"test {test_id!r}")
    return _stored(row)


async def history(
    conn: Conn,
    org_id: UUID,
    feature_id: UUID,
    *,
    status: str | None,
    model: str | None,
    prompt: str | None,
    since: datetime | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    before_at, before_id = store.time_position(cursor)
    rows = await (
        await conn.execute(
            queries()["list_model_tests"],
            {
                "organization_id": org_id,
                "feature_id": feature_id,
                "status": status,
                "model": model,
                "prompt": prompt,
                "since": since,
                "before_at": before_at,
                "before_id": before_id,
                "limit": limit + 1,
            },
        )
    ).fetchall()
    items = [_stored(r) for r in rows[:limit]]
    next_cursor = store.time_cursor(rows, limit, lambda r: (r["created_at"], r["result"]["id"]))
    return items, next_cursor
