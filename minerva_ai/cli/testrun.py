"""``minerva-ai test``: build a test request from flags and local files, describe a result,
compare two, and export a feature's tests (the rules of ``logs export``: --out is all or
nothing, CSV cells a spreadsheet would run are neutralised)."""

from __future__ import annotations

import base64
import difflib
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from minerva_ai.cli.output import Column, Output
from minerva_ai.cli.settings_edit import load_settings_file
from minerva_ai.core.errors import ConfigError, GateFailed

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # what the service accepts
IMAGE_TYPES = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}
EXPORT_COLUMNS = [
    Column("id", "ID"),
    Column("created_at", "CREATED", kind="time"),
    Column("feature", "FEATURE"),
    Column("type", "TYPE"),
    Column("status", "STATUS"),
    Column("model", "MODEL"),
    Column("provider", "PROVIDER"),
    Column("prompt", "PROMPT"),
    Column("output.processingTime", "MS"),
    Column("tokens.input", "TOKENS_IN"),
    Column("tokens.output", "TOKENS_OUT"),
    Column("output.cost", "COST"),
    Column("simulated", "SIMULATED"),
    Column("settings_version", "VERSION"),
    Column("candidate_hash", "CANDIDATE"),
    Column("request_id", "REQUEST_ID"),
    Column("error.kind", "ERROR"),
    Column("input", "INPUT"),
    Column("rendered_prompt", "RENDERED_PROMPT"),
    Column("output.response", "RESPONSE"),
]
HISTORY_COLUMNS = [
    Column("id", "ID"),
    Column("created_at", "CREATED", kind="time"),
    Column("status", "STATUS", styles={"success": "green", "error": "red", "timeout": "yellow"}),
    Column("model", "MODEL"),
    Column("prompt", "PROMPT"),
    Column("output.processingTime", "MS"),
    Column("tokens.input", "IN"),
    Column("tokens.output", "OUT"),
    Column("output.cost", "COST"),
    Column("output.response", "RESPONSE"),
]


def parse_var(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` (the value may hold ``=``)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"{text!r} is not NAME=VALUE")
    return name.strip(), value


def read_vars_file(path: str) -> dict[str, str]:
    """Variables from a YAML or JSON mapping of names to text (numbers become text)."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise ConfigError(f"{path} is not valid YAML or JSON") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of variable names to values")
    variables = {}
    for name, value in document.items():
        if isinstance(value, dict | list) or value is None:
            raise ConfigError(f"{path}: variable {name!r} must be text or a number")
        variables[str(name)] = value if isinstance(value, str) else str(value)
    return variables


def read_image(path: str) -> dict[str, str]:
    """A local image as the API takes it: its type from its first bytes, at most 5 MiB."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_IMAGE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
    media_type = next((t for magic, t in IMAGE_TYPES.items() if data.startswith(magic)), None)
    if media_type is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        media_type = "image/webp"
    if media_type is None:
        raise ConfigError(f"{path} is not a PNG, JPEG, GIF or WebP image")
    return {"data": base64.b64encode(data).decode(), "media_type": media_type}


def read_input_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None


def build_request(
    *,
    content: str | None,
    image: str | None,
    prompt: str | None,
    variables: Iterable[tuple[str, str]],
    vars_file: str | None,
    model: str | None,
    settings_file: str | None,
) -> dict[str, Any]:
    """The body of ``POST /features/{id}/test``; local problems raise ConfigError (exit 2)."""
    merged = read_vars_file(vars_file) if vars_file else {}
    merged.update(dict(variables))
    body: dict[str, Any] = {"type": "prompt" if prompt else "model", "content": content or ""}
    if merged:
        body["variables"] = merged
    if prompt:
        body["prompt"] = prompt
    if model:
        body["modelId"] = model
    if image:
        body["image"] = (
            {"url": image} if image.startswith(("http://", "https://")) else read_image(image)
        )
    if settings_file:
        body["settings"] = load_settings_file(settings_file)
    return body


def summary(result: Mapping[str, Any]) -> str:
    """One line for stderr: model, latency, tokens, cost, simulated (and what failed)."""
    output, tokens = result["output"], result["tokens"]
    cost = output["cost"]
    parts = [
        f"{result['status']}",
        f"model {result['model']} ({result['provider']})",
        f"{output['processingTime']:.0f} ms",
        f"tokens {tokens['input']}/{tokens['output']}",
        "cost unknown" if cost is None else f"cost ${cost:.6f}",
    ]
    if result["simulated"]:
        parts.append("simulated")
    failed = [a for a in result["attempts"] if a["status"] != "success"]
    line = " · ".join(parts)
    for attempt in failed:
        line += f"\n  {attempt['model']}: {attempt['status']}: {attempt['error']['message']}"
    return line


def check(result: Mapping[str, Any]) -> None:
    """A test whose model answered with an error or a timeout is a failed test (exit 1)."""
    if result["status"] == "success":
        return
    error = result.get("error") or {}
    raise GateFailed(f"the test failed ({result['status']}): {error.get('message', 'no answer')}")


def compare_rows(left: Mapping[str, Any], right: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Field by field: ``{field, left, right}`` for model, status, latency, tokens, cost..."""
    fields = [
        ("status", "status"),
        ("model", "model"),
        ("provider", "provider"),
        ("prompt", "prompt"),
        ("settings_version", "settings_version"),
        ("candidate_hash", "candidate_hash"),
        ("latency_ms", "output.processingTime"),
        ("tokens_in", "tokens.input"),
        ("tokens_out", "tokens.output"),
        ("cost", "output.cost"),
        ("simulated", "simulated"),
        ("attempts", "attempts"),
    ]

    def get(item: Mapping[str, Any], key: str) -> Any:
        value: Any = item
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if key == "attempts":
            return len(value or [])
        return value

    return [
        {"field": name, "left": get(left, key), "right": get(right, key)} for name, key in fields
    ]


def response_diff(left: Mapping[str, Any], right: Mapping[str, Any]) -> list[str]:
    """A unified diff of the two responses, line by line (empty when they are equal)."""
    a = (left["output"]["response"] or "").splitlines()
    b = (right["output"]["response"] or "").splitlines()
    return list(
        difflib.unified_diff(a, b, f"test {left['id']}", f"test {right['id']}", lineterm="")
    )


def export_format(fmt: str | None, out: Path | None) -> str:
    if fmt is not None:
        return fmt
    suffix = out.suffix.lower().lstrip(".") if out is not None else ""
    suffix = "jsonl" if suffix == "ndjson" else suffix
    return suffix if suffix in ("json", "jsonl", "csv") else "jsonl"


def write_tests(sink: BinaryIO, results: Sequence[Mapping[str, Any]], fmt: str) -> None:
    """The results as JSON (one array), JSONL (whole results) or CSV (one row each)."""
    text = io.TextIOWrapper(sink, encoding="utf-8", newline="")
    try:
        Output.create(fmt, text, no_color=True, utc=True).items(results, EXPORT_COLUMNS)
        text.flush()
    finally:
        text.detach()
