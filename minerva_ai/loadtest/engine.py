"""Runs a scenario: closed model (users, ramp-up) or open model (arrival rate).

In the open model each request's latency is measured from its *intended* send time, so a
server that stalls cannot hide the queue it causes (coordinated omission). The scheduler
takes a ``Clock`` so tests can drive it with virtual time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlencode

import orjson

from minerva_ai.client.websocket import subscription, websocket_message
from minerva_ai.loadtest.http import Connection, ConnectionFailed, Target, request_target
from minerva_ai.loadtest.scenario import (
    HttpStep,
    Scenario,
    Step,
    ThinkStep,
    WebSocketStep,
    render,
    variables_in,
)
from minerva_ai.loadtest.stats import SAMPLE_CHARS, Stats, StepStats, record_ms

STOP_GRACE_S = 2.0
SHORT_PAUSE_S = 0.05  # shorter pauses do not watch for the run stopping
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


def intended_times(start: float, rate: float, end: float) -> Iterator[float]:
    """Arrival ``i`` is due at ``start + i / rate``, before ``end``."""
    index = 0
    while (due := start + index / rate) < end:
        yield due
        index += 1


async def open_loop(
    sleep_until: Callable[[float], Awaitable[None]],
    start: float,
    rate: float,
    end: float,
    fire: Callable[[float], object],
    *,
    stopped: Callable[[], bool] = lambda: False,
) -> int:
    """Call ``fire(intended)`` at each arrival time; a late wake-up never shifts the schedule.
    ``sleep_until`` may return early when the run stops: ``stopped`` is checked after it."""
    fired = 0
    for due in intended_times(start, rate, end):
        await sleep_until(due)
        if stopped():
            break
        fire(due)
        fired += 1
    return fired


@dataclass
class LoadConfig:
    """One run (or one worker's share of it)."""

    url: str
    token: str | None
    scenario: Scenario
    users: int = 50
    ramp_up_s: float = 0.0
    rate: float | None = None
    max_in_flight: int = 100  # open model: iterations in flight at once, one connection each
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
    arrivals_waited: int = 0  # open model: arrivals that found every in-flight slot taken
    arrivals_dropped: int = 0  # open model: due, but cut off at the end before being measured

    @property
    def limited(self) -> bool:
        return self.cpu_percent > CPU_LIMIT_PERCENT


@dataclass
class Progress:
    """A snapshot for the live line; ``users`` are iterations in flight in the open model."""

    elapsed_s: float
    users: int
    requests: int
    failed: int
    p95_ms: float | None


class Runner:
    """Runs the configured load in the current event loop."""

    def __init__(
        self,
        config: LoadConfig,
        clock: Clock | None = None,
        seed: int | None = None,
        connect: Callable[[Target, dict[str, str]], Connection] = Connection,
    ):
        self.config = config
        self.clock = clock or RealClock()
        self.connect = connect
        self.target = Target.from_url(config.url)
        self.stats = Stats()
        self.random = random.Random(seed)
        self.headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
        self.sent = 0
        self.active_users = 0
        self.arrivals_waited = 0
        self.arrivals_dropped = 0
        self.lost: str | None = None
        self.interrupted = False
        self._stop = asyncio.Event()
        self._start = 0.0
        self._end = 0.0
        self._last_ok = 0.0
        self._weighted = [s for s in config.scenario.steps if s.weight > 0]
        self._sequence = config.scenario.flow == "sequence"
        self._fixed_targets = {  # request targets with no variable: built once
            step.name: self._request_target(step.action, {})
            for step in config.scenario.steps
            if isinstance(step.action, HttpStep)
            and not variables_in([step.action.path, step.action.query])
        }
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
            arrivals_waited=self.arrivals_waited,
            arrivals_dropped=self.arrivals_dropped,
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
        delay = when - self.clock.now()
        if delay <= 0 or self._stop.is_set():
            return
        if delay < SHORT_PAUSE_S:  # not worth racing the stop event (the open model's
            await self.clock.sleep_until(when)  # arrivals at high rates): a cheap sleep
            return
        sleeper = asyncio.ensure_future(self.clock.sleep_until(when))
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait((sleeper, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()

    async def _finish(self, tasks: set[asyncio.Task[None]]) -> None:
        """Give what is in flight ``STOP_GRACE_S`` (on the run's clock), then cancel it."""
        if not tasks:
            return
        grace = asyncio.ensure_future(self.clock.sleep_until(self.clock.now() + STOP_GRACE_S))
        everything = asyncio.ensure_future(asyncio.wait(tasks))
        await asyncio.wait((grace, everything), return_when=asyncio.FIRST_COMPLETED)
        grace.cancel()
        everything.cancel()
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _running(self) -> bool:
        return not self._stop.is_set() and self.clock.now() < self._end

    def _take(self) -> bool:
        """Reserve one request under ``--max-requests``; the last one stops the run (the
        requests in flight finish)."""
        limit = self.config.max_requests
        if limit and self.sent >= limit:
            self._stop.set()
            return False
        self.sent += 1
        if limit and self.sent >= limit:
            self._stop.set()
        return True

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
        connection = self.connect(self.target, self.headers)
        low, high = self.config.scenario.think_time
        iteration = 0
        try:
            while self._running():
                context["iteration"] = iteration
                if not await self._iteration(self._pick(think=True), connection, context):
                    break
                iteration += 1
                if high > 0:
                    await self._pause_until(self.clock.now() + self.random.uniform(low, high))
        finally:
            connection.close()
            self.active_users -= 1

    async def _open_model(self, rate: float) -> None:
        """Arrivals on a fixed schedule; each runs one iteration. At most ``max_in_flight``
        run at once (each on its own connection), first come first served: an arrival that
        finds them all taken waits, and the wait is in its latency, measured from the
        intended send time."""
        slots = _Slots(self.config.max_in_flight, lambda: self.connect(self.target, self.headers))
        base: dict[str, Any] = {**self.config.scenario.variables, "user": 0}
        tasks: set[asyncio.Task[None]] = set()
        arrivals = 0

        def fire(intended: float) -> None:
            # Each arrival is a fresh visitor: its own pick of each data source.
            nonlocal arrivals
            context = {**base, "iteration": arrivals}
            arrivals += 1
            for name, items in self.config.data.items():
                context[name] = self.random.choice(items)
            task = asyncio.create_task(self._arrival(intended, slots, context))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        await open_loop(
            self._pause_until,
            self._start + self.config.phase_s,
            rate,
            self._end,
            fire,
            stopped=self._stop.is_set,
        )
        await self._pause_until(self._end)
        self._stop.set()
        await self._finish(set(tasks))
        slots.close()

    async def _arrival(self, intended: float, slots: _Slots, context: dict[str, Any]) -> None:
        """One arrival: its first step, timed from ``intended``, then the rest of its steps
        while the run is on. Cut short by the end of the grace period before its first step
        was measured, it is counted as dropped (k6's dropped_iterations)."""
        if slots.full():
            self.arrivals_waited += 1
        measured = False
        try:
            connection = await slots.acquire()
            self.active_users += 1
            try:
                steps = self._pick(think=False)
                if await self._iteration(steps[:1], connection, context, intended):
                    measured = True
                    if len(steps) > 1:
                        await self._iteration(steps[1:], connection, context)
            finally:
                self.active_users -= 1
                slots.release(connection)
        except asyncio.CancelledError:
            if not measured:
                self.arrivals_dropped += 1
            raise

    def _pick(self, *, think: bool) -> list[Step]:
        """One iteration's steps: all of them in order, or one by weight (a lone think step
        is no arrival: the open model leaves them out of the draw)."""
        if self._sequence:
            return self.config.scenario.steps
        steps = self._weighted
        if not think:
            steps = [s for s in steps if not isinstance(s.action, ThinkStep)]
        if len(steps) == 1:
            return steps
        return [self.random.choices(steps, weights=[s.weight for s in steps])[0]]

    async def _iteration(
        self,
        steps: list[Step],
        connection: Connection,
        context: dict[str, Any],
        intended: float | None = None,
    ) -> bool:
        """Run ``steps`` in order; False once ``--max-requests`` is spent or the run was
        interrupted. An open-model arrival (``intended`` given) was due before the end, so
        its first step runs even if a late wake-up or a wait for a slot pushed it past the
        end, timed from ``intended`` (a request's latency, a WebSocket's connecting time);
        every other step runs only while the run is on, timed from when its turn came."""
        for position, step in enumerate(steps):
            arrival = position == 0 and intended is not None
            if self.interrupted or self.lost or not (arrival or self._running()):
                return False
            started = intended if arrival and intended is not None else self.clock.now()
            action = step.action
            if isinstance(action, ThinkStep):
                pause = self.random.uniform(action.low_s, action.high_s)
                await self._pause_until(self.clock.now() + pause)
            elif isinstance(action, HttpStep):
                if not self._take():
                    return False
                await self._http(step, action, connection, context, started)
            else:
                await self._websocket(step, action, context, started)
        return True

    # ---------------------------------------------------------------- steps

    async def _http(
        self,
        step: Step,
        action: HttpStep,
        connection: Connection,
        context: dict[str, Any],
        started: float,
    ) -> None:
        target = self._fixed_targets.get(step.name) or self._request_target(action, context)
        body = None if action.json is None else orjson.dumps(render(action.json, context))
        stats = self.stats.steps[step.name]
        error: str | None = None
        received = 0
        try:
            response = await connection.request(
                action.method, target, body, "application/json", timeout=action.timeout_s
            )
        except TimeoutError:
            error = "timeout"
            if error not in stats.samples:
                self._note(stats, error, f"{action.method} {target}: no answer within "
                           f"{action.timeout_s:g} s")  # fmt: skip
        except ConnectionFailed as exc:
            error = "connection"
            if error not in stats.samples:
                self._note(stats, error, f"{action.method} {target}: {exc}")
            self._connection_failed(str(exc))
        else:
            received = response.size
            self._last_ok = self.clock.now()
            if response.status not in action.expect_status:
                error = "status"
                if error not in stats.samples:
                    said = response.body[: SAMPLE_CHARS * 4].decode("utf-8", "replace")
                    self._note(stats, error, f"{action.method} {target} answered "
                               f"{response.status}: {said}")  # fmt: skip
        elapsed_ms = (self.clock.now() - started) * 1000
        stats.http(elapsed_ms, error, received)

    def _note(self, stats: StepStats, kind: str, detail: str) -> None:
        """Keep the first error of a kind, the token masked: a target may echo the
        request's headers back."""
        if self.config.token:
            detail = detail.replace(self.config.token, "***")
        stats.sample(kind, detail)

    @staticmethod
    def _request_target(action: HttpStep, context: dict[str, Any]) -> str:
        """The path with its variables filled in, made a valid target (whatever a fetched
        value holds: a CR or LF in it is sent as %0D or %0A, never as a line break), then
        the ``query`` mapping, form-encoded."""
        target = request_target(str(render(action.path, context)))
        if action.query:
            query = urlencode(render(action.query, context), doseq=True)
            target += ("&" if "?" in target else "?") + query
        return target

    def _connection_failed(self, reason: str) -> None:
        if self.clock.now() - self._last_ok > self.config.lost_after_s and self.lost is None:
            self.lost = f"no connection for {self.config.lost_after_s:g} s ({reason})"
            self._stop.set()

    async def _websocket(
        self, step: Step, action: WebSocketStep, context: dict[str, Any], began: float
    ) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        stats = self.stats.steps[step.name]
        scheme = "wss" if self.target.scheme == "https" else "ws"
        url = f"{scheme}://{self.target.host_header}{self.target.prefix}"
        url += request_target(str(render(action.path, context)))
        feature = {"feature": render(action.feature, context)} if action.feature else {}
        subscribed = failed = False
        try:
            async with asyncio.timeout(action.timeout_s):
                socket = await connect(
                    url, additional_headers=self.headers, open_timeout=None, compression=None
                )
        except (OSError, TimeoutError, WebSocketException) as exc:
            stats.ws_failed += 1
            self._note(stats, "websocket", f"connect {url}: {_reason(exc)}")
            if isinstance(exc, OSError):
                self._connection_failed(str(exc))
            return
        self._last_ok = self.clock.now()
        record_ms(stats.ws_connecting, (self.clock.now() - began) * 1000)
        try:
            await socket.send(subscription(action.channel, **feature))
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
        except (OSError, TimeoutError, WebSocketException) as exc:
            failed = True
            self._note(stats, "websocket", f"{url}: {_reason(exc)}")
        if subscribed and not failed:
            stats.ws_ok += 1
        else:
            stats.ws_failed += 1

    def _on_message(self, stats: StepStats, raw: str | bytes) -> tuple[bool, bool]:
        """Count a server message; returns (it confirmed the subscription, it is an error)."""
        kind, data = websocket_message(raw)
        if kind in ("log", "metrics_update", "alert", "settings_update"):
            stats.ws_msgs += 1
            _record_delay(stats, data)
        elif kind == "error":
            self._note(stats, "websocket", f"the service answered: {str(raw)[:SAMPLE_CHARS]}")
        return kind == "subscribed", kind == "error"


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _record_delay(stats: StepStats, data: dict[str, Any]) -> None:
    committed = data.get("committed_at")
    if not isinstance(committed, str):
        return
    try:
        moment = datetime.fromisoformat(committed.replace("Z", "+00:00"))
    except ValueError:
        return
    record_ms(stats.ws_msg_delay, max(time.time() - moment.timestamp(), 0.0) * 1000)


class _Slots:
    """The open model's in-flight slots, each with its connection: first come, first
    served (a newcomer never takes a slot that an earlier arrival is waiting for)."""

    def __init__(self, size: int, connect: Callable[[], Connection]) -> None:
        self._free: list[Connection] = [connect() for _ in range(size)]
        self._waiters: collections.deque[asyncio.Future[Connection]] = collections.deque()

    def full(self) -> bool:
        return not self._free or bool(self._waiters)

    async def acquire(self) -> Connection:
        if not self.full():
            return self._free.pop()  # the most recently used: its socket is warm
        waiter: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed over as we were cancelled: pass it on
            raise

    def release(self, connection: Connection) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._free.append(connection)

    def close(self) -> None:
        for connection in self._free:
            connection.close()
