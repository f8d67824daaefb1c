"""Follow a feature's settings over the WebSocket: ``AsyncClient.watch_settings``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from minerva_ai.client import websocket
from minerva_ai.client.backoff import Backoff
from minerva_ai.core.errors import UnreachableError, service_error

JSON = dict[str, Any]


class SettingsSource(Protocol):
    """What a watch needs of its client (``AsyncClient``): the socket's address and
    credentials, and the settings over HTTP with their cache."""

    @property
    def url(self) -> str: ...

    @property
    def retry_for(self) -> float: ...

    def websocket_url(self, feature: str | None = None) -> str: ...

    def auth_headers(self) -> dict[str, str]: ...

    async def get_settings(self, feature: str) -> JSON: ...

    def remember_settings_update(self, keys: tuple[str, ...], update: JSON) -> None: ...


async def _open(client: SettingsSource, url: str) -> ClientConnection:
    """The socket, retried for ``client.retry_for``; a refusal becomes the service's error."""
    try:
        return await websocket.connect(url, client.auth_headers(), retry_for=client.retry_for)
    except websocket.HandshakeRefused as exc:
        status = exc.status or 400
        raise service_error(status, f"http_{status}", exc.reason, url=url) from None
    except websocket.HandshakeLost as exc:
        raise UnreachableError(client.url, exc.reason) from None


async def watch_settings(
    client: SettingsSource, feature: str, *, reconnect: bool = True
) -> AsyncIterator[JSON]:
    """Yield each new settings version of ``feature`` (``settings_update`` data), in order.

    After each (re)subscription, and when the service says updates were lost
    (``overflow``: this watcher read too slowly, or the service lost Redis for a while),
    the current settings are fetched over HTTP: a version published meanwhile is yielded
    then; versions are never repeated.
    """
    url = client.websocket_url(feature)
    subscribe = websocket.subscription("settings", feature=feature)
    last_version: int | None = None
    keys: tuple[str, ...] = (feature,)
    pause = Backoff(float("inf"))
    while True:
        socket = await _open(client, url)
        async with socket:
            try:  # the service may close the socket before the subscription is sent
                await socket.send(subscribe)
                async for raw in socket:
                    kind, data = websocket.websocket_message(raw)
                    if kind in ("subscribed", "overflow"):
                        # (Re)subscribed, or updates were lost on the way (the service says
                        # `overflow`): what is current now comes over HTTP.
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
                        raise websocket.message_error(data, url)
            except ConnectionClosed:
                pass
        closed = websocket.close_error(socket.close_code, socket.close_reason, url)
        if closed is not None:
            raise closed
        if not reconnect:
            return
        await asyncio.sleep(pause.next_delay() or 0.0)
