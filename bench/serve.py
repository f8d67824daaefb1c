"""Serve one app for a benchmark: ``serve.py minerva|bare --port N`` (loopback only).

Both apps run with the service's own ``UVICORN_OPTIONS``, one worker; the databases come
from DATABASE_URL and REDIS_URL, as for ``minerva-ai server start`` with external servers.
BENCH_UVICORN_OPTIONS (a JSON object) overrides some of those options, to measure a change
(e.g. ``{"ws_per_message_deflate": false}``). Bench-only variants, never knobs of the product:
BENCH_INGEST_WITHOUT_ROLLUPS=1 serves the ingest's INSERT without its metric rollups
(logs_ingest.py); BENCH_QUERIES (a JSON object, name -> SQL) replaces named queries with
prototypes of a change (metrics_list.py); BENCH_SHARED_METRICS=SECONDS prototypes current
metrics shared by all requests and refreshed in the background once SECONDS old, as
MetricsHub does for live watchers (metrics_list.py); BENCH_COUNTERS_FILE=PATH has the
live-metrics hub's computation count written there every 0.2 s and at exit
(metrics_live.py).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from minerva_ai.service.app import UVICORN_OPTIONS, create_app
from minerva_ai.service.db import queries


def without_rollups() -> None:
    """The ingest's INSERT without the rollup CTEs, for this process only."""
    from logslib import insert_logs_without_rollups

    with_rollups = queries()["insert_logs_from_staging"].as_string()
    replace_queries({"insert_logs_from_staging": insert_logs_without_rollups(with_rollups)})


def replace_queries(replacements: dict[str, str]) -> None:
    """Named queries replaced by others, for this process only."""
    from psycopg import sql

    statements = queries()  # the dict every caller reads (functools.cache)
    for name, text in replacements.items():
        if name not in statements:
            raise SystemExit(f"BENCH_QUERIES: no query named {name!r}")
        statements[name] = sql.SQL(text)


def share_current_metrics(refresh_s: float) -> None:
    """A prototype: ``metrics.current`` kept per (query, window) and refreshed in the
    background once the figures are ``refresh_s`` old, as MetricsHub does for live
    watchers; a request gets the latest figures at once (only the first one waits)."""
    import psycopg
    from psycopg.rows import dict_row

    from minerva_ai.service import metrics

    compute = metrics.current
    latest: dict[Any, tuple[float, Any]] = {}
    refreshing: dict[Any, asyncio.Task[None]] = {}
    own: list[Any] = []  # the refreshes' connection, opened on first use

    async def refresh(key: Any, query: Any, window: Any) -> None:
        try:
            if not own:
                own.append(
                    await psycopg.AsyncConnection.connect(
                        os.environ["DATABASE_URL"],
                        autocommit=True,
                        row_factory=dict_row,
                        options="-c timezone=UTC",
                    )
                )
            latest[key] = (time.monotonic(), await compute(own[0], query, window))
        finally:
            del refreshing[key]

    async def current(conn: Any, query: Any, window: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return await compute(conn, query, window, *args, **kwargs)
        ids = tuple(query.feature_ids) if query.feature_ids is not None else None
        key = (query.organization_id, ids, query.include_tests, query.by_model, window)
        found = latest.get(key)
        if found is None:
            result = await compute(conn, query, window)
            latest[key] = (time.monotonic(), result)
            return result
        if time.monotonic() - found[0] > refresh_s and key not in refreshing:
            refreshing[key] = asyncio.create_task(refresh(key, query, window))
        return found[1]

    metrics.current = current  # type: ignore[assignment]


def write_counters(app: Any, path: Path) -> None:
    """``{"computations": N}`` of the app's MetricsHub, written to ``path`` (atomically)."""
    state = getattr(app.state, "minerva", None)
    if state is not None:
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps({"computations": state.metrics.computations}))
        temp.replace(path)


def counters_thread(app: Any, path: Path) -> None:
    def loop() -> None:
        while True:
            write_counters(app, path)
            time.sleep(0.2)

    threading.Thread(target=loop, name="bench-counters", daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("app", choices=["minerva", "bare"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--profile", type=Path, help="write cProfile stats here on exit")
    args = parser.parse_args()
    if args.app == "minerva":
        app = create_app()
    else:
        from bare_starlette import from_env

        app = from_env()
    if os.environ.get("BENCH_INGEST_WITHOUT_ROLLUPS") == "1":
        without_rollups()
    replace_queries(json.loads(os.environ.get("BENCH_QUERIES") or "{}"))
    if os.environ.get("BENCH_SHARED_METRICS"):
        share_current_metrics(float(os.environ["BENCH_SHARED_METRICS"]))
    counters = os.environ.get("BENCH_COUNTERS_FILE")
    if counters:
        counters_thread(app, Path(counters))
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        # uvicorn re-raises the SIGTERM it stopped on once it has shut down; make that a
        # no-op so the stats get written.
        signal.signal(signal.SIGTERM, lambda *_: None)
        profiler.enable()
    try:
        options = {**UVICORN_OPTIONS, **json.loads(os.environ.get("BENCH_UVICORN_OPTIONS") or "{}")}
        uvicorn.run(app, host="127.0.0.1", port=args.port, workers=1, **options)
    finally:
        if counters:
            write_counters(app, Path(counters))
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
