"""What nginx in front costs: ingest rows/s and ``GET /features`` requests/s through nginx
(TLS, the shipped examples/deploy/nginx.conf) in front of two instances, against one instance
reached directly over plain http, in the same run; and nginx's own ceiling, a small static
file it serves itself (no upstream, no TLS).

The real servers of tests/production/harness.py: Debian's PostgreSQL 15, Redis and nginx
from their binaries in a temp directory (install them with
``sudo examples/deploy/install-servers.sh``), two ``minerva-ai server start`` instances (one
worker each). The load is wrk (Debian package ``wrk``): ``GET /features`` on an organization
of 50 features, and ``POST /logs`` of a fixed batch of entries without ids (each request
stores new rows). Runs alternate direct and nginx, ``--rounds`` times; the best of each is
reported. Nothing is pinned: on a 2-core machine nginx, both instances, PostgreSQL and wrk
share the cores, which is the point (two instances cannot double throughput there).
Loopback only; bounded; stops everything it started. Run:

    .venv/bin/python bench/nginx_overhead.py [--duration 10] [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchlib import (
    FEATURES_PATH,
    REPO,
    WRK_MISSING,
    WrkResult,
    add_run_options,
    bench_parser,
    command_line,
    finish,
    quiet_machine,
    run_wrk,
)

sys.path.insert(0, str(REPO))
from tests.production.harness import (
    SERVICE_DEFAULTS,
    Stack,
    missing_packages,
    production_stack,
)

LOGS_PATH = "/api/platform/ai-management/logs"


def _batch(size: int) -> bytes:
    moment = (datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    entries = [
        {
            "timestamp": moment,
            "feature": "tagger",
            "level": "info",
            "message": f"call {i} of the batch",
            "source": "bench",
            "latency_ms": 120.5,
            "tokens_in": 100,
            "tokens_out": 20,
            "cost": 0.0004,
            "status": "success",
        }
        for i in range(size)
    ]
    return json.dumps(entries).encode()


def _post_script(directory: Path, body: bytes) -> Path:
    script = directory / "post.lua"
    body_file = directory / "body.json"
    body_file.write_bytes(body)
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "rb")\n'
        "wrk.body = f:read('*a')\n"
        "f:close()\n"
    )
    return script


def _wrk(url: str, token: str, args: Any, script: Path | None = None) -> WrkResult:
    return run_wrk(
        url,
        token,
        cpu=99,  # not pinned
        threads=1,
        connections=args.connections,
        duration_s=args.duration,
        script=script,
    )


def _seed(stack: Stack, features: int) -> None:
    with stack.http() as http:
        for i in range(features):
            name = "tagger" if i == 0 else f"feature-{i:03d}"
            created = http.post("/features", json={"name": name})
            assert created.status_code == 201, created.text


def _row(name: str, result: WrkResult, per_request: int = 1) -> dict[str, Any]:
    return {
        "what": name,
        "requests_per_s": round(result.requests_per_s, 1),
        "rows_per_s": round(result.requests_per_s * per_request) if per_request > 1 else None,
        "latency_avg": result.latency_avg,
        "latency_p99": result.latency_p99,
        "errors": result.errors,
    }


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="direct/nginx alternations")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--batch", type=int, default=100, help="entries per POST /logs")
    add_run_options(parser)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print(WRK_MISSING, file=sys.stderr)
        return 2
    missing = missing_packages()
    if missing:
        print(
            f"missing {', '.join(missing)}: run `sudo examples/deploy/install-servers.sh`",
            file=sys.stderr,
        )
        return 2
    busy = quiet_machine(args.wait_quiet)
    nginx_version = subprocess.run(
        ["nginx", "-v"], capture_output=True, text=True, check=False
    ).stderr.strip()
    print(f"nginx: {nginx_version}; {args.duration} s per run, {args.rounds} rounds")
    runs: dict[str, list[WrkResult]] = {}
    with (
        production_stack(instances=2, extra_env=SERVICE_DEFAULTS) as stack,
        tempfile.TemporaryDirectory() as scratch,
    ):
        _seed(stack, 50)
        script = _post_script(Path(scratch), _batch(args.batch))
        direct = stack.instances[0].url
        static = f"http://127.0.0.1:{stack.nginx.static_port}/features.json"
        plan = [
            ("static file, nginx alone", static, None),
            ("GET /features, one instance direct", direct + FEATURES_PATH, None),
            ("GET /features, nginx + 2 instances (TLS)", stack.url + FEATURES_PATH, None),
            ("POST /logs, one instance direct", direct + LOGS_PATH, script),
            ("POST /logs, nginx + 2 instances (TLS)", stack.url + LOGS_PATH, script),
        ]
        for round_ in range(args.rounds):
            for name, url, body in plan:
                result = _wrk(url, stack.token, args, body)
                runs.setdefault(name, []).append(result)
                print(
                    f"  round {round_ + 1}: {name}: {result.requests_per_s:,.0f} req/s "
                    f"(p99 {result.latency_p99}, errors {result.errors})"
                )
    best = {name: max(results, key=lambda r: r.requests_per_s) for name, results in runs.items()}
    rows = [
        _row(name, result, args.batch if name.startswith("POST") else 1)
        for name, result in best.items()
    ]
    names = list(best)
    features_ratio = best[names[2]].requests_per_s / best[names[1]].requests_per_s
    ingest_ratio = best[names[4]].requests_per_s / best[names[3]].requests_per_s
    print()
    for row in rows:
        rows_per_s = f", {row['rows_per_s']:,} rows/s" if row["rows_per_s"] else ""
        print(
            f"{row['what']}: {row['requests_per_s']:,.0f} req/s{rows_per_s} "
            f"(avg {row['latency_avg']}, p99 {row['latency_p99']}, errors {row['errors']})"
        )
    print(f"GET /features: nginx + 2 instances / 1 instance direct = {features_ratio:.2f}")
    print(f"POST /logs:    nginx + 2 instances / 1 instance direct = {ingest_ratio:.2f}")
    results = {
        "command": command_line(),
        "nginx": nginx_version,
        "busy_before": busy,
        "duration_s": args.duration,
        "connections": args.connections,
        "batch": args.batch,
        "rows": rows,
        "features_ratio": round(features_ratio, 3),
        "ingest_ratio": round(ingest_ratio, 3),
    }
    return finish(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
