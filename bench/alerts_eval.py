"""One alert evaluation cycle: 10,000 rules over 1,000 features (goal < 2 s).

Embedded PostgreSQL (pinned to CPU 1) in a temp home, one organization of 1,000 features,
each with ten rules (error_rate, success_rate, uptime, response_time, p95_ms, p99_ms,
requests_per_minute, cost, tokens; windows 1m, 5m, 15m, 1h; two with `for`), and its
minute rollups seeded directly in ``metric_minutes`` (logslib.seed_metric_minutes) for the
two hours and a few minutes every window and its trend read. ``alerts.evaluate`` is called
on an async pool in this process (pinned to CPU 0), as the `alert-evaluation` job calls
it, at a fixed ``now`` (the seeded data's last minute, 30 s in):

- **steady, realistic**: realistic thresholds, after one warm-up cycle: states settled;
- **first cycle**: thresholds every rule breaches, from empty rule states (tables emptied
  before each repetition): every rule transitions (firing, opening an alert with its
  notification; pending for the rules with `for`; no_data where min_requests is not met);
- **steady, all breaching**: the same rules again, states settled: no transitions.

Each phase prints the transitions it wrote, by rule and event. The reference is the SQL
alone: the ``metric_rollup`` queries one cycle runs (one per window in use, the very
parameters ``metrics.current`` passes), through psycopg on the same pool. A prototype
re-writes the first cycle's rows per table (``executemany``) instead of per rule.
``--py-spy DIR`` samples this process during one cycle of each kind, ``--explain`` prints
``EXPLAIN (ANALYZE, BUFFERS)`` of the 1h window's rollup.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from benchlib import (
    Databases,
    add_run_options,
    bench_parser,
    busy_share,
    command_line,
    embedded_databases,
    finish,
    percentile,
    pinned,
    quiet_machine,
)
from logslib import PySpy, seed_metric_minutes, top_frames
from metrics_list import PROTOTYPE_METRIC_ROLLUP
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from minerva_ai.service import alerts, metrics
from minerva_ai.service.config import ServiceConfig
from minerva_ai.service.db import queries
from minerva_ai.service.feature_settings import AlertRule, empty_settings
from minerva_ai.service.locks import Lock

GOAL_S = 2.0
# Ten rules per feature: (name, metric, window, realistic rule, the same made to breach).
RULES: list[tuple[str, str, str, dict[str, Any], dict[str, Any]]] = [
    (
        "high-error-rate",
        "error_rate",
        "5m",
        {"operator": ">", "threshold": 50, "severity": "critical", "min_requests": 20},
        {"operator": ">=", "threshold": 0},
    ),
    (
        "error-burst",
        "error_rate",
        "1m",
        {"operator": ">", "threshold": 80, "warning_threshold": 60},
        {"operator": ">=", "threshold": 0},
    ),
    (
        "low-success-rate",
        "success_rate",
        "15m",
        {"operator": "<", "threshold": 50, "for": "5m"},
        {"operator": "<=", "threshold": 100},
    ),
    (
        "uptime",
        "uptime",
        "1h",
        {"operator": "<", "threshold": 10, "severity": "critical"},
        {"operator": "<=", "threshold": 100},
    ),
    (
        "slow-average",
        "response_time",
        "5m",
        {"operator": ">", "threshold": 30000},
        {"operator": ">=", "threshold": 0},
    ),
    (
        "slow-p95",
        "p95_ms",
        "15m",
        {"operator": ">", "threshold": 60000, "warning_threshold": 40000},
        {"operator": ">=", "threshold": 0},
    ),
    (
        "slow-p99",
        "p99_ms",
        "1h",
        {"operator": ">", "threshold": 120000, "for": "10m"},
        {"operator": ">=", "threshold": 0},
    ),
    (
        "traffic-stopped",
        "requests_per_minute",
        "15m",
        {"operator": "<", "threshold": 0.5, "severity": "critical"},
        {"operator": ">=", "threshold": 0},
    ),
    (
        "cost-spike",
        "cost",
        "1h",
        {"operator": ">", "threshold": 100000},
        {"operator": ">=", "threshold": 0},
    ),
    (
        "token-burn",
        "tokens",
        "1m",
        {"operator": ">", "threshold": 1e12, "labels": {"team": "platform"}},
        {"operator": ">=", "threshold": 0},
    ),
]
# A prototype: metric_rollup without the latency histogram, for the windows whose rules
# judge no percentile (the sums, the minutes with calls and those meeting the SLO only).
ROLLUP_WITHOUT_HISTOGRAM = """
WITH minutes AS (
    SELECT m.feature_id, m.minute, sum(m.requests) AS requests,
           sum(m.successes) AS successes, sum(m.errors) AS errors,
           sum(m.timeouts) AS timeouts, sum(m.latency_count) AS latency_count,
           sum(m.latency_sum) AS latency_sum, sum(m.tokens_in) AS tokens_in,
           sum(m.tokens_out) AS tokens_out, sum(m.cost) AS cost
    FROM metric_minutes m
    WHERE m.organization_id = %(organization_id)s
      AND (%(feature_ids)s::uuid[] IS NULL OR m.feature_id = ANY(%(feature_ids)s::uuid[]))
      AND m.minute >= %(since)s AND m.minute < %(until)s
      AND (%(include_tests)s OR NOT m.test)
    GROUP BY 1, 2
)
SELECT mi.feature_id, NULL::text AS model, date_bin(%(step)s, mi.minute, %(since)s) AS start,
       sum(mi.requests)::bigint AS requests, sum(mi.successes)::bigint AS successes,
       sum(mi.errors)::bigint AS errors, sum(mi.timeouts)::bigint AS timeouts,
       sum(mi.latency_count)::bigint AS latency_count, sum(mi.latency_sum)::float8 AS latency_sum,
       sum(mi.tokens_in)::bigint AS tokens_in, sum(mi.tokens_out)::bigint AS tokens_out,
       sum(mi.cost)::float8 AS cost, count(*) AS minutes,
       count(*) FILTER (WHERE mi.successes * 100.0 >= slo.success_rate * mi.requests)
           AS minutes_met,
       '{}'::jsonb AS latency_hist
FROM minutes mi JOIN feature_slo slo ON slo.feature_id = mi.feature_id
GROUP BY 1, 2, 3
"""
PERCENTILES = ("p95_ms", "p99_ms")
STATE_TABLES = "alert_notifications, alert_transitions, alert_rule_states, alerts"
WRITTEN = ("alerts", "alert_transitions", "alert_notifications", "alert_rule_states")


def rules(breaching: bool) -> list[dict[str, Any]]:
    """The ten rules of a feature: realistic thresholds, or ones that every value breaches
    (same names, metrics, windows, `for`, min_requests)."""
    out = []
    for name, metric, window, realistic, breach in RULES:
        rule = {"name": name, "metric": metric, "window": window, **copy.deepcopy(realistic)}
        if breaching:
            rule.pop("warning_threshold", None)
            rule.update(breach)
        AlertRule.model_validate(rule)  # as a settings write would check it
        out.append(rule)
    return out


def set_rules(dbs: Databases, version: int, breaching: bool) -> None:
    """Settings ``version`` of every feature, with the rules; made the current one."""
    settings = empty_settings()
    settings["monitoring"]["alert_rules"] = rules(breaching)
    with psycopg.connect(dbs.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO feature_settings (feature_id, version, settings, author_name) "
            "SELECT id, %s, %s, 'bench' FROM features WHERE organization_id = %s "
            "ON CONFLICT DO NOTHING",
            (version, Jsonb(settings), dbs.organization_id),
        )
        conn.execute(
            "UPDATE features SET settings_version = %s WHERE organization_id = %s",
            (version, dbs.organization_id),
        )
        conn.execute("ANALYZE features; ANALYZE feature_settings")


def forget_states(dbs: Databases) -> None:
    with psycopg.connect(dbs.database_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {STATE_TABLES} CASCADE")


def counts(dbs: Databases) -> dict[str, int]:
    with psycopg.connect(dbs.database_url, autocommit=True) as conn:
        out = {}
        for table in WRITTEN:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            out[table] = int(row[0]) if row else 0
        return out


def transitions_since(dbs: Databases, after: int) -> dict[str, int]:
    """Transitions after ``after`` (a seq) by rule, event and states, and the last seq."""
    with psycopg.connect(dbs.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT rule || ': ' || event || ' ' || from_state || ' -> ' || to_state, count(*)"
            " FROM alert_transitions WHERE seq > %s GROUP BY 1 ORDER BY 2 DESC, 1",
            (after,),
        ).fetchall()
        last = conn.execute("SELECT coalesce(max(seq), 0) FROM alert_transitions").fetchone()
    return {"last_seq": int(last[0]) if last else 0, **{r[0]: int(r[1]) for r in rows}}


def open_pool(dbs: Databases) -> AsyncConnectionPool[Any]:
    """A pool like the service's (service/app.py): autocommit, dict rows, its timeouts."""
    config = ServiceConfig(dbs.database_url, dbs.redis_url)
    return AsyncConnectionPool(
        dbs.database_url,
        min_size=2,
        max_size=4,
        open=False,
        kwargs={
            "autocommit": True,
            "row_factory": dict_row,
            "options": f"-c statement_timeout={config.statement_timeout_ms} -c timezone=UTC",
        },
    )


async def cycle(pool: AsyncConnectionPool[Any], now: datetime, label: str) -> float:
    async with pool.connection() as conn:
        t0 = time.perf_counter()
        await alerts.evaluate(conn, now=now)
        took = time.perf_counter() - t0
    print(f"  {label}: {took:.3f} s", flush=True)
    return took


def rollup_params(
    organization_id: uuid.UUID,
    feature_ids: list[uuid.UUID],
    window: timedelta,
    now: datetime,
    trend: bool = True,
) -> dict[str, Any]:
    """What ``metrics.current`` passes to ``metric_rollup`` for this window (which reads the
    span before it too, for the trend); without ``trend``, the window alone."""
    minute = metrics.minute_floor(now)
    start = minute - window
    span = window + metrics.STEP_MIN
    query = metrics.Query(organization_id, feature_ids)
    return {
        **query.scope(),
        "since": start - span if trend else start,
        "until": minute + metrics.STEP_MIN,
        "step": span,
        "include_tests": False,
        "by_model": False,
        "histograms": True,
    }


async def sql_alone(
    pool: AsyncConnectionPool[Any], params: list[dict[str, Any]], statement: Any = None
) -> tuple[float, list[float]]:
    """The rollup queries of one cycle, rows fetched; (total, each)."""
    each = []
    async with pool.connection() as conn:
        for p in params:
            t0 = time.perf_counter()
            await (await conn.execute(statement or queries()["metric_rollup"], p)).fetchall()
            each.append(time.perf_counter() - t0)
    return sum(each), each


async def same_answers(
    pool: AsyncConnectionPool[Any], params: list[dict[str, Any]], statement: Any, hist: bool
) -> None:
    """A prototype of the rollup answers as ``metric_rollup`` does (its histograms too when
    ``hist``); SystemExit naming the first difference."""
    async with pool.connection() as conn:
        for p in params:
            answers = []
            for query in (queries()["metric_rollup"], statement):
                rows = await (await conn.execute(query, p)).fetchall()
                answers.append(
                    {
                        (r["feature_id"], r["start"]): {
                            k: round(v, 6) if isinstance(v, float) else v
                            for k, v in r.items()
                            if hist or k != "latency_hist"
                        }
                        for r in rows
                    }
                )
            if answers[0] != answers[1]:
                raise SystemExit(f"a prototype answers differently for the window at {p['since']}")


def stats(seconds: list[float]) -> dict[str, Any]:
    ordered = sorted(seconds)
    return {
        "runs_s": [round(s, 4) for s in seconds],
        "p50_s": percentile(ordered, 0.5),
        "max_s": ordered[-1],
    }


def show(label: str, s: dict[str, Any]) -> None:
    runs = ", ".join(f"{x:.3f}" for x in s["runs_s"])
    print(f"  {label:<22} p50 {s['p50_s']:6.3f} s  max {s['max_s']:6.3f} s   ({runs})")


async def measure(
    dbs: Databases, now: datetime, repeats: int, py_spy: Path | None, explain: bool
) -> dict[str, Any]:
    org = uuid.UUID(dbs.organization_id)
    pool = open_pool(dbs)
    await pool.open(wait=True)
    out: dict[str, Any] = {}
    try:
        set_rules(dbs, 2, breaching=False)
        async with pool.connection() as conn:
            found = await alerts.targets(conn, org)
        windows = sorted({t.rule.window for t in found})
        feature_ids = sorted({t.feature_id for t in found})
        params = [rollup_params(org, feature_ids, w, now) for w in windows]
        out["rules"], out["features"] = len(found), len(feature_ids)
        out["windows"] = [metrics.span_text(w) for w in windows]
        print(f"{len(found):,} rules over {len(feature_ids):,} features, windows {out['windows']}")

        await sql_alone(pool, params)  # warm-up
        sql_runs = [await sql_alone(pool, params) for _ in range(repeats)]
        out["sql"] = stats([total for total, _ in sql_runs])
        out["sql"]["per_window_p50_s"] = {
            metrics.span_text(w): percentile(sorted(r[1][i] for r in sql_runs), 0.5)
            for i, w in enumerate(windows)
        }
        print(f"  SQL alone: {out['sql']['runs_s']}", flush=True)
        # Prototypes of the reads: the window alone (no trend span), and that with the
        # histograms merged in one pass (metrics_list.py's prototype of metric_rollup).
        alone = [rollup_params(org, feature_ids, w, now, trend=False) for w in windows]
        for key, statement in (
            ("sql_window_only", None),
            ("sql_window_only_one_pass", sql.SQL(PROTOTYPE_METRIC_ROLLUP)),
        ):
            out[key] = stats([(await sql_alone(pool, alone, statement))[0] for _ in range(repeats)])
            print(f"  {key}: {out[key]['runs_s']}", flush=True)
        # ... and a histogram only for the windows whose rules judge a percentile.
        needed = {t.rule.window for t in found if t.rule.metric in PERCENTILES}
        with_hist = [p for w, p in zip(windows, alone, strict=True) if w in needed]
        without = [p for w, p in zip(windows, alone, strict=True) if w not in needed]
        await same_answers(pool, with_hist, sql.SQL(PROTOTYPE_METRIC_ROLLUP), True)
        await same_answers(pool, without, sql.SQL(ROLLUP_WITHOUT_HISTOGRAM), False)
        runs = []
        for _ in range(repeats):
            took = (await sql_alone(pool, with_hist, sql.SQL(PROTOTYPE_METRIC_ROLLUP)))[0]
            took += (await sql_alone(pool, without, sql.SQL(ROLLUP_WITHOUT_HISTOGRAM)))[0]
            runs.append(took)
        out["sql_histograms_where_needed"] = stats(runs)
        out["sql_histograms_where_needed"]["windows"] = [metrics.span_text(w) for w in needed]
        print(f"  sql_histograms_where_needed: {[round(x, 4) for x in runs]}", flush=True)
        if explain:
            out["explain_1h"] = await explain_rollup(pool, params[-1])

        await cycle(pool, now, "warm-up")
        out["warm_up_transitions"] = transitions_since(dbs, 0)
        runs = []
        for i in range(repeats):
            spy = py_spy / "steady.txt" if py_spy and i == repeats - 1 else None
            with PySpy(os.getpid(), spy):
                runs.append(await cycle(pool, now, "steady, realistic"))
        out["steady"] = stats(runs)
        out["steady"]["transitions"] = transitions_since(
            dbs, out["warm_up_transitions"]["last_seq"]
        )

        set_rules(dbs, 3, breaching=True)
        firsts = []
        for i in range(repeats):
            forget_states(dbs)
            spy = py_spy / "first.txt" if py_spy and i == repeats - 1 else None
            with PySpy(os.getpid(), spy):
                firsts.append(await cycle(pool, now, "first cycle"))
        out["first"] = stats(firsts)
        out["first"]["written"] = counts(dbs)
        out["first"]["transitions"] = transitions_since(dbs, 0)
        batched = [await batched_writes(pool, org) for _ in range(repeats)]
        print(f"  prototype, the first cycle's rows batched: {min(batched):.3f} s", flush=True)
        out["prototype_batched_writes"] = stats(batched)

        before = transitions_since(dbs, 0)["last_seq"]
        runs = []
        for i in range(repeats):
            spy = py_spy / "steady_breaching.txt" if py_spy and i == repeats - 1 else None
            with PySpy(os.getpid(), spy):
                runs.append(await cycle(pool, now, "steady, all breaching"))
        out["steady_breaching"] = stats(runs)
        out["steady_breaching"]["transitions"] = transitions_since(dbs, before)
    finally:
        await pool.close()
    return out


async def batched_writes(pool: AsyncConnectionPool[Any], org: uuid.UUID) -> float:
    """A prototype of the first cycle's writes done per table rather than per rule: the rows
    the cycle just wrote (alerts, transitions, notifications, states) read back, the tables
    emptied, then the same rows written again in one transaction under the same lock, one
    pipelined ``executemany`` per table (ids and seqs known before: a block of seqs can be
    drawn under the lock, alert ids made by the client). Returns the transaction's time."""
    async with pool.connection() as conn:
        rows = {
            table: await (await conn.execute(f"SELECT * FROM {table}")).fetchall()
            for table in WRITTEN
        }
        await conn.execute(f"TRUNCATE {STATE_TABLES} CASCADE")
        t0 = time.perf_counter()
        async with conn.transaction():
            await conn.execute(
                queries()["lock_alert_commits"],
                {"lock": Lock.ALERT_COMMITS, "organization_id": org},
            )
            await conn.execute(
                "SELECT nextval('alert_transition_seq') FROM generate_series(1, %s)",
                (len(rows["alert_transitions"]),),
            )
            for table in WRITTEN:
                if not rows[table]:
                    continue
                columns = list(rows[table][0])
                statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                    sql.Identifier(table),
                    sql.SQL(", ").join(map(sql.Identifier, columns)),
                    sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
                )
                values = [
                    {k: Jsonb(v) if isinstance(v, dict | list) else v for k, v in row.items()}
                    for row in rows[table]
                ]
                async with conn.cursor() as cur:
                    await cur.executemany(statement, values)
        return time.perf_counter() - t0


async def explain_rollup(pool: AsyncConnectionPool[Any], params: dict[str, Any]) -> list[str]:
    async with pool.connection() as conn, conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        statement = queries()["metric_rollup"].as_string(conn)
        await cur.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", params)
        return [row[0] for row in await cur.fetchall()]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--features", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=125, help="rollups seeded (2h + 5m)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE the 1h rollup")
    add_run_options(parser, py_spy="sample this process during one cycle of each kind")
    args = parser.parse_args()
    busy = quiet_machine(args.wait_quiet)
    results: dict[str, Any] = {
        "command": command_line(),
        "busy_before": busy,
        # the code measured, which may be uncommitted
        "sha256": {m.__name__: digest(Path(str(m.__file__))) for m in (alerts, metrics)},
    }
    now = metrics.minute_floor(datetime.now(UTC)) + timedelta(seconds=30)
    with embedded_databases(args.features, postgres_cpu=1) as dbs, pinned(0):
        results["postgres"] = dbs.postgres_version
        with psycopg.connect(dbs.database_url) as conn:
            ids = [r[0] for r in conn.execute("SELECT id::text FROM features ORDER BY name")]
        seeded = seed_metric_minutes(dbs, ids, args.minutes / 1440, now, say=lambda _: None)
        results["seeded"] = seeded
        print(f"seeded {seeded['rows']:,.0f} minute rollups ({args.minutes} min per feature)")
        results.update(asyncio.run(measure(dbs, now, args.repeats, args.py_spy, args.explain)))
    share = busy_share()
    results["busy_after"] = f"{share:.0%}" if share is not None else "unknown"
    print(f"  busy after   {results['busy_after']}")
    report(results, args.py_spy)
    return finish(results, args.json)


def report(r: dict[str, Any], py_spy: Path | None) -> None:
    print(f"\nSQL alone (metric_rollup x {len(r['windows'])}):")
    show("rollups", r["sql"])
    for window, s in r["sql"]["per_window_p50_s"].items():
        print(f"    {window:>4} window p50 {s:.3f} s")
    show("window only", r["sql_window_only"])
    show("window only, one pass", r["sql_window_only_one_pass"])
    show("+ histograms if needed", r["sql_histograms_where_needed"])
    print("    prototypes: no trend span; and metrics_list.py's one-pass histogram rollup;")
    print(f"    and histograms only for {r['sql_histograms_where_needed']['windows']}")
    print("evaluate() cycles:")
    for key, label in (
        ("steady", "steady, realistic"),
        ("first", "first, all transition"),
        ("steady_breaching", "steady, all breaching"),
    ):
        show(label, r[key])
        ratio = r[key]["p50_s"] / r["sql"]["p50_s"]
        r[key]["ratio_to_sql"] = ratio
        verdict = "met" if r[key]["max_s"] < GOAL_S else "MISSED"
        print(f"    {ratio:.1f}x the SQL alone; goal < {GOAL_S:g} s: {verdict}")
        print(f"    transitions written: {r[key]['transitions']}")
    print(f"  realistic rules, warm-up cycle: {r['warm_up_transitions']}")
    print(f"  first cycle wrote: {r['first']['written']}")
    show("prototype: batched", r["prototype_batched_writes"])
    print("    the first cycle's rows written per table (executemany) rather than per rule")
    for line in r.get("explain_1h", []):
        print(f"    {line[:150]}")
    if py_spy:
        for name in ("steady", "first", "steady_breaching"):
            folded = py_spy / f"{name}.txt"
            if folded.exists():
                print(f"py-spy, {name} (own time):")
                for share, frame in top_frames(folded, 20, own=True):
                    print(f"  {share:6.1%}  {frame}")


if __name__ == "__main__":
    raise SystemExit(main())
