"""The providers' HTTP transport: httpx's own, split into a few pools taken in turn.

httpcore's connection pool walks every connection it holds, several times, whenever a
request starts or ends (for each idle one a readability check, a system call, and a count
of all connections: quadratic). With one pool holding a connection per call in flight
(100 calls/s x 200 ms: 20 and more), that walk cost more CPU than the rest of a test call,
and more connections when the service fell behind made each call dearer still
(bench/model_tests.py). Pools of a few connections each keep the walk short; each pool
keeps its connections alive as before.
"""

from __future__ import annotations

import itertools

import httpx

POOLS = 8


class PooledTransport(httpx.AsyncBaseTransport):
    """``pools`` httpx transports with ``limits`` shared out between them, taken in turn."""

    def __init__(self, limits: httpx.Limits, pools: int = POOLS) -> None:
        def share(total: int | None) -> int | None:
            return None if total is None else max(1, -(-total // pools))  # rounded up

        each = httpx.Limits(
            max_connections=share(limits.max_connections),
            max_keepalive_connections=share(limits.max_keepalive_connections),
            keepalive_expiry=limits.keepalive_expiry,
        )
        # trust_env=False, as the client's: no certificate or proxy settings from the
        # environment.
        self.pools = [httpx.AsyncHTTPTransport(limits=each, trust_env=False) for _ in range(pools)]
        self._turn = itertools.cycle(self.pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await next(self._turn).handle_async_request(request)

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()
