"""Benchmark live metrics: ``metrics_update`` to 1,000 WebSocket subscribers of 100 features
(10 each) against 100 subscribers (one each) and 1 subscriber, at MINERVA_METRICS_INTERVAL=1.

The service computes each organization's live metrics once per interval for all its
watchers (``metrics_live.MetricsHub``), so computing must cost the same whatever the number
of subscribers. Measured per phase, all on one service instance:

- computations: ``MetricsHub.computations`` read in the service's own process (``serve.py``
  with BENCH_COUNTERS_FILE writes it to a file every 0.2 s), per interval;
- CPU per interval from /proc: the service's (alone on CPU 0) and PostgreSQL's (CPU 1);
- delivery lag: a frame's arrival at its client minus its ``as_of`` (the moment the figures
  were computed, so the interval's wait is not in it), and the gaps between a subscriber's
  successive frames (about the interval when none is skipped).

The 100 features have minute rollups for ``--minutes`` minutes up to 30 minutes ahead
(seeded in SQL; ahead, so that the windows are full whatever the wait for a quiet
machine), so each computation reads real rows. The subscribers are asyncio + websockets
clients in one process pinned to CPU 1 with PostgreSQL. Embedded PostgreSQL and Redis in a
temp home; loopback only; bounded; stops everything it started. Run:

    .venv/bin/python bench/metrics_live.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import tempfile
import time
from array import array
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from benchlib import (
    Service,
    add_run_options,
    bench_parser,
    command_line,
    embedded_databases,
    finish,
    quiet_machine,
)
from logslib import (
    WS_PATH,
    CpuMeter,
    PySpy,
    close_when,
    environment,
    features_of,
    fmt_ms,
    open_subscribed,
    postmaster_pid,
    run_pinned,
    seed_metric_minutes,
    summary_ms,
)

CONNECT_CONCURRENCY = 50
AHEAD = timedelta(minutes=30)  # rollups past now: full windows whatever the wait for quiet


# --- the subscribers (their own process, pinned to CPU 1) ------------------------------------


async def subscribers(
    port: int, token: str, features: list[str], ready: Any, measuring: Any, stop: Any
) -> dict[str, Any]:
    """One WebSocket per entry of ``features``, subscribed to that feature's metrics."""
    from websockets.exceptions import ConnectionClosed

    url = f"ws://127.0.0.1:{port}{WS_PATH}"
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    lags, gaps = array("d"), array("d")
    counts = {"frames": 0, "closed": 0, "other": 0, "wrong_feature": 0}
    t0 = time.perf_counter()

    async def open_one(feature: str) -> Any:
        async with gate:
            subscription = {"channel": "metrics", "feature": feature}
            return await open_subscribed(url, token, subscription, open_timeout=120)

    sockets = await asyncio.gather(*(open_one(f) for f in features))
    connect_s = time.perf_counter() - t0
    ready.set()

    async def read(ws: Any, feature: str) -> None:
        previous: float | None = None
        try:
            async for raw in ws:
                arrival = time.time()
                message = orjson.loads(raw)
                if message["type"] != "metrics_update":
                    counts["other"] += message["type"] != "heartbeat"
                    continue
                data = message["data"]
                if data["feature"] != feature:
                    counts["wrong_feature"] += 1
                if measuring.is_set():
                    lags.append(arrival - datetime.fromisoformat(data["as_of"]).timestamp())
                    if previous is not None:
                        gaps.append(arrival - previous)
                    counts["frames"] += 1
                    previous = arrival
        except ConnectionClosed:
            counts["closed"] += 1

    readers = [asyncio.create_task(read(ws, f)) for ws, f in zip(sockets, features, strict=True)]
    await close_when(stop, sockets, readers)
    return {"lags": lags.tobytes(), "gaps": gaps.tobytes(), "connect_s": connect_s, **counts}


def subscriber_process(
    port: int,
    token: str,
    features: list[str],
    cpu: int,
    ready: Any,
    measuring: Any,
    stop: Any,
    results: Any,
) -> None:
    results.put(run_pinned(cpu, subscribers(port, token, features, ready, measuring, stop)))


# --- one phase ---------------------------------------------------------------------------------


def computations(counters: Path) -> int:
    value: int = json.loads(counters.read_text())["computations"]
    return value


def phase(
    service: Service,
    token: str,
    postmaster: int,
    counters: Path,
    features: list[str],
    args: argparse.Namespace,
    spy: Path | None,
) -> dict[str, Any]:
    assert service.process is not None
    pid = service.process.pid
    ctx = mp.get_context("fork")
    ready, measuring, stop, results = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(
        target=subscriber_process,
        args=(service.port, token, features, 1, ready, measuring, stop, results),
    )
    proc.start()
    try:
        if not ready.wait(300):
            raise SystemExit("the subscribers did not all connect and subscribe in 300 s")
        time.sleep(2 * args.interval + 1)  # past the computations that new features wake
        meter = CpuMeter(service=(pid, False), postgres=(postmaster, True))
        with PySpy(pid, spy):
            before = computations(counters)
            meter.start()
            measuring.set()
            time.sleep(args.duration)
            measuring.clear()
            meter.stop()
            done = computations(counters) - before
    finally:
        stop.set()
    got = results.get(timeout=120)
    proc.join(60)
    lags, gaps = array("d"), array("d")
    lags.frombytes(got["lags"])
    gaps.frombytes(got["gaps"])
    intervals = meter.wall / args.interval
    return {
        "subscribers": len(features),
        "features": len(set(features)),
        "connect_s": got["connect_s"],
        "measured_s": meter.wall,
        "computations": done,
        "computations_per_interval": done / intervals,
        "cpu_s_per_interval": {name: used / intervals for name, used in meter.used.items()},
        "cpu_share": meter.shares(),
        "subscribers_cpu_s": got["cpu_s"],
        "frames": got["frames"],
        "expected_frames": len(features) * intervals,
        "closed": got["closed"],
        "wrong_feature": got["wrong_feature"],
        "lag": summary_ms(lags),
        "gap": summary_ms(gaps),
    }


def print_phase(r: dict[str, Any]) -> None:
    cpu = r["cpu_s_per_interval"]
    print(
        f"\n  {r['subscribers']} subscriber(s) of {r['features']} feature(s), connected and "
        f"subscribed in {r['connect_s']:.1f} s; measured {r['measured_s']:.1f} s"
    )
    print(
        f"    computations {r['computations']} ({r['computations_per_interval']:.2f} per "
        f"interval); CPU per interval: service {cpu['service'] * 1000:.1f} ms, postgres "
        f"{cpu['postgres'] * 1000:.1f} ms (service {r['cpu_share']['service']:.0%} of CPU 0)"
    )
    print(
        f"    frames {r['frames']:,} of ~{r['expected_frames']:,.0f}; closed {r['closed']}, "
        f"wrong feature {r['wrong_feature']}"
    )
    print(f"    delivery lag (arrival - as_of) {fmt_ms(r['lag'])}")
    print(f"    gap between a subscriber's frames {fmt_ms(r['gap'])}")


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--per-feature", type=int, default=10, help="subscribers per feature")
    parser.add_argument("--interval", type=float, default=1.0, help="MINERVA_METRICS_INTERVAL")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument("--minutes", type=int, default=60, help="minutes of rollups seeded")
    add_run_options(parser, py_spy="sample the service in each phase; DIR/live-N.txt")
    args = parser.parse_args()
    args.features = max(1, min(args.features, 1000))
    args.per_feature = max(1, min(args.per_feature, 100))
    args.interval = max(0.05, min(args.interval, 10.0))
    args.duration = max(5 * args.interval, min(args.duration, 120.0))
    args.minutes = max(1, min(args.minutes, 1440))

    results: dict[str, Any] = {"command": command_line(), "interval_s": args.interval}
    print(
        f"metrics_update to WebSocket subscribers: 1, {args.features} and "
        f"{args.features * args.per_feature} subscribers, every {args.interval:g} s, "
        f"{args.duration:g} s per phase"
    )
    with (
        embedded_databases(args.features, postgres_cpu=1) as dbs,
        tempfile.TemporaryDirectory(prefix="minerva-bench-counters-") as tmp,
    ):
        with psycopg.connect(dbs.database_url) as conn:
            pairs = features_of(conn, dbs.organization_id, args.features)
        ids = [fid for _, fid in pairs]
        seeded = seed_metric_minutes(
            dbs, ids, args.minutes / 1440, datetime.now(UTC) + AHEAD, say=lambda _: None
        )
        print(f"  seeded {seeded['rows']:,.0f} rollup rows ({args.minutes} minutes)")
        names = [name for name, _ in pairs]
        counters = Path(tmp) / "counters.json"
        settings = {"MINERVA_METRICS_INTERVAL": str(args.interval)}
        with (
            environment(**settings, BENCH_COUNTERS_FILE=str(counters)),
            Service("minerva", dbs, cpu=0) as service,
        ):
            pg = f"{dbs.postgres_version}, pinned to CPU 1"
            busy = quiet_machine(args.wait_quiet, {"postgresql": pg})
            results.update(postgresql=dbs.postgres_version, busy_before=busy, phases=[])
            layouts = [names[:1], names, names * args.per_feature]
            for n, features in enumerate(layouts, 1):
                spy = args.py_spy / f"live-{n}.txt" if args.py_spy else None
                r = phase(service, dbs.token, postmaster_pid(dbs), counters, features, args, spy)
                print_phase(r)
                results["phases"].append(r)
        one, many = results["phases"][0], results["phases"][-1]
        same = many["computations_per_interval"] / max(one["computations_per_interval"], 1e-9)
        postgres = many["cpu_s_per_interval"]["postgres"] / max(
            results["phases"][1]["cpu_s_per_interval"]["postgres"], 1e-9
        )
        print(
            f"\n  computations per interval, {many['subscribers']} subscribers / 1: {same:.2f}x; "
            f"PostgreSQL CPU per interval, {many['subscribers']} / {args.features} subscribers "
            f"of the same {args.features} features: {postgres:.2f}x"
        )
        print(f"  delivery lag p99 with {many['subscribers']}: {many['lag']['p99_ms']:.1f} ms")
        results.update(computations_ratio=same, postgres_cpu_ratio=postgres)
    return finish(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
