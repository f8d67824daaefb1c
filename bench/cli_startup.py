"""Benchmark CLI start-up: ``minerva-ai --help`` and ``--version`` against a bare Click group.

Goal: each at most 1.25x the time of ``bench/bare_click.py --help`` run by the same Python
in the same venv (Click itself is the floor; our heavy imports must be lazy). Uses
hyperfine when installed (``apt-get install -y hyperfine``), else a Python loop with
warm-up. Run:

    .venv/bin/python bench/cli_startup.py
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import BENCH_DIR, add_run_options, bench_parser, finish, quiet_machine

RATIO_GOAL = 1.25


def commands() -> dict[str, list[str]]:
    python = sys.executable
    script = Path(python).with_name("minerva-ai")
    if not script.exists():
        raise SystemExit(f"{script} is missing: pip install -e . in this venv first")
    return {
        "python -c pass": [python, "-c", "pass"],
        "bare click --help": [python, str(BENCH_DIR / "bare_click.py"), "--help"],
        "minerva-ai --help": [str(script), "--help"],
        "minerva-ai --version": [str(script), "--version"],
    }


def check_they_work(cmds: dict[str, list[str]]) -> None:
    for name, argv in cmds.items():
        done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr.decode()[-500:]}")


def _stats(times: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.mean(times),
        "median": statistics.median(times),
        "stddev": statistics.stdev(times),
        "min": min(times),
        "runs": len(times),
    }


def with_hyperfine(
    cmds: dict[str, list[str]], runs: int, warmup: int, rounds: int
) -> dict[str, Any]:
    """``rounds`` hyperfine runs over every command, times pooled: a burst of noise from
    elsewhere then lands on all commands rather than on whichever was being timed."""
    times: dict[str, list[float]] = {name: [] for name in cmds}
    per_round = math.ceil(runs / rounds)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "hyperfine.json"
        for _ in range(rounds):
            argv = [
                "hyperfine",
                "-N",
                "--style",
                "none",
                "--warmup",
                str(warmup),
                "--runs",
                str(per_round),
                "--export-json",
                str(out),
            ]
            for name, command in cmds.items():
                argv += ["--command-name", name, " ".join(command)]
            done = subprocess.run(argv, check=True, timeout=600, capture_output=True, text=True)
            if "outliers" in done.stderr:
                print("  (hyperfine saw statistical outliers: something else ran meanwhile)")
            for result in json.loads(out.read_text())["results"]:
                times[result["command"]].extend(result["times"])
    return {name: _stats(t) for name, t in times.items()}


def with_loop(
    cmds: dict[str, list[str]], runs: int, warmup: int, rounds: int = 1
) -> dict[str, Any]:
    """Each command in turn, ``runs`` times over: interleaved like the rounds above."""
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for argv in cmds.values():
        for _ in range(warmup):
            subprocess.run(argv, stdout=subprocess.DEVNULL, timeout=30, check=True)
    for _ in range(runs):
        for name, argv in cmds.items():
            start = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, timeout=30, check=True)
            times[name].append(time.perf_counter() - start)
    return {name: _stats(t) for name, t in times.items()}


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--runs", type=int, default=60, help="timed runs per command (>= 30)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="hyperfine runs over all commands, times pooled"
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-hyperfine", action="store_true", help="use the Python loop")
    add_run_options(parser)
    args = parser.parse_args()
    runs = max(30, min(args.runs, 500))
    cmds = commands()
    check_they_work(cmds)
    rounds = max(1, min(args.rounds, 10))
    use_hyperfine = shutil.which("hyperfine") is not None and not args.no_hyperfine
    tool = (
        f"hyperfine -N in {rounds} rounds"
        if use_hyperfine
        else "a Python loop (no hyperfine: apt-get install -y hyperfine)"
    )
    print(f"CLI start-up, {runs} runs each after {args.warmup} warm-up runs, timed with {tool}")
    busy = quiet_machine(args.wait_quiet, after={"click": _click_version()})
    env_note = os.environ.get("VIRTUAL_ENV") or str(Path(sys.executable).parent.parent)
    print(f"  venv         {env_note}\n")
    timed = (with_hyperfine if use_hyperfine else with_loop)(cmds, runs, args.warmup, rounds)
    floor = timed["bare click --help"]
    for name, t in timed.items():
        print(
            f"  {name:<22} mean {t['mean'] * 1000:6.1f} ms  median {t['median'] * 1000:6.1f} ms"
            f"  min {t['min'] * 1000:6.1f} ms  stddev {t['stddev'] * 1000:5.1f} ms"
            f"  ({t['median'] / floor['median']:.2f}x bare click)"
        )
    print()
    worst = 0.0
    for name in ("minerva-ai --help", "minerva-ai --version"):
        ratio_mean = timed[name]["mean"] / floor["mean"]
        ratio_median = timed[name]["median"] / floor["median"]
        worst = max(worst, ratio_mean, ratio_median)
        verdict = "meets" if max(ratio_mean, ratio_median) <= RATIO_GOAL else "MISSES"
        print(
            f"  {name:<22} {ratio_mean:.2f}x (mean), {ratio_median:.2f}x (median) of bare "
            f"click --help: {verdict} the goal (<= {RATIO_GOAL:g}x)"
        )
    return finish(
        {"tool": tool, "busy_before": busy, "timings": timed, "worst_ratio": worst}, args.json
    )


def _click_version() -> str:
    from importlib.metadata import version

    return version("click")


if __name__ == "__main__":
    sys.exit(main())
