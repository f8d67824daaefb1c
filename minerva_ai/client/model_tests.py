"""``client.tests``: run a model or prompt test, read a feature's test history, one test."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from minerva_ai.client.resources import JSON, AsyncSender, Call, Sender, feature_path, segment

# A test waits for the model (timeout_s up to 600 s, and its fallbacks): read for longer.
RUN_TIMEOUT = httpx.Timeout(30.0, read=1800.0)
HISTORY_FILTERS = ("status", "model", "prompt", "since")


def test_call(feature: str, body: Mapping[str, Any]) -> Call:
    return Call("POST", f"{feature_path(feature)}/test", json=dict(body))


def history_params(filters: Mapping[str, Any] | None) -> dict[str, Any]:
    params = {k: (filters or {}).get(k) for k in HISTORY_FILTERS}
    since = params.get("since")
    if since is not None and not isinstance(since, str):
        params["since"] = since.isoformat()
    return params


def history_path(feature: str) -> str:
    return f"{feature_path(feature)}/test/history"


def show_call(test_id: str) -> Call:
    return Call("GET", f"/tests/{segment(test_id)}")


class ModelTests:
    """``client.tests`` (the ``write`` scope runs tests: they may cost money)."""

    def __init__(self, client: Sender) -> None:
        self._c = client

    def run(self, feature: str, body: Mapping[str, Any]) -> JSON:
        """The test result; a model that failed is a result too (``status``)."""
        with self._c.stream(test_call(feature, body), timeout=RUN_TIMEOUT) as response:
            result: JSON = orjson.loads(response.read())["data"]
        return result

    def history(
        self, feature: str, filters: Mapping[str, Any] | None = None, *, limit: int | None = None
    ) -> list[JSON]:
        """The feature's tests, newest first (``limit`` None or 0 = all)."""
        return list(self._c.paginate(history_path(feature), history_params(filters), limit))

    def get(self, test_id: str) -> JSON:
        return self._c.data(show_call(test_id))


class AsyncModelTests:
    """``client.tests`` of ``AsyncClient``."""

    def __init__(self, client: AsyncSender) -> None:
        self._c = client

    async def run(self, feature: str, body: Mapping[str, Any]) -> JSON:
        """The test result (read for as long as the model chain may take)."""
        async with self._c.stream(test_call(feature, body), timeout=RUN_TIMEOUT) as response:
            result: JSON = orjson.loads(await response.aread())["data"]
        return result

    async def history(
        self, feature: str, filters: Mapping[str, Any] | None = None, *, limit: int | None = None
    ) -> list[JSON]:
        params = history_params(filters)
        return [item async for item in self._c.paginate(history_path(feature), params, limit)]

    async def get(self, test_id: str) -> JSON:
        return await self._c.data(show_call(test_id))
