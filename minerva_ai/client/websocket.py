"""The client side of the service's WebSocket (docs/api/websocket.md): frames, what close
codes and ``error`` messages mean as exceptions, and connecting with retries.

Shared by log following (``realtime``), ``AsyncClient.watch_settings`` and the load-test
engine, so it imports neither httpx nor the client classes; ``websockets`` is imported
when a connection is opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from minerva_ai.client.backoff import Backoff
from minerva_ai.core.errors import AuthError, ServiceError, service_error
from minerva_ai.core.protocol import CLOSE_POLICY, CLOSE_UNAUTHENTICATED

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

JSON = dict[str, Any]
OPEN_TIMEOUT_S = 10
# The HTTP status each `error` code stands for; any other code is a bad request.
_ERROR_STATUS = {"unauthorized": 401, "forbidden": 403, "not_found": 404}


class HandshakeRefused(Exception):
    """The service answered the upgrade, but not with a WebSocket: trying again is no use."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class HandshakeLost(Exception):
    """No answer, a broken one, or a 5xx: trying again later may work."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def websocket_message(raw: str | bytes) -> tuple[str, JSON]:
    """A server WebSocket frame's ``(type, data)``; ``("", {})`` for anything else."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "", {}
    if not isinstance(message, dict) or not isinstance(message.get("data", {}), dict):
        return "", {}
    return str(message.get("type", "")), message.get("data") or {}


def subscription(channel: str, **data: Any) -> str:
    """The ``subscribe`` frame for ``channel``, with the other ``data`` fields given."""
    return orjson.dumps({"type": "subscribe", "data": {"channel": channel, **data}}).decode()


def message_error(data: JSON, url: str) -> ServiceError:
    """The exception an ``error`` message from the service stands for."""
    code = str(data.get("code") or "error")
    message = str(data.get("message") or code)
    return service_error(_ERROR_STATUS.get(code, 400), code, message, url=url)


def close_error(code: int | None, reason: str | None, url: str) -> ServiceError | None:
    """The exception a close code stands for; ``None`` when reconnecting may help."""
    if code == CLOSE_UNAUTHENTICATED:
        message = "the WebSocket was closed: not authenticated"
        return AuthError(401, "unauthorized", message, url=url)
    if code == CLOSE_POLICY:
        return ServiceError(400, "policy", f"the WebSocket was closed: {reason}", url=url)
    return None


async def connect(
    url: str, headers: Mapping[str, str], *, retry_for: float = 0.0
) -> ClientConnection:
    """Open the socket, sending ``headers`` with the upgrade (the token goes there, never in
    the URL). Failures that may pass (refused connections, timeouts, 5xx answers, a broken
    handshake) are retried with backoff for ``retry_for`` seconds, then raise
    ``HandshakeLost``; any other answer raises ``HandshakeRefused`` at once."""
    from websockets.asyncio.client import connect as open_connection
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    backoff = Backoff(retry_for)
    while True:
        try:
            return await open_connection(
                url, additional_headers=dict(headers), open_timeout=OPEN_TIMEOUT_S
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status < 500:
                raise HandshakeRefused(
                    f"the WebSocket was refused (HTTP {status})", status
                ) from None
            reason = f"the WebSocket handshake got HTTP {status}"
        except InvalidHandshake as exc:
            if not isinstance(exc.__cause__, EOFError | OSError):
                raise HandshakeRefused(f"the WebSocket handshake failed ({exc})") from None
            reason = f"the WebSocket handshake broke off ({exc})"
        except (OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
        delay = backoff.next_delay()
        if delay is None:
            raise HandshakeLost(reason)
        await asyncio.sleep(delay)
