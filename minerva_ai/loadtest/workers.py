"""One process or several: ``--workers N`` spreads users (or the arrival schedule) over N
processes, relays their progress once a second and merges their histograms exactly."""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from minerva_ai.loadtest.engine import LoadConfig, Progress, Runner, RunResult
from minerva_ai.loadtest.stats import Stats, new_histogram

# Set in each worker process by ``_start_worker``: where its progress snapshots go.
_progress: Any = None


def run_load(
    config: LoadConfig, workers: int = 1, on_progress: Callable[[Progress], None] | None = None
) -> RunResult:
    """Run in this process, or over ``workers`` processes with their results merged."""
    if workers <= 1:
        return _run_async(Runner(config).run(on_progress))
    import concurrent.futures
    import multiprocessing

    shares = split(config, workers)
    context = multiprocessing.get_context("spawn")
    snapshots = context.Queue() if on_progress else None
    interrupted = False

    def on_sigint(_signum: int, _frame: object) -> None:
        nonlocal interrupted
        interrupted = True  # the workers got it too: they stop and report what they have

    previous = signal.signal(signal.SIGINT, on_sigint)
    relay = (
        _Relay(snapshots, len(shares), on_progress)
        if snapshots is not None and on_progress
        else None
    )
    try:
        with concurrent.futures.ProcessPoolExecutor(
            len(shares), mp_context=context, initializer=_start_worker, initargs=(snapshots,)
        ) as pool:
            parts = list(pool.map(_worker, shares, range(len(shares))))
    finally:
        signal.signal(signal.SIGINT, previous)
        if relay is not None:
            relay.stop()
    stats = Stats()
    for part in parts:
        stats.merge_wire(part["stats"])
    return RunResult(
        stats,
        max(p["duration_s"] for p in parts),
        max(p["cpu_percent"] for p in parts),
        interrupted or any(p["interrupted"] for p in parts),
        next((p["lost"] for p in parts if p["lost"]), None),
        workers=len(parts),
        worker_requests=[p["requests"] for p in parts],
        arrivals_waited=sum(p["arrivals_waited"] for p in parts),
        arrivals_dropped=sum(p["arrivals_dropped"] for p in parts),
    )


def split(config: LoadConfig, workers: int) -> list[LoadConfig]:
    """Each worker's share: every N-th user; or 1/N of the rate, phase-shifted so the
    merged schedule is the single-process one; ``--max-requests`` and ``--max-in-flight``
    divided as evenly as they go (a worker left with no request is not started)."""
    shares = []
    for index in range(workers):
        users = list(range(index, config.users, workers))
        if not config.rate and not users:
            continue
        share = dataclasses.replace(config, user_indexes=users)
        if config.rate:
            share.rate = config.rate / workers
            share.phase_s = index / config.rate
            share.max_in_flight = max(1, _portion(config.max_in_flight, workers, index))
        if config.max_requests:
            share.max_requests = _portion(config.max_requests, workers, index)
            if share.max_requests == 0:
                continue
        shares.append(share)
    return shares


def _portion(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


class _Relay:
    """Reads the workers' snapshots and reports their sum (p95 from the merged histograms)
    at most once a second, once every worker has reported."""

    def __init__(
        self, snapshots: Any, workers: int, on_progress: Callable[[Progress], None]
    ) -> None:
        self._snapshots = snapshots
        self._workers = workers
        self._on_progress = on_progress
        self._latest: dict[int, tuple[Progress, bytes]] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-test-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        shown = time.monotonic()
        while not self._done.is_set():
            try:
                index, snapshot, encoded = self._snapshots.get(timeout=0.2)
            except queue.Empty:
                continue
            except (EOFError, OSError, ValueError):
                return
            self._latest[index] = (snapshot, encoded)
            if len(self._latest) == self._workers and time.monotonic() - shown >= 0.9:
                shown = time.monotonic()
                # Keep reading whatever happens to stderr: a worker whose queue is not
                # drained cannot exit.
                with contextlib.suppress(Exception):
                    self._on_progress(self.total())

    def total(self) -> Progress:
        histogram = new_histogram()
        for _snapshot, encoded in self._latest.values():
            histogram.decode_and_add(encoded)
        parts = [snapshot for snapshot, _ in self._latest.values()]
        count = histogram.get_total_count()
        return Progress(
            max(p.elapsed_s for p in parts),
            sum(p.users for p in parts),
            sum(p.requests for p in parts),
            sum(p.failed for p in parts),
            histogram.get_value_at_percentile(95) / 1000 if count else None,
        )

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)


def _run_async(main: Coroutine[Any, Any, RunResult]) -> RunResult:
    """Run on uvloop (a base dependency where it exists): twice the requests per core."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _start_worker(snapshots: Any) -> None:
    global _progress
    _progress = snapshots


def _worker(config: LoadConfig, index: int) -> dict[str, Any]:
    runner = Runner(config)

    def report(snapshot: Progress) -> None:
        histogram = Stats.combined(list(runner.stats.steps.values()), "duration")
        with contextlib.suppress(OSError, ValueError):
            _progress.put((index, snapshot, histogram.encode()))

    result = _run_async(runner.run(report if _progress is not None else None))
    return {
        "stats": result.stats.to_wire(),
        "duration_s": result.duration_s,
        "cpu_percent": result.cpu_percent,
        "interrupted": result.interrupted,
        "lost": result.lost,
        "requests": result.stats.requests,
        "arrivals_waited": result.arrivals_waited,
        "arrivals_dropped": result.arrivals_dropped,
    }
