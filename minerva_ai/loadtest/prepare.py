"""Before the first request: is the target there (TLS included), and the items each
scenario data source offers users to pick from."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from minerva_ai.core.errors import GateError, UnreachableError
from minerva_ai.loadtest.http import MAX_BODY, Connection, ConnectionFailed, Target, request_target
from minerva_ai.loadtest.scenario import Scenario


async def probe(url: str, within_s: float = 5.0) -> None:
    """Open one connection (TLS handshake included for https), retrying for ``within_s``;
    ``UnreachableError`` when it fails, at once for a TLS failure (a retry will not help)."""
    import ssl

    target = Target.from_url(url)
    deadline = time.monotonic() + within_s
    while True:
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    target.host, target.port, ssl=target.scheme == "https" or None
                ),
                timeout=within_s,
            )
        except ssl.SSLError as exc:
            raise UnreachableError(url, f"TLS: {exc}") from None
        except (OSError, TimeoutError) as exc:
            if time.monotonic() >= deadline:
                raise UnreachableError(url, str(exc) or type(exc).__name__) from None
            await asyncio.sleep(0.25)
            continue
        writer.close()
        return


async def fetch_data(url: str, token: str | None, scenario: Scenario) -> dict[str, list[Any]]:
    """Fetch each data source once: the items users pick from."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    results: dict[str, list[Any]] = {}
    connection = Connection(Target.from_url(url), headers)
    try:
        for name, source in scenario.data.items():
            target = request_target(source.path)
            try:
                response = await asyncio.wait_for(connection.request("GET", target), 30)
            except (ConnectionFailed, TimeoutError) as exc:
                raise UnreachableError(url, str(exc) or type(exc).__name__) from None
            if response.status != 200:
                raise GateError(f"data {name!r}: GET {target} answered {response.status}")
            if response.truncated:
                raise GateError(
                    f"data {name!r}: GET {target} answered over {MAX_BODY >> 20} MiB "
                    f"({response.size:,} bytes): narrow it with a query (a filter, a limit)"
                )
            body = orjson.loads(response.body)
            items = body.get("data") if isinstance(body, dict) else body
            if not isinstance(items, list) or not items:
                raise GateError(f"data {name!r}: GET {target} returned no items")
            if source.field:
                items = [
                    i[source.field] for i in items if isinstance(i, dict) and source.field in i
                ]
                if not items:
                    raise GateError(f"data {name!r}: no item has the field {source.field!r}")
            results[name] = items
    finally:
        connection.close()
    return results
