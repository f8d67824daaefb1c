"""How fast is `minerva-ai load-test` as a generator, next to wrk on the same target?

Every target runs on CPU 0; wrk (-t1 -c50) and load-test (--users 50, --think-time 0)
take turns on CPU 1, alternating over --rounds:

- the service's ``GET /features`` (embedded PostgreSQL and Redis; --features of them);
  goal: load-test's req/s >= 0.9x wrk's, i.e. the generator never limits a test of our
  service;
- Debian's nginx serving a small static JSON file (one worker process); goal >= 10,000
  req/s on one core, ratio to wrk reported;
- the open model's rate accuracy against nginx: requested vs sent arrivals per second, and
  the p99 measured from the intended send times (the generator's own lateness shows there).

Needs Debian's ``wrk`` and ``nginx`` (``nginx-light`` will do). Loopback only; bounded;
stops what it started. Run:

    .venv/bin/python bench/load_test_engine.py [--duration 10] [--rounds 2] [--skip-service]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchlib import (
    FEATURES_PATH,
    WRK_MISSING,
    Service,
    embedded_databases,
    print_machine,
    run_wrk,
    taskset,
    wait_quiet,
)

MINERVA_AI = str(Path(sys.executable).parent / "minerva-ai")
BODY = b'{"success": true, "data": [{"name": "photo-tagging"}], "count": 1}'
NGINX_MISSING = (
    "nginx is not installed: `apt-get update && apt-get install -y nginx-light` "
    "(Debian), then run this again"
)
NGINX_CONF = """
worker_processes 1; daemon off; pid {root}/nginx.pid; error_log {root}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port}; root {root};
    location / {{ default_type application/json; }} }} }}
"""


def free_port() -> int:
    from minerva_ai.service.embedded import free_port as pick

    return pick()


def load_test(
    url: str, path: str, token: str | None, duration: int, model: list[str] | None = None
) -> dict[str, Any]:
    env = {**os.environ, "MINERVA_URL": url}
    if token:
        env["MINERVA_TOKEN"] = token
    command = [
        *taskset(1),
        MINERVA_AI,
        "-q",
        "load-test",
        "--get",
        path,
        *(model or ["--users", "50"]),
        "--think-time",
        "0",
        "--duration",
        f"{duration}s",
        "--threshold",
        "http_req_failed:rate<0.01",
        "-o",
        "json",
    ]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    if done.returncode not in (0, 1):
        raise RuntimeError(f"load-test failed ({done.returncode}): {done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def compare(
    name: str, url: str, path: str, token: str, duration: int, rounds: int
) -> dict[str, Any]:
    """wrk and load-test in turn, ``rounds`` times each; the ratio of their medians."""
    wrk_rps, ours_rps, reports = [], [], []
    for _ in range(rounds):
        wrk = run_wrk(url + path, token, cpu=1, duration_s=duration)
        report = load_test(url, path, token or None, duration)
        if wrk.errors != "none" or report["http_req_failed"]["count"]:
            # A ratio of two floods of errors says nothing about the generator.
            raise RuntimeError(
                f"{name}: requests failed (wrk: {wrk.errors}; load-test: "
                f"{report['http_req_failed']['count']} failed)"
            )
        wrk_rps.append(wrk.requests_per_s)
        ours_rps.append(report["http_reqs"]["rate"])
        reports.append(report)
        print(
            f"{name}: wrk {wrk.requests_per_s:,.0f} req/s, load-test "
            f"{report['http_reqs']['rate']:,.0f} req/s, generator cpu "
            f"{report['generator']['cpu_percent']}%",
            flush=True,
        )
    wrk_median, ours_median = statistics.median(wrk_rps), statistics.median(ours_rps)
    result = {
        "wrk_rps": wrk_rps,
        "load_test_rps": ours_rps,
        "ratio": round(ours_median / wrk_median, 3),
        "load_test_p99_ms": [r["http_req_duration"]["p99"] for r in reports],
        "generator_cpu_percent": [r["generator"]["cpu_percent"] for r in reports],
    }
    print(f"{name}: ratio of medians {result['ratio']}", flush=True)
    return result


def rate_accuracy(url: str, path: str, rates: list[int], duration: int) -> list[dict[str, Any]]:
    """The open model at each rate: arrivals sent per second vs asked for."""
    results = []
    for rate in rates:
        report = load_test(url, path, None, duration, ["--rate", f"{rate}/s"])
        sent = report["http_reqs"]["count"] / duration
        entry = {
            "requested_per_s": rate,
            "sent_per_s": round(sent, 1),
            "accuracy": round(sent / rate, 4),
            "p50_ms": report["http_req_duration"]["p50"],
            "p99_ms": report["http_req_duration"]["p99"],
            "failed": report["http_req_failed"]["count"],
            "arrivals_waited": report["generator"]["arrivals_waited"],
            "arrivals_dropped": report["generator"]["arrivals_dropped"],
            "generator_cpu_percent": report["generator"]["cpu_percent"],
        }
        print(
            f"open model {rate:,}/s: sent {sent:,.0f}/s ({entry['accuracy']:.2%}), p50 "
            f"{entry['p50_ms']} ms, p99 {entry['p99_ms']} ms from the intended times, "
            f"generator cpu {entry['generator_cpu_percent']}%",
            flush=True,
        )
        results.append(entry)
    return results


@contextmanager
def nginx(root: Path) -> Iterator[str]:
    """Debian's nginx on CPU 0, one worker, serving ``features.json`` from ``root``."""
    port = free_port()
    root.chmod(0o755)  # nginx's worker runs as another user: it must read the file
    (root / "features.json").write_bytes(BODY)
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(root=root, port=port))
    process = subprocess.Popen([*taskset(0), "nginx", "-c", str(conf), "-p", str(root)])
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"nginx did not start: {(root / 'error.log').read_text()}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side per target")
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument(
        "--rates", default="1000,10000,30000", help="open-model rates to check (per second)"
    )
    parser.add_argument("--skip-service", action="store_true", help="nginx only")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    for tool, missing in (("wrk", WRK_MISSING), ("nginx", NGINX_MISSING)):
        if not shutil.which(tool):
            print(missing, file=sys.stderr)
            return 2
    if args.wait_quiet:
        wait_quiet(args.wait_quiet)
    nginx_version = subprocess.run(
        ["nginx", "-v"], capture_output=True, text=True, check=False
    ).stderr.strip()
    print_machine({"nginx": nginx_version})
    results: dict[str, Any] = {"nginx_version": nginx_version}
    with (
        tempfile.TemporaryDirectory(prefix="minerva-bench-static-") as tmp,
        nginx(Path(tmp)) as url,
    ):
        results["nginx"] = compare("nginx", url, "/features.json", "", args.duration, args.rounds)
        rates = [int(r) for r in args.rates.split(",") if r]
        results["open_model"] = rate_accuracy(url, "/features.json", rates, args.duration)
    results["nginx"]["goal_10k"] = min(results["nginx"]["load_test_rps"]) >= 10_000
    if not args.skip_service:
        with embedded_databases(args.features) as dbs, Service("minerva", dbs, cpu=0) as service:
            results["service"] = compare(
                "service GET /features",
                service.url,
                FEATURES_PATH,
                dbs.token,
                args.duration,
                args.rounds,
            )
        results["service"]["goal_0.9x"] = results["service"]["ratio"] >= 0.9
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
