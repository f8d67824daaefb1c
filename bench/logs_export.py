"""Benchmark ``GET /logs/export`` on 1M rows against psql and psycopg running the same COPY.

Seeds 1,000,000 realistic rows for one feature over 3 days (INSERT ... SELECT
generate_series, the logs indexes rebuilt after, VACUUM ANALYZE), then times, in rounds
that alternate the four:

- CSV: ``GET /logs/export?format=csv&feature=X`` streamed by curl to /dev/null, against
  ``psql -c "\\copy (SELECT ...) to '/dev/null' with (format csv, header)"`` where the
  SELECT and the options are exactly the ones export_statement() builds for the service
  (formula cells neutralised, as the API does by default). Goal >= 0.8x psql.
- JSONL: ``GET /logs/export?format=jsonl&feature=X`` the same way, against psycopg
  reading the same ``COPY (SELECT row_to_json(t) FROM (...) t) TO STDOUT`` statement and
  counting its bytes. Goal >= 0.8x.

Before timing, it checks on one hour of rows that the API's bytes equal psql's (CSV) and
psycopg's (JSONL). The service runs under uvicorn (one worker, the service's
UVICORN_OPTIONS) pinned to CPU 0; PostgreSQL, curl and psql are not pinned. Embedded
PostgreSQL and Redis in a temp home; loopback only; bounded; stops everything. Run:

    .venv/bin/python bench/logs_export.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

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
    features_of,
    now_utc,
    postmaster_pid,
    seed_logs,
)

from minerva_ai.service import logs

RATIO_GOAL = 0.8
PSQL = "/usr/bin/psql"


def split_url(url: str) -> tuple[str, str]:
    """The database URL without its password, and the password (for PGPASSWORD)."""
    parts = urlsplit(url)
    netloc = f"{parts.username}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc)), parts.password or ""


def copy_statement(dbs: Databases, filters: logs.LogFilter, fmt: str) -> str:
    statement = logs.export_statement(uuid.UUID(dbs.organization_id), filters, fmt, False)
    with psycopg.connect(dbs.database_url) as conn:
        text = statement.as_string(conn)
    text = re.sub(r"(?m)^\s*--.*\n", " ", text)  # the named queries' comment lines
    text = re.sub(r"--[^'\n]*\n", " ", text)  # comments end at a newline; psql wants one line
    return re.sub(r"\s*\n\s*", " ", text)


def psql_copy_command(statement: str, target: str) -> str:
    """The service's ``COPY (...) TO STDOUT WITH (...)`` as a one-line psql ``\\copy``."""
    match = re.fullmatch(r"COPY \((.*)\) TO STDOUT WITH \((.*)\)", statement, re.DOTALL)
    if match is None:
        raise SystemExit(f"unexpected export statement: {statement[:200]}")
    return f"\\copy ({match.group(1)}) to {target} with ({match.group(2)})"


def run_psql(dbs: Databases, command: str, capture: bool = False) -> tuple[float, bytes]:
    url, password = split_url(dbs.database_url)
    env = {**os.environ, "PGPASSWORD": password}
    t0 = time.perf_counter()
    done = subprocess.run(
        [PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", command],
        env=env,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=600,
        check=False,
    )
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"psql failed: {done.stderr.decode()[:500]}")
    return elapsed, done.stdout or b""


def run_psycopg(dbs: Databases, statement: str, capture: bool = False) -> tuple[float, int, bytes]:
    kept = bytearray()
    size = 0
    t0 = time.perf_counter()
    with (
        psycopg.connect(dbs.database_url) as conn,
        conn.cursor() as cur,
        cur.copy(statement) as copy,
    ):
        for chunk in copy:
            size += len(chunk)
            if capture:
                kept += chunk
    elapsed = time.perf_counter() - t0
    return elapsed, size, bytes(kept)


def run_curl(
    service: Service, token: str, query: str, capture: bool = False
) -> tuple[float, bytes, int]:
    """GET the export with curl; the time, the body (with ``capture``) and its size."""
    target = "-" if capture else "/dev/null"
    t0 = time.perf_counter()
    done = subprocess.run(
        [
            *("curl", "-sS", "--fail", "-o", target, "-w", "%{stderr}%{size_download}"),
            *("-H", "@-", f"{service.url}{LOGS_PATH}/export?{query}"),
        ],
        input=f"Authorization: Bearer {token}\n".encode(),
        capture_output=True,
        timeout=600,
        check=False,
    )
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"curl failed ({done.returncode}): {done.stderr.decode()[:500]}")
    size = int(done.stderr.decode().strip().rsplit("\n", 1)[-1])
    return elapsed, done.stdout, size


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    add_run_options(parser, py_spy="sample the service during API exports")
    args = parser.parse_args()
    args.rows = max(10_000, min(args.rows, 5_000_000))
    args.rounds = max(1, min(args.rounds, 5))
    if shutil.which("curl") is None or not Path(PSQL).exists():
        print("this benchmark needs curl and psql: apt-get install -y curl postgresql-client")
        return 2

    results: dict[str, Any] = {"command": command_line()}
    print(f"GET /logs/export on {args.rows:,} rows of one feature over {args.days} days")
    with embedded_databases(2) as dbs:
        with psycopg.connect(dbs.database_url) as conn:
            (name, feature_id), _ = features_of(conn, dbs.organization_id, 2)
        end = now_utc() - timedelta(minutes=1)
        t0 = time.perf_counter()
        seeding = seed_logs(dbs, [feature_id], args.rows, args.days, end)
        print(f"  seeded in {time.perf_counter() - t0:.0f} s")
        with psycopg.connect(dbs.database_url) as conn:
            count = conn.execute("SELECT count(*) FROM logs").fetchone()
            assert count is not None and count[0] == args.rows, count
            size = conn.execute(
                "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
                " WHERE inhparent = 'logs'::regclass"
            ).fetchone()
        results.update(rows=args.rows, seeding=seeding)

        everything = logs.LogFilter(feature_id=uuid.UUID(feature_id))
        statements = {fmt: copy_statement(dbs, everything, fmt) for fmt in ("csv", "json")}
        csv_command = psql_copy_command(statements["csv"], "'/dev/null'")
        query = {"csv": f"format=csv&feature={name}", "jsonl": f"format=jsonl&feature={name}"}

        with Service("minerva", dbs, cpu=0) as service:
            # The same bytes, on one hour of rows.
            since, until = end - timedelta(hours=2), end - timedelta(hours=1)
            hour = logs.LogFilter(feature_id=uuid.UUID(feature_id), since=since, until=until)
            window = "&since=" + quote(since.isoformat()) + "&until=" + quote(until.isoformat())
            _, api_csv, _ = run_curl(service, dbs.token, query["csv"] + window, capture=True)
            _, psql_csv = run_psql(
                dbs, psql_copy_command(copy_statement(dbs, hour, "csv"), "stdout"), capture=True
            )
            _, api_jsonl, _ = run_curl(service, dbs.token, query["jsonl"] + window, capture=True)
            _, _, pg_jsonl = run_psycopg(dbs, copy_statement(dbs, hour, "json"), capture=True)
            if api_csv != psql_csv or api_jsonl != pg_jsonl:
                raise SystemExit("the API's export differs from psql's/psycopg's for one hour")
            lines = api_jsonl.count(b"\n")
            print(
                f"  one hour ({lines:,} rows): the API's CSV equals psql's, "
                "its JSONL equals psycopg's, byte for byte"
            )

            busy = quiet_machine(
                args.wait_quiet,
                {
                    "postgresql": f"{dbs.postgres_version}, not pinned",
                    "table": f"{(size[0] if size else 0) / 2**30:.2f} GiB with indexes",
                },
            )
            results.update(postgresql=dbs.postgres_version, busy_before=busy)
            assert service.process is not None
            meter = CpuMeter(
                service=(service.process.pid, False), postgres=(postmaster_pid(dbs), True)
            )

            def api(fmt: str) -> tuple[float, int]:
                elapsed, _, nbytes = run_curl(service, dbs.token, query[fmt])
                return elapsed, nbytes

            def psql_copy() -> tuple[float, int]:
                return run_psql(dbs, csv_command)[0], 0

            def psycopg_copy() -> tuple[float, int]:
                elapsed, nbytes, _ = run_psycopg(dbs, statements["json"])
                return elapsed, nbytes

            runners: dict[str, Callable[[], tuple[float, int]]] = {
                "api_csv": lambda: api("csv"),
                "psql_csv": psql_copy,
                "api_jsonl": lambda: api("jsonl"),
                "psycopg_jsonl": psycopg_copy,
            }
            for runner in runners.values():  # warm the cache
                runner()
            print(f"\n  {args.rounds} round(s), rows/s = {args.rows:,} / wall time:")
            timings: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
            for n in range(args.rounds):
                for label, runner in runners.items():
                    out = None
                    if args.py_spy and label.startswith("api"):
                        out = args.py_spy / f"export-{label}-{n + 1}.txt"
                    with PySpy(service.process.pid, out):
                        meter.start()
                        elapsed, nbytes = runner()
                        meter.stop()
                    shares = meter.shares()
                    timings[label].append(
                        {
                            "seconds": elapsed,
                            "rows_per_s": args.rows / elapsed,
                            "bytes": nbytes,
                            "service_cpu": shares["service"],
                            "postgres_cpu": shares["postgres"],
                        }
                    )
                    extra = f", {nbytes / 2**20:.0f} MiB" if nbytes else ""
                    print(
                        f"  {label:<14} {args.rows / elapsed:9,.0f} rows/s  {elapsed:6.2f} s"
                        f"{extra}  CPU: service {shares['service']:.0%}, "
                        f"postgres {shares['postgres']:.0%}"
                    )
        mean = {name: sum(t["rows_per_s"] for t in ts) / len(ts) for name, ts in timings.items()}
        print()
        for api_name, base, label in (
            ("api_csv", "psql_csv", "CSV: API vs psql \\copy"),
            ("api_jsonl", "psycopg_jsonl", "JSONL: API vs psycopg COPY row_to_json"),
        ):
            ratio = mean[api_name] / mean[base]
            verdict = "meets" if ratio >= RATIO_GOAL else "MISSES"
            rounds = ", ".join(
                f"{a['rows_per_s'] / b['rows_per_s']:.2f}x"
                for a, b in zip(timings[api_name], timings[base], strict=True)
            )
            print(
                f"  {label}: {mean[api_name]:,.0f} vs {mean[base]:,.0f} rows/s = {ratio:.2f}x "
                f"(rounds {rounds}); goal >= {RATIO_GOAL:g}x {verdict} it"
            )
            results[f"ratio_{api_name.removeprefix('api_')}"] = ratio
        results.update(timings=timings, mean_rows_per_s=mean)
    return finish(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
