"""Benchmark the readiness-check runner's own overhead: wall time of
`minerva-ai readiness-check -c examples/readiness.yaml -o json --skip performance,summaries`
minus the checks' critical path at the -j used (their durations, scheduled as the runner
schedules them: in file order, a check starting as soon as one of the -j slots is free).

Goal (issue 14): under 1 s. The floor is the CLI's own start-up, `minerva-ai --version`
(measured here too): the runner cannot cost less than starting Python and Click.

Needs a running service with the demo organization: `make demo` (or `DEMO_PORT=8791 make
demo`), then run with its profile:

    MINERVA_CONFIG_DIR=.demo/config MINERVA_PROFILE=local .venv/bin/python bench/readiness.py
"""

from __future__ import annotations

import heapq
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import REPO, add_run_options, bench_parser, command_line, finish, quiet_machine

GOAL_S = 1.0
CLI = str(Path(sys.executable).parent / "minerva-ai")


def critical_path_s(durations_ms: list[int], jobs: int) -> float:
    """When the last check ends, each starting at the first free slot, in file order."""
    slots = [0.0] * jobs
    end = 0.0
    for duration in durations_ms:
        start = heapq.heappop(slots)
        finish_at = start + duration / 1000
        end = max(end, finish_at)
        heapq.heappush(slots, finish_at)
    return end


def timed(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - started, done


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("-j", "--jobs", type=int, default=4)
    parser.add_argument("--config", default="examples/readiness.yaml")
    add_run_options(parser)
    args = parser.parse_args()
    busy = quiet_machine(args.wait_quiet)
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "WHEEL_DIR": str(REPO / ".demo" / "dist"),
    }
    skips = ["performance", "summaries", "test coverage", "security audit", "bundle size"]
    command = [CLI, "readiness-check", "-c", args.config, "-j", str(args.jobs), "-o", "json"]
    for name in skips:
        command += ["--skip", name]
    startup = sorted(timed([CLI, "--version"], env)[0] for _ in range(args.repeats))
    runs: list[dict[str, Any]] = []
    for _ in range(args.repeats):
        wall, done = timed(command, env)
        if done.returncode not in (0, 1, 5):
            print(done.stderr, file=sys.stderr)
            return 1
        report = json.loads(done.stdout)
        durations = [c["duration_ms"] for c in report["checks"] if c["status"] != "skip"]
        path = critical_path_s(durations, args.jobs)
        runs.append(
            {
                "wall_s": round(wall, 3),
                "critical_path_s": round(path, 3),
                "overhead_s": round(wall - path, 3),
                "runner_s": round(report["duration_ms"] / 1000 - path, 3),
                "statuses": report["summary"],
            }
        )
    overhead = sorted(r["overhead_s"] for r in runs)
    results = {
        "command": command_line(),
        "readiness_command": " ".join(command),
        "busy_before": busy,
        "checks_run": sum(v for k, v in runs[0]["statuses"].items() if k != "skip"),
        "cli_startup_s": {"min": round(startup[0], 3), "median": statistics.median(startup)},
        "overhead_s": {"min": overhead[0], "median": statistics.median(overhead)},
        "goal_s": GOAL_S,
        "runs": runs,
    }
    median = statistics.median(overhead)
    print(f"  checks run   {results['checks_run']} at -j {args.jobs}")
    print(f"  cli start-up {statistics.median(startup):.3f} s median (minerva-ai --version)")
    print(
        f"  overhead     {median:.3f} s median, {overhead[0]:.3f} s min "
        f"(wall minus critical path; goal < {GOAL_S} s): "
        f"{median / statistics.median(startup):.1f}x the CLI start-up"
    )
    for run in runs:
        print(
            f"    wall {run['wall_s']:.3f} s  critical path {run['critical_path_s']:.3f} s  "
            f"overhead {run['overhead_s']:.3f} s  (in-process {run['runner_s']:.3f} s)"
        )
    return finish(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
