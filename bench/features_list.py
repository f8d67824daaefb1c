"""Benchmark ``GET /features?limit=1000`` on an organization of 1,000 features.

(a) latency at a steady 20 requests/s for 30 s (open model: each request has an intended
send time and its latency counts from then, so a slow server cannot hide its queue);
goal p95 < 50 ms. (b) requests/s at saturation with wrk, against the service and against
a bare Starlette app running the same SQL and returning the same JSON (bench/bare_starlette.py);
goal >= 0.6x the bare app.

Embedded PostgreSQL and Redis in a temp home; each app under uvicorn in a subprocess (one
worker, the service's UVICORN_OPTIONS) pinned to CPU 0; the load generators and PostgreSQL
on CPU 1.
Loopback only; bounded in time; stops everything it started. Run:

    .venv/bin/python bench/features_list.py
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from benchlib import (
    FEATURES_PATH,
    WRK_MISSING,
    Databases,
    HttpPool,
    Service,
    WrkResult,
    add_run_options,
    bench_parser,
    command_line,
    embedded_databases,
    finish,
    percentile,
    pinned,
    quiet_machine,
    run_wrk,
)

from minerva_ai.loadtest.http import ConnectionFailed

P95_GOAL_MS = 50.0
RATIO_GOAL = 0.6
REQUEST_TIMEOUT_S = 10.0


async def _steady(
    port: int, token: str, path: str, rate: float, duration_s: float, warmup: int
) -> dict[str, Any]:
    pool = HttpPool(port, token, REQUEST_TIMEOUT_S)
    latencies: list[float] = []
    errors: list[str] = []
    late_sends = 0

    async def one(intended: float | None) -> None:
        try:
            status, _ = await pool.request("GET", path)
        except (TimeoutError, ConnectionFailed) as exc:
            errors.append(repr(exc))
            return
        if intended is not None:
            latencies.append(time.perf_counter() - intended)
        if status != 200:
            errors.append(f"HTTP {status}")

    for _ in range(warmup):
        await one(None)
    total = int(rate * duration_s)
    start = time.perf_counter() + 0.05
    tasks = []
    for i in range(total):
        intended = start + i / rate
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.001:
            late_sends += 1
        tasks.append(asyncio.create_task(one(intended)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    pool.close()
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    return {
        "requests": total,
        "ok": len(latencies) - sum(e.startswith("HTTP") for e in errors),
        "errors": errors[:5],
        "error_count": len(errors),
        "elapsed_s": round(elapsed, 2),
        "achieved_rate": round(len(latencies) / elapsed, 2),
        "connections": pool.opened,
        "late_sends": late_sends,
        "p50_ms": percentile(ms, 0.50),
        "p95_ms": percentile(ms, 0.95),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": ms[-1] if ms else float("nan"),
        "mean_ms": sum(ms) / len(ms) if ms else float("nan"),
    }


def steady_latency(
    service: Service, token: str, path: str, rate: float, duration_s: float
) -> dict[str, Any]:
    """Latencies at a steady ``rate`` from a client pinned to CPU 1 (CPU 0 runs the app)."""
    with pinned(1):
        return asyncio.run(
            asyncio.wait_for(
                _steady(service.port, token, path, rate, duration_s, warmup=20),
                duration_s + 60,
            )
        )


def fetch(service: Service, token: str, path: str) -> tuple[int, bytes]:
    async def go() -> tuple[int, bytes]:
        pool = HttpPool(service.port, token, REQUEST_TIMEOUT_S)
        try:
            return await pool.request("GET", path)
        finally:
            pool.close()

    return asyncio.run(go())


def check_same_answer(
    ours: Service, bare: Service, dbs: Databases, path: str, features: int
) -> int:
    """Both apps answer 200 with the same JSON listing every feature; return its size."""
    answers = []
    for service in (ours, bare):
        status, body = fetch(service, dbs.token, path)
        if status != 200:
            raise SystemExit(f"{service.app}: HTTP {status}: {body[:300]!r}")
        answers.append(orjson.loads(body))
    if answers[0]["count"] != features or answers[0] != answers[1]:
        raise SystemExit(f"the two apps do not return the same {features} features")
    return len(body)


def print_latency(name: str, r: dict[str, Any]) -> None:
    print(
        f"  {name:<8} p50 {r['p50_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms  "
        f"p99 {r['p99_ms']:6.1f} ms  max {r['max_ms']:6.1f} ms  "
        f"({r['ok']}/{r['requests']} ok at {r['achieved_rate']} req/s, "
        f"{r['connections']} connections, {r['error_count']} errors)"
    )


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--features", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s in part (a)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of part (a)")
    parser.add_argument("--wrk-duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument(
        "--rounds", type=int, default=3, help="wrk runs per app, alternating service and bare app"
    )
    parser.add_argument(
        "--postgres-cpu",
        type=int,
        default=1,
        help="pin PostgreSQL to this CPU, beside the load generators (-1: not pinned)",
    )
    parser.add_argument("--skip-wrk", action="store_true", help="part (a) only")
    add_run_options(parser)
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="cProfile both apps; write DIR/minerva.pstats and DIR/bare.pstats",
    )
    args = parser.parse_args()
    args.rounds = max(1, min(args.rounds, 5))
    args.duration = min(args.duration, 300.0)
    args.wrk_duration = max(1, min(args.wrk_duration, 120))

    if not args.skip_wrk and shutil.which("wrk") is None:
        print(WRK_MISSING, file=sys.stderr)
        return 2
    path = f"{FEATURES_PATH}?limit={args.features}"
    results: dict[str, Any] = {"command": command_line()}
    print(f"GET {path}: {args.features} features, 1 uvicorn worker pinned to CPU 0")
    postgres_cpu = None if args.postgres_cpu < 0 else args.postgres_cpu
    with embedded_databases(args.features, postgres_cpu) as dbs:
        where = "not pinned" if postgres_cpu is None else f"pinned to CPU {postgres_cpu}"
        busy = quiet_machine(args.wait_quiet, {"postgresql": f"{dbs.postgres_version}, {where}"})
        results["postgresql"] = dbs.postgres_version
        results["postgres_cpu"] = postgres_cpu
        results["busy_before"] = busy
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        profiles = {
            name: args.profile / f"{name}.pstats" if args.profile else None
            for name in ("minerva", "bare")
        }
        with (
            Service("minerva", dbs, cpu=0, profile=profiles["minerva"]) as ours,
            Service("bare", dbs, cpu=0, profile=profiles["bare"]) as bare,
        ):
            size = check_same_answer(ours, bare, dbs, path, args.features)
            print(f"  response     {size / 1024:.0f} KiB, identical JSON from both apps")
            results["response_bytes"] = size

            print(
                f"\n(a) steady {args.rate:g} req/s for {args.duration:g} s, latency from "
                "the intended send time (client pinned to CPU 1)"
            )
            for name, service in (("minerva", ours), ("bare", bare)):
                latency = steady_latency(service, dbs.token, path, args.rate, args.duration)
                print_latency(name, latency)
                results[f"latency_{name}"] = latency
            p95 = results["latency_minerva"]["p95_ms"]
            verdict = "meets" if p95 < P95_GOAL_MS else "MISSES"
            print(f"  goal: p95 < {P95_GOAL_MS:g} ms: {p95:.1f} ms {verdict} it")

            if not args.skip_wrk:
                print(
                    f"\n(b) saturation: taskset -c 1 wrk -t1 -c{args.connections} "
                    f"-d{args.wrk_duration}s, {args.rounds} round(s), alternating"
                )
                runs: dict[str, list[WrkResult]] = {"minerva": [], "bare": []}
                for service in (ours, bare):  # warm both, discarded
                    run_wrk(
                        f"{service.url}{path}",
                        dbs.token,
                        connections=args.connections,
                        duration_s=3,
                    )
                for _ in range(args.rounds):
                    for name, service in (("minerva", ours), ("bare", bare)):
                        run = run_wrk(
                            f"{service.url}{path}",
                            dbs.token,
                            connections=args.connections,
                            duration_s=args.wrk_duration,
                        )
                        runs[name].append(run)
                        print(
                            f"  {name:<8} {run.requests_per_s:8.1f} req/s  latency avg "
                            f"{run.latency_avg}, p99 {run.latency_p99}  "
                            f"errors: {run.errors}"
                        )
                mean = {
                    name: sum(r.requests_per_s for r in rs) / len(rs) for name, rs in runs.items()
                }
                ratio = mean["minerva"] / mean["bare"]
                verdict = "meets" if ratio >= RATIO_GOAL else "MISSES"
                print(
                    f"  mean     minerva {mean['minerva']:.1f} req/s, bare {mean['bare']:.1f} req/s"
                )
                per_round = ", ".join(
                    f"{a.requests_per_s / b.requests_per_s:.2f}x"
                    for a, b in zip(runs["minerva"], runs["bare"], strict=True)
                )
                print(f"  rounds   {per_round}")
                print(f"  goal: ratio >= {RATIO_GOAL:g}x: {ratio:.2f}x {verdict} it")
                results["wrk"] = {name: [r.requests_per_s for r in rs] for name, rs in runs.items()}
                results["wrk_mean"] = mean
                results["ratio"] = ratio
    if args.profile:
        print(f"\nprofiles in {args.profile}/: python -m pstats {profiles['minerva']}")
    return finish(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
