"""Benchmark ``GET /features?include_metrics=true`` (limit=1000): 1,000 features with 7 days
of minute rollups, at a steady 20 requests/s (open model). Goal: p95 < 100 ms.

Seeds ``metric_minutes`` directly (``INSERT ... SELECT generate_series``, one model per
feature and a second on one in ten: ~11M rows up to 30 minutes ahead, with realistic
counts and two-bucket latency histograms), then serves the real service (``serve.py
minerva``, one uvicorn worker, pinned to CPU 0; PostgreSQL and the client on CPU 1). It
checks that all 1,000 features come back with their metrics, then measures:

- the endpoint at ``--rate`` requests/s for ``--duration`` s (latency from each request's
  intended send time, so a server that falls behind cannot hide its queue);
- the SQL alone, the physical reference: the very ``metric_rollup`` query and parameters
  ``metrics.current()`` runs for it, through psycopg (``dict_row``, as the service reads
  it), one at a time, with its ``EXPLAIN (ANALYZE, BUFFERS)``; and the ratio;
- first, 30 requests one at a time and the CPU each costs the service and PostgreSQL
  (from /proc), which says which side cannot keep up with the rate;
- for information, a few requests and the SQL with longer windows (``--info-windows``);
- unless ``--no-prototype``, the same for two prototypes of a change, served through
  ``serve.py``'s bench-only variables (never knobs of the product) and first checked to
  answer exactly as the shipped service does: ``prototype``, a ``metric_rollup`` (below)
  that merges the latency histograms in one pass instead of nesting ``jsonb_agg`` in a
  subquery per step; ``prototype+shared``, that query with the figures shared by all the
  requests asking for the same and refreshed in the background once ``--shared-s`` (1 s)
  old, as the live metrics hub computes them once per interval for all its watchers.

Embedded PostgreSQL and Redis in a temp home; loopback only; bounded; stops everything it
started. Run:

    .venv/bin/python bench/metrics_list.py
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from benchlib import (
    FEATURES_PATH,
    Databases,
    Service,
    add_run_options,
    bench_parser,
    busy_cpu_s,
    command_line,
    embedded_databases,
    finish,
    pinned,
    quiet_machine,
)
from features_list import fetch, print_latency, steady_latency
from logslib import (
    CpuMeter,
    PySpy,
    environment,
    fmt_ms,
    postmaster_pid,
    seed_metric_minutes,
    summary_ms,
    top_frames,
)
from psycopg import sql
from psycopg.rows import dict_row

from minerva_ai.service import metrics
from minerva_ai.service.db import queries

P95_GOAL_MS = 100.0
AHEAD = timedelta(minutes=30)
UNLOADED = 30  # requests one at a time, for the CPU each costs
NPROC = os.cpu_count() or 1

# metric_rollup with the histograms merged in one pass: each row's histogram expanded once
# and summed per (feature, model, step, bucket), instead of jsonb_agg per minute, jsonb_agg
# of those per step, and a correlated subquery per step unnesting both.
PROTOTYPE_METRIC_ROLLUP = """
WITH picked AS MATERIALIZED (
    SELECT m.feature_id, CASE WHEN %(by_model)s THEN m.model END AS model, m.minute,
           date_bin(%(step)s, m.minute, %(since)s) AS start, m.requests, m.successes,
           m.errors, m.timeouts, m.latency_count, m.latency_sum, m.tokens_in, m.tokens_out,
           m.cost, m.latency_hist
    FROM metric_minutes m
    WHERE m.organization_id = %(organization_id)s
      AND (%(feature_ids)s::uuid[] IS NULL OR m.feature_id = ANY(%(feature_ids)s::uuid[]))
      AND m.minute >= %(since)s AND m.minute < %(until)s
      AND (%(include_tests)s OR NOT m.test)
), minutes AS (
    SELECT feature_id, model, minute, start,
           sum(requests) AS requests, sum(successes) AS successes, sum(errors) AS errors,
           sum(timeouts) AS timeouts, sum(latency_count) AS latency_count,
           sum(latency_sum) AS latency_sum, sum(tokens_in) AS tokens_in,
           sum(tokens_out) AS tokens_out, sum(cost) AS cost
    FROM picked
    GROUP BY 1, 2, 3, 4
), steps AS (
    SELECT mi.feature_id, mi.model, mi.start,
           sum(mi.requests)::bigint AS requests, sum(mi.successes)::bigint AS successes,
           sum(mi.errors)::bigint AS errors, sum(mi.timeouts)::bigint AS timeouts,
           sum(mi.latency_count)::bigint AS latency_count, sum(mi.latency_sum) AS latency_sum,
           sum(mi.tokens_in)::bigint AS tokens_in, sum(mi.tokens_out)::bigint AS tokens_out,
           sum(mi.cost) AS cost, count(*) AS minutes,
           count(*) FILTER (WHERE mi.successes * 100.0 >= slo.success_rate * mi.requests)
               AS minutes_met
    FROM minutes mi JOIN feature_slo slo ON slo.feature_id = mi.feature_id
    GROUP BY 1, 2, 3
), histograms AS (
    SELECT feature_id, model, start, jsonb_object_agg(key, n) AS latency_hist
    FROM (SELECT p.feature_id, p.model, p.start, h.key, sum(h.value::bigint) AS n
          FROM picked p, jsonb_each_text(p.latency_hist) AS h
          GROUP BY 1, 2, 3, 4) b
    GROUP BY 1, 2, 3
)
SELECT s.feature_id, s.model, s.start, s.requests, s.successes, s.errors, s.timeouts,
       s.latency_count, s.latency_sum::float8 AS latency_sum, s.tokens_in, s.tokens_out,
       s.cost::float8 AS cost, s.minutes, s.minutes_met,
       coalesce(h.latency_hist, '{}') AS latency_hist
FROM steps s
LEFT JOIN histograms h ON h.feature_id = s.feature_id AND h.start = s.start
                      AND h.model IS NOT DISTINCT FROM s.model
"""


def path_for(features: int, window: str) -> str:
    return f"{FEATURES_PATH}?include_metrics=true&limit={features}&window={window}"


def answer(service: Service, dbs: Databases, path: str, features: int) -> tuple[Any, int]:
    """The features (all of them, each with metrics that counted calls), the body's size."""
    status, body = fetch(service, dbs.token, path)
    if status != 200:
        raise SystemExit(f"HTTP {status}: {body[:300]!r}")
    data = orjson.loads(body)["data"]
    counted = sum(1 for f in data if f.get("metrics") and f["metrics"]["requests"] > 0)
    if len(data) != features or counted != features:
        raise SystemExit(f"{len(data)} features, {counted} with calls; expected {features}")
    for feature in data:  # what depends on the moment asked
        del feature["metrics"]["as_of"], feature["metrics"]["requests_per_minute"]
    return data, len(body)


def rollup_params(dbs: Databases, feature_ids: list[uuid.UUID], window: str) -> dict[str, Any]:
    """The parameters ``metrics.current()`` gives ``metric_rollup`` for this window now."""
    span_window = metrics.parse_span(window, "window", timedelta(days=90))
    now = datetime.now(UTC)
    minute = metrics.minute_floor(now)
    start = minute - span_window
    span = span_window + metrics.STEP_MIN
    return {
        "organization_id": uuid.UUID(dbs.organization_id),
        "feature_ids": feature_ids,
        "since": start - span,
        "until": minute + metrics.STEP_MIN,
        "step": span,
        "include_tests": False,
        "by_model": False,
        "histograms": True,  # since 95783bf; ignored by the query before it
    }


def sql_alone(
    dbs: Databases, statement: sql.SQL, params: dict[str, Any], runs: int
) -> dict[str, Any]:
    """``statement`` through psycopg, ``runs`` times one after another (2 warm-up)."""
    times = []
    with psycopg.connect(
        dbs.database_url, autocommit=True, row_factory=dict_row, options="-c timezone=UTC"
    ) as conn:
        rows = 0
        for i in range(runs + 2):
            t0 = time.perf_counter()
            rows = len(conn.execute(statement, params).fetchall())
            if i >= 2:
                times.append(time.perf_counter() - t0)
        text = statement.as_string(conn)
        plan = conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") + statement,
            params,
        ).fetchall()
    return {
        "rows": rows,
        "latency": summary_ms(times),
        "sql": text,
        "explain": "\n".join(r["QUERY PLAN"] for r in plan),
    }


def compare_sql(
    dbs: Databases, statements: dict[str, sql.SQL], params: dict[str, Any], runs: int
) -> dict[str, dict[str, float]]:
    """Each statement ``runs`` times, interleaved (the order alternating every round), so
    that a shared machine's changing load weighs on all alike."""
    times: dict[str, list[float]] = {name: [] for name in statements}
    names = list(statements)
    with psycopg.connect(
        dbs.database_url, autocommit=True, row_factory=dict_row, options="-c timezone=UTC"
    ) as conn:
        for i in range(runs + 2):
            for name in names if i % 2 == 0 else reversed(names):
                t0 = time.perf_counter()
                conn.execute(statements[name], params).fetchall()
                if i >= 2:
                    times[name].append(time.perf_counter() - t0)
    return {name: summary_ms(values) for name, values in times.items()}


def timed_gets(service: Service, dbs: Databases, path: str, count: int) -> dict[str, float]:
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        status, body = fetch(service, dbs.token, path)
        times.append(time.perf_counter() - t0)
        if status != 200:
            return {"status": status, "error": body[:200].decode(errors="replace")}  # type: ignore[dict-item]
    return summary_ms(times)


def wait_idle(service: Service, dbs: Databases, limit_s: float = 120.0) -> None:
    """Until the service and PostgreSQL use less than 5% of a CPU each (at most ``limit_s``)."""
    assert service.process is not None
    meter = CpuMeter(service=(service.process.pid, False), postgres=(postmaster_pid(dbs), True))
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        meter.start()
        time.sleep(1.0)
        meter.stop()
        if max(meter.shares().values()) < 0.05:
            return


def measure(
    service: Service,
    dbs: Databases,
    ids: list[uuid.UUID],
    statement: sql.SQL,
    args: argparse.Namespace,
    spy: Path | None,
) -> dict[str, Any]:
    """The steady run with the CPU of each side, the SQL alone, the longer windows."""
    assert service.process is not None
    path = path_for(args.features, args.window)
    meter = CpuMeter(service=(service.process.pid, False), postgres=(postmaster_pid(dbs), True))
    with pinned(1):  # one request at a time: what each costs either side, unloaded
        meter.start()
        alone_latency = timed_gets(service, dbs, path, UNLOADED)
        meter.stop()
    cpu_ms = {name: used * 1000 / UNLOADED for name, used in meter.used.items()}
    print(
        f"  one at a time: {fmt_ms(alone_latency)}\n  CPU per request: service "
        f"{cpu_ms['service']:.1f} ms (CPU 0), PostgreSQL {cpu_ms['postgres']:.1f} ms (CPU 1); "
        f"at {args.rate:g} req/s, {1000 / args.rate:.0f} ms a request is all of a CPU"
    )
    with pinned(1):
        alone = sql_alone(dbs, statement, rollup_params(dbs, ids, args.window), args.sql_runs)
    print(f"  SQL      {fmt_ms(alone['latency'])}  ({alone['rows']} rows)")
    if not args.no_explain:
        print("\n  EXPLAIN (ANALYZE, BUFFERS) of the SQL:")
        print("    " + alone["explain"].replace("\n", "\n    "))
    info = {}
    for window in [w for w in args.info_windows.split(",") if w]:
        with pinned(1):
            gets = timed_gets(service, dbs, path_for(args.features, window), 5)
            timed = sql_alone(dbs, statement, rollup_params(dbs, ids, window), 5)
        info[window] = {"endpoint": gets, "sql": timed["latency"]}
        shown = fmt_ms(gets) if "p50_ms" in gets else f"failed: {gets}"
        print(f"  window {window}: endpoint {shown}")
        print(f"  window {window}: SQL      {fmt_ms(timed['latency'])}")
    with PySpy(service.process.pid, spy):
        busy0, t0 = busy_cpu_s(), time.perf_counter()
        meter.start()
        steady = steady_latency(service, dbs.token, path, args.rate, args.duration)
        meter.stop()
        ours = sum(meter.used.values())
        others = (busy_cpu_s() - busy0 - ours) / (time.perf_counter() - t0) / NPROC
    print_latency("endpoint", steady)
    print(
        f"  during it: service {meter.shares()['service']:.0%} of CPU 0, PostgreSQL "
        f"{meter.shares()['postgres']:.0%} of CPU 1; all other processes (this client's "
        f"included) {others:.0%} of the {NPROC} CPUs"
    )
    wait_idle(service, dbs)  # requests the client gave up on may still be running
    ratio = steady["p50_ms"] / alone["latency"]["p50_ms"]
    print(f"  endpoint p50 / SQL alone p50: {ratio:.1f}x")
    verdict = "meets" if steady["p95_ms"] < P95_GOAL_MS else "MISSES"
    print(f"  goal: p95 < {P95_GOAL_MS:g} ms: {steady['p95_ms']:.1f} ms {verdict} it")
    if spy is not None and spy.exists():
        print("\n  py-spy, the service during the steady run (inclusive, then own):")
        for share, name in top_frames(spy, 40):
            if "minerva_ai" in name or "psycopg" in name:
                print(f"    {share:6.1%}  {name}")
        for share, name in top_frames(spy, 10, own=True):
            print(f"    own {share:6.1%}  {name}")
    return {
        "latency": steady,
        "one_at_a_time": alone_latency,
        "cpu_share_during": meter.shares(),
        "others_busy_during": others,
        "cpu_ms_per_request": cpu_ms,
        "sql_alone": {k: v for k, v in alone.items() if k != "sql"},
        "ratio_p50": ratio,
        "p95_goal_met": steady["p95_ms"] < P95_GOAL_MS,
        "info_windows": info,
    }


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--features", type=int, default=1000)
    parser.add_argument("--days", type=float, default=7.0, help="days of minute rollups")
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds at that rate")
    parser.add_argument("--window", default="5m", help="the window asked for (the default's)")
    parser.add_argument("--sql-runs", type=int, default=100, help="runs of the SQL alone")
    parser.add_argument(
        "--info-windows", default="1h", help="longer windows timed for information ('' none)"
    )
    parser.add_argument("--postgres-cpu", type=int, default=1, help="-1: not pinned")
    parser.add_argument("--no-prototype", action="store_true", help="the shipped service only")
    parser.add_argument(
        "--shared-s", type=float, default=1.0, help="the shared prototype's refresh, seconds"
    )
    parser.add_argument("--no-explain", action="store_true")
    add_run_options(parser, py_spy="sample the service during the steady run; DIR/list.txt")
    args = parser.parse_args()
    args.features = max(1, min(args.features, 1000))
    args.days = max(0.01, min(args.days, 30.0))
    args.rate = max(0.1, min(args.rate, 200.0))
    args.duration = max(1.0, min(args.duration, 300.0))
    args.sql_runs = max(1, min(args.sql_runs, 1000))

    results: dict[str, Any] = {"command": command_line(), "window": args.window}
    print(
        f"GET /features?include_metrics=true: {args.features} features, {args.days:g} days of "
        f"minute rollups, {args.rate:g} req/s for {args.duration:g} s, window {args.window}"
    )
    pg_cpu = args.postgres_cpu if args.postgres_cpu >= 0 else None
    with embedded_databases(args.features, postgres_cpu=pg_cpu) as dbs:
        with psycopg.connect(dbs.database_url) as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM features WHERE organization_id = %s ORDER BY name",
                    (dbs.organization_id,),
                ).fetchall()
            ]
        t0 = time.perf_counter()
        # Up to AHEAD past now, so that the windows measured are full whatever the wait for
        # a quiet machine (the queries never read past the current minute).
        end = datetime.now(UTC) + AHEAD
        seeded = seed_metric_minutes(dbs, [str(i) for i in ids], args.days, end)
        seeded["total_s"] = time.perf_counter() - t0
        print(
            f"  seeded {seeded['rows']:,.0f} rollup rows ({seeded['bytes'] / 2**30:.2f} GiB with "
            f"indexes) in {seeded['total_s']:.0f} s: insert {seeded['insert_s']:.0f} s "
            f"({seeded['rows'] / seeded['insert_s']:,.0f} rows/s), indexes "
            f"{seeded['indexes_s']:.0f} s, VACUUM ANALYZE {seeded['vacuum_analyze_s']:.0f} s"
        )
        pinning = "not pinned" if pg_cpu is None else f"pinned to CPU {pg_cpu}"
        busy = quiet_machine(args.wait_quiet, {"postgresql": f"{dbs.postgres_version}, {pinning}"})
        results.update(postgresql=dbs.postgres_version, busy_before=busy, seeding=seeded)
        path = path_for(args.features, args.window)
        replaced = orjson.dumps({"metric_rollup": PROTOTYPE_METRIC_ROLLUP}).decode()
        variants = {"shipped": ({}, queries()["metric_rollup"])}
        if not args.no_prototype:
            prototype = sql.SQL(PROTOTYPE_METRIC_ROLLUP)
            variants["prototype"] = ({"BENCH_QUERIES": replaced}, prototype)
            shared = {"BENCH_QUERIES": replaced, "BENCH_SHARED_METRICS": str(args.shared_s)}
            variants["prototype+shared"] = (shared, prototype)
        with contextlib.ExitStack() as stack:
            services, statements = {}, {}
            for name, (env, statement) in variants.items():
                with environment(**env):
                    services[name] = stack.enter_context(Service("minerva", dbs, cpu=0))
                statements[name] = statement
            for _ in range(3):  # the answers of both within one minute
                minute = datetime.now(UTC).replace(second=0, microsecond=0)
                answers = {
                    name: answer(s, dbs, path, args.features) for name, s in services.items()
                }
                if datetime.now(UTC).replace(second=0, microsecond=0) == minute:
                    break
            size = answers["shipped"][1]
            print(f"  {path}: {args.features} features with metrics, {size / 1024:.0f} KiB")
            for name in [n for n in answers if n != "shipped"]:
                same = answers[name][0] == answers["shipped"][0]
                print(f"  {name} answers as shipped: {same}")
                if not same:
                    raise SystemExit(f"{name} does not answer as the shipped service")
            results["response_kib"] = size / 1024
            if "prototype" in statements:
                unique = {"shipped": statements["shipped"], "prototype": statements["prototype"]}
                with pinned(1):
                    compared = compare_sql(
                        dbs, unique, rollup_params(dbs, ids, args.window), args.sql_runs
                    )
                print("\n  metric_rollup alone, shipped and prototype interleaved:")
                for name, figures in compared.items():
                    print(f"  {name:<10} {fmt_ms(figures)}")
                gain = compared["prototype"]["p50_ms"] / compared["shipped"]["p50_ms"]
                print(f"  prototype / shipped, p50: {gain:.2f}x")
                results["sql_interleaved"] = compared
            for name, service in services.items():
                print(f"\n  {name}:")
                spy = args.py_spy / f"list-{name}.txt" if args.py_spy else None
                results[name] = measure(service, dbs, ids, statements[name], args, spy)
    return finish(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
