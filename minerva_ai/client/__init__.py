"""The Python client of the minerva-ai service: ``from minerva_ai.client import Client``.

``Client`` and ``AsyncClient`` live in ``minerva_ai.client.http`` and are loaded on first
use, so that the load test can use ``minerva_ai.client.websocket`` without httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from minerva_ai.client.http import AsyncClient, Client

__all__ = ["AsyncClient", "Client"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from minerva_ai.client import http

        return getattr(http, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
