"""Soak: mixed load through nginx on two instances for a long time (an hour by default),
looking for what grows.

The real servers of tests/production/harness.py (Debian's PostgreSQL 15, Redis, nginx;
``sudo examples/deploy/install-servers.sh``), two ``minerva-ai server start`` instances with
the service's default settings. The load, through nginx over https: log ingest (batches of
``--batch`` entries, ``--ingest-rate`` batches/s), ``GET /logs``, ``GET /features`` with
metrics, ``GET .../settings`` and ``GET .../metrics/current`` (``--query-rate`` each per
second), and ``--tails`` ``minerva-ai logs tail -f`` clients.

Every ``--interval`` (60 s) it samples, for each service process and for the first tail
client (the long-running client): RSS, open files, sockets, and the p99 latency of the
load's requests in that interval. After ``--warmup`` (10 min) it fits a line through each
process's samples: the run passes when the fitted growth over that window is at most
``RSS_BOUND_MIB_PER_H`` of RSS and ``FDS_BOUND_PER_H`` open files and sockets per hour (a
window shorter than an hour is allowed an hour's worth). p99 is reported, not bounded:
these machines drift by 20%. Writes the samples as JSON and, when matplotlib is installed
(``pip install -e '.[bench]'``), a PNG plot. Loopback only; stops everything it started.

    .venv/bin/python bench/soak.py                                  # one hour
    .venv/bin/python bench/soak.py --duration 2m --interval 10s --warmup 30s   # a smoke run
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import REPO, add_run_options, bench_parser, command_line, finish, quiet_machine

sys.path.insert(0, str(REPO))
from tests.production.harness import (
    MINERVA_AI,
    SERVICE_DEFAULTS,
    Stack,
    missing_packages,
    production_stack,
)

RSS_BOUND_MIB_PER_H = 20.0  # a leak of 20 MiB an hour is 0.5 GiB a day: worth a look
FDS_BOUND_PER_H = 5.0  # open files and sockets per hour


def seconds(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1h``."""
    units = {"s": 1, "m": 60, "h": 3600}
    if text[-1:] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def process_sample(pid: int) -> dict[str, float]:
    """RSS (MiB), open files and sockets of ``pid``."""
    rss_kib = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
    fds = os.listdir(f"/proc/{pid}/fd")
    sockets = 0
    for fd in fds:
        try:
            sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return {"rss_mib": round(rss_kib / 1024, 2), "open_files": len(fds), "sockets": sockets}


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour; None under 3 points."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 3600


@dataclass
class MixedLoad:
    """The load's threads; latencies (ms) collected per sampling interval."""

    stack: Stack
    features: list[str]
    batch: int
    ingest_rate: float
    query_rate: float
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    requests: int = 0
    rows: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        loops = [(self._ingest, self.ingest_rate)] + [
            (query, self.query_rate)
            for query in (self._logs, self._features, self._settings, self._metrics)
        ]
        for index, (body, rate) in enumerate(loops):
            thread = threading.Thread(target=self._loop, args=(body, rate, index), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _loop(self, body: Any, rate: float, index: int) -> None:
        period = 1.0 / rate
        with self.stack.http(timeout=30) as http:
            next_at = time.monotonic()
            count = 0
            while not self.stop.is_set():
                feature = self.features[(index + count) % len(self.features)]
                started = time.perf_counter()
                try:
                    response = body(http, feature)
                    ok = response.status_code < 400
                except Exception:
                    ok = False
                took = (time.perf_counter() - started) * 1000
                with self.lock:
                    self.requests += 1
                    self.failures += not ok
                    self.latencies.append(took)
                count += 1
                next_at += period
                self.stop.wait(max(0.0, next_at - time.monotonic()))

    def _ingest(self, http: Any, feature: str) -> Any:
        moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
        entries = [
            {
                "timestamp": moment,
                "feature": feature,
                "level": "info" if i % 10 else "error",
                "message": f"soak call {i}",
                "source": "soak",
                "latency_ms": 100.0 + i,
                "status": "success" if i % 10 else "error",
            }
            for i in range(self.batch)
        ]
        response = http.post("/logs", json=entries)
        if response.status_code == 200:
            with self.lock:
                self.rows += self.batch
        return response

    @staticmethod
    def _logs(http: Any, feature: str) -> Any:
        return http.get("/logs", params={"feature": feature, "limit": 100})

    @staticmethod
    def _features(http: Any, feature: str) -> Any:
        return http.get("/features", params={"include_metrics": "true"})

    @staticmethod
    def _settings(http: Any, feature: str) -> Any:
        return http.get(f"/features/{feature}/settings")

    @staticmethod
    def _metrics(http: Any, feature: str) -> Any:
        return http.get(f"/features/{feature}/metrics/current")

    def take_latencies(self) -> list[float]:
        with self.lock:
            taken, self.latencies = self.latencies, []
        return sorted(taken)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def p99(sorted_ms: list[float]) -> float | None:
    if not sorted_ms:
        return None
    return round(sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * 0.99))], 1)


def judge(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    """Per process and quantity: the slope after the warm-up, and whether it is in bounds."""
    verdicts: dict[str, Any] = {}
    names = {name for sample in samples for name in sample["processes"]}
    for name in sorted(names):
        verdicts[name] = {}
        for quantity, bound in (
            ("rss_mib", RSS_BOUND_MIB_PER_H),
            ("open_files", FDS_BOUND_PER_H),
            ("sockets", FDS_BOUND_PER_H),
        ):
            points = [
                (s["t"], s["processes"][name][quantity])
                for s in samples
                if s["t"] >= warmup_s and name in s["processes"]
            ]
            slope = slope_per_hour(points)
            window_h = (points[-1][0] - points[0][0]) / 3600 if points else 0.0
            growth = None if slope is None else slope * window_h
            verdicts[name][quantity] = {
                "slope_per_h": None if slope is None else round(slope, 2),
                "growth_in_window": None if growth is None else round(growth, 2),
                "bound_per_h": bound,
                # A short window is allowed an hour's growth: a one-file step in 2 minutes
                # is not 30 files an hour.
                "ok": None if growth is None else growth <= bound * max(1.0, window_h),
            }
    return verdicts


def plot(samples: list[dict[str, Any]], path: Path, warmup_s: float) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    names = sorted({name for sample in samples for name in sample["processes"]})
    for axis, (quantity, label) in zip(
        axes[:3],
        (("rss_mib", "RSS (MiB)"), ("open_files", "open files"), ("sockets", "sockets")),
        strict=True,
    ):
        for name in names:
            points = [(s["t"] / 60, s["processes"][name][quantity]) for s in samples]
            axis.plot(*zip(*points, strict=True), marker=".", label=name)
        axis.set_ylabel(label)
        axis.axvline(warmup_s / 60, color="grey", linestyle=":")
    axes[0].legend(fontsize="small")
    latency = [(s["t"] / 60, s["p99_ms"]) for s in samples if s["p99_ms"] is not None]
    if latency:
        axes[3].plot(*zip(*latency, strict=True), marker=".", color="black")
    axes[3].set_ylabel("p99 of the load (ms)")
    axes[3].set_xlabel("minutes (dotted: end of the warm-up)")
    figure.suptitle("minerva-ai soak: two instances behind nginx")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--duration", default="60m", help="how long (90s, 10m, 1h)")
    parser.add_argument("--interval", default="60s", help="sampling period")
    parser.add_argument("--warmup", default="10m", help="samples before this are not judged")
    parser.add_argument("--tails", type=int, default=5, help="`logs tail -f` clients")
    parser.add_argument("--batch", type=int, default=20, help="entries per ingest request")
    parser.add_argument("--ingest-rate", type=float, default=5.0, help="ingest requests/s")
    parser.add_argument("--query-rate", type=float, default=2.0, help="each query's req/s")
    parser.add_argument(
        "--out-dir", type=Path, default=REPO / "bench" / "results", help="samples and plot"
    )
    add_run_options(parser)
    args = parser.parse_args()
    duration, interval, warmup = (
        seconds(args.duration),
        seconds(args.interval),
        seconds(args.warmup),
    )
    missing = missing_packages()
    if missing:
        print(f"missing {', '.join(missing)}: run `sudo examples/deploy/install-servers.sh`")
        return 2
    busy = quiet_machine(args.wait_quiet)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    samples: list[dict[str, Any]] = []
    with production_stack(instances=2, extra_env=SERVICE_DEFAULTS) as stack:
        features = []
        with stack.http() as http:
            for i in range(5):
                features.append(f"soak-{i}")
                http.post("/features", json={"name": features[-1]}).raise_for_status()
        tail_logs = [stack.root / f"tail-{i}.jsonl" for i in range(args.tails)]
        tails = []
        for out in tail_logs:
            with out.open("wb") as handle:
                tails.append(
                    subprocess.Popen(
                        [MINERVA_AI, "logs", "tail", "-f", "-n", "0", "-o", "jsonl"],
                        stdout=handle,
                        stderr=subprocess.DEVNULL,
                        env=stack.client_env(),
                    )
                )
        load = MixedLoad(stack, features, args.batch, args.ingest_rate, args.query_rate)
        load.start()
        started = time.monotonic()
        print(f"soak: {duration:.0f} s, a sample every {interval:.0f} s, warm-up {warmup:.0f} s")
        try:
            while (elapsed := time.monotonic() - started) < duration:
                time.sleep(min(interval, max(0.0, duration - elapsed)))
                processes = {i.name: process_sample(i.pid) for i in stack.instances}
                processes["logs tail -f"] = process_sample(tails[0].pid)
                sample = {
                    "t": round(time.monotonic() - started, 1),
                    "processes": processes,
                    "p99_ms": p99(load.take_latencies()),
                    "requests": load.requests,
                    "failures": load.failures,
                }
                samples.append(sample)
                print(json.dumps(sample), flush=True)
        finally:
            load.close()
            for tail in tails:
                tail.terminate()
                tail.wait(30)
        tailed = [sum(1 for _ in out.open("rb")) for out in tail_logs]
    verdicts = judge(samples, warmup)
    judged = [v["ok"] for per in verdicts.values() for v in per.values() if v["ok"] is not None]
    passed = bool(judged) and all(judged)
    png = args.out_dir / "soak.png"
    plotted = plot(samples, png, warmup)
    results = {
        "command": command_line(),
        "busy_before": busy,
        "duration_s": duration,
        "interval_s": interval,
        "warmup_s": warmup,
        "requests": load.requests,
        "failures": load.failures,
        "rows_ingested": load.rows,
        "rows_per_tail": tailed,
        "verdicts": verdicts,
        "passed": passed if judged else None,
        "plot": str(png) if plotted else None,
        "samples": samples,
    }
    (args.out_dir / "soak.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "samples"}, indent=2))
    if not judged:
        print("too short to judge: fewer than 3 samples after the warm-up")
    finish(results, args.json)
    return 0 if passed or not judged else 1


if __name__ == "__main__":
    sys.exit(main())
