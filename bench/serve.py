"""Serve one app for a benchmark: ``serve.py minerva|bare --port N`` (loopback only).

Both apps run with the service's own ``UVICORN_OPTIONS``, one worker; the databases come
from DATABASE_URL and REDIS_URL, as for ``minerva-ai server start`` with external servers.
BENCH_UVICORN_OPTIONS (a JSON object) overrides some of those options, to measure a change
(e.g. ``{"ws_per_message_deflate": false}``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import signal
from pathlib import Path

import uvicorn

from minerva_ai.service.app import UVICORN_OPTIONS, create_app


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
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
