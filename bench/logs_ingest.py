"""Benchmark log ingest: ``POST /logs`` against a raw psycopg COPY of the same entries, and
``POST /logs`` keeping the metric rollups current against the same without them.

Both sides store the same pre-generated realistic entries (JSON array batches of 1,000)
into the same ``logs`` table with the same indexes, from the same number of concurrent
client processes, each batch in the service's own transaction shape: COPY into the temp
``log_staging`` table, the per-organization commit lock, then the same
``INSERT ... ON CONFLICT DO NOTHING`` with its per-minute rollups of the calls
(queries()["create_log_staging"], ["copy_log_staging"], ["lock_org_log_commits"],
["insert_logs_from_staging"]). Every entry is a call (status, latency, tokens, cost).
The tables (logs, metric_minutes) are truncated before each run; runs alternate raw, API
and API without rollups: a second service instance whose ingest INSERT is the same one
without the rollup CTEs (``serve.py`` with BENCH_INGEST_WITHOUT_ROLLUPS=1; the product has
no such knob). Goals: API >= 0.8x raw; API >= 0.85x API without rollups.

During the API runs with rollups, a probe process POSTs one call of a feature of its own
every ``--probe-interval`` s and, from the POST's acknowledgment, polls
``GET /features/{probe}/metrics/current`` until that call is counted: the freshness of
metrics while ingest is saturated. Goal: p99 < 2 s.

During the API runs a WebSocket follower (its own process) subscribes to the
organization's logs with a filter matching 1% of the entries (``source = probe``) and
timestamps each arrival: the ingest -> visible latency (from the moment the batch's POST
was sent, and from the row's ``committed_at``).

The client processes send pre-encoded bodies over keep-alive http.client connections;
their CPU is reported so it is visible that the generator is not the bottleneck.
The service runs under uvicorn (one worker, the service's UVICORN_OPTIONS) pinned to
CPU 0; PostgreSQL and the clients are not pinned. Embedded PostgreSQL and Redis in a
temp home; loopback only; bounded; stops everything it started. Run:

    .venv/bin/python bench/logs_ingest.py
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import multiprocessing as mp
import random
import resource
import sys
import time
import uuid
from datetime import timedelta
from typing import Any

import orjson
import psycopg
from benchlib import (
    Databases,
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
    CpuMeter,
    PySpy,
    ensure_partitions,
    environment,
    features_of,
    fmt_ms,
    make_entry,
    now_utc,
    parse_time,
    postmaster_pid,
    summary_ms,
    ws_follow,
)

from minerva_ai.core.protocol import API_PREFIX
from minerva_ai.service import log_entries
from minerva_ai.service.db import queries
from minerva_ai.service.locks import Lock
from minerva_ai.service.logs import insert_logs
from minerva_ai.service.metrics import LATENCY_BOUNDS

RATIO_GOAL = 0.8
ROLLUP_RATIO_GOAL = 0.85
FRESHNESS_P99_GOAL_MS = 2000.0
PROBE_EVERY = 100  # one entry in PROBE_EVERY is followed live
FRESHNESS_POLL_S = 0.01
MODES = ("raw", "api", "api-plain")  # api-plain: the service's ingest without rollups


# --- the entries ---------------------------------------------------------------------------


def make_batches(
    count: int, size: int, features: list[tuple[str, str]], seed: int = 7
) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)
    now = now_utc()
    batches = []
    for b in range(count):
        batch = []
        for i in range(size):
            moment = now - timedelta(seconds=rng.uniform(0, 120))
            entry = make_entry(rng, rng.choice(features)[0], moment, {"bench_batch": b})
            if i % PROBE_EVERY == PROBE_EVERY // 2:
                entry["source"] = "probe"
            batch.append(entry)
        batches.append(batch)
    return batches


def staging_rows(
    batches: list[list[dict[str, Any]]], org_id: str, features: list[tuple[str, str]]
) -> list[list[tuple[Any, ...]]]:
    """Each batch as the staging rows the service writes for it (validated the same way)."""
    ids = {name: uuid.UUID(fid) for name, fid in features}
    org = uuid.UUID(org_id)
    now = now_utc()
    retention = timedelta(days=30)
    return [
        [
            (i, org, *log_entries.validate_entry(entry, ids, now, retention))
            for i, entry in enumerate(batch)
        ]
        for batch in batches
    ]


# --- the clients (forked processes; their data is inherited, not pickled) -----------------


def _usage() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def raw_client(
    url: str,
    org_id: str,
    batches: list[tuple[int, list[tuple[Any, ...]]]],
    barrier: Any,
    results: Any,
) -> None:
    q = queries()
    stored = 0
    with psycopg.connect(url, autocommit=True, options="-c timezone=UTC") as conn:
        conn.execute(q["create_log_staging"])
        barrier.wait()
        cpu0 = _usage()
        for _, rows in batches:
            with conn.transaction():
                conn.execute("TRUNCATE log_staging")
                with conn.cursor().copy(q["copy_log_staging"]) as copy:
                    for row in rows:
                        copy.write_row(row)
                conn.execute(
                    q["lock_org_log_commits"],
                    {"lock": Lock.LOG_COMMITS, "organization_id": org_id},
                )
                inserted = conn.execute(
                    insert_logs("log_rows_staged"), {"latency_bounds": list(LATENCY_BOUNDS)}
                )
                stored += len(inserted.fetchall())
        end = time.monotonic()
        cpu = _usage() - cpu0
    results.put({"end": end, "cpu_s": cpu, "stored": stored, "errors": [], "sends": {}})


def api_client(
    port: int, token: str, batches: list[tuple[int, bytes]], barrier: Any, results: Any
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    stored = 0
    errors: list[str] = []
    sends: dict[int, tuple[float, float]] = {}
    conn.connect()
    barrier.wait()
    cpu0 = _usage()
    for batch_id, body in batches:
        sent = time.time()
        conn.request("POST", LOGS_PATH, body, headers)
        response = conn.getresponse()
        answer = response.read()
        sends[batch_id] = (sent, time.time())
        if response.status != 200:
            errors.append(f"HTTP {response.status}: {answer[:200]!r}")
            continue
        data = orjson.loads(answer)["data"]
        stored += data["stored"]
        if data["rejected"] or data["duplicates"]:
            errors.append(f"batch {batch_id}: {data['duplicates']} dup, {data['rejected'][:1]}")
    end = time.monotonic()
    cpu = _usage() - cpu0
    conn.close()
    results.put({"end": end, "cpu_s": cpu, "stored": stored, "errors": errors, "sends": sends})


def follower(port: int, token: str, ready: Any, stop: Any, seen: Any, results: Any) -> None:
    arrivals: list[tuple[float, str, int]] = []

    def arrived(t: float, e: dict[str, Any]) -> None:
        arrivals.append((t, e["committed_at"], e["attributes"]["bench_batch"]))
        seen.value += 1

    counts = asyncio.run(
        ws_follow(
            port,
            token,
            arrived,
            stop.is_set,
            filters={"source": "probe"},
            ready=ready.set,
        )
    )
    results.put({"arrivals": arrivals, **counts})


def freshness_probe(
    port: int, token: str, feature: str, interval_s: float, stop: Any, results: Any
) -> None:
    """One call of ``feature`` every ``interval_s``; from each POST's answer, poll its
    metrics until the call is counted. Reports (POST latency, ack -> counted) pairs."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    current = f"{API_PREFIX}/features/{feature}/metrics/current?window=5m"
    rng = random.Random(3)
    samples: list[tuple[float, float]] = []
    errors: list[str] = []
    stored = 0

    def counted() -> int:
        conn.request("GET", current, headers=headers)
        response = conn.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {answer[:200]!r}")
        requests: int = orjson.loads(answer)["data"]["requests"]
        return requests

    expected = counted()
    while not stop.is_set():
        entry = make_entry(rng, feature, now_utc())
        sent = time.perf_counter()
        conn.request("POST", LOGS_PATH, orjson.dumps([entry]), headers)
        response = conn.getresponse()
        answer = response.read()
        acked = time.perf_counter()
        if response.status != 200 or orjson.loads(answer)["data"]["stored"] != 1:
            errors.append(f"HTTP {response.status}: {answer[:200]!r}")
            continue
        expected += 1
        stored += 1
        try:
            while counted() < expected and time.perf_counter() - acked < 30:
                time.sleep(FRESHNESS_POLL_S)
        except (RuntimeError, OSError) as exc:
            errors.append(repr(exc))
            break
        samples.append((acked - sent, time.perf_counter() - acked))
        stop.wait(max(0.0, interval_s - (time.perf_counter() - sent)))
    conn.close()
    results.put({"samples": samples, "errors": errors, "stored": stored})


# --- one run -------------------------------------------------------------------------------


def run(
    mode: str,
    dbs: Databases,
    service: Service,
    work: list[Any],
    clients: int,
    expected_rows: int,
    expected_probes: int,
    fresh: tuple[str, float] | None = None,
) -> dict[str, Any]:
    """One run of ``mode``; with ``fresh`` = (probe feature, interval), the freshness
    probe runs beside the clients."""
    with psycopg.connect(dbs.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE logs")
        conn.execute("TRUNCATE metric_minutes")
        conn.execute("CHECKPOINT")
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(clients + 1)
    results = ctx.Queue()
    procs = []
    follow_proc = None
    follow_results = ctx.Queue()
    stop = ctx.Event()
    seen = ctx.Value("i", 0, lock=False)
    if mode != "raw":
        ready = ctx.Event()
        follow_proc = ctx.Process(
            target=follower, args=(service.port, dbs.token, ready, stop, seen, follow_results)
        )
        follow_proc.start()
        if not ready.wait(30):
            raise SystemExit("the WebSocket follower did not subscribe")
    for c in range(clients):
        share = work[c::clients]
        if mode == "raw":
            args: tuple[Any, ...] = (dbs.database_url, dbs.organization_id, share, barrier, results)
            target: Any = raw_client
        else:
            args = (service.port, dbs.token, share, barrier, results)
            target = api_client
        procs.append(ctx.Process(target=target, args=args))
    for p in procs:
        p.start()
    probe_stop = ctx.Event()
    probe_results = ctx.Queue()
    probe = None
    if fresh is not None:
        probe = ctx.Process(
            target=freshness_probe,
            args=(service.port, dbs.token, *fresh, probe_stop, probe_results),
        )
    meter = CpuMeter(service=(service.process.pid, False), postgres=(postmaster_pid(dbs), True))  # type: ignore[union-attr]
    barrier.wait(60)
    start = time.monotonic()
    meter.start()
    if probe is not None:
        probe.start()
    outcomes = [results.get(timeout=600) for _ in procs]
    meter.stop()
    probe_stop.set()
    got_probe = probe_results.get(timeout=120) if probe is not None else None
    for p in [*procs, *([probe] if probe is not None else [])]:
        p.join(30)
    elapsed = max(o["end"] for o in outcomes) - start
    stored = sum(o["stored"] for o in outcomes)
    errors = [e for o in outcomes for e in o["errors"]]
    with psycopg.connect(dbs.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM logs").fetchone()
        in_table = row[0] if row else 0
        row = conn.execute("SELECT coalesce(sum(requests), 0) FROM metric_minutes").fetchone()
        counted = row[0] if row else 0
    result: dict[str, Any] = {
        "mode": mode,
        "rows": stored,
        "rows_in_table": in_table,
        "elapsed_s": elapsed,
        "rows_per_s": stored / elapsed,
        "errors": errors[:5],
        "error_count": len(errors),
        "cpu_share": {
            "service": meter.shares()["service"] if mode != "raw" else 0.0,
            "postgres": meter.shares()["postgres"],
            "clients": sum(o["cpu_s"] for o in outcomes) / elapsed,
        },
    }
    if mode != "api-plain" and counted != in_table:
        result["errors"].append(f"{counted} calls in the rollups, {in_table} in logs")
        result["error_count"] += 1
    if got_probe is not None:
        samples = got_probe["samples"]
        result["freshness"] = {
            "probes": len(samples),
            "errors": got_probe["errors"][:5],
            "post_latency": summary_ms(post for post, _ in samples),
            "ack_to_counted": summary_ms(lag for _, lag in samples),
            "lags_s": [lag for _, lag in samples],
        }
        in_table -= got_probe["stored"]  # the probe's calls are not the clients'
        result["rows_in_table"] = in_table
    if stored != expected_rows or in_table != expected_rows:
        result["errors"].append(f"stored {stored}, in table {in_table}, expected {expected_rows}")
        result["error_count"] += 1
    if follow_proc is not None:
        sends: dict[int, tuple[float, float]] = {}
        for o in outcomes:
            sends.update(o["sends"])
        deadline = time.monotonic() + 15  # let the follower catch up, then stop it
        while seen.value < expected_probes and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        got = follow_results.get(timeout=60)
        follow_proc.join(30)
        arrivals = got["arrivals"]
        result["follower"] = {
            "probes": len(arrivals),
            "expected": expected_probes,
            "overflows": got["overflows"],
            "send_to_visible": summary_ms(t - sends[b][0] for t, _, b in arrivals),
            "commit_to_visible": summary_ms(t - parse_time(c) for t, c, _ in arrivals),
        }
        result["post_latency"] = summary_ms(done - sent for sent, done in sends.values())
    return result


def print_run(r: dict[str, Any]) -> None:
    cpu = r["cpu_share"]
    print(
        f"  {r['mode']:<9} {r['rows_per_s']:9,.0f} rows/s  {r['rows']:,} rows in "
        f"{r['elapsed_s']:.2f} s  CPU: service {cpu['service']:.0%}, postgres "
        f"{cpu['postgres']:.0%}, clients {cpu['clients']:.0%}  errors: {r['error_count']}"
    )
    for e in r["errors"]:
        print(f"       ! {e}")
    if "follower" in r:
        f = r["follower"]
        print(f"       POST latency         {fmt_ms(r['post_latency'])}")
        print(f"       send -> visible (WS) {fmt_ms(f['send_to_visible'])}")
        print(f"       commit -> visible    {fmt_ms(f['commit_to_visible'])}")
        print(
            f"       follower: {f['probes']}/{f['expected']} probe entries, "
            f"{f['overflows']} overflows"
        )
    if "freshness" in r:
        f = r["freshness"]
        print(f"       probe POST latency   {fmt_ms(f['post_latency'])}")
        print(f"       ack -> counted       {fmt_ms(f['ack_to_counted'])}")
        for e in f["errors"]:
            print(f"       ! probe: {e}")


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--batches", type=int, default=200, help="batches per run")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4, help="concurrent client processes")
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds of raw, API, API without rollups"
    )
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument(
        "--probe-interval", type=float, default=0.25, help="seconds between freshness probes"
    )
    add_run_options(
        parser, py_spy="sample the service with py-spy during the API runs; DIR/ingest-api-N.txt"
    )
    args = parser.parse_args()
    args.batches = max(args.clients, min(args.batches, 2000))
    args.rounds = max(1, min(args.rounds, 5))
    args.batch_size = max(PROBE_EVERY, min(args.batch_size, 10_000))

    results: dict[str, Any] = {"command": command_line()}
    total = args.batches * args.batch_size
    print(
        f"POST /logs vs raw COPY: {args.batches} batches x {args.batch_size} entries, "
        f"{args.clients} client processes, {args.rounds} round(s)"
    )
    with embedded_databases(args.features + 1) as dbs:
        with psycopg.connect(dbs.database_url, autocommit=True) as conn:
            features = features_of(conn, dbs.organization_id, args.features + 1)
            probe_feature = features.pop()[0]  # the freshness probe's own
            today = now_utc().date()
            ensure_partitions(conn, today - timedelta(days=1), today + timedelta(days=1))
        t0 = time.perf_counter()
        batches = make_batches(args.batches, args.batch_size, features)
        bodies = [(b, orjson.dumps(batch)) for b, batch in enumerate(batches)]
        rows = list(enumerate(staging_rows(batches, dbs.organization_id, features)))
        size = sum(len(body) for _, body in bodies)
        print(
            f"  generated {total:,} entries ({size / total:.0f} bytes each as JSON, "
            f"{size / len(bodies) / 1024:.0f} KiB per batch) in {time.perf_counter() - t0:.1f} s"
        )
        probes = sum(1 for batch in batches for e in batch if e["source"] == "probe")
        del batches
        pg = f"{dbs.postgres_version}, not pinned"
        busy = quiet_machine(args.wait_quiet, {"postgresql": pg})
        results.update(
            postgresql=dbs.postgres_version,
            busy_before=busy,
            entries=total,
            bytes_per_entry=size / total,
        )
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        with contextlib.ExitStack() as stack:
            # Two instances on CPU 0, one at work at a time: the service as shipped, and
            # the same without rollups (the bench's variant of the ingest's INSERT).
            services = {"api": stack.enter_context(Service("minerva", dbs, cpu=0))}
            with environment(BENCH_INGEST_WITHOUT_ROLLUPS="1"):
                services["api-plain"] = stack.enter_context(Service("minerva", dbs, cpu=0))
            services["raw"] = services["api"]
            # warm up: the services' partitions caches, staging tables, pool connections
            for mode in ("api", "api-plain"):
                run(mode, dbs, services[mode], bodies[: args.clients], args.clients, 0, 0)
            print()
            for n in range(args.rounds):
                for mode in MODES:
                    service = services[mode]
                    name = f"ingest-{mode}-{n + 1}.txt"
                    out = args.py_spy / name if args.py_spy and mode != "raw" else None
                    assert service.process is not None
                    fresh = (probe_feature, args.probe_interval) if mode == "api" else None
                    work = rows if mode == "raw" else bodies
                    with PySpy(service.process.pid, out):
                        r = run(mode, dbs, service, work, args.clients, total, probes, fresh)
                    runs[mode].append(r)
                    print_run(r)
        report(results, runs)
    return finish(results, args.json)


def report(results: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> None:
    """The ratios (of the means, and per round) and the freshness, against the goals."""
    mean = {m: sum(r["rows_per_s"] for r in rs) / len(rs) for m, rs in runs.items()}
    ratio = mean["api"] / mean["raw"]
    rollups = mean["api"] / mean["api-plain"]

    def per_round(a: str, b: str) -> str:
        return ", ".join(
            f"{x['rows_per_s'] / y['rows_per_s']:.2f}x"
            for x, y in zip(runs[a], runs[b], strict=True)
        )

    fresh = summary_ms(lag for r in runs["api"] for lag in r["freshness"]["lags_s"])
    print(
        f"\n  mean   API {mean['api']:,.0f} rows/s, without rollups {mean['api-plain']:,.0f} "
        f"rows/s, raw COPY {mean['raw']:,.0f} rows/s"
    )
    print(f"  API / raw, rounds {per_round('api', 'raw')}")
    print(f"  API / without rollups, rounds {per_round('api', 'api-plain')}")
    verdict = "meets" if ratio >= RATIO_GOAL else "MISSES"
    print(f"  goal: API >= {RATIO_GOAL:g}x raw: {ratio:.2f}x {verdict} it")
    verdict = "meets" if rollups >= ROLLUP_RATIO_GOAL else "MISSES"
    print(f"  goal: API >= {ROLLUP_RATIO_GOAL:g}x API without rollups: {rollups:.2f}x {verdict} it")
    verdict = "meets" if fresh["p99_ms"] < FRESHNESS_P99_GOAL_MS else "MISSES"
    print(
        f"  goal: ack -> counted p99 < {FRESHNESS_P99_GOAL_MS:g} ms: "
        f"{fresh['p99_ms']:.0f} ms (p50 {fresh['p50_ms']:.0f}, max {fresh['max_ms']:.0f}, "
        f"{fresh['count']} probes in all runs) {verdict} it"
    )
    results.update(
        runs=runs,
        mean_rows_per_s=mean,
        ratio=ratio,
        ratio_rollups=rollups,
        freshness=fresh,
    )


if __name__ == "__main__":
    sys.exit(main())
