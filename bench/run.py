"""Run every benchmark in turn (``make bench``); figures also go to bench/results/*.json.

Extra arguments are passed to each benchmark, e.g. ``bench/run.py --wait-quiet 300``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
BENCHMARKS = [
    "features_list",
    "cli_startup",
    "logs_ingest",
    "logs_export",
    "logs_query",
    "logs_tail",
    "ws_fanout",
    "metrics_list",
    "metrics_live",
    "alerts_eval",
    "alerts_webhook",
    "load_test_engine",
    "model_tests",
    "telemetry_overhead",
    "test_suite",
]
TIMEOUT_S = 900  # each benchmark bounds itself well below this
TIMEOUTS_S = {"logs_query": 1800, "metrics_list": 1200}  # both seed ~10M rows first


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
            done = subprocess.run(command, timeout=TIMEOUTS_S.get(name, TIMEOUT_S), check=False)
        except subprocess.TimeoutExpired:
            print(f"bench/{name}.py ran past {TIMEOUTS_S.get(name, TIMEOUT_S)} s", file=sys.stderr)
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
    lines.extend(summarise_logs())
    lines.extend(summarise_metrics())
    lines.extend(summarise_alerts())
    lines.extend(summarise_load_test())
    suite = _load("test_suite")
    if suite:
        lines.append(
            f"test suite, 200 cases at -j 8: {suite['cold_ratio']:.2f}x the limit plus start-up "
            f"(goal <= 1.5x); from the cache {suite['warm_median_s']:.2f} s (goal < 2 s)"
        )
    return "\n".join(lines)


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def summarise_logs() -> list[str]:
    lines = []
    ingest = _load("logs_ingest")
    if ingest and "ratio" in ingest:
        visible = [r["follower"]["send_to_visible"]["p99_ms"] for r in ingest["runs"]["api"]]
        lines.append(
            f"POST /logs vs raw COPY: {ingest['ratio']:.2f}x (goal >= 0.8x); send -> visible "
            f"p99 {max(visible):.0f} ms during it"
        )
    if ingest and "ratio_rollups" in ingest:
        lines.append(
            f"POST /logs with metric rollups vs without: {ingest['ratio_rollups']:.2f}x (goal "
            f">= 0.85x); ack -> counted in metrics/current p99 "
            f"{ingest['freshness']['p99_ms']:.0f} ms (goal < 2,000 ms)"
        )
    export = _load("logs_export")
    if export and "ratio_csv" in export:
        lines.append(
            f"export 1M rows vs psql/psycopg: CSV {export['ratio_csv']:.2f}x, JSONL "
            f"{export['ratio_jsonl']:.2f}x (goal >= 0.8x)"
        )
    query = _load("logs_query")
    if query and "schema" in query:
        q = query["schema"]
        lines.append(
            f"GET /logs on 10M rows, p95: level+24h {q['level']['latency']['p95_ms']:.0f} ms, "
            f"regex+day {q['regex']['latency']['p95_ms']:.0f} ms (goal < 100 ms)"
        )
    tail = _load("logs_tail")
    if tail and tail.get("runs"):
        parts = [
            f"batches of {r['batch_size']} ({r['service']}) {r['tail_latency']['p99_ms']:.0f} ms"
            for r in tail["runs"]
        ]
        lines.append(f"ingest -> logs tail p99 at 1,000/s: {', '.join(parts)} (goal < 100 ms)")
    fanout = _load("ws_fanout")
    if fanout and fanout.get("phases"):
        parts = [
            f"compression={p['compression']}: lag p99 {p['lag']['p99_ms']:.0f} ms, service "
            f"CPU {p['cpu_share']['service']:.0%}"
            for p in fanout["phases"]
        ]
        lines.append(f"1,000 WS followers x 25/s: {'; '.join(parts)}")
    return lines


def summarise_metrics() -> list[str]:
    lines = []
    listing = _load("metrics_list")
    if listing and "shipped" in listing:
        p95 = listing["shipped"]["latency"]["p95_ms"]
        line = (
            f"GET /features?include_metrics=true, 1,000 features x 7 days of rollups, p95 at "
            f"20 req/s: {p95:.0f} ms (goal < 100 ms)"
        )
        for name in ("prototype", "prototype+shared"):
            if name in listing:
                line += f"; {name} {listing[name]['latency']['p95_ms']:.0f} ms"
        lines.append(line)
    live = _load("metrics_live")
    if live and live.get("phases"):
        many = live["phases"][-1]
        lines.append(
            f"metrics_update to {many['subscribers']:,} WS subscribers: computations "
            f"{live['computations_ratio']:.2f}x those for 1 (goal: the same), delivery lag p99 "
            f"{many['lag']['p99_ms']:.0f} ms"
        )
    return lines


def summarise_alerts() -> list[str]:
    lines = []
    evaluation = _load("alerts_eval")
    if evaluation and "steady" in evaluation:
        lines.append(
            f"alert evaluation, 10,000 rules over 1,000 features, max: steady "
            f"{evaluation['steady']['max_s']:.2f} s, first cycle (all transition) "
            f"{evaluation['first']['max_s']:.2f} s (goal < 2 s); the SQL alone "
            f"{evaluation['sql']['p50_s']:.2f} s"
        )
    webhook = _load("alerts_webhook")
    if webhook and "breach_received" in webhook:
        received = webhook["breach_received"]
        lines.append(
            f"breach -> webhook received (alert interval {webhook['alert_interval_s']:g} s, "
            f"webhook interval {webhook['webhook_interval_s']:g} s): p50 "
            f"{received['p50_ms']:.0f} ms, p95 {received['p95_ms']:.0f} ms, max "
            f"{received['max_ms']:.0f} ms (goal < {webhook['alert_interval_s'] + 2:g} s)"
        )
    return lines


def summarise_load_test() -> list[str]:
    engine = _load("load_test_engine")
    if not engine or "nginx" not in engine:
        return []
    nginx = engine["nginx"]
    lines = [
        f"load-test vs wrk on nginx: {min(nginx['load_test_rps']):,.0f} req/s on one core "
        f"(goal >= 10,000), {nginx['ratio']:.2f}x wrk"
    ]
    if "service" in engine:
        lines.append(
            f"load-test vs wrk on GET /features: {engine['service']['ratio']:.2f}x (goal >= 0.9x)"
        )
    for entry in engine.get("open_model", []):
        lines.append(
            f"open model {entry['requested_per_s']:,}/s: sent {entry['accuracy']:.1%} of it, "
            f"p99 {entry['p99_ms']} ms"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
