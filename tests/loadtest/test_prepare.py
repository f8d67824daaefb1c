"""Before the first request: the scenario's data sources, fetched from a live service and
from loopback servers."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from minerva_ai.core.errors import GateError
from minerva_ai.loadtest.http import MAX_BODY
from minerva_ai.loadtest.prepare import fetch_data
from minerva_ai.loadtest.scenario import parse_scenario
from minerva_ai.service import admin
from tests.conftest import REPO, LiveService
from tests.loadtest.test_http import replying


def test_a_data_source_searches_as_typed(live_service: LiveService) -> None:
    """A space in a data source's query reaches the service as the space it is: the
    search finds the one feature whose display name is "Photo Tagging"."""
    admin.load_demo(live_service.database_url, uuid.UUID(live_service.org_id), REPO / "examples")
    plan = parse_scenario(
        "data:\n"
        "  feature: {get: '/api/platform/ai-management/features?search=photo tagging',"
        " field: name}\n"
        "steps:\n  - http: {path: '/api/platform/ai-management/features/${feature}'}\n"
    )
    data = asyncio.run(fetch_data(live_service.url, live_service.token, plan))
    assert data == {"feature": ["photo-tagging"]}


def test_a_data_source_over_the_body_cap_is_refused() -> None:
    items = orjson.dumps({"data": [{"name": "x" * 1000}] * (2 * MAX_BODY // 1000)})
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(items), items)

    async def main() -> None:
        server = await asyncio.start_server(replying([reply]), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        plan = parse_scenario("data: {f: {get: /all}}\nsteps:\n  - http: {path: '/x/${f}'}\n")
        try:
            await fetch_data(f"http://127.0.0.1:{port}", None, plan)
        finally:
            server.close()

    with pytest.raises(GateError, match=r"data 'f': GET /all answered over 1 MiB \(2,"):
        asyncio.run(main())
