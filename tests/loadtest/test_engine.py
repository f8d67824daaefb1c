"""The engine: open-model schedule and coordinated-omission correction on virtual time;
a stalling loopback server; a target lost mid-run; the lean HTTP client."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from minerva_ai.loadtest.engine import LoadConfig, Runner, RunResult, open_loop
from minerva_ai.loadtest.http import MAX_BODY, Connection, Response, Target
from minerva_ai.loadtest.scenario import Scenario, get_scenario, parse_scenario
from minerva_ai.loadtest.stats import Stats, StepStats, percentile_ms
from tests.conftest import loaded_by


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
            if future.done():  # a pause cut short when the run stopped
                continue
            self.t = max(self.t, when) + self.lag
            future.set_result(None)


def test_open_loop_fires_at_exact_intended_times_even_when_woken_late() -> None:
    clock = FakeClock(lag=0.03)
    fired: list[tuple[float, float]] = []
    start, rate = clock.t, 8.0

    count = asyncio.run(
        clock.drive(
            open_loop(
                clock.sleep_until,
                start,
                rate,
                start + 2.0,
                lambda due: fired.append((due, clock.t)),
            )
        )
    )
    assert count == 16
    assert [due for due, _ in fired] == [start + i / rate for i in range(16)]
    assert all(woke >= due + 0.03 for due, woke in fired)  # late, but the schedule held


class SimulatedServer:
    """A server on virtual time, reached through connections the Runner is given: each
    request takes ``service_s``; with ``serial`` they are served one at a time, in order."""

    def __init__(self, clock: FakeClock, service_s: float, *, serial: bool) -> None:
        self.clock = clock
        self.service_s = service_s
        self.serial = serial
        self.free_at = clock.t
        self.log: list[tuple[str, float]] = []  # (target, when it was received)

    def connect(self, _target: Target, _headers: dict[str, str]) -> SimulatedConnection:
        return SimulatedConnection(self)


class SimulatedConnection(Connection):
    def __init__(self, server: SimulatedServer) -> None:
        self.server = server

    async def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        content_type: str = "",
        *,
        timeout: float | None = None,
    ) -> Response:
        server = self.server
        server.log.append((target, server.clock.now()))
        begin = max(server.clock.now(), server.free_at) if server.serial else server.clock.now()
        if server.serial:
            server.free_at = begin + server.service_s
        await server.clock.sleep_until(begin + server.service_s)
        return Response(200, b"{}", 2)

    def close(self) -> None:
        pass


def run_virtual(
    clock: FakeClock, server: SimulatedServer, config: LoadConfig
) -> tuple[Runner, RunResult]:
    runner = Runner(config, clock=clock, seed=1, connect=server.connect)
    return runner, asyncio.run(clock.drive(runner.run()))


def latencies(runner: Runner, step: str) -> list[float]:
    histogram = runner.stats.steps[step].duration
    return [
        item.value_iterated_to / 1000
        for item in histogram.get_recorded_iterator()
        for _ in range(item.count_at_value_iterated_to)
    ]


def test_latency_is_measured_from_the_intended_send_time() -> None:
    """A server that takes 250 ms per request, one at a time, under 10 arrivals/s: request i
    is due at 0.1*i and completes at 0.25*(i+1), so its corrected latency is 250 + 150*i ms,
    while the time the server spent on it stays 250 ms and would hide the queue."""
    clock = FakeClock()
    server = SimulatedServer(clock, 0.25, serial=True)
    config = LoadConfig("http://sim", None, get_scenario(["/x"], (0, 0)), rate=10, duration_s=1)
    runner, result = run_virtual(clock, server, config)

    assert [when - server.log[0][1] for _, when in server.log] == pytest.approx(
        [0.1 * i for i in range(10)]
    )
    assert latencies(runner, "GET /x") == pytest.approx(
        [250 + 150 * i for i in range(10)], rel=1e-3
    )
    assert result.arrivals_waited == 0


def test_an_arrival_waiting_for_an_in_flight_slot_counts_the_wait() -> None:
    """Two slots, requests of 230 ms served in parallel, 10 arrivals/s for 1 s: arrival i
    starts when it is due or when a slot frees, whichever is later, and its latency runs from
    its due time. The last one starts after the end: it was due before, so it is sent."""
    clock = FakeClock()
    server = SimulatedServer(clock, 0.23, serial=False)
    config = LoadConfig(
        "http://sim", None, get_scenario(["/x"], (0, 0)), rate=10, max_in_flight=2, duration_s=1
    )
    runner, result = run_virtual(clock, server, config)

    free = [0.0, 0.0]
    expected, waited = [], 0
    for index in range(10):
        due = index / 10
        start = max(due, heapq.heappop(free))
        heapq.heappush(free, start + 0.23)
        waited += start > due
        expected.append((start + 0.23 - due) * 1000)
    assert sorted(latencies(runner, "GET /x")) == pytest.approx(sorted(expected), rel=1e-3)
    assert max(expected) > 230 * 1.5  # the wait is in there
    assert result.arrivals_waited == waited == 8


def test_max_requests_and_an_interrupt_end_an_open_run_at_once() -> None:
    """At one arrival every 8 s, neither waits for the next arrival to notice."""
    plan = get_scenario(["/x"], (0, 0))

    clock = FakeClock()
    server = SimulatedServer(clock, 0.1, serial=False)
    config = LoadConfig("http://sim", None, plan, rate=1 / 8, max_requests=1, duration_s=60)
    runner, result = run_virtual(clock, server, config)
    assert runner.stats.requests == 1
    assert result.duration_s == pytest.approx(0.1)

    clock = FakeClock()
    server = SimulatedServer(clock, 0.1, serial=False)
    config = LoadConfig("http://sim", None, plan, rate=1 / 8, duration_s=60)
    runner = Runner(config, clock=clock, seed=1, connect=server.connect)

    async def interrupted() -> RunResult:
        async def press_ctrl_c() -> None:
            await clock.sleep_until(clock.t + 0.5)
            runner.interrupt()

        pressing = asyncio.ensure_future(press_ctrl_c())
        result = await runner.run()
        await pressing
        return result

    result = asyncio.run(clock.drive(interrupted()))
    assert result.interrupted and result.duration_s == pytest.approx(0.5)
    assert runner.stats.requests == 1


def test_arrivals_still_queued_when_the_grace_ends_are_counted_as_dropped() -> None:
    """One slot, a server that takes 10 s, 10 arrivals/s for 1 s: the first is in flight,
    nine wait for the slot. The grace period (2 s) ends first: all ten are dropped, none
    measured."""
    clock = FakeClock()
    server = SimulatedServer(clock, 10, serial=False)
    config = LoadConfig(
        "http://sim", None, get_scenario(["/x"], (0, 0)), rate=10, max_in_flight=1, duration_s=1
    )
    runner, result = run_virtual(clock, server, config)
    assert runner.stats.requests == 0
    assert (result.arrivals_waited, result.arrivals_dropped) == (9, 10)


SEQUENCE = """
flow: sequence
steps:
  - name: a
    http: {path: /a}
  - think: 500ms
  - name: b
    http: {path: /b}
"""


def test_a_sequence_runs_every_step_in_order_each_iteration() -> None:
    """One user, 100 ms requests, a 500 ms think step between them: iterations start at 0,
    0.7 and 1.4 s; the run ends at 2 s during the third iteration's pause, so /b is not sent."""
    clock = FakeClock()
    server = SimulatedServer(clock, 0.1, serial=True)
    config = LoadConfig("http://sim", None, parse_scenario(SEQUENCE), users=1, duration_s=2)
    run_virtual(clock, server, config)

    begin = server.log[0][1]
    assert [(target, round(when - begin, 6)) for target, when in server.log] == [
        ("/a", 0.0),
        ("/b", 0.6),
        ("/a", 0.7),
        ("/b", 1.3),
        ("/a", 1.4),
    ]


def test_in_the_open_model_only_an_iterations_first_request_counts_from_its_due_time() -> None:
    """One slot, 300 ms requests, an arrival every 500 ms running /a then /b: arrival 1 waits
    for the slot until 0.6 s, so /a takes 400 ms from its due time; /b always 300 ms, timed
    from its turn. Arrival 2 gets the slot at 1.2 s and sends /a; the run is over before /b."""
    clock = FakeClock()
    server = SimulatedServer(clock, 0.3, serial=False)
    plan = parse_scenario(
        "flow: sequence\nsteps:\n  - {name: a, http: {path: /a}}\n  - {name: b, http: {path: /b}}\n"
    )
    config = LoadConfig("http://sim", None, plan, rate=2, max_in_flight=1, duration_s=1.4)
    runner, result = run_virtual(clock, server, config)

    assert latencies(runner, "a") == pytest.approx([300, 400, 500], rel=1e-3)
    assert latencies(runner, "b") == pytest.approx([300, 300], rel=1e-3)
    assert result.arrivals_waited == 2


# ------------------------------------------------------------------ real sockets


class LoopbackServer:
    """A tiny HTTP/1.1 keep-alive server; ``on_request`` may stall or stop it."""

    def __init__(self, on_request: Callable[[LoopbackServer], Awaitable[None]]) -> None:
        self.on_request = on_request
        self.requests = 0
        self.heads: list[bytes] = []  # each request's head, as it came
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
            while True:
                self.heads.append(await reader.readuntil(b"\r\n\r\n"))
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
            config = LoadConfig(url, None, get_scenario(["/x"], (0, 0)), rate=100, duration_s=1.5)
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
    assert runner.stats.steps["GET /x"].samples["connection"].startswith("GET /x: ")


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
    assert status.samples == {"status": 'GET / answered 200: {"ok": true}'}
    timeout = asyncio.run(one_request(too_slow, slow))
    assert (timeout.requests, timeout.errors) == (1, {"status": 0, "timeout": 1, "connection": 0})
    assert timeout.samples == {"timeout": "GET /: no answer within 0.05 s"}
    assert 50 <= (percentile_ms(timeout.duration, 100) or 0) < 500


def test_fetched_values_are_encoded_and_never_break_the_request_line() -> None:
    """A value fetched at run time with a space, non-ASCII, a stray % and CR LF NUL: in the
    path it is percent-encoded as --get would be (the CR LF are bytes of the path, no
    header), in a query mapping form-encoded; a query mapping joins a path's own query."""
    value = "a b/\u00fc%zz\r\nX-Injected: 1\x00"
    plan = parse_scenario(
        "flow: sequence\n"
        "data: {item: {get: /items}}\n"
        "steps:\n"
        "  - {name: item, http: {path: '/items/${item}', query: {q: '${item}'}}}\n"
        "  - {name: search, http: {path: '/search?sort=name', query: {q: photo tagging}}}\n"
    )

    async def answer(server: LoopbackServer) -> None:
        return None

    server = LoopbackServer(answer)

    async def main() -> Stats:
        async with server as url:
            data = {"item": [value]}
            runner = Runner(LoadConfig(url, None, plan, users=1, max_requests=2, data=data))
            await runner.run()
            return runner.stats

    stats = asyncio.run(main())
    heads = server.heads
    assert [head.split(b"\r\n")[0] for head in heads] == [
        b"GET /items/a%20b/%C3%BC%25zz%0D%0AX-Injected:%201%00"
        b"?q=a+b%2F%C3%BC%25zz%0D%0AX-Injected%3A+1%00 HTTP/1.1",
        b"GET /search?sort=name&q=photo+tagging HTTP/1.1",
    ]
    assert not any(b"\r\nX-Injected" in head for head in heads)
    assert stats.requests == 2 and stats.failed == 0


def test_a_response_over_the_body_cap_counts_by_its_status_and_whole_size() -> None:
    """8 MiB answers: a 200 is a success and a 500 a status error, as any other; the
    bytes received count all of each, the error sample shows the body's start."""
    big, line = 8 * MAX_BODY, b"x" * 65536

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                status = b"500 Oops" if head.startswith(b"GET /fails ") else b"200 OK"
                writer.write(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n" % (status, big))
                for _ in range(big // len(line)):
                    writer.write(line)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> Stats:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        plan = parse_scenario(
            "flow: sequence\nsteps:\n"
            "  - {name: ok, http: {path: /ok}}\n  - {name: fails, http: {path: /fails}}\n"
        )
        config = LoadConfig(f"http://127.0.0.1:{port}", None, plan, users=1, max_requests=2)
        runner = Runner(config)
        await runner.run()
        server.close()
        return runner.stats

    stats = asyncio.run(main())
    ok, fails = stats.steps["ok"], stats.steps["fails"]
    assert (ok.requests, ok.failed, fails.requests, fails.errors["status"]) == (1, 0, 1, 1)
    assert ok.bytes_received > big and fails.bytes_received > big
    assert fails.samples["status"].startswith("GET /fails answered 500: xxxxxxxx")


def test_in_flight_slots_are_first_come_first_served() -> None:
    """A slot freed while an arrival waits goes to it, not to a newcomer; an arrival
    cancelled as the slot was handed to it passes the slot on."""
    from minerva_ai.loadtest.engine import _Slots

    async def main() -> None:
        target = Target.from_url("http://127.0.0.1:1")
        slots = _Slots(1, lambda: Connection(target, {}))
        held = await slots.acquire()
        first = asyncio.ensure_future(slots.acquire())
        second = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        assert slots.full() and not first.done()
        slots.release(held)
        newcomer = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        assert first.done() and first.result() is held and not newcomer.done()

        slots.release(first.result())  # handed to `second`, which is cancelled at once
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)
        assert second.cancelled()
        assert (await asyncio.wait_for(newcomer, 5)) is held
        slots.release(held)
        assert not slots.full()
        slots.close()

    asyncio.run(main())


def test_error_samples_mask_the_token_and_fit_one_line() -> None:
    """A target that answers 500 with the request it got (headers included) and a page of
    several lines: the sample shows its words on one line, never the token."""
    token = "mnv_" + "s3cret" * 7

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            body = b"<html>\r\n<h1>Oops</h1>\r\n" + head
            writer.write(b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        finally:
            writer.close()

    async def main() -> StepStats:
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        plan = parse_scenario("steps:\n  - name: s\n    http: {path: /x}\n")
        config = LoadConfig(f"http://127.0.0.1:{port}", token, plan, users=1, max_requests=1)
        runner = Runner(config)
        await runner.run()
        server.close()
        return runner.stats.steps["s"]

    sample = asyncio.run(main()).samples["status"]
    assert sample.startswith("GET /x answered 500: <html> <h1>Oops</h1> GET /x HTTP/1.1 Host: ")
    assert token not in sample and sample.endswith("Authorization: Bearer ***")
    assert sample.isprintable()


def test_a_websocket_that_cannot_connect_says_why() -> None:
    """The WebSocket step against a server that is no WebSocket endpoint."""

    async def plain(server: LoopbackServer) -> None:
        return None

    async def main() -> StepStats:
        async with LoopbackServer(plain) as url:
            plan = parse_scenario("steps:\n  - name: feed\n    websocket: {hold: 1s}\n")
            runner = Runner(LoadConfig(url, None, plan, users=1, duration_s=0.5))
            await runner.run()
            return runner.stats.steps["feed"]

    feed = asyncio.run(main())
    assert feed.ws_failed > 0 and feed.ws_ok == 0
    reason = feed.samples["websocket"]
    assert reason.startswith("connect ws://127.0.0.1:") and "/websocket: " in reason
    assert len(reason.split("/websocket: ", 1)[1]) > 0


def test_the_load_test_loads_neither_httpx_nor_the_client_classes() -> None:
    """Workers start fast: the engine uses only the client's WebSocket helpers."""
    code = "from minerva_ai.loadtest import engine, prepare, report, workers"
    assert loaded_by(code, ("httpx", "minerva_ai.client.http")) == []
