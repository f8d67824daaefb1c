"""Benchmark test calls: our overhead per call, and the rate limiter.

(a) Overhead: ``POST /features/{id}/test`` against a loopback OpenAI-compatible provider
that answers every call in a fixed 200 ms, offered at a steady 100 calls/s (open model:
each call starts on schedule, whatever the others do) for ``--seconds``. Overhead = the
call's latency at the client minus the provider's 200 ms; it includes everything we do:
the request, the settings read, the limiter (the feature has a requests-per-minute limit
it never reaches), the HTTP call to the provider, storing the result and a log entry.
Goal: p50 < 5 ms, p99 < 20 ms. The service runs under uvicorn (one worker, the service's
UVICORN_OPTIONS) pinned to CPU 0; the generator and the provider run in this process.

(b) The limiter, without HTTP: ``Limiter.reserve`` decisions per second on one core
(one caller in a loop, then 50 concurrent callers), and exactness: two limiters with their
own Redis connections (two instances) and 200 concurrent callers each, at one instant of
the driven clock, on a limit of 100 requests per minute: allowed must be 100 exactly.

Embedded PostgreSQL and Redis in a temp home; loopback only; bounded; stops everything it
started. Run:

    .venv/bin/python bench/model_tests.py
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

import orjson
from benchlib import (
    Databases,
    HttpPool,
    Service,
    add_run_options,
    bench_parser,
    busy_cpu_s,
    command_line,
    embedded_databases,
    finish,
    percentile,
    pinned,
    quiet_machine,
)
from logslib import CpuMeter, PySpy, postmaster_pid, top_frames

from minerva_ai.core.protocol import API_PREFIX

PROVIDER_S = 0.200
RATE = 100.0
# The provider says in its answer how long it held the call (asyncio.sleep wakes up late:
# 0.7 ms at the median on the benchmark machine), so that its own time, not 200 ms, is what
# the overhead subtracts.
HELD = re.compile(r"held ([0-9.]+) ms")


def answer(held_s: float) -> bytes:
    text = f"beach, sunset, people (held {held_s * 1000:.3f} ms)"
    return orjson.dumps(
        {
            **ANSWER,
            "choices": [
                {**ANSWER["choices"][0], "message": {"role": "assistant", "content": text}}
            ],
        }
    )


ANSWER: dict[str, Any] = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "beach, sunset, people"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
}


async def provider(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An OpenAI-compatible endpoint that answers every request after 200 ms (keep-alive)."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            received = time.perf_counter()
            await asyncio.sleep(PROVIDER_S)
            body = answer(time.perf_counter() - received)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        writer.close()  # the client went away, or the benchmark is over


async def overhead(
    service: Service,
    dbs: Databases,
    provider_port: int,
    seconds: float,
    py_spy: Path | None = None,
) -> dict[str, Any]:
    token = dbs.token
    pool = HttpPool(service.port, token, timeout_s=30)
    body = orjson.dumps({"name": "bench-test"})
    status, _ = await pool.request("POST", f"{API_PREFIX}/features", body)
    assert status == 201, status
    settings = {
        "version": 1,
        "settings": {
            "models": {
                "primary": "gpt",
                "definitions": {
                    "gpt": {
                        "provider": "openai",
                        "model": "gpt-4o-mini",
                        "base_url": f"http://127.0.0.1:{provider_port}/v1",
                        "parameters": {"max_tokens": 32},
                    }
                },
            },
            "rate_limits": {"requests_per_minute": 1_000_000},
        },
    }
    status, answer = await pool.request(
        "PUT", f"{API_PREFIX}/features/bench-test/settings", orjson.dumps(settings)
    )
    assert status == 200, answer
    path = f"{API_PREFIX}/features/bench-test/test"
    call = orjson.dumps({"type": "model", "content": "a dog on a beach at sunset"})
    for _ in range(20):  # warm up
        status, answer = await pool.request("POST", path, call)
        assert status == 200, answer
    latencies: list[float] = []  # minus 200 ms
    net: list[float] = []  # minus the provider's own time
    inside: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        started = time.perf_counter()
        status, answer = await pool.request("POST", path, call)
        elapsed = time.perf_counter() - started
        if status != 200:
            errors += 1
            return
        result = orjson.loads(answer)["data"]
        if result["status"] != "success":
            errors += 1
            return
        held_ms = float(HELD.findall(result["output"]["response"])[-1])
        latencies.append((elapsed - PROVIDER_S) * 1000)
        net.append(elapsed * 1000 - held_ms)
        inside.append(result["output"]["processingTime"] - held_ms)

    count = int(seconds * RATE)
    assert service.process is not None
    meter = CpuMeter(
        service=(service.process.pid, False),
        postgres=(postmaster_pid(dbs), True),
        ours=(os.getpid(), True),  # this process, the service, Redis (and PostgreSQL?)
    )
    machine0 = busy_cpu_s()
    with PySpy(service.process.pid, py_spy / "model-tests.txt" if py_spy else None):
        meter.start()
        begin = time.perf_counter()
        late = 0.0
        tasks = []
        for i in range(count):
            due = begin + i / RATE
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late = max(late, -delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        used = meter.stop()
        machine = busy_cpu_s() - machine0
    pool.close()
    latencies.sort()
    net.sort()
    inside.sort()
    return {
        "calls": count,
        "errors": errors,
        "offered_per_s": RATE,
        "generator_late_ms_max": round(late * 1000, 1),
        "overhead_ms": {
            "p50": round(percentile(latencies, 0.50), 2),
            "p90": round(percentile(latencies, 0.90), 2),
            "p99": round(percentile(latencies, 0.99), 2),
            "max": round(latencies[-1], 2) if latencies else None,
        },
        # The goal's figure: the client's latency minus the provider's own time.
        "overhead_net_of_provider_ms": {
            "p50": round(percentile(net, 0.50), 2),
            "p90": round(percentile(net, 0.90), 2),
            "p99": round(percentile(net, 0.99), 2),
            "max": round(net[-1], 2) if net else None,
        },
        "overhead_in_the_provider_call_ms": {
            "p50": round(percentile(inside, 0.50), 2),
            "p99": round(percentile(inside, 0.99), 2),
        },
        # CPU time per call (user + system, from /proc): noise on a shared machine moves it
        # much less than latency.
        "cpu_ms_per_call": {
            name: round(s * 1000 / count, 3) for name, s in used.items() if name != "ours"
        },
        # Shares of one CPU over the run; `others`: what processes not ours used meanwhile
        # (the machine is shared), out of the 2 CPUs.
        "cpu_share": {
            **{name: round(v, 3) for name, v in meter.shares().items() if name != "ours"},
            "others": round(max(0.0, machine - ours_cpu(used, dbs)) / meter.wall, 3),
        },
    }


def ours_cpu(used: dict[str, float], dbs: Databases) -> float:
    """CPU seconds of everything this benchmark started: PostgreSQL is counted apart when
    it is not a descendant of this process (pg_ctl detaches it)."""
    postmaster = postmaster_pid(dbs)
    pid = postmaster
    while pid > 1:
        if pid == os.getpid():
            return used["ours"]
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return used["ours"] + used["postgres"]


async def limiter(redis_url: str) -> dict[str, Any]:
    from minerva_ai.service.providers.limits import Limiter, Limits, Usage

    async def nothing(_: Any) -> Usage:
        return Usage(0, 0, 0.0)

    now = [time.time()]
    a = Limiter.connect(redis_url, lambda: now[0])
    b = Limiter.connect(redis_url, lambda: now[0])
    huge = Limits(requests_per_minute=10**9)
    figures: dict[str, Any] = {}
    with pinned(1):
        for callers in (1, 50):
            decisions = 5000 if callers == 1 else 20000
            per = decisions // callers

            async def caller(index: int, per: int = per) -> None:
                for _ in range(per):
                    await a.reserve(f"bench-{index % 4}", huge, 100, None, nothing)

            started = time.perf_counter()
            await asyncio.gather(*(caller(i) for i in range(callers)))
            elapsed = time.perf_counter() - started
            figures[f"decisions_per_s_{callers}_callers"] = round(per * callers / elapsed)
    from minerva_ai.service.providers.limits import RateLimited

    limit = Limits(requests_per_minute=100)
    allowed = refused = 0

    async def burst(instance: Limiter) -> None:
        nonlocal allowed, refused
        try:
            await instance.reserve("bench-exact", limit, 100, None, nothing)
            allowed += 1
        except RateLimited:
            refused += 1

    await asyncio.gather(*(burst(a if i % 2 else b) for i in range(400)))
    figures["exactness"] = {
        "instances": 2,
        "callers": 400,
        "limit": 100,
        "allowed": allowed,
        "refused": refused,
    }
    await a.close()
    await b.close()
    return figures


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=30, help="length of (a) (default 30)")
    add_run_options(parser, py_spy="sample the service with py-spy during (a): DIR/model-tests.txt")
    args = parser.parse_args()
    busy = quiet_machine(args.wait_quiet)
    results: dict[str, Any] = {"command": command_line(), "busy_before": busy}

    async def serve_provider() -> tuple[asyncio.Server, int]:
        server = await asyncio.start_server(provider, "127.0.0.1", 0)
        return server, server.sockets[0].getsockname()[1]

    with embedded_databases(0) as dbs:
        os.environ["MINERVA_PROVIDER_ALLOW"] = "127.0.0.1"
        os.environ["OPENAI_API_KEY"] = "sk-bench-not-a-real-key"

        async def run_all() -> None:
            server, port = await serve_provider()
            try:
                with Service("minerva", dbs, cpu=0) as service, pinned(1):
                    results["overhead"] = await overhead(
                        service, dbs, port, args.seconds, args.py_spy
                    )
            finally:
                server.close()
            results["limiter"] = await limiter(dbs.redis_url)

        asyncio.run(run_all())
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    if args.py_spy and (args.py_spy / "model-tests.txt").exists():
        print("py-spy, the service during (a) (own time):")
        for share, frame in top_frames(args.py_spy / "model-tests.txt", own=True):
            print(f"  {share:6.1%}  {frame}")
    return finish(results, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
