"""The engine: open-model schedule and coordinated-omission correction on virtual time;
a stalling loopback server; a target lost mid-run; the lean HTTP client."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from minerva_ai.loadtest.engine import LoadConfig, Runner, open_loop, timed
from minerva_ai.loadtest.http import Connection, Target
from minerva_ai.loadtest.scenario import Scenario, get_scenario, parse_scenario
from minerva_ai.loadtest.stats import StepStats, percentile_ms


class FakeClock:
    """Virtual time: when every task is blocked, jump to the earliest sleeper and wake it
    ``lag`` seconds late (as a busy machine would)."""

    def __init__(self, start: float = 1000.0, lag: float = 0.0) -> None:
        self.t = start
        self.lag = lag
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def now(self) -> float:
        return self.t

    async def sleep_until(self, when: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, self._seq, future))
        self._seq += 1
        await future

    async def drive(self, main: Coroutine[Any, Any, Any]) -> Any:
        task = asyncio.ensure_future(main)
        while True:
            for _ in range(20):  # no real I/O here: a few turns let every task block again
                await asyncio.sleep(0)
            if task.done():
                return task.result()
            when, _, future = heapq.heappop(self._sleepers)
            self.t = max(self.t, when) + self.lag
            future.set_result(None)


def test_open_loop_fires_at_exact_intended_times_even_when_woken_late() -> None:
    clock = FakeClock(lag=0.03)
    fired: list[tuple[float, float]] = []
    start, rate = clock.t, 8.0

    count = asyncio.run(
        clock.drive(
            open_loop(clock, start, rate, start + 2.0, lambda due: fired.append((due, clock.t)))
        )
    )
    assert count == 16
    assert [due for due, _ in fired] == [start + i / rate for i in range(16)]
    assert all(woke >= due + 0.03 for due, woke in fired)  # late, but the schedule held


def test_open_loop_stops_at_max_requests() -> None:
    clock = FakeClock()
    fired: list[float] = []
    count = asyncio.run(
        clock.drive(open_loop(clock, clock.t, 100.0, clock.t + 10, fired.append, max_requests=7))
    )
    assert count == 7 == len(fired)


def test_latency_is_measured_from_the_intended_send_time() -> None:
    """A server that takes 250 ms per request, one at a time, under 10 arrivals/s: request i
    is due at 0.1*i and completes at 0.25*(i+1), so its corrected latency is 250 + 150*i ms,
    while the server-side time stays at 250 ms and would hide the queue."""
    clock = FakeClock()
    start = clock.t
    server_free = [start]
    corrected: dict[int, float] = {}
    service_ms: dict[int, float] = {}
    tasks: list[asyncio.Task[None]] = []

    def call_for(index: int) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            begin = max(clock.now(), server_free[0])
            server_free[0] = begin + 0.25
            await clock.sleep_until(begin + 0.25)
            service_ms[index] = (clock.now() - begin) * 1000

        return call

    async def measure(index: int, due: float) -> None:
        corrected[index] = await timed(clock, due, call_for(index))

    def fire(due: float) -> None:
        tasks.append(asyncio.ensure_future(measure(len(tasks), due)))

    async def scenario() -> None:
        await open_loop(clock, start, 10.0, start + 1.0, fire)
        await asyncio.gather(*tasks)

    asyncio.run(clock.drive(scenario()))
    assert sorted(corrected) == list(range(10))
    for index in range(10):
        assert corrected[index] == pytest.approx(250 + 150 * index, abs=1e-6)
        assert service_ms[index] == pytest.approx(250, abs=1e-6)


# ------------------------------------------------------------------ real sockets


class LoopbackServer:
    """A tiny HTTP/1.1 keep-alive server; ``on_request`` may stall or stop it."""

    def __init__(self, on_request: Callable[[LoopbackServer], Awaitable[None]]) -> None:
        self.on_request = on_request
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                self.requests += 1
                await self.on_request(self)
                body = b'{"ok": true}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


STALL_S = 0.3


def test_a_stall_shows_up_in_the_open_model_p99() -> None:
    """Once, the server stops answering for 300 ms. At 100 arrivals/s the requests due
    during the stall queue behind it: measured from their intended send times, p99 is
    about the stall, p50 is not."""
    stall_until = [0.0]

    async def stall_once(server: LoopbackServer) -> None:
        loop = asyncio.get_running_loop()
        if server.requests == 20:
            stall_until[0] = loop.time() + STALL_S
        if loop.time() < stall_until[0]:
            await asyncio.sleep(stall_until[0] - loop.time())

    async def main() -> Runner:
        async with LoopbackServer(stall_once) as url:
            config = LoadConfig(
                url, None, get_scenario(["/x"], (0, 0)), users=50, rate=100, duration_s=1.5
            )
            runner = Runner(config)
            await runner.run()
            return runner

    runner = asyncio.run(main())
    step = runner.stats.steps["GET /x"]
    assert step.failed == 0
    assert step.requests >= 100
    p99 = percentile_ms(step.duration, 99)
    p50 = percentile_ms(step.duration, 50)
    assert p99 is not None and p50 is not None
    assert STALL_S * 1000 * 0.5 <= p99 <= STALL_S * 1000 * 3
    assert p50 < STALL_S * 1000 * 0.5


def test_a_target_lost_mid_run_stops_the_run() -> None:
    async def vanish(server: LoopbackServer) -> None:
        if server.requests == 30:
            server.stop()

    async def main() -> tuple[Runner, Any]:
        async with LoopbackServer(vanish) as url:
            config = LoadConfig(
                url, None, get_scenario(["/x"], (0, 0)), users=5, duration_s=30, lost_after_s=0.3
            )
            runner = Runner(config)
            return runner, await runner.run()

    runner, result = asyncio.run(main())
    assert result.lost is not None and "no connection" in result.lost
    assert result.duration_s < 10
    assert runner.stats.steps["GET /x"].errors["connection"] > 0


def test_the_client_reads_chunked_and_length_bodies_on_one_connection() -> None:
    replies = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ]
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for reply in replies:
            head = await reader.readuntil(b"\r\n\r\n")
            seen.append(head)
            if b"Content-Length" in head:
                await reader.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r")[0]))
            writer.write(reply)
            await writer.drain()
        writer.close()

    async def main() -> list[tuple[int, bytes]]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        connection = Connection(Target.from_url(f"http://127.0.0.1:{port}/base"), {"X-A": "1"})
        got = []
        for method, body in (("GET", None), ("POST", b"{}"), ("DELETE", None)):
            response = await connection.request(method, "/p?q=1", body, "application/json")
            got.append((response.status, response.body))
        connection.close()
        server.close()
        return got

    assert asyncio.run(main()) == [(200, b"hello world"), (404, b"no"), (204, b"")]
    assert seen[0].startswith(b"GET /base/p?q=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"X-A: 1\r\n" in seen[0]
    assert b"Content-Type: application/json\r\nContent-Length: 2\r\n" in seen[1]


def test_errors_are_counted_by_kind() -> None:
    """A status other than the expected one, and a response slower than the step's timeout."""
    wrong_status = parse_scenario("steps:\n  - name: s\n    http: {path: /, expect_status: 201}\n")
    too_slow = parse_scenario("steps:\n  - name: s\n    http: {path: /, timeout: 50ms}\n")

    async def fast(server: LoopbackServer) -> None:
        return None

    async def slow(server: LoopbackServer) -> None:
        await asyncio.sleep(0.5)

    async def one_request(scenario: Scenario, behaviour: Any) -> StepStats:
        async with LoopbackServer(behaviour) as url:
            config = LoadConfig(url, None, scenario, users=1, duration_s=5, max_requests=1)
            runner = Runner(config)
            await runner.run()
            return runner.stats.steps["s"]

    status = asyncio.run(one_request(wrong_status, fast))
    assert (status.requests, status.errors) == (1, {"status": 1, "timeout": 0, "connection": 0})
    timeout = asyncio.run(one_request(too_slow, slow))
    assert (timeout.requests, timeout.errors) == (1, {"status": 0, "timeout": 1, "connection": 0})
    assert 50 <= (percentile_ms(timeout.duration, 100) or 0) < 500
