"""The Anthropic Messages wire format: ``POST {base_url}/v1/messages`` (``base_url`` as the
official SDK takes it, without ``/v1``), its version header, ``system`` apart from the
messages, content blocks, and ``max_tokens`` always sent."""

from __future__ import annotations

from typing import Any

from minerva_ai.service.providers.types import Answer, CallInput
from minerva_ai.service.providers.wire import int_field, json_object, malformed

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024


def max_tokens(definition: dict[str, Any]) -> int:
    value = (definition.get("parameters") or {}).get("max_tokens")
    return int(value) if value else DEFAULT_MAX_TOKENS


def request(
    definition: dict[str, Any], call: CallInput, key: str | None
) -> tuple[str, dict[str, str], dict[str, Any]]:
    base = (definition.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
    messages: list[dict[str, Any]] = [
        {"role": role, "content": content} for role, content in call.messages if role != "system"
    ]
    if call.image is not None:
        last = max(i for i, m in enumerate(messages) if m["role"] == "user")
        image = call.image
        source: dict[str, Any] = (
            {"type": "url", "url": image.url}
            if image.url
            else {"type": "base64", "media_type": image.media_type, "data": image.data}
        )
        text = messages[last]["content"]
        messages[last] = {
            "role": "user",
            "content": [
                {"type": "image", "source": source},
                *([{"type": "text", "text": text}] if text else []),
            ],
        }
    parameters = dict(definition.get("parameters") or {})
    parameters.pop("max_tokens", None)
    stop = parameters.pop("stop", None)
    body: dict[str, Any] = {
        "model": definition["model"],
        "max_tokens": max_tokens(definition),
        "messages": messages,
    }
    system = call.system()
    if system is not None:
        body["system"] = system
    if stop:
        body["stop_sequences"] = stop
    body.update(parameters)
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "anthropic-version": API_VERSION,
    }
    if key:
        headers["x-api-key"] = key
    return f"{base}/v1/messages", headers, body


def error_message(document: Any) -> str | None:
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        error = document["error"]
        message = error.get("message")
        kind = error.get("type")
        if message:
            return f"{kind}: {message}" if kind else str(message)
    return None


def parse(body: bytes) -> Answer:
    document = json_object(body)
    content = document.get("content")
    if not isinstance(content, list):
        raise malformed("no content blocks")
    texts = [
        block["text"]
        for block in content
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    ]
    usage: dict[str, Any] = document["usage"] if isinstance(document.get("usage"), dict) else {}
    return Answer(
        "".join(texts),
        int_field(usage.get("input_tokens", 0), "usage.input_tokens"),
        int_field(usage.get("output_tokens", 0), "usage.output_tokens"),
        document.get("model") if isinstance(document.get("model"), str) else None,
    )
