"""Benchmark log ingest: ``POST /logs`` against a raw psycopg COPY of the same entries.

Both sides store the same pre-generated realistic entries (JSON array batches of 1,000)
into the same ``logs`` table with the same indexes, from the same number of concurrent
client processes, each batch in the service's own transaction shape: COPY into the temp
``log_staging`` table, the per-organization commit lock, then the same
``INSERT ... ON CONFLICT DO NOTHING`` (queries()["create_log_staging"],
["copy_log_staging"], ["lock_org_log_commits"], ["insert_logs_from_staging"]). The
table is truncated before each run; runs alternate raw and API. Goal: API >= 0.8x raw.

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
    features_of,
    fmt_ms,
    make_entry,
    now_utc,
    parse_time,
    postmaster_pid,
    summary_ms,
    ws_follow,
)

from minerva_ai.service import log_entries
from minerva_ai.service.db import queries
from minerva_ai.service.locks import Lock

RATIO_GOAL = 0.8
PROBE_EVERY = 100  # one entry in PROBE_EVERY is followed live


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
                stored += len(conn.execute(q["insert_logs_from_staging"]).fetchall())
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


# --- one run -------------------------------------------------------------------------------


def run(
    mode: str,
    dbs: Databases,
    service: Service,
    work: list[Any],
    clients: int,
    expected_rows: int,
    expected_probes: int,
) -> dict[str, Any]:
    with psycopg.connect(dbs.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE logs")
        conn.execute("CHECKPOINT")
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(clients + 1)
    results = ctx.Queue()
    procs = []
    follow_proc = None
    follow_results = ctx.Queue()
    stop = ctx.Event()
    seen = ctx.Value("i", 0, lock=False)
    if mode == "api":
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
    meter = CpuMeter(service=(service.process.pid, False), postgres=(postmaster_pid(dbs), True))  # type: ignore[union-attr]
    barrier.wait(60)
    start = time.monotonic()
    meter.start()
    outcomes = [results.get(timeout=600) for _ in procs]
    meter.stop()
    for p in procs:
        p.join(30)
    elapsed = max(o["end"] for o in outcomes) - start
    stored = sum(o["stored"] for o in outcomes)
    errors = [e for o in outcomes for e in o["errors"]]
    with psycopg.connect(dbs.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM logs").fetchone()
        in_table = row[0] if row else 0
    result: dict[str, Any] = {
        "mode": mode,
        "rows": stored,
        "rows_in_table": in_table,
        "elapsed_s": elapsed,
        "rows_per_s": stored / elapsed,
        "errors": errors[:5],
        "error_count": len(errors),
        "cpu_share": {
            "service": meter.shares()["service"] if mode == "api" else 0.0,
            "postgres": meter.shares()["postgres"],
            "clients": sum(o["cpu_s"] for o in outcomes) / elapsed,
        },
    }
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
        f"  {r['mode']:<4} {r['rows_per_s']:9,.0f} rows/s  {r['rows']:,} rows in "
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


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--batches", type=int, default=200, help="batches per run")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4, help="concurrent client processes")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of raw then API")
    parser.add_argument("--features", type=int, default=10)
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
    with embedded_databases(args.features) as dbs:
        with psycopg.connect(dbs.database_url, autocommit=True) as conn:
            features = features_of(conn, dbs.organization_id, args.features)
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
        runs: dict[str, list[dict[str, Any]]] = {"raw": [], "api": []}
        with Service("minerva", dbs, cpu=0) as service:
            # warm up: the service's partitions cache, staging tables, pool connections
            run("api", dbs, service, bodies[: args.clients], args.clients, 0, 0)
            print()
            for n in range(args.rounds):
                for mode, work in (("raw", rows), ("api", bodies)):
                    out = args.py_spy / f"ingest-api-{n + 1}.txt" if args.py_spy else None
                    assert service.process is not None
                    with PySpy(service.process.pid, out if mode == "api" else None):
                        r = run(mode, dbs, service, work, args.clients, total, probes)
                    runs[mode].append(r)
                    print_run(r)
        mean = {m: sum(r["rows_per_s"] for r in rs) / len(rs) for m, rs in runs.items()}
        ratio = mean["api"] / mean["raw"]
        per_round = ", ".join(
            f"{a['rows_per_s'] / b['rows_per_s']:.2f}x"
            for a, b in zip(runs["api"], runs["raw"], strict=True)
        )
        verdict = "meets" if ratio >= RATIO_GOAL else "MISSES"
        print(f"\n  mean   API {mean['api']:,.0f} rows/s, raw COPY {mean['raw']:,.0f} rows/s")
        print(f"  rounds {per_round}")
        print(f"  goal: API >= {RATIO_GOAL:g}x raw: {ratio:.2f}x {verdict} it")
        results.update(runs=runs, mean_rows_per_s=mean, ratio=ratio)
    return finish(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
