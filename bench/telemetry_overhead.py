"""What the service's Prometheus metrics cost per request (minerva_ai/service/telemetry.py).

Measures, in CPU time on one core (`time.process_time`), the ASGI middleware that counts
and times every request (``Instrumented``) around a minimal app that answers 200 with a
matched route, against the same app without it; and one query-duration observation (what
``TimedConnection`` adds to each statement). Both in-process values (no --metrics-bind)
and the multiprocess files of --metrics-bind / --workers (PROMETHEUS_MULTIPROC_DIR set),
each in a fresh interpreter. The per-request figure is compared with the cost of a request
the service really serves: the trivial endpoint of DESIGN.md (4.4k req/s = 227 us per
request on one core) and `GET /features` of 1,000 features (218 req/s, docs/performance.md).
Run:

    .venv/bin/python bench/telemetry_overhead.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchlib import add_run_options, bench_parser, command_line, finish, quiet_machine

REQUESTS = 200_000
TRIVIAL_REQUEST_US = 1e6 / 4400  # DESIGN.md: FastAPI + orjson + uvloop/httptools, one worker
FEATURES_REQUEST_US = 1e6 / 218.3  # docs/performance.md: GET /features?limit=1000


def _measure(requests: int) -> dict[str, float]:
    """In this interpreter: CPU us per request with and without the middleware."""
    from minerva_ai.service import telemetry

    class Route:
        path = "/api/platform/ai-management/features/{feature}"

    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json")],
    }
    body = {"type": "http.response.body", "body": b"{}"}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = Route
        await send(start)
        await send(body)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        return None

    def scope() -> dict[str, Any]:
        return {"type": "http", "method": "GET", "path": "/api/platform/ai-management/features/x"}

    async def run(target: Any) -> float:
        began = time.process_time()
        for _ in range(requests):
            await target(scope(), receive, send)
        return (time.process_time() - began) / requests * 1e6

    instrumented = telemetry.Instrumented(app)
    loop = asyncio.new_event_loop()
    bare_us, with_us = [], []
    for _ in range(3):  # alternate, keep the best of each
        bare_us.append(loop.run_until_complete(run(app)))
        with_us.append(loop.run_until_complete(run(instrumented)))
    loop.close()
    histogram = telemetry.DB_QUERY_DURATION.labels("list_features")
    began = time.process_time()
    for _ in range(requests):
        histogram.observe(0.001)
    observe_us = (time.process_time() - began) / requests * 1e6
    return {"bare_us": min(bare_us), "instrumented_us": min(with_us), "observe_us": observe_us}


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    add_run_options(parser)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.requests)))
        return 0
    busy = quiet_machine(args.wait_quiet)
    results: dict[str, Any] = {"command": command_line(), "busy_before": busy}
    for mode in ("in-process", "multiprocess"):
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        with tempfile.TemporaryDirectory(prefix="minerva-bench-metrics-") as directory:
            if mode == "multiprocess":
                env["PROMETHEUS_MULTIPROC_DIR"] = directory
            child = [sys.executable, __file__, "--child", "--requests", str(args.requests)]
            done = subprocess.run(
                ["taskset", "-c", "0", *child], capture_output=True, text=True, check=True, env=env
            )
        figures = json.loads(done.stdout)
        overhead = figures["instrumented_us"] - figures["bare_us"]
        per_request = overhead + 3 * figures["observe_us"]  # authenticate, touch, list: 3 queries
        figures.update(
            middleware_us=overhead,
            per_request_us=per_request,
            share_of_trivial=per_request / TRIVIAL_REQUEST_US,
            share_of_features=per_request / FEATURES_REQUEST_US,
        )
        results[mode] = figures
        print(
            f"{mode:13} middleware {overhead:5.1f} us/request "
            f"(bare app {figures['bare_us']:.1f} us), "
            f"one query observed {figures['observe_us']:.2f} us; a request with 3 queries "
            f"{per_request:.1f} us = {figures['share_of_trivial']:.1%} of a trivial request, "
            f"{figures['share_of_features']:.2%} of GET /features"
        )
    return finish(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
