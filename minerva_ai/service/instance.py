"""Which instance answered: ``X-Minerva-Instance`` on every HTTP response and WebSocket
handshake, so that operators (and tests) behind a load balancer can tell instances apart."""

from __future__ import annotations

import os
import socket

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from minerva_ai.core.protocol import INSTANCE_HEADER

_HEADER = INSTANCE_HEADER.lower().encode()
_STARTS = ("http.response.start", "websocket.accept", "websocket.http.response.start")


def default_instance_id() -> str:
    """``hostname:pid``: stable for the life of the process, different in each worker."""
    return f"{socket.gethostname()}:{os.getpid()}"


class InstanceHeader:
    """Add ``X-Minerva-Instance: <id>`` to every response this process sends."""

    def __init__(self, app: ASGIApp, instance: str) -> None:
        self.app = app
        self.value = instance.encode("latin-1", "replace")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def tagged(message: Message) -> None:
            if message["type"] in _STARTS:
                headers = [(k, v) for k, v in message.get("headers") or [] if k.lower() != _HEADER]
                message = {**message, "headers": [*headers, (_HEADER, self.value)]}
            await send(message)

        await self.app(scope, receive, tagged)
