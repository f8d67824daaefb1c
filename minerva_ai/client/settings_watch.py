"""Follow a feature's settings over the WebSocket: ``AsyncClient.watch_settings``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from minerva_ai.client.http import JSON, Backoff, websocket_message
from minerva_ai.core.errors import (
    AuthError,
    NotFoundError,
    ServiceError,
    UnreachableError,
)

if TYPE_CHECKING:
    from minerva_ai.client.http import AsyncClient

_CLOSED_UNAUTHENTICATED = 4401
_CLOSED_POLICY = 1008
_ERROR_STATUS = {"unauthorized": 401, "forbidden": 403, "not_found": 404}


def _error(status: int, code: str, message: str, url: str) -> ServiceError:
    if status in (401, 403):
        return AuthError(status, code, message, url=url)
    if status == 404:
        return NotFoundError(status, code, message, url=url)
    return ServiceError(status, code, message, url=url)


async def _connect(client: AsyncClient, url: str) -> ClientConnection:
    """Open the socket, retrying refused connections and 503s for ``client.retry_for``."""
    backoff = Backoff(client.retry_for)
    while True:
        try:
            return await connect(url, additional_headers=client.auth_headers(), open_timeout=10)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status != 503:
                raise _error(status, f"http_{status}", str(exc), url) from None
            reason = str(exc)
        except (OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
        delay = backoff.next_delay()
        if delay is None:
            raise UnreachableError(client.url, reason)
        await asyncio.sleep(delay)


async def watch_settings(
    client: AsyncClient, feature: str, *, reconnect: bool = True
) -> AsyncIterator[JSON]:
    """Yield each new settings version of ``feature`` (``settings_update`` data), in order.

    After each (re)subscription the current settings are fetched over HTTP: a version
    published while the socket was down is yielded then; versions are never repeated.
    """
    url = client.websocket_url(feature)
    subscribe = orjson.dumps(
        {"type": "subscribe", "data": {"channel": "settings", "feature": feature}}
    ).decode()
    last_version: int | None = None
    keys: tuple[str, ...] = (feature,)
    pause = Backoff(float("inf"))
    while True:
        socket = await _connect(client, url)
        async with socket:
            await socket.send(subscribe)
            try:
                async for raw in socket:
                    kind, data = websocket_message(raw)
                    if kind == "subscribed":
                        pause = Backoff(float("inf"))
                        keys = tuple(
                            {feature, str(data.get("feature_id")), str(data.get("feature"))}
                        )
                        current = await client.get_settings(feature)
                        if last_version is None or current["version"] > last_version:
                            caught_up = last_version is not None
                            last_version = current["version"]
                            if caught_up:
                                yield {**current, "feature": data.get("feature")}
                    elif kind == "settings_update":
                        version = data.get("version")
                        if not isinstance(version, int) or (
                            last_version is not None and version <= last_version
                        ):
                            continue
                        last_version = version
                        client.remember_settings_update(keys, data)
                        yield data
                    elif kind == "error":
                        code = str(data.get("code", "error"))
                        status = _ERROR_STATUS.get(code, 400)
                        raise _error(status, code, str(data.get("message", code)), url)
            except ConnectionClosedError:
                pass
        if socket.close_code == _CLOSED_UNAUTHENTICATED:
            raise AuthError(
                401, "unauthorized", "the WebSocket was closed: not authenticated", url=url
            )
        if socket.close_code == _CLOSED_POLICY:
            raise ServiceError(
                400, "policy", f"the WebSocket was closed: {socket.close_reason}", url=url
            )
        if not reconnect:
            return
        await asyncio.sleep(pause.next_delay() or 0.0)
