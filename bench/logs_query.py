"""Benchmark ``GET /logs`` filters on a 10M-row table: p95 < 100 ms for each query kind.

Seeds 10,000,000 realistic rows for one organization over 30 days in 10 features (skewed:
the busiest has ~3x the quietest), 8% debug, 78% info, 9% warn, 4% error, 1% critical,
with messages of the kinds AI applications write (completions, tickets, rate limits,
provider timeouts, upstream 5xx...), seq increasing with time. It loads with INSERT ...
SELECT generate_series, then builds the logs indexes exactly as schema.sql defines them
and runs VACUUM ANALYZE (several minutes; progress is printed). Then, at a steady rate
(open model: latency counts from each request's intended send time):

- (a) ``GET /logs?feature=X&level=error,warn&since=<24 h ago>&until=<now>``, X rotating
  over the features;
- (b) ``GET /logs?feature=X&q=<regex>&since=<day D>&until=<day D + 1>``, X, D and the
  regex rotating (a rare needle, mid-frequency errors, a common phrase).

Goal: p95 < 100 ms for each. Afterwards it prints EXPLAIN (ANALYZE, BUFFERS) of the
slowest request of each kind, with the exact SQL logs.list_logs builds for it.

The service runs under uvicorn (one worker, the service's UVICORN_OPTIONS) pinned to
CPU 0; PostgreSQL (default settings of the embedded server) is not pinned. Embedded
PostgreSQL and Redis in a temp home; loopback only; bounded; stops everything. Run:

    .venv/bin/python bench/logs_query.py
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
import psycopg
from benchlib import (
    Databases,
    HttpPool,
    Service,
    add_run_options,
    bench_parser,
    command_line,
    embedded_databases,
    finish,
    quiet_machine,
)
from logslib import (
    LOGS_PATH,
    Ticks,
    features_of,
    fmt_ms,
    now_utc,
    seed_logs,
    summary_ms,
)

from minerva_ai.service import logs

P95_GOAL_MS = 100.0
REGEXES = [
    "T-12345[0-9]",  # a needle: a few tickets; the page never fills
    "timeout after [0-9]+ ms",  # provider timeouts (~1.3% of rows)
    "upstream returned 50[234]",  # upstream errors (~1%)
    "rate limited by (openai|anthropic)",  # ~1%
    "completion ok model=claude",  # a common phrase (~20%): the page fills at once
]


def z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def make_requests(
    kind: str,
    features: list[tuple[str, str]],
    start: datetime,
    days: int,
    count: int,
) -> list[tuple[str, str, datetime | None]]:
    """(regex or "", feature, window start or None) for ``count`` requests of ``kind``."""
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    out: list[tuple[str, str, datetime | None]] = []
    for i in range(count):
        feature = features[(i // len(REGEXES)) % len(features)][0]
        regex = REGEXES[i % len(REGEXES)]
        if kind in ("level", "newest"):
            out.append(("", features[i % len(features)][0], None))
        elif kind == "regex":  # calendar days (UTC), each inside the seeded range
            out.append((regex, feature, midnight + timedelta(days=(i * 7) % (days - 1))))
        else:  # regex_24h: 24 hours from the seeding's start time of day
            out.append((regex, feature, start + timedelta(days=(i * 7) % (days - 1))))
    return out


def path_for(kind: str, item: tuple[str, str, datetime | None]) -> tuple[str, dict[str, Any]]:
    regex, feature, day = item
    params: dict[str, Any] = {"feature": feature}
    if kind == "level":
        now = now_utc()
        params.update(level="error,warn", since=z(now - timedelta(hours=24)), until=z(now))
    elif day is not None:
        params.update(q=regex, since=z(day), until=z(day + timedelta(days=1)))
    return f"{LOGS_PATH}?{urlencode(params)}", params


async def steady(
    port: int, token: str, kind: str, items: list[Any], rate: float, warmup: int
) -> list[dict[str, Any]]:
    pool = HttpPool(port, token)
    done: list[dict[str, Any]] = []

    async def one(item: Any, intended: float | None) -> None:
        path, params = path_for(kind, item)
        status, body = await pool.request("GET", path)
        if intended is None:
            return
        elapsed = time.perf_counter() - intended
        count = orjson.loads(body).get("count") if status == 200 else None
        done.append(
            {"params": params, "status": status, "latency": elapsed, "count": count}
            | ({"error": body[:300].decode(errors="replace")} if status != 200 else {})
        )

    for item in items[:warmup]:
        await one(item, None)
    ticks = Ticks(rate, len(items))
    start = time.perf_counter() + 0.05
    tasks = []
    async for i in ticks:
        tasks.append(asyncio.create_task(one(items[i], start + i / rate)))
    await asyncio.gather(*tasks)
    pool.close()
    return done


class _Capture:
    """Stands in for a connection: keeps the statement logs.list_logs builds."""

    query: Any = None

    async def execute(self, query: Any) -> _Capture:
        self.query = query
        return self

    async def fetchall(self) -> list[Any]:
        return []


def list_logs_sql(dbs: Databases, feature_id: str, params: dict[str, Any]) -> str:
    filters = logs.LogFilter(
        feature_id=uuid.UUID(feature_id),
        levels=tuple(params["level"].split(",")) if "level" in params else None,
        since=datetime.fromisoformat(params["since"]) if "since" in params else None,
        until=datetime.fromisoformat(params["until"]) if "until" in params else None,
        pattern=params.get("q"),
    )
    capture = _Capture()
    asyncio.run(
        logs.list_logs(capture, uuid.UUID(dbs.organization_id), filters, limit=100)  # type: ignore[arg-type]
    )
    with psycopg.connect(dbs.database_url) as conn:
        text: str = capture.query.as_string(conn)
    return text


def explain(dbs: Databases, statement: str) -> str:
    with psycopg.connect(dbs.database_url, options="-c timezone=UTC") as conn:
        rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}").fetchall()
    return "\n".join(r[0] for r in rows)


def report(kind: str, done: list[dict[str, Any]], goal: bool) -> dict[str, Any]:
    ok = [d for d in done if d["status"] == 200]
    errors = [d for d in done if d["status"] != 200]
    s = summary_ms(d["latency"] for d in ok)
    counts = sorted(d["count"] for d in ok)
    median = counts[len(counts) // 2] if counts else 0
    print(
        f"  {kind:<9} {fmt_ms(s)}  errors {len(errors)}; entries per answer: "
        f"min {counts[0] if counts else 0}, median {median}"
    )
    for e in errors[:3]:
        print(f"            ! HTTP {e['status']}: {e.get('error')}")
    if goal:
        verdict = "meets" if s["p95_ms"] < P95_GOAL_MS else "MISSES"
        print(f"            goal p95 < {P95_GOAL_MS:g} ms: {s['p95_ms']:.1f} ms {verdict} it")
    if kind.startswith("regex"):
        for regex in REGEXES:
            every = [d for d in ok if d["params"]["q"] == regex]
            filled = sum(1 for d in every if d["count"])
            r = summary_ms(d["latency"] for d in every)
            print(
                f"            q={regex!r:<38} p50 {r['p50_ms']:6.1f}  p95 {r['p95_ms']:6.1f} ms"
                f"  ({filled}/{len(every)} non-empty)"
            )
    return {"latency": s, "errors": len(errors), "goal_met": s["p95_ms"] < P95_GOAL_MS}


KINDS = {
    "level": "feature + level=error,warn + the last 24 h (goal)",
    "regex": "feature + q=regex + one calendar day (UTC) (goal)",
    "regex_24h": "feature + q=regex + 24 h starting at another time of day",
    "newest": "feature only, newest first (the feature's log view)",
}
GOAL_KINDS = ("level", "regex")


def measure(
    dbs: Databases,
    service: Service,
    features: list[tuple[str, str]],
    start: datetime,
    args: argparse.Namespace,
    explain_worst: bool,
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    ids = dict(features)
    for kind, what in KINDS.items():
        items = make_requests(kind, features, start, args.days, args.requests)
        done = asyncio.run(steady(service.port, dbs.token, kind, items, args.rate, warmup=10))
        print(f"  {kind}: {what}")
        figures[kind] = report(kind, done, kind in GOAL_KINDS)
        if explain_worst and done:
            worst = max(done, key=lambda d: d["latency"])
            params = worst["params"]
            statement = list_logs_sql(dbs, ids[params["feature"]], params)
            plan = explain(dbs, statement)
            print(f"            slowest ({worst['latency'] * 1000:.0f} ms): {params}")
            print(f"            {' '.join(statement.split())}")
            print("\n".join("              " + line for line in plan.splitlines()))
            figures[kind]["slowest"] = {"params": params, "sql": statement, "plan": plan}
    return figures


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--requests", type=int, default=250, help="per query kind (>= 200)")
    parser.add_argument("--rate", type=float, default=10.0, help="requests/s")
    parser.add_argument(
        "--try-index",
        metavar="SQL",
        help="after measuring, run this CREATE INDEX on logs, ANALYZE, and measure again",
    )
    parser.add_argument("--no-explain", action="store_true")
    add_run_options(parser)
    args = parser.parse_args()
    args.rows = max(100_000, min(args.rows, 20_000_000))
    args.days = max(3, min(args.days, 30))
    args.requests = max(10, min(args.requests, 2000))

    results: dict[str, Any] = {"command": command_line()}
    started = time.perf_counter()
    print(
        f"GET /logs on {args.rows:,} rows over {args.days} days in {args.features} busy "
        f"features and a quiet one; {args.requests} requests per kind at {args.rate:g}/s"
    )
    with embedded_databases(args.features + 1) as dbs:
        with psycopg.connect(dbs.database_url) as conn:
            *busy_features, quiet = features_of(conn, dbs.organization_id, args.features + 1)
        # the oldest day stays inside the 30-day retention the service enforces at start
        end = now_utc() - timedelta(hours=1)
        start = end - timedelta(days=args.days)
        seeding = seed_logs(
            dbs,
            [fid for _, fid in busy_features],
            args.rows,
            args.days,
            end,
            quiet=(quiet[1], 500),
        )
        with psycopg.connect(dbs.database_url) as conn:
            size = conn.execute(
                "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
                " WHERE inhparent = 'logs'::regclass"
            ).fetchone()
            per = conn.execute(
                "SELECT f.name, count(*) FROM logs l JOIN features f ON f.id = l.feature_id"
                " GROUP BY 1 ORDER BY 2"
            ).fetchall()
        print(
            f"  seeded in {time.perf_counter() - started:.0f} s; "
            f"{(size[0] if size else 0) / 2**30:.1f} GiB with indexes; rows per feature: "
            + ", ".join(f"{n:,}" for _, n in per)
        )
        results.update(rows=args.rows, seeding=seeding, rows_per_feature=dict(per))
        features = [*busy_features, quiet]
        with Service("minerva", dbs, cpu=0) as service:
            pg = f"{dbs.postgres_version}, default settings, not pinned"
            busy = quiet_machine(args.wait_quiet, {"postgresql": pg})
            results.update(postgresql=dbs.postgres_version, busy_before=busy)
            print(f"\n  open model, {args.rate:g} requests/s, latency from the intended send:")
            results["schema"] = measure(dbs, service, features, start, args, not args.no_explain)
            if args.try_index:
                print(f"\n  with {args.try_index}:")
                t0 = time.perf_counter()
                with psycopg.connect(dbs.database_url, autocommit=True) as conn:
                    conn.execute("SET maintenance_work_mem = '1GB'")
                    conn.execute(args.try_index)
                    conn.execute("ANALYZE logs")
                print(f"  (built and analysed in {time.perf_counter() - t0:.0f} s)")
                results["try_index"] = {
                    "sql": args.try_index,
                    **measure(dbs, service, features, start, args, not args.no_explain),
                }
    met = all(results["schema"][k]["goal_met"] for k in GOAL_KINDS)
    print(f"\n  goals (p95 < {P95_GOAL_MS:g} ms, schema as shipped): {'met' if met else 'MISSED'}")
    print(f"  whole run: {time.perf_counter() - started:.0f} s")
    return finish(results, args.json, default=str)


if __name__ == "__main__":
    sys.exit(main())
