"""Run every benchmark in turn (``make bench``); figures also go to bench/results/*.json.

Extra arguments are passed to each benchmark, e.g. ``bench/run.py --wait-quiet 300``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
BENCHMARKS = ["features_list", "cli_startup"]
TIMEOUT_S = 900  # each benchmark bounds itself well below this


def main() -> int:
    extra = sys.argv[1:]
    RESULTS.mkdir(exist_ok=True)
    failed = []
    for name in BENCHMARKS:
        print(f"=== bench/{name}.py", flush=True)
        (RESULTS / f"{name}.json").unlink(missing_ok=True)  # never summarise a stale run
        command = [
            sys.executable,
            str(BENCH_DIR / f"{name}.py"),
            "--json",
            str(RESULTS / f"{name}.json"),
            *extra,
        ]
        try:
            done = subprocess.run(command, timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            print(f"bench/{name}.py ran past {TIMEOUT_S} s", file=sys.stderr)
            failed.append(name)
            continue
        if done.returncode != 0:
            failed.append(name)
        print(flush=True)
    summary = summarise()
    if summary:
        print("=== summary")
        print(summary)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def summarise() -> str:
    lines = []
    features = RESULTS / "features_list.json"
    if features.exists():
        data = json.loads(features.read_text())
        p95 = data["latency_minerva"]["p95_ms"]
        lines.append(f"features list p95 at 20 req/s: {p95:.1f} ms (goal < 50 ms)")
        if "ratio" in data:
            lines.append(
                f"features list req/s vs bare Starlette: {data['ratio']:.2f}x (goal >= 0.6x)"
            )
    cli = RESULTS / "cli_startup.json"
    if cli.exists():
        data = json.loads(cli.read_text())
        lines.append(
            f"CLI start-up vs bare Click --help: {data['worst_ratio']:.2f}x at worst "
            "(goal <= 1.25x)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
