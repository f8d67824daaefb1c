"""Benchmark `minerva-ai test suite`: a 200-case suite on a simulator model that answers in
50 ms, with no rate limit, at -j 8.

(a) Cold (a suite whose answers the cache does not have yet): the wall time of the whole
command (process start, checks against the settings, 200 calls, storing the run) against
its physical limit, 200 x 50 ms / 8 = 1.25 s,
plus the start-up. The start-up is measured: the same command on a 1-case suite (--no-cache),
less its one 50 ms answer. Goal: within 1.5x of (1.25 s + start-up).

(b) Warm: the same suite again, every answer from the shared cache. Goal: < 2 s.

The service runs under uvicorn (one worker) pinned to CPU 0, the CLI to CPU 1. Embedded
PostgreSQL and Redis in a temp home; loopback only; bounded; stops everything it started.
Run:

    .venv/bin/python bench/test_suite.py [--cases 200] [--latency-ms 50] [-j 8] [--repeat 3]
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from benchlib import (
    Service,
    add_run_options,
    bench_parser,
    command_line,
    embedded_databases,
    finish,
    machine,
    quiet_machine,
    taskset,
)

from minerva_ai.core.protocol import API_PREFIX

MINERVA_AI = str(Path(sys.executable).with_name("minerva-ai"))


def setup(url: str, token: str, latency_ms: float) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url + API_PREFIX, headers=headers, timeout=30) as http:
        http.post("/features", json={"name": "bench-suite"}).raise_for_status()
        sim = {
            "provider": "simulator",
            "latency_ms": latency_ms,
            "seed": 1,
            "output": "ok {{ input }}",
        }
        sections = {"models": {"primary": "sim", "definitions": {"sim": sim}}}
        body = {"version": 1, "settings": sections}
        http.put("/features/bench-suite/settings", json=body).raise_for_status()


def write_suite(folder: Path, cases: int, name: str) -> Path:
    """``cases`` cases whose inputs no other suite of this run has (a cold cache for it)."""
    lines = ["feature: bench-suite", "cases:"]
    lines += [
        f"  - {{name: case {i}, input: '{name} question {i}', "
        "assert: [{type: contains, value: ok}]}"
        for i in range(cases)
    ]
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(url: str, token: str, suite: Path, jobs: int, *flags: str) -> tuple[float, Any]:
    env = {**os.environ, "MINERVA_URL": url, "MINERVA_TOKEN": token}
    command = [
        *taskset(1),
        MINERVA_AI,
        "test",
        "suite",
        str(suite),
        "-j",
        str(jobs),
        "-o",
        "json",
        *flags,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, check=False, timeout=300)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {done.stderr.decode()[-2000:]}")
    return wall, orjson.loads(done.stdout)


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("-j", "--jobs", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measure (median)")
    add_run_options(parser)
    args = parser.parse_args()
    busy = quiet_machine(args.wait_quiet)
    results: dict[str, Any] = {"command": command_line(), "busy_before": busy, "machine": machine()}
    with (
        embedded_databases(0) as dbs,
        tempfile.TemporaryDirectory() as tmp,
        Service("minerva", dbs, cpu=0) as service,
    ):
        setup(service.url, dbs.token, args.latency_ms)
        one = write_suite(Path(tmp), 1, "one.yaml")
        startups, colds, warms = [], [], []
        service_cpu: list[float] = []
        cli_cpu: list[float] = []
        warm_service_cpu: list[float] = []
        for run in range(args.repeat):
            wall, _doc = timed(service.url, dbs.token, one, args.jobs, "--no-cache")
            startups.append(wall - args.latency_ms / 1000)
            suite = write_suite(Path(tmp), args.cases, f"suite{run}.yaml")
            assert service.process is not None
            service_before, cli_before = cpu_s(service.process.pid), children_cpu_s()
            wall, doc = timed(service.url, dbs.token, suite, args.jobs)
            service_cpu.append(cpu_s(service.process.pid) - service_before)
            cli_cpu.append(children_cpu_s() - cli_before)
            assert doc["totals"]["passed"] == args.cases and doc["totals"]["cached"] == 0
            colds.append(wall)
            service_before = cpu_s(service.process.pid)
            wall, doc = timed(service.url, dbs.token, suite, args.jobs)
            warm_service_cpu.append(cpu_s(service.process.pid) - service_before)
            assert doc["totals"]["cached"] == args.cases, doc["totals"]
            warms.append(wall)
    startup = statistics.median(startups)
    limit = args.cases * args.latency_ms / 1000 / args.jobs
    cold = statistics.median(colds)
    results.update(
        {
            "cases": args.cases,
            "latency_ms": args.latency_ms,
            "jobs": args.jobs,
            "startup_s": [round(s, 3) for s in startups],
            "cold_s": [round(s, 3) for s in colds],
            "warm_s": [round(s, 3) for s in warms],
            "physical_limit_s": limit,
            "cold_service_cpu_s": [round(s, 3) for s in service_cpu],
            "cold_cli_cpu_s": [round(s, 3) for s in cli_cpu],
            "warm_service_cpu_s": [round(s, 3) for s in warm_service_cpu],
            "cold_ratio": round(cold / (limit + startup), 3),
            "cold_goal": "ratio <= 1.5",
            "warm_median_s": round(statistics.median(warms), 3),
            "warm_goal": "< 2 s",
        }
    )
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return finish(results, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
