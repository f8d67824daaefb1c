"""``client.test_runs``: store a suite run, list them, show one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from minerva_ai.client.resources import JSON, AsyncSender, Call, Sender, segment

FILTERS = ("feature_id", "suite_hash", "status", "fingerprint")


def _params(filters: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: (filters or {}).get(k) for k in FILTERS}


class TestRuns:
    """``client.test_runs`` (storing one takes the ``write`` scope)."""

    def __init__(self, client: Sender) -> None:
        self._c = client

    def create(self, run: Mapping[str, Any]) -> JSON:
        return self._c.data(Call("POST", "/test-runs", json=dict(run)))

    def list(
        self, filters: Mapping[str, Any] | None = None, *, limit: int | None = None
    ) -> list[JSON]:
        """Newest first; ``filters``: feature_id (id or name), suite_hash, status,
        fingerprint (hex, or ``live`` with feature_id)."""
        return list(self._c.paginate("/test-runs", _params(filters), limit))

    def get(self, run_id: str) -> JSON:
        return self._c.data(Call("GET", f"/test-runs/{segment(run_id)}"))


class AsyncTestRuns:
    """``client.test_runs`` of ``AsyncClient``."""

    def __init__(self, client: AsyncSender) -> None:
        self._c = client

    async def create(self, run: Mapping[str, Any]) -> JSON:
        return await self._c.data(Call("POST", "/test-runs", json=dict(run)))

    async def list(
        self, filters: Mapping[str, Any] | None = None, *, limit: int | None = None
    ) -> list[JSON]:
        return [item async for item in self._c.paginate("/test-runs", _params(filters), limit)]

    async def get(self, run_id: str) -> JSON:
        return await self._c.data(Call("GET", f"/test-runs/{segment(run_id)}"))
