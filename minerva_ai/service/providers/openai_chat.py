"""The OpenAI chat-completions wire format (OpenAI, Azure-style gateways, vLLM, Ollama,
llama.cpp server): ``POST {base_url}/chat/completions``, ``base_url`` ending in ``/v1`` as
the official SDK takes it."""

from __future__ import annotations

from typing import Any

from minerva_ai.service.providers.types import Answer, CallInput
from minerva_ai.service.providers.wire import int_field, json_object, malformed, text_field

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def request(
    definition: dict[str, Any], call: CallInput, key: str | None
) -> tuple[str, dict[str, str], dict[str, Any]]:
    base = (definition.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
    messages: list[dict[str, Any]] = [
        {"role": role, "content": content} for role, content in call.messages
    ]
    if call.image is not None:
        last = max(i for i, m in enumerate(messages) if m["role"] == "user")
        text = messages[last]["content"]
        messages[last] = {
            "role": "user",
            "content": [
                *([{"type": "text", "text": text}] if text else []),
                {"type": "image_url", "image_url": {"url": call.image.data_url()}},
            ],
        }
    body: dict[str, Any] = {"model": definition["model"], "messages": messages}
    body.update(definition.get("parameters") or {})
    if definition.get("response_format") is not None:
        body["response_format"] = definition["response_format"]
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return f"{base}/chat/completions", headers, body


def error_message(document: Any) -> str | None:
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        message = document["error"].get("message")
        return str(message) if message else None
    return None


def parse(body: bytes) -> Answer:
    document = json_object(body)
    choices = document.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise malformed("no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise malformed("choices[0] has no message")
    content = message.get("content")
    text = text_field(content if content is not None else "", "choices[0].message.content")
    usage: dict[str, Any] = document["usage"] if isinstance(document.get("usage"), dict) else {}
    return Answer(
        text,
        int_field(usage.get("prompt_tokens", 0), "usage.prompt_tokens"),
        int_field(usage.get("completion_tokens", 0), "usage.completion_tokens"),
        document.get("model") if isinstance(document.get("model"), str) else None,
    )
