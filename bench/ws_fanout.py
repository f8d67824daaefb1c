"""Benchmark WebSocket fan-out: 1,000 log followers on one service instance at 25
entries/s each (25,000 deliveries/s).

1,000 WebSocket clients (asyncio + the websockets library, in a separate process pinned
to CPU 1) each authenticate with the bearer header and ``subscribe`` to the
organization's ``logs`` channel; a generator POSTs 25 entries/s (open model). Every
client timestamps each ``log`` message as it arrives: delivery lag = arrival -
``committed_at``. Reports lag p50/p95/p99/max, deliveries/s achieved vs expected, missed
deliveries and overflows, and CPU from /proc/<pid>/stat: the service's (pinned to CPU 0,
alone), the receivers', PostgreSQL's (pinned to CPU 1). DESIGN.md's facts table:
the websockets library's ``broadcast()`` does 45k deliveries/s to 1,000 clients here.

Two phases, one service: clients that offer permessage-deflate (as the websockets
library and so ``minerva-ai logs tail`` do by default; uvicorn accepts it) and clients
that do not (``compression=None``, what the service would see with
``ws_per_message_deflate=False``).

Embedded PostgreSQL and Redis in a temp home; loopback only; bounded; stops everything
it started. Run:

    .venv/bin/python bench/ws_fanout.py
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import random
import resource
import sys
import time
from array import array
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
from benchlib import (
    Service,
    add_run_options,
    bench_parser,
    command_line,
    embedded_databases,
    finish,
    pin_self,
    pinned,
    quiet_machine,
)
from logslib import (
    WS_PATH,
    CpuMeter,
    PySpy,
    features_of,
    fmt_ms,
    make_entry,
    now_utc,
    postmaster_pid,
    steady_ingest,
    summary_ms,
)

CONNECT_CONCURRENCY = 50
MARK = '"committed_at":"'


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- the receivers (their own process, pinned to CPU 1) --------------------------------------


async def receivers(
    port: int,
    token: str,
    clients: int,
    compression: str | None,
    ready: Any,
    measuring: Any,
    stop: Any,
) -> dict[str, Any]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    url = f"ws://127.0.0.1:{port}{WS_PATH}"
    headers = {"Authorization": f"Bearer {token}"}
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    lags = array("d")
    counts = {"messages": 0, "overflows": 0, "closed": 0, "other": 0}
    t_start = time.perf_counter()

    def subscribe(after: str | None) -> str:
        data: dict[str, Any] = {"channel": "logs"}
        if after is not None:
            data["after"] = after
        return orjson.dumps({"type": "subscribe", "data": data}).decode()

    async def open_one() -> Any:
        async with gate:
            ws = await connect(
                url,
                additional_headers=headers,
                compression=compression,
                open_timeout=120,
                max_size=2**20,
            )
            await ws.send(subscribe(None))
            while True:
                message = orjson.loads(await ws.recv())
                if message["type"] == "subscribed":
                    return ws

    sockets = await asyncio.gather(*(open_one() for _ in range(clients)))
    connect_s = time.perf_counter() - t_start
    ready.set()

    async def read(ws: Any) -> None:
        last: str | None = None
        try:
            async for raw in ws:
                now = time.time()
                at = raw.find(MARK)
                if at < 0:
                    message = orjson.loads(raw)
                    if message["type"] == "overflow":
                        counts["overflows"] += 1
                        await ws.send(subscribe(message["data"].get("cursor") or last))
                    elif message["type"] != "heartbeat":
                        counts["other"] += 1
                    continue
                at += len(MARK)
                committed = datetime.fromisoformat(raw[at : raw.index('"', at)]).timestamp()
                cursor_at = raw.rfind('"cursor":"')
                if cursor_at >= 0:
                    cursor_at += 10
                    last = raw[cursor_at : raw.index('"', cursor_at)]
                if measuring.is_set():
                    lags.append(now - committed)
                    counts["messages"] += 1
        except ConnectionClosed:
            counts["closed"] += 1

    readers = [asyncio.create_task(read(ws)) for ws in sockets]
    while not stop.is_set():
        await asyncio.sleep(0.1)
    for ws in sockets:
        await ws.close()
    await asyncio.gather(*readers, return_exceptions=True)
    return {"lags": lags.tobytes(), "connect_s": connect_s, **counts}


def receiver_process(
    port: int,
    token: str,
    clients: int,
    compression: str | None,
    cpu: int,
    ready: Any,
    measuring: Any,
    stop: Any,
    results: Any,
) -> None:
    pin_self(cpu)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    import uvloop

    out = uvloop.run(receivers(port, token, clients, compression, ready, measuring, stop))
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    results.put(out)


# --- one phase --------------------------------------------------------------------------------


def phase(
    service: Service,
    dbs: Any,
    features: list[str],
    args: argparse.Namespace,
    compression: str | None,
    spy: Path | None,
) -> dict[str, Any]:
    assert service.process is not None
    pid = service.process.pid
    ctx = mp.get_context("fork")
    ready, measuring, stop, results = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    rss_before = rss_mib(pid)
    proc = ctx.Process(
        target=receiver_process,
        args=(
            service.port,
            dbs.token,
            args.clients,
            compression,
            1,
            ready,
            measuring,
            stop,
            results,
        ),
    )
    proc.start()
    try:
        if not ready.wait(300):
            raise SystemExit("the receivers did not all connect and subscribe in 300 s")
        time.sleep(2)
        rss_connected = rss_mib(pid)
        rng = random.Random(5)

        def batch(i: int) -> list[dict[str, Any]]:
            now = now_utc()
            return [make_entry(rng, rng.choice(features), now) for _ in range(args.batch_size)]

        meter = CpuMeter(
            service=(pid, False),
            receivers=(proc.pid or 0, False),
            postgres=(postmaster_pid(dbs), True),
        )
        measuring.set()
        with PySpy(pid, spy):
            meter.start()
            with pinned(1):  # the generator beside the receivers and PostgreSQL
                sent = asyncio.run(
                    steady_ingest(
                        service.port,
                        dbs.token,
                        args.rate / args.batch_size,
                        args.duration,
                        batch,
                    )
                )
            time.sleep(1.0)  # deliveries still in flight
            meter.stop()
        rss_after = rss_mib(pid)
    finally:
        stop.set()
    got = results.get(timeout=120)
    proc.join(60)
    lags = array("d")
    lags.frombytes(got["lags"])
    expected = sent["stored"] * args.clients
    shares = meter.shares()
    return {
        "compression": compression or "none",
        "clients": args.clients,
        "connect_s": got["connect_s"],
        "ingest": sent,
        "expected_deliveries": expected,
        "deliveries": got["messages"],
        "deliveries_per_s": got["messages"] / args.duration,
        "overflows": got["overflows"],
        "closed": got["closed"],
        "lag": summary_ms(lags),
        "cpu_share": shares,
        "receivers_cpu_s": got["cpu_s"],
        "service_rss_mib": {"idle": rss_before, "connected": rss_connected, "after": rss_after},
        "deliveries_per_service_cpu_s": got["messages"] / max(meter.used["service"], 1e-9),
    }


def print_phase(r: dict[str, Any], duration: float) -> None:
    cpu = r["cpu_share"]
    rss = r["service_rss_mib"]
    print(
        f"\n  clients offering compression={r['compression']}: {r['clients']} connected and "
        f"subscribed in {r['connect_s']:.1f} s; service RSS {rss['idle']:.0f} -> "
        f"{rss['connected']:.0f} MiB ({rss['after']:.0f} MiB after)"
    )
    ing = r["ingest"]
    print(
        f"    ingest: {ing['stored']} entries in {duration:g} s ({ing['requests']} POSTs, "
        f"{ing['error_count']} errors, {ing['late_sends']} late); POST latency "
        f"p99 {ing['post_latency']['p99_ms']:.1f} ms"
    )
    print(
        f"    deliveries: {r['deliveries']:,} of {r['expected_deliveries']:,} expected "
        f"({r['deliveries_per_s']:,.0f}/s); overflows {r['overflows']}, closed {r['closed']}"
    )
    print(f"    delivery lag (arrival - committed_at): {fmt_ms(r['lag'])}")
    print(
        f"    CPU: service {cpu['service']:.0%} of CPU 0, receivers {cpu['receivers']:.0%}, "
        f"postgres {cpu['postgres']:.0%} (both on CPU 1); "
        f"{r['deliveries_per_service_cpu_s']:,.0f} deliveries per service CPU-second "
        "(websockets broadcast(): 45k/s)"
    )


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=25.0, help="entries/s ingested")
    parser.add_argument("--batch-size", type=int, default=1, help="entries per POST")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument(
        "--compression",
        choices=["both", "deflate", "none"],
        default="both",
        help="what the clients offer: deflate (the default of websockets), none, or both phases",
    )
    add_run_options(parser, py_spy="sample the service")
    args = parser.parse_args()
    args.clients = max(1, min(args.clients, 5000))
    args.duration = max(5.0, min(args.duration, 120.0))
    args.rate = max(1.0, min(args.rate, 1000.0))
    args.batch_size = max(1, min(args.batch_size, 1000))
    choices: dict[str, list[str | None]] = {
        "both": ["deflate", None],
        "deflate": ["deflate"],
        "none": [None],
    }
    phases = choices[args.compression]

    results: dict[str, Any] = {"command": command_line(), "phases": []}
    print(
        f"{args.clients} WebSocket log followers, {args.rate:g} entries/s "
        f"({args.rate * args.clients:,.0f} deliveries/s), {args.duration:g} s per phase"
    )
    with embedded_databases(3, postgres_cpu=1) as dbs:
        with psycopg.connect(dbs.database_url) as conn:
            features = [name for name, _ in features_of(conn, dbs.organization_id, 3)]
        with Service("minerva", dbs, cpu=0) as service:
            pg = f"{dbs.postgres_version}, pinned to CPU 1"
            busy = quiet_machine(args.wait_quiet, {"postgresql": pg})
            results.update(postgresql=dbs.postgres_version, busy_before=busy)
            for compression in phases:
                name = compression or "none"
                spy = args.py_spy / f"fanout-{name}.txt" if args.py_spy else None
                r = phase(service, dbs, features, args, compression, spy)
                print_phase(r, args.duration)
                results["phases"].append(r)
    return finish(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
