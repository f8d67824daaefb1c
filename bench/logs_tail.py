"""Benchmark ingest -> ``minerva-ai logs tail -f -o jsonl`` print latency at 1,000 entries/s.

A generator POSTs realistic entries at a steady 1,000 entries/s (open model), in batches
of 50 (20 requests/s: a trickle, as from many application instances) and then of 1,000
(1 request/s: the client library's flush of 1,000 entries); every entry carries the
moment its request was sent in ``attributes.sent_at``. ``minerva-ai logs tail -f -n 0
-o jsonl`` runs as a subprocess (the installed console script, default transport: the
WebSocket) and each line it prints is timestamped as it arrives on its stdout pipe.
Latency = arrival - sent_at (and - committed_at). Goal: p99 < 100 ms. It also checks that
the tail printed every stored entry exactly once, in cursor order.

With ``--ws-follower``, a bare WebSocket follower (its own process, the websockets
library) records the same latencies beside it, to tell the service's share from the
CLI's (a second subscriber: more work for the service, so not in the default run).

Each setting runs against two services side by side: as shipped, and with uvicorn's
``ws_per_message_deflate=False`` (the websockets client offers permessage-deflate and
uvicorn accepts it by default; ``--deflate on|off`` runs one of them). Each service runs
under uvicorn (one worker, the service's UVICORN_OPTIONS) pinned to CPU 0; everything else
is not pinned. Embedded PostgreSQL and Redis in a temp home;
loopback only; bounded; stops everything it started. Run:

    .venv/bin/python bench/logs_tail.py
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg
from benchlib import (
    HttpPool,
    Service,
    add_run_options,
    bench_parser,
    command_line,
    embedded_databases,
    finish,
    quiet_machine,
    stop_process,
)
from logslib import (
    LOGS_PATH,
    NO_DEFLATE,
    CpuMeter,
    PySpy,
    environment,
    features_of,
    fmt_ms,
    make_entry,
    now_utc,
    parse_time,
    postmaster_pid,
    steady_ingest,
    summary_ms,
    ws_follow,
)

P99_GOAL_MS = 100.0


class Tail:
    """``minerva-ai logs tail -f -n 0 -o jsonl``, its stdout lines timestamped on arrival."""

    def __init__(self, url: str, token: str, home: Path) -> None:
        env = {
            **os.environ,
            "MINERVA_URL": url,
            "MINERVA_TOKEN": token,
            "XDG_CONFIG_HOME": str(home),
            "NO_COLOR": "1",
        }
        env.pop("MINERVA_PROFILE", None)
        command = [str(Path(sys.executable).with_name("minerva-ai"))]
        command += ["logs", "tail", "-f", "-n", "0", "-o", "jsonl"]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.lines: list[tuple[float, bytes]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        # A buffered pipe's readline returns as soon as a read brings a newline in.
        for line in self.process.stdout:
            self.lines.append((time.time(), line))

    def stop(self) -> str:
        if self.process.poll() is None:
            stop_process(self.process, signal.SIGINT, 15)
        self.reader.join(5)
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace")


def ws_follower(port: int, token: str, ready: Any, stop: Any, results: Any) -> None:
    arrivals: list[tuple[float, float, str]] = []

    def arrived(t: float, e: dict[str, Any]) -> None:
        sent = e["attributes"].get("sent_at")
        if sent is not None:
            arrivals.append((t, sent, e["committed_at"]))

    counts = asyncio.run(ws_follow(port, token, arrived, stop.is_set, ready=ready.set))
    results.put({"arrivals": arrivals, **counts})


def entries_factory(features: list[str], size: int, label: str) -> Any:
    rng = random.Random(11)

    def batch(i: int) -> list[dict[str, Any]]:
        now = now_utc()
        return [
            make_entry(rng, rng.choice(features), now, {"bench": label, "n": i * size + k})
            for k in range(size)
        ]

    return batch


async def wait_for_tail(port: int, token: str, tail: Tail, feature: str) -> bool:
    """Send one entry every 0.2 s until the tail prints one (it has connected)."""
    pool = HttpPool(port, token)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            entry = make_entry(random.Random(), feature, now_utc(), {"bench": "warm-up"})
            await pool.request("POST", LOGS_PATH, orjson.dumps([entry]))
            await asyncio.sleep(0.2)
            if tail.lines:
                return True
        return False
    finally:
        pool.close()


def one_setting(
    service: Service,
    dbs: Any,
    features: list[str],
    rate: float,
    size: int,
    duration: float,
    spy: Path | None,
    with_ws: bool,
) -> dict[str, Any]:
    label = f"batch{size}"
    with tempfile.TemporaryDirectory(prefix="minerva-bench-tail-") as home:
        tail = Tail(service.url, dbs.token, Path(home))
        ctx = mp.get_context("fork")
        ready, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
        follower = None
        if with_ws:
            follower = ctx.Process(
                target=ws_follower, args=(service.port, dbs.token, ready, stop, results)
            )
            follower.start()
        try:
            if follower is not None and not ready.wait(30):
                raise SystemExit("the WebSocket follower did not subscribe")
            if not asyncio.run(wait_for_tail(service.port, dbs.token, tail, features[0])):
                raise SystemExit(f"the tail printed nothing in 30 s: {tail.stop()}")
            time.sleep(0.5)
            assert service.process is not None and tail.process.pid
            meter = CpuMeter(
                service=(service.process.pid, False),
                tail=(tail.process.pid, False),
                postgres=(postmaster_pid(dbs), True),
                generator=(os.getpid(), False),
            )
            with PySpy(service.process.pid, spy):
                meter.start()
                sent = asyncio.run(
                    steady_ingest(
                        service.port,
                        dbs.token,
                        rate / size,
                        duration,
                        entries_factory(features, size, label),
                    )
                )
                meter.stop()
            expected = sent["stored"]
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                seen = sum(1 for _, line in tail.lines if label.encode() in line)
                if seen >= expected:
                    break
                time.sleep(0.1)
            time.sleep(0.3)
        finally:
            stderr = tail.stop()
            stop.set()
        got: dict[str, Any] = {"arrivals": [], "overflows": 0}
        if follower is not None:
            got = results.get(timeout=60)
            follower.join(30)

    printed = [(t, orjson.loads(line)) for t, line in tail.lines]
    mine = [(t, e) for t, e in printed if e["attributes"].get("bench") == label]
    cursors = [int(e["cursor"]) for _, e in printed]
    numbers = sorted(e["attributes"]["n"] for _, e in mine)
    in_order = all(a < b for a, b in itertools.pairwise(cursors))
    exactly_once = numbers == list(range(expected))
    ws = got["arrivals"]
    return {
        "batch_size": size,
        "rate": rate,
        "duration_s": duration,
        "ingest": sent,
        "printed": len(mine),
        "expected": expected,
        "in_cursor_order": in_order,
        "exactly_once": exactly_once,
        "tail_latency": summary_ms(t - e["attributes"]["sent_at"] for t, e in mine),
        "tail_commit_latency": summary_ms(t - parse_time(e["committed_at"]) for t, e in mine),
        "ws_follower": with_ws,
        "ws_latency": summary_ms(t - s for t, s, _ in ws),
        "ws_commit_latency": summary_ms(t - parse_time(c) for t, _, c in ws),
        "ws_overflows": got["overflows"],
        "cpu_share": meter.shares(),
        "tail_stderr": stderr.strip()[-500:],
    }


def print_setting(r: dict[str, Any]) -> None:
    cpu = r["cpu_share"]
    ing = r["ingest"]
    verdict = "meets" if r["tail_latency"]["p99_ms"] < P99_GOAL_MS else "MISSES"
    where = "as shipped" if r["service"] == "shipped" else "ws_per_message_deflate=False"
    print(
        f"\n  [{where}] {r['rate']:g} entries/s in batches of {r['batch_size']} "
        f"({r['rate'] / r['batch_size']:g} POST/s) for {r['duration_s']:g} s: "
        f"{ing['stored']:,} stored, {ing['error_count']} errors, {ing['late_sends']} late sends"
    )
    print(f"    POST latency            {fmt_ms(ing['post_latency'])}")
    print(f"    send -> tail prints     {fmt_ms(r['tail_latency'])}")
    print(f"    commit -> tail prints   {fmt_ms(r['tail_commit_latency'])}")
    if r["ws_follower"]:
        print(f"    send -> WS follower     {fmt_ms(r['ws_latency'])}")
        print(f"    commit -> WS follower   {fmt_ms(r['ws_commit_latency'])}")
    print(
        f"    tail printed {r['printed']:,}/{r['expected']:,}; exactly once: "
        f"{r['exactly_once']}; in cursor order: {r['in_cursor_order']}"
        + (f"; WS overflows: {r['ws_overflows']}" if r["ws_follower"] else "")
    )
    print(
        f"    CPU: service {cpu['service']:.0%}, tail {cpu['tail']:.0%}, postgres "
        f"{cpu['postgres']:.0%}, generator {cpu['generator']:.0%}"
    )
    print(f"    goal p99 < {P99_GOAL_MS:g} ms: {r['tail_latency']['p99_ms']:.1f} ms {verdict} it")
    if r["tail_stderr"]:
        print(f"    tail stderr: {r['tail_stderr']}")


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--rate", type=float, default=1000.0, help="entries/s")
    parser.add_argument(
        "--batch-sizes", default="50,1000", help="entries per POST, one run each (comma list)"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per run")
    parser.add_argument("--features", type=int, default=5)
    parser.add_argument(
        "--ws-follower",
        dest="ws",
        action="store_true",
        help="also follow with a bare WebSocket client (a second subscriber: more work for "
        "the service) to tell the service's share of the latency from the CLI's",
    )
    parser.add_argument(
        "--deflate",
        choices=["on", "off", "both"],
        default="both",
        help="WebSocket permessage-deflate as shipped (on), disabled in uvicorn (off), or "
        "each run against both services (both, the default)",
    )
    add_run_options(parser, py_spy="sample the service")
    args = parser.parse_args()
    args.duration = max(5.0, min(args.duration, 300.0))
    args.rate = max(10.0, min(args.rate, 20_000.0))
    sizes = [max(1, min(int(x), 5000)) for x in args.batch_sizes.split(",") if x.strip()]

    results: dict[str, Any] = {"command": command_line(), "runs": []}
    print(f"ingest -> `minerva-ai logs tail -f -n 0 -o jsonl` at {args.rate:g} entries/s")
    with embedded_databases(args.features) as dbs:
        with psycopg.connect(dbs.database_url) as conn:
            features = [name for name, _ in features_of(conn, dbs.organization_id, 20)]
        variants = {"on": ["shipped"], "off": ["no-deflate"], "both": ["shipped", "no-deflate"]}
        with contextlib.ExitStack() as stack:
            services = {}
            for variant in variants[args.deflate]:
                options = NO_DEFLATE if variant == "no-deflate" else "{}"
                with environment(BENCH_UVICORN_OPTIONS=options):
                    services[variant] = stack.enter_context(Service("minerva", dbs, cpu=0))
            pg = f"{dbs.postgres_version}, not pinned"
            busy = quiet_machine(args.wait_quiet, {"postgresql": pg})
            results.update(postgresql=dbs.postgres_version, busy_before=busy)
            for size in sizes:
                for variant, service in services.items():
                    spy = args.py_spy / f"tail-batch{size}-{variant}.txt" if args.py_spy else None
                    r = one_setting(
                        service, dbs, features, args.rate, size, args.duration, spy, args.ws
                    )
                    r["service"] = variant
                    print_setting(r)
                    results["runs"].append(r)
    return finish(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
