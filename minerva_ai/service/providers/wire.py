"""What the HTTP providers share: reading a JSON answer strictly, and turning an error
answer (401, 429 with Retry-After, 5xx, a malformed body) into a ProviderError."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from minerva_ai.service.providers.types import ProviderError

MAX_MESSAGE_CHARS = 500


def malformed(why: str) -> ProviderError:
    return ProviderError("provider_error", f"the provider's answer is malformed: {why}")


def json_object(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise malformed("not JSON") from None
    if not isinstance(document, dict):
        raise malformed("not a JSON object")
    return document


def text_field(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise malformed(f"{where} is not text")
    return value


def int_field(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise malformed(f"{where} is not a token count")
    return value


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a Retry-After header: a number, or an HTTP date (RFC 9110)."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        from datetime import UTC, datetime

        return max(0.0, (parsedate_to_datetime(raw) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def http_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    message_of: Callable[[Any], str | None],
) -> ProviderError:
    """The error an answer other than 2xx stands for, with the provider's own message."""
    try:
        message = message_of(orjson.loads(body))
    except orjson.JSONDecodeError:
        message = None
    if message is None:
        text = body.decode("utf-8", "replace").strip()
        message = text[:MAX_MESSAGE_CHARS] or "(no message)"
    message = f"HTTP {status}: {message[:MAX_MESSAGE_CHARS]}"
    if status == 429:
        return ProviderError("rate_limited", message, status, retry_after(headers))
    return ProviderError("provider_error", message, status, retry_after(headers))
