"""Runs a scenario: closed model (users, ramp-up) or open model (arrival rate).

In the open model each request's latency is measured from its *intended* send time, so a
server that stalls cannot hide the queue it causes (coordinated omission). The scheduler
takes a ``Clock`` so tests can drive it with virtual time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlencode

import orjson

from minerva_ai.errors import GateError, UnreachableError
from minerva_ai.loadtest.http import Connection, ConnectionFailed, Target
from minerva_ai.loadtest.scenario import (
    HttpStep,
    Scenario,
    Step,
    ThinkStep,
    WebSocketStep,
    render,
)
from minerva_ai.loadtest.stats import Stats, StepStats, record_ms

STOP_GRACE_S = 2.0
CPU_LIMIT_PERCENT = 90.0


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep_until(self, when: float) -> None: ...


class RealClock:
    """The monotonic clock (not the event loop's: uvloop's has millisecond resolution)."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, when: float) -> None:
        delay = when - self.now()
        if delay > 0:
            await asyncio.sleep(delay)


def intended_times(start: float, rate: float, end: float, max_requests: int = 0) -> Iterator[float]:
    """Arrival ``i`` is due at ``start + i / rate``, before ``end``, at most ``max_requests``."""
    index = 0
    while not max_requests or index < max_requests:
        due = start + index / rate
        if due >= end:
            return
        yield due
        index += 1


async def open_loop(
    clock: Clock,
    start: float,
    rate: float,
    end: float,
    fire: Callable[[float], object],
    *,
    max_requests: int = 0,
    stopped: Callable[[], bool] = lambda: False,
) -> int:
    """Call ``fire(intended)`` at each arrival time; a late wake-up never shifts the schedule."""
    fired = 0
    for due in intended_times(start, rate, end, max_requests):
        await clock.sleep_until(due)
        if stopped():
            break
        fire(due)
        fired += 1
    return fired


async def timed(clock: Clock, intended: float, call: Callable[[], Awaitable[Any]]) -> float:
    """Run ``call`` and return its latency in ms, measured from the intended send time."""
    await call()
    return (clock.now() - intended) * 1000


@dataclass
class LoadConfig:
    """One run (or one worker's share of it)."""

    url: str
    token: str | None
    scenario: Scenario
    users: int = 50
    ramp_up_s: float = 0.0
    rate: float | None = None
    duration_s: float = 60.0
    max_requests: int = 0
    lost_after_s: float = 5.0
    data: dict[str, list[Any]] = field(default_factory=dict)
    user_indexes: list[int] | None = None  # this worker's users, of ``users`` in all
    phase_s: float = 0.0  # open model: this worker's offset into the arrival schedule


@dataclass
class RunResult:
    stats: Stats
    duration_s: float
    cpu_percent: float
    interrupted: bool = False
    lost: str | None = None
    workers: int = 1
    worker_requests: list[int] = field(default_factory=list)

    @property
    def limited(self) -> bool:
        return self.cpu_percent > CPU_LIMIT_PERCENT


@dataclass
class Progress:
    elapsed_s: float
    users: int
    requests: int
    failed: int
    p95_ms: float | None


class Runner:
    """Runs the configured load in the current event loop."""

    def __init__(self, config: LoadConfig, clock: Clock | None = None, seed: int | None = None):
        self.config = config
        self.clock = clock or RealClock()
        self.target = Target.from_url(config.url)
        self.stats = Stats()
        self.random = random.Random(seed)
        self.headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
        self.sent = 0
        self.active_users = 0
        self.lost: str | None = None
        self.interrupted = False
        self._stop = asyncio.Event()
        self._start = 0.0
        self._end = 0.0
        self._last_ok = 0.0
        self._weighted = [s for s in config.scenario.steps if s.weight > 0]
        for step in config.scenario.steps:
            if not isinstance(step.action, ThinkStep):
                self.stats.step(step.name, step.kind, step.tags)

    # ---------------------------------------------------------------- driving

    async def run(self, on_progress: Callable[[Progress], None] | None = None) -> RunResult:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signal.SIGINT, self.interrupt)
        cpu_start, wall_start = time.process_time(), time.monotonic()
        self._start = self._last_ok = self.clock.now()
        self._end = self._start + self.config.duration_s
        ticker = asyncio.create_task(self._tick(on_progress)) if on_progress else None
        try:
            if self.config.rate:
                await self._open_model(self.config.rate)
            else:
                await self._closed_model()
        finally:
            if ticker:
                ticker.cancel()
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.remove_signal_handler(signal.SIGINT)
        wall = max(time.monotonic() - wall_start, 1e-9)
        cpu = (time.process_time() - cpu_start) / wall * 100
        return RunResult(
            self.stats,
            round(self.clock.now() - self._start, 3),
            round(cpu, 1),
            self.interrupted,
            self.lost,
        )

    def interrupt(self) -> None:
        self.interrupted = True
        self._stop.set()

    def progress(self) -> Progress:
        overall = Stats.combined(list(self.stats.steps.values()), "duration")
        p95 = overall.get_value_at_percentile(95) / 1000 if overall.get_total_count() else None
        return Progress(
            round(self.clock.now() - self._start, 1),
            self.active_users,
            self.stats.requests,
            self.stats.failed,
            p95,
        )

    async def _tick(self, on_progress: Callable[[Progress], None]) -> None:
        while True:
            await asyncio.sleep(1.0)
            on_progress(self.progress())

    async def _pause_until(self, when: float) -> None:
        """Wait until ``when`` or until the run stops, whichever comes first."""
        remaining = when - self.clock.now()
        if remaining > 0 and not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), remaining)

    async def _finish(self, tasks: set[asyncio.Task[None]]) -> None:
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _running(self) -> bool:
        return not self._stop.is_set() and self.clock.now() < self._end

    def _take(self) -> bool:
        """Reserve one request under ``--max-requests``."""
        limit = self.config.max_requests
        if limit and self.sent >= limit:
            self._stop.set()
            return False
        self.sent += 1
        return True

    def _choose(self, steps: list[Step]) -> Step:
        return self.random.choices(steps, weights=[s.weight for s in steps])[0]

    async def _closed_model(self) -> None:
        config = self.config
        indexes = config.user_indexes or list(range(config.users))
        tasks = {
            asyncio.create_task(
                self._user(index, self._start + config.ramp_up_s * index / config.users)
            )
            for index in indexes
        }
        await self._pause_until(self._end)
        self._stop.set()
        await self._finish(tasks)

    async def _user(self, index: int, start_at: float) -> None:
        await self._pause_until(start_at)
        if not self._running():
            return
        self.active_users += 1
        context = {**self.config.scenario.variables, "user": index}
        for name, items in self.config.data.items():
            context[name] = self.random.choice(items)
        connection = Connection(self.target, self.headers)
        low, high = self.config.scenario.think_time
        iteration = 0
        try:
            while self._running():
                context["iteration"] = iteration
                step = self._choose(self._weighted)
                if isinstance(step.action, ThinkStep):
                    pause = self.random.uniform(step.action.low_s, step.action.high_s)
                    await self._pause_until(self.clock.now() + pause)
                elif isinstance(step.action, HttpStep):
                    if not self._take():
                        break
                    await self._http(step, step.action, connection, context, self.clock.now())
                else:
                    await self._websocket(step, step.action, context)
                iteration += 1
                if high > 0:
                    await self._pause_until(self.clock.now() + self.random.uniform(low, high))
        finally:
            connection.close()
            self.active_users -= 1

    async def _open_model(self, rate: float) -> None:
        pool: asyncio.LifoQueue[Connection] = asyncio.LifoQueue()
        for _ in range(self.config.users):
            pool.put_nowait(Connection(self.target, self.headers))
        steps = [s for s in self._weighted if not isinstance(s.action, ThinkStep)]
        base: dict[str, Any] = {**self.config.scenario.variables, "user": 0}
        tasks: set[asyncio.Task[None]] = set()

        def fire(intended: float) -> None:
            # Each arrival is a fresh visitor: its own pick of each data source.
            context = {**base, "iteration": self.sent}
            for name, items in self.config.data.items():
                context[name] = self.random.choice(items)
            task = asyncio.create_task(self._arrival(self._choose(steps), intended, pool, context))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        def stop() -> bool:
            return self._stop.is_set() or not self._take()

        self.active_users = self.config.users
        await open_loop(
            self.clock,
            self._start + self.config.phase_s,
            rate,
            self._end,
            fire,
            stopped=stop,
        )
        await self._pause_until(self._end)
        self._stop.set()
        await self._finish(set(tasks))
        while not pool.empty():
            pool.get_nowait().close()

    async def _arrival(
        self,
        step: Step,
        intended: float,
        pool: asyncio.LifoQueue[Connection],
        context: dict[str, Any],
    ) -> None:
        if isinstance(step.action, WebSocketStep):
            await self._websocket(step, step.action, context)
            return
        assert isinstance(step.action, HttpStep)
        connection = await pool.get()
        try:
            await self._http(step, step.action, connection, context, intended)
        finally:
            pool.put_nowait(connection)

    # ---------------------------------------------------------------- steps

    async def _http(
        self,
        step: Step,
        action: HttpStep,
        connection: Connection,
        context: dict[str, Any],
        started: float,
    ) -> None:
        target = render(action.path, context)
        if action.query:
            target += "?" + urlencode(render(action.query, context), doseq=True)
        body = None if action.json is None else orjson.dumps(render(action.json, context))
        error: str | None = None
        received = 0
        try:
            async with asyncio.timeout(action.timeout_s):
                response = await connection.request(action.method, target, body, "application/json")
        except TimeoutError:
            error = "timeout"
        except ConnectionFailed as exc:
            error = "connection"
            self._connection_failed(str(exc))
        else:
            received = response.size
            self._last_ok = self.clock.now()
            if response.status not in action.expect_status:
                error = "status"
        elapsed_ms = (self.clock.now() - started) * 1000
        self.stats.steps[step.name].http(elapsed_ms, error, received)

    def _connection_failed(self, reason: str) -> None:
        if self.clock.now() - self._last_ok > self.config.lost_after_s and self.lost is None:
            self.lost = f"no connection for {self.config.lost_after_s:g} s ({reason})"
            self._stop.set()

    async def _websocket(self, step: Step, action: WebSocketStep, context: dict[str, Any]) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        stats = self.stats.steps[step.name]
        scheme = "wss" if self.target.scheme == "https" else "ws"
        url = f"{scheme}://{self.target.host_header}{self.target.prefix}"
        url += render(action.path, context)
        subscribe: dict[str, Any] = {"channel": action.channel}
        if action.feature:
            subscribe["feature"] = render(action.feature, context)
        began = self.clock.now()
        subscribed = failed = False
        try:
            async with asyncio.timeout(action.timeout_s):
                socket = await connect(
                    url, additional_headers=self.headers, open_timeout=None, compression=None
                )
        except (OSError, TimeoutError, WebSocketException) as exc:
            stats.ws_failed += 1
            if isinstance(exc, OSError):
                self._connection_failed(str(exc))
            return
        self._last_ok = self.clock.now()
        record_ms(stats.ws_connecting, (self.clock.now() - began) * 1000)
        try:
            await socket.send(orjson.dumps({"type": "subscribe", "data": subscribe}).decode())
            # The subscription is confirmed whatever the run's state; then the session holds.
            async with asyncio.timeout(action.timeout_s):
                while not subscribed and not failed:
                    subscribed, failed = self._on_message(stats, await socket.recv())
            until = min(self.clock.now() + action.hold_s, self._end)
            while not failed and not self._stop.is_set():
                remaining = until - self.clock.now()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        raw = await socket.recv()
                except TimeoutError:
                    break
                failed = self._on_message(stats, raw)[1]
            await socket.close()
        except (OSError, TimeoutError, WebSocketException, orjson.JSONDecodeError):
            failed = True
        if subscribed and not failed:
            stats.ws_ok += 1
        else:
            stats.ws_failed += 1

    @staticmethod
    def _on_message(stats: StepStats, raw: str | bytes) -> tuple[bool, bool]:
        """Count a server message; returns (it confirmed the subscription, it is an error)."""
        message = orjson.loads(raw)
        kind = message.get("type")
        if kind in ("log", "metrics_update", "alert", "settings_update"):
            stats.ws_msgs += 1
            _record_delay(stats, message.get("data") or {})
        return kind == "subscribed", kind == "error"


def _record_delay(stats: StepStats, data: dict[str, Any]) -> None:
    committed = data.get("committed_at")
    if not isinstance(committed, str):
        return
    try:
        moment = datetime.fromisoformat(committed.replace("Z", "+00:00"))
    except ValueError:
        return
    record_ms(stats.ws_msg_delay, max(time.time() - moment.timestamp(), 0.0) * 1000)


# ------------------------------------------------------------------ before the first request


async def probe(url: str, within_s: float = 5.0) -> None:
    """Open one TCP connection, retrying for ``within_s``; ``UnreachableError`` when it fails."""
    target = Target.from_url(url)
    deadline = time.monotonic() + within_s
    while True:
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(target.host, target.port), timeout=within_s
            )
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
            try:
                response = await asyncio.wait_for(connection.request("GET", source.path), 30)
            except (ConnectionFailed, TimeoutError) as exc:
                raise UnreachableError(url, str(exc) or type(exc).__name__) from None
            if response.status != 200:
                raise GateError(f"data {name!r}: GET {source.path} answered {response.status}")
            body = orjson.loads(response.body)
            items = body.get("data") if isinstance(body, dict) else body
            if not isinstance(items, list) or not items:
                raise GateError(f"data {name!r}: GET {source.path} returned no items")
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


# ------------------------------------------------------------------ one process or several


def run_load(
    config: LoadConfig, workers: int = 1, on_progress: Callable[[Progress], None] | None = None
) -> RunResult:
    """Run in this process, or spread users (or the arrival rate) over ``workers`` processes
    and merge their histograms exactly."""
    if workers <= 1:
        return _run_async(Runner(config).run(on_progress))
    import concurrent.futures
    import dataclasses
    import multiprocessing

    shares = []
    for index in range(workers):
        users = list(range(index, config.users, workers))
        if not users:
            continue
        share = dataclasses.replace(config, user_indexes=users)
        if config.rate:
            share.rate = config.rate / workers
            share.phase_s = index / config.rate
        if config.max_requests:
            share.max_requests = config.max_requests // workers + (
                1 if index < config.max_requests % workers else 0
            )
            if share.max_requests == 0:
                continue
        shares.append(share)
    context = multiprocessing.get_context("spawn")
    interrupted = False

    def on_sigint(_signum: int, _frame: object) -> None:
        nonlocal interrupted
        interrupted = True  # the workers got it too: they stop and report what they have

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with concurrent.futures.ProcessPoolExecutor(len(shares), mp_context=context) as pool:
            parts = list(pool.map(_worker, shares))
    finally:
        signal.signal(signal.SIGINT, previous)
    stats = Stats()
    for part in parts:
        stats.merge_wire(part["stats"])
    lost = next((p["lost"] for p in parts if p["lost"]), None)
    return RunResult(
        stats,
        max(p["duration_s"] for p in parts),
        max(p["cpu_percent"] for p in parts),
        interrupted or any(p["interrupted"] for p in parts),
        lost,
        workers=len(parts),
        worker_requests=[p["requests"] for p in parts],
    )


def _run_async(main: Coroutine[Any, Any, RunResult]) -> RunResult:
    """Run on uvloop when it is installed (the server extras bring it): a faster generator."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _worker(config: LoadConfig) -> dict[str, Any]:
    result = _run_async(Runner(config).run())
    return {
        "stats": result.stats.to_wire(),
        "duration_s": result.duration_s,
        "cpu_percent": result.cpu_percent,
        "interrupted": result.interrupted,
        "lost": result.lost,
        "requests": result.stats.requests,
    }
