"""What the log benchmarks share: realistic entries, seeding logs in SQL, a small async
HTTP client that can POST, a WebSocket follower, CPU accounting from /proc, and summaries.

Loopback only; nothing here starts a server (benchlib does, in a temp home).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from benchlib import REPO, Databases, HttpPool, percentile, stop_process

from minerva_ai.core.protocol import API_PREFIX, WEBSOCKET_PATH
from minerva_ai.loadtest.http import ConnectionFailed

LOGS_PATH = f"{API_PREFIX}/logs"
WS_PATH = WEBSOCKET_PATH
SCHEMA_SQL = REPO / "minerva_ai" / "service" / "sql" / "schema.sql"

# --- CPU accounting ------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # fields from `state` on: comm may hold spaces


def process_cpu_s(pid: int, reaped: bool = False) -> float:
    """CPU seconds (user + system) of one process; with ``reaped``, plus its waited-for
    children's."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def tree_cpu_s(root: int) -> float:
    """CPU seconds of ``root``, its live descendants, and the children it has reaped (a
    PostgreSQL backend that exited is counted in its postmaster's)."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    total = process_cpu_s(root, reaped=True)
    stack = list(parents.get(root, []))
    while stack:
        pid = stack.pop()
        total += process_cpu_s(pid)
        stack.extend(parents.get(pid, []))
    return total


def postmaster_pid(dbs: Databases) -> int:
    return int((dbs.home / "postgres" / "postmaster.pid").read_text().split("\n", 1)[0])


class CpuMeter:
    """CPU seconds used between ``start()`` and ``stop()`` by named processes (trees)."""

    def __init__(self, **roots: tuple[int, bool]) -> None:
        self.roots = roots  # name -> (pid, whole tree?)
        self.before: dict[str, float] = {}
        self.used: dict[str, float] = {}
        self.wall = 0.0

    def _sample(self) -> dict[str, float]:
        return {
            name: tree_cpu_s(pid) if tree else process_cpu_s(pid)
            for name, (pid, tree) in self.roots.items()
        }

    def start(self) -> None:
        self.before = self._sample()
        self.wall = time.perf_counter()

    def stop(self) -> dict[str, float]:
        after = self._sample()
        self.wall = time.perf_counter() - self.wall
        self.used = {name: after[name] - self.before[name] for name in after}
        return self.used

    def shares(self) -> dict[str, float]:
        """Each one's CPU as a share of one CPU over the measured wall time."""
        return {name: used / max(self.wall, 1e-9) for name, used in self.used.items()}


# --- statistics ----------------------------------------------------------------------------


def summary_ms(seconds: Iterable[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in seconds)
    return {
        "count": len(ms),
        "p50_ms": percentile(ms, 0.50),
        "p95_ms": percentile(ms, 0.95),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": ms[-1] if ms else float("nan"),
        "mean_ms": sum(ms) / len(ms) if ms else float("nan"),
    }


def fmt_ms(s: dict[str, float]) -> str:
    return (
        f"p50 {s['p50_ms']:7.1f} ms  p95 {s['p95_ms']:7.1f} ms  p99 {s['p99_ms']:7.1f} ms  "
        f"max {s['max_ms']:7.1f} ms  (n={s['count']})"
    )


def parse_time(text: str) -> float:
    """An API time (ISO 8601 with Z) as a Unix time."""
    return datetime.fromisoformat(text).timestamp()


# --- realistic entries ---------------------------------------------------------------------

LEVELS = [("debug", 8), ("info", 78), ("warn", 9), ("error", 4), ("critical", 1)]
MODELS = ["gpt-4o-mini", "claude-3-5-haiku", "gpt-4o", "claude-sonnet-4"]
PROVIDERS = ["openai", "anthropic", "azure-openai", "bedrock"]
SOURCES = ["api", "worker", "scheduler", "webhook", "batch"]
REGIONS = ["eu-west-1", "us-east-1", "us-west-2", "ap-southeast-1"]
CATEGORIES = ["billing", "shipping", "refund", "account", "technical", "other"]


def message(rng: random.Random, level: str, model: str, request_id: str) -> str:
    """A log message of the kind an AI application writes at ``level``."""
    n = rng.randrange
    provider = rng.choice(PROVIDERS)
    if level == "debug":
        return rng.choice(
            [
                f"prompt v{n(1, 40)} rendered with {n(2, 14)} variables ({n(300, 9000)} chars)",
                f"cache miss for key emb:{n(16**8):08x}, fetching embeddings from {provider}",
                f"retrieved {n(1, 12)} passages from index kb-{n(1, 6)} in {n(3, 90)} ms",
            ]
        )
    if level == "info":
        return rng.choice(
            [
                f"completion ok model={model} tokens_in={n(50, 4000)} tokens_out={n(5, 900)} "
                f"latency_ms={n(150, 4000)} request={request_id}",
                f"classified ticket T-{n(100000, 999999)} as {rng.choice(CATEGORIES)} "
                f"(confidence 0.{n(50, 99)})",
                f"served cached answer for user u_{n(1, 200000)} in {n(2, 40)} ms",
                f"summary delivered to agent a_{n(1, 3000)}: {n(2, 5)} bullet points, "
                f"{n(120, 900)} chars",
            ]
        )
    if level == "warn":
        return rng.choice(
            [
                f"slow response from {provider}: {n(1500, 9000)} ms (budget 1500 ms)",
                f"rate limited by {provider} (429), retrying in {n(100, 4000)} ms "
                f"(attempt {n(1, 4)})",
                f"output truncated at max_tokens={rng.choice([256, 512, 1024])} for {request_id}",
                f"low confidence 0.{n(10, 49)} for ticket T-{n(100000, 999999)}, sent to a human",
            ]
        )
    if level == "error":
        return rng.choice(
            [
                f"provider {provider} timeout after {rng.choice([10000, 30000, 60000])} ms "
                f"for {request_id}",
                f"upstream returned {rng.choice([500, 502, 503, 504])} from {provider} "
                f"for {request_id}",
                f"invalid JSON in model output: unexpected token at position {n(1, 3000)}",
                "content filter blocked the output: category="
                + rng.choice(["violence", "pii", "self-harm"]),
            ]
        )
    return rng.choice(
        [
            f"circuit breaker open for {provider} after {n(5, 50)} consecutive failures",
            f"monthly budget exceeded: ${n(1000, 9000)}.{n(100):02d} spent, feature paused",
        ]
    )


def make_entry(
    rng: random.Random, feature: str, moment: datetime, attributes: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One entry as an application sends it to ``POST /logs``."""
    level = rng.choices([lv for lv, _ in LEVELS], [w for _, w in LEVELS])[0]
    model = rng.choice(MODELS)
    request_id = f"req_{rng.getrandbits(48):012x}"
    status = {"error": "error", "critical": "error"}.get(level, "success")
    if status == "error" and rng.random() < 0.3:
        status = "timeout"
    tokens_in = rng.randrange(50, 4000)
    tokens_out = rng.randrange(5, 900)
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "timestamp": moment.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "feature": feature,
        "level": level,
        "message": message(rng, level, model, request_id),
        "source": rng.choice(SOURCES),
        "request_id": request_id,
        "model": model,
        "latency_ms": round(rng.lognormvariate(6.5, 0.6), 1),
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "cost": round((tokens_in * 0.15 + tokens_out * 0.6) / 1_000_000, 6),
        "status": status,
        "attributes": {
            "user_id": f"u_{rng.randrange(1, 200000)}",
            "region": rng.choice(REGIONS),
            "prompt_version": rng.randrange(1, 40),
            **(attributes or {}),
        },
    }


# --- features, partitions and seeding in SQL -----------------------------------------------


def features_of(conn: Any, org_id: str, limit: int) -> list[tuple[str, str]]:
    """``(name, id)`` of the organization's first ``limit`` features, by name."""
    rows = conn.execute(
        "SELECT name, id::text FROM features WHERE organization_id = %s ORDER BY name LIMIT %s",
        (org_id, limit),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def ensure_partitions(conn: Any, first: date, last: date) -> None:
    day = first
    while day <= last:
        conn.execute("SELECT minerva_log_partition(%s::date)", (day,))
        day += timedelta(days=1)


def log_indexes() -> list[tuple[str, str]]:
    """``(name, CREATE INDEX ...)`` for every index on ``logs`` that schema.sql defines (the
    migrations produce exactly schema.sql: tests/service/test_migrations.py)."""
    text = SCHEMA_SQL.read_text()
    found = re.findall(
        r"^(CREATE (?:UNIQUE )?INDEX (\w+) ON logs\b[^;]*);", text, re.MULTILINE | re.DOTALL
    )
    return [(name, statement) for statement, name in found]


# One day of rows for one organization: features round-robin with a skew, levels 8% debug,
# 78% info, 9% warn, 4% error, 1% critical, messages like make_entry()'s, seq increasing
# with the timestamp (rows are committed about when they happen), committed_at just after.
SEED_DAY_SQL = """
INSERT INTO logs (organization_id, feature_id, seq, client_id, "timestamp", committed_at,
                  level, message, source, request_id, model, latency_ms, tokens_in,
                  tokens_out, cost, status, attributes)
SELECT %(org)s::uuid, (%(features)s::uuid[])[1 + r.f], nextval('log_seq'),
       gen_random_uuid()::text, r.ts, r.ts + r.r5 * interval '2 seconds', r.level,
       CASE r.level
         WHEN 'debug' THEN (ARRAY[
           format('prompt v%%s rendered with %%s variables (%%s chars)',
                  1 + r.i %% 40, 2 + r.i %% 13, 300 + r.i %% 8700),
           format('cache miss for key emb:%%s, fetching embeddings from %%s',
                  to_hex(r.i * 2654435761 %% 4294967296), r.provider),
           format('retrieved %%s passages from index kb-%%s in %%s ms',
                  1 + r.i %% 12, 1 + r.i %% 6, 3 + r.i %% 87)])[1 + r.t %% 3]
         WHEN 'info' THEN (ARRAY[
           format('completion ok model=%%s tokens_in=%%s tokens_out=%%s latency_ms=%%s request=%%s',
                  r.model, r.tin, r.tout, r.lat::int, r.req),
           format('classified ticket T-%%s as %%s (confidence 0.%%s)',
                  100000 + r.i %% 900000, r.category, 50 + r.i %% 50),
           format('served cached answer for user u_%%s in %%s ms',
                  1 + r.i %% 200000, 2 + r.i %% 38),
           format('summary delivered to agent a_%%s: %%s bullet points, %%s chars',
                  1 + r.i %% 3000, 2 + r.i %% 4, 120 + r.i %% 780)])[1 + r.t %% 4]
         WHEN 'warn' THEN (ARRAY[
           format('slow response from %%s: %%s ms (budget 1500 ms)',
                  r.provider, 1500 + r.i %% 7500),
           format('rate limited by %%s (429), retrying in %%s ms (attempt %%s)',
                  r.provider, 100 + r.i %% 3900, 1 + r.i %% 4),
           format('output truncated at max_tokens=%%s for %%s',
                  (ARRAY[256, 512, 1024])[1 + r.i %% 3], r.req),
           format('low confidence 0.%%s for ticket T-%%s, sent to a human',
                  10 + r.i %% 40, 100000 + r.i %% 900000)])[1 + r.t %% 4]
         WHEN 'error' THEN (ARRAY[
           format('provider %%s timeout after %%s ms for %%s',
                  r.provider, (ARRAY[10000, 30000, 60000])[1 + r.i %% 3], r.req),
           format('upstream returned %%s from %%s for %%s',
                  (ARRAY[500, 502, 503, 504])[1 + r.i %% 4], r.provider, r.req),
           format('invalid JSON in model output: unexpected token at position %%s',
                  1 + r.i %% 3000),
           format('content filter blocked the output: category=%%s',
                  (ARRAY['violence', 'pii', 'self-harm'])[1 + r.i %% 3])])[1 + r.t %% 4]
         ELSE (ARRAY[
           format('circuit breaker open for %%s after %%s consecutive failures',
                  r.provider, 5 + r.i %% 45),
           format('monthly budget exceeded: $%%s.%%s spent, feature paused',
                  1000 + r.i %% 8000, lpad((r.i %% 100)::text, 2, '0'))])[1 + r.t %% 2]
       END,
       (ARRAY['api', 'worker', 'scheduler', 'webhook', 'batch'])[1 + (r.u / 64) %% 5],
       r.req, r.model, r.lat, r.tin, r.tout,
       round(((r.tin * 0.15 + r.tout * 0.6) / 1000000)::numeric, 6)::double precision,
       CASE WHEN r.level IN ('error', 'critical')
            THEN CASE WHEN r.r5 < 0.3 THEN 'timeout' ELSE 'error' END ELSE 'success' END,
       jsonb_build_object('user_id', 'u_' || (1 + r.i %% 200000),
                          'region', (ARRAY['eu-west-1', 'us-east-1', 'us-west-2',
                                           'ap-southeast-1'])[1 + (r.u / 16) %% 4],
                          'prompt_version', 1 + r.i %% 40)
FROM (
  SELECT g.g, g.ts, g.f, g.i, g.t, g.u, g.r5,
         CASE WHEN g.r1 < 0.08 THEN 'debug' WHEN g.r1 < 0.86 THEN 'info'
              WHEN g.r1 < 0.95 THEN 'warn' WHEN g.r1 < 0.99 THEN 'error'
              ELSE 'critical' END AS level,
         (ARRAY['gpt-4o-mini', 'claude-3-5-haiku', 'gpt-4o', 'claude-sonnet-4'])[1 + g.u %% 4]
           AS model,
         (ARRAY['openai', 'anthropic', 'azure-openai', 'bedrock'])[1 + (g.u / 4) %% 4]
           AS provider,
         (ARRAY['billing', 'shipping', 'refund', 'account', 'technical', 'other'])[1 + g.i %% 6]
           AS category,
         'req_' || lpad(to_hex(g.i), 12, '0') AS req,
         round((exp(6.5 + 0.6 * g.r2) )::numeric, 1)::double precision AS lat,
         (50 + g.i %% 3950)::int AS tin, (5 + g.i %% 895)::int AS tout
  FROM (
    SELECT s AS g,
           %(start)s::timestamptz + (s - 1) * %(step)s::interval AS ts,
           least(floor(power(random(), 1.3) * %(nfeatures)s), %(nfeatures)s - 1)::int AS f,
           (random() * 2147483646)::bigint AS i,
           (random() * 1000000)::int AS t, (random() * 1000000)::int AS u,
           random() AS r1, random() * 2 - 1 AS r2, random() AS r5
    FROM generate_series(1, %(rows)s) s
  ) g
) r
ORDER BY r.g
"""


def seed_logs(
    dbs: Databases,
    feature_ids: list[str],
    rows: int,
    days: int,
    end: datetime,
    say: Callable[[str], None] = print,
    quiet: tuple[str, int] | None = None,
) -> dict[str, float]:
    """``rows`` entries for the organization over the ``days`` days before ``end``, spread
    evenly in time, in ``feature_ids``; with ``quiet`` = (feature id, n), also n entries
    of that feature on the first day only (a feature that went silent). Drops the logs
    indexes, loads one day per statement, rebuilds the indexes exactly as schema.sql
    defines them, then VACUUM ANALYZE. Returns the seconds each phase took."""
    import psycopg

    timings: dict[str, float] = {}
    start = end - timedelta(days=days)
    per_day = rows // days
    step = timedelta(days=1) / per_day
    indexes = log_indexes()
    with psycopg.connect(dbs.database_url, autocommit=True) as conn:
        conn.execute("SELECT setseed(0.42)")
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET max_parallel_maintenance_workers = 2")
        ensure_partitions(conn, start.date(), end.date())
        for name, _ in indexes:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
        t0 = time.perf_counter()
        if quiet is not None:
            conn.execute(
                SEED_DAY_SQL,
                {
                    "org": dbs.organization_id,
                    "features": [quiet[0]],
                    "start": start,
                    "step": timedelta(days=1) / quiet[1],
                    "rows": quiet[1],
                    "nfeatures": 1,
                },
            )
        for day in range(days):
            conn.execute(
                SEED_DAY_SQL,
                {
                    "org": dbs.organization_id,
                    "features": feature_ids,
                    "start": start + day * timedelta(days=1),
                    "step": step,
                    "rows": per_day if day < days - 1 else rows - per_day * (days - 1),
                    "nfeatures": len(feature_ids),
                },
            )
            elapsed = time.perf_counter() - t0
            done = per_day * (day + 1)
            say(f"  seeded day {day + 1}/{days}: {done:,} rows, {done / elapsed:,.0f} rows/s")
        timings["insert_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for name, statement in indexes:
            t1 = time.perf_counter()
            conn.execute(statement)
            say(f"  built {name} in {time.perf_counter() - t1:.0f} s")
        timings["indexes_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        conn.execute("VACUUM ANALYZE logs")
        # Partitioned parents are not analysed by VACUUM ANALYZE of their partitions alone.
        conn.execute("ANALYZE logs")
        timings["vacuum_analyze_s"] = time.perf_counter() - t0
        say(f"  VACUUM ANALYZE in {timings['vacuum_analyze_s']:.0f} s")
    return timings


# --- a minimal keep-alive HTTP/1.1 client for POST and GET ---------------------------------


@dataclass
class Ticks:
    """An open-model schedule: ``count`` ticks ``1/rate`` s apart; how many were late."""

    rate: float
    count: int
    late: int = 0

    async def __aiter__(self) -> Any:
        start = time.perf_counter() + 0.05
        for i in range(self.count):
            delay = start + i / self.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.005:
                self.late += 1
            yield i


async def steady_ingest(
    port: int,
    token: str,
    rate: float,
    duration_s: float,
    batch: Callable[[int], list[dict[str, Any]]],
) -> dict[str, Any]:
    """POST ``batch(i)`` ``rate`` times a second for ``duration_s`` (open model: a slow
    answer does not delay the next send); each entry's ``attributes.sent_at`` is set to
    the moment its request is written. Returns counts and the POST latencies."""
    pool = HttpPool(port, token)
    latencies: list[float] = []
    errors: list[str] = []
    stored = 0

    async def one(i: int) -> None:
        nonlocal stored
        entries = batch(i)
        sent = time.time()
        for entry in entries:
            entry["attributes"]["sent_at"] = sent
        body = orjson.dumps(entries)
        t0 = time.perf_counter()
        try:
            status, answer = await pool.request("POST", LOGS_PATH, body)
        except (TimeoutError, ConnectionFailed) as exc:
            errors.append(repr(exc))
            return
        latencies.append(time.perf_counter() - t0)
        if status != 200:
            errors.append(f"HTTP {status}: {answer[:200]!r}")
        else:
            stored += orjson.loads(answer)["data"]["stored"]

    ticks = Ticks(rate, int(rate * duration_s))
    tasks = [asyncio.create_task(one(i)) async for i in ticks]
    await asyncio.gather(*tasks)
    pool.close()
    return {
        "requests": len(tasks),
        "stored": stored,
        "errors": errors[:5],
        "error_count": len(errors),
        "late_sends": ticks.late,
        "connections": pool.opened,
        "post_latency": summary_ms(latencies),
    }


# --- a WebSocket follower --------------------------------------------------------------------


async def ws_follow(
    port: int,
    token: str,
    on_entry: Callable[[float, dict[str, Any]], None],
    stop: Callable[[], bool],
    filters: dict[str, Any] | None = None,
    ready: Callable[[], None] | None = None,
    compression: str | None = "deflate",
) -> dict[str, int]:
    """Subscribe to the organization's logs and call ``on_entry(arrival, entry)`` for each
    `log` message until ``stop()``; resubscribe after `overflow` from the last cursor."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    counts = {"entries": 0, "overflows": 0}
    last: str | None = None

    def subscription() -> str:
        data: dict[str, Any] = {"channel": "logs"}
        if last is not None:
            data["after"] = last
        if filters:
            data["filters"] = filters
        return orjson.dumps({"type": "subscribe", "data": data}).decode()

    async with connect(
        f"ws://127.0.0.1:{port}{WS_PATH}",
        additional_headers={"Authorization": f"Bearer {token}"},
        max_size=2**22,
        compression=compression,
        open_timeout=30,
    ) as ws:

        async def watch() -> None:
            while not stop():
                await asyncio.sleep(0.1)
            await ws.close()

        watcher = asyncio.create_task(watch())
        await ws.send(subscription())
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                arrival = time.time()
                message = orjson.loads(raw)
                kind = message["type"]
                if kind == "log":
                    last = message["data"]["cursor"]
                    counts["entries"] += 1
                    on_entry(arrival, message["data"])
                elif kind == "subscribed":
                    if ready is not None:
                        ready()
                        ready = None
                elif kind == "overflow":
                    counts["overflows"] += 1
                    with contextlib.suppress(KeyError):
                        last = message["data"]["cursor"]
                    await ws.send(subscription())
                elif kind == "error":
                    raise RuntimeError(f"the WebSocket said: {message['data']}")
        watcher.cancel()
    return counts


def now_utc() -> datetime:
    return datetime.now(UTC)


# --- sampling profiles -----------------------------------------------------------------------


class PySpy:
    """``py-spy record`` of ``pid`` into ``out`` (raw folded stacks) while in the block;
    nothing when ``out`` is None or py-spy is missing (``pip install py-spy``)."""

    def __init__(self, pid: int, out: Path | None, rate: int = 250) -> None:
        self.pid = pid
        self.out = out
        self.rate = rate
        self.process: Any = None

    def __enter__(self) -> PySpy:
        import shutil
        import subprocess
        import sys

        if self.out is None:
            return self
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(spy).exists():
            print("py-spy is not installed: no profile", file=sys.stderr)
            return self
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                *(spy, "record", "--nonblocking", "-f", "raw", "-r", str(self.rate)),
                *("-o", str(self.out), "-p", str(self.pid)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        if self.process is None:
            return
        stop_process(self.process, signal.SIGINT, 30)


def top_frames(folded: Path, limit: int = 25, own: bool = False) -> list[tuple[float, str]]:
    """The frames with the largest share of samples in a py-spy raw (folded) file:
    inclusive by default, self time with ``own``."""
    counts: dict[str, int] = {}
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        frames = stack.split(";")
        names = {frames[-1]} if own else set(frames)
        for name in names:
            counts[name] = counts.get(name, 0) + int(n)
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
    return [(n / max(total, 1), name) for name, n in ranked]


NO_DEFLATE = '{"ws_per_message_deflate": false}'


@contextlib.contextmanager
def environment(**values: str) -> Any:
    """Set environment variables for the block (e.g. for a Service started inside it)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- metrics: minute rollups seeded in SQL, the ingest without them --------------------------

# Per (feature, model) minute of 7 days: realistic counts around each pair's rate (a daily
# swing, noise), a rare error or timeout, ~5% of calls three buckets slower, in a histogram
# of two buckets like {"27": 3, "30": 1}. Minutes in order, so the table is clustered by time.
SEED_METRIC_MINUTES_SQL = """
INSERT INTO metric_minutes AS m (organization_id, feature_id, minute, model, test, requests,
                                 successes, errors, timeouts, latency_count, latency_sum,
                                 latency_hist, tokens_in, tokens_out, cost)
SELECT %(org)s::uuid, p.feature_id, t.minute, p.model, false, c.req,
       c.req - c.err - c.tmo, c.err, c.tmo, c.req,
       round((c.req * p.latency * (0.8 + 0.4 * random()))::numeric, 1),
       CASE WHEN c.slow = 0 THEN jsonb_build_object(p.bucket::text, c.req)
            WHEN c.slow = c.req THEN jsonb_build_object((p.bucket + 3)::text, c.req)
            ELSE jsonb_build_object(p.bucket::text, c.req - c.slow, (p.bucket + 3)::text, c.slow)
       END,
       c.req * p.tokens_in, c.req * p.tokens_out,
       round((c.req * (p.tokens_in * 0.15 + p.tokens_out * 0.6) / 1000000)::numeric, 6)
FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz, interval '1 minute')
       AS t(minute)
CROSS JOIN unnest(%(features)s::uuid[], %(models)s::text[], %(rates)s::float8[],
                  %(error_rates)s::float8[], %(buckets)s::int[], %(latencies)s::float8[],
                  %(tokens_in)s::int[], %(tokens_out)s::int[])
       AS p(feature_id, model, rate, error_rate, bucket, latency, tokens_in, tokens_out)
CROSS JOIN LATERAL (
    SELECT e.n AS req, e.err, least(e.n - e.err, floor(e.n * 0.002 + random() * 0.2)::int) AS tmo,
           least(e.n, floor(e.n * 0.05 + random())::int) AS slow
    FROM (SELECT r.n, least(r.n, floor(r.n * p.error_rate + random())::int) AS err
          FROM (SELECT greatest(1, round(p.rate * (1 + 0.5 * sin(extract(epoch FROM t.minute)
                                                                / 13751.0))
                                         * (0.7 + 0.6 * random())))::int AS n) r) e
) c
ORDER BY t.minute
"""


def seed_metric_minutes(
    dbs: Databases,
    feature_ids: list[str],
    days: float,
    end: datetime,
    second_model_every: int = 10,
    say: Callable[[str], None] = print,
) -> dict[str, float]:
    """Minute rollups of ``feature_ids`` for the ``days`` before ``end`` (its minute
    included): one model per feature, two on one feature in ``second_model_every``. Drops
    the table's indexes, loads a day per statement, rebuilds them as they were (their own
    definitions), then VACUUM ANALYZE. Returns the rows and the seconds each phase took."""
    import psycopg

    rng = random.Random(11)
    pairs = []
    for i, fid in enumerate(feature_ids):
        rate = min(600.0, rng.lognormvariate(2.5, 1.0))  # calls a minute, median ~12
        models = [MODELS[i % len(MODELS)]]
        if second_model_every and i % second_model_every == 0:
            models.append(MODELS[(i + 1) % len(MODELS)])
        for k, model in enumerate(models):
            bucket = rng.randrange(24, 29)  # [200, 250) to [630, 800) ms
            pairs.append(
                {
                    "feature": fid,
                    "model": model,
                    "rate": rate if k == 0 else rate / 5,
                    "error_rate": rng.choice([0.001, 0.003, 0.01, 0.03]),
                    "bucket": bucket,
                    "latency": (200, 250, 315, 400, 500)[bucket - 24] * 1.1,
                    "tokens_in": rng.randrange(100, 3000),
                    "tokens_out": rng.randrange(20, 600),
                }
            )
    columns = {
        name: [p[key] for p in pairs]
        for name, key in [
            ("features", "feature"),
            ("models", "model"),
            ("rates", "rate"),
            ("error_rates", "error_rate"),
            ("buckets", "bucket"),
            ("latencies", "latency"),
            ("tokens_in", "tokens_in"),
            ("tokens_out", "tokens_out"),
        ]
    }
    last = end.astimezone(UTC).replace(second=0, microsecond=0)
    first = last - timedelta(days=days) + timedelta(minutes=1)
    timings: dict[str, float] = {}
    with psycopg.connect(dbs.database_url, autocommit=True) as conn:
        conn.execute("SELECT setseed(0.11)")
        conn.execute("SET maintenance_work_mem = '1GB'")
        indexes = conn.execute(
            "SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "WHERE c.conrelid = 'metric_minutes'::regclass AND c.contype = 'p'"
        ).fetchall()
        plain = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'metric_minutes' "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint "
            "WHERE conrelid = 'metric_minutes'::regclass)"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f"ALTER TABLE metric_minutes DROP CONSTRAINT {name}")
        for name, _ in plain:
            conn.execute(f"DROP INDEX {name}")
        t0 = time.perf_counter()
        day_start = first
        while day_start <= last:
            day_end = min(last, day_start + timedelta(days=1) - timedelta(minutes=1))
            conn.execute(
                SEED_METRIC_MINUTES_SQL,
                {"org": dbs.organization_id, "start": day_start, "end": day_end, **columns},
            )
            elapsed = time.perf_counter() - t0
            say(f"  seeded rollups up to {day_end:%Y-%m-%d %H:%M} ({elapsed:.0f} s)")
            day_start = day_end + timedelta(minutes=1)
        timings["insert_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for name, definition in indexes:
            conn.execute(f"ALTER TABLE metric_minutes ADD CONSTRAINT {name} {definition}")
        for _, definition in plain:
            conn.execute(definition)
        timings["indexes_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        conn.execute("VACUUM ANALYZE metric_minutes")
        timings["vacuum_analyze_s"] = time.perf_counter() - t0
        row = conn.execute("SELECT count(*) FROM metric_minutes").fetchone()
        timings["rows"] = float(row[0]) if row else 0.0
        size = conn.execute("SELECT pg_total_relation_size('metric_minutes')").fetchone()
        timings["bytes"] = float(size[0]) if size else 0.0
    return timings


def insert_logs_without_rollups(with_rollups: str) -> str:
    """The ingest's ``insert_logs_from_staging`` without its rollup CTEs: the very INSERT of
    its ``inserted`` CTE, returning ``seq`` only (what the service reads of it)."""
    found = re.search(
        r"WITH inserted AS \(\s*(INSERT INTO logs .*?)\s+RETURNING [^)]*\),\s*calls AS",
        with_rollups,
        re.DOTALL,
    )
    if found is None:
        raise RuntimeError("insert_logs_from_staging no longer has an `inserted` CTE")
    return f"{found[1]}\nRETURNING seq"


# --- many WebSocket clients in one process -------------------------------------------------


async def open_subscribed(
    url: str, token: str, subscription: dict[str, Any], **options: Any
) -> Any:
    """A WebSocket authenticated with the bearer header, once ``subscribe`` is answered."""
    from websockets.asyncio.client import connect

    ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"}, **options)
    await ws.send(orjson.dumps({"type": "subscribe", "data": subscription}).decode())
    while orjson.loads(await ws.recv())["type"] != "subscribed":
        pass
    return ws


async def close_when(stop: Any, sockets: list[Any], readers: list[asyncio.Task[None]]) -> None:
    """Once ``stop`` (an Event of another process) is set, close every socket and wait for
    its reader."""
    while not stop.is_set():
        await asyncio.sleep(0.05)
    for ws in sockets:
        await ws.close()
    await asyncio.gather(*readers, return_exceptions=True)


def run_pinned(cpu: int, main: Any) -> dict[str, Any]:
    """The coroutine ``main`` run with uvloop in this process pinned to ``cpu``; its result
    (a dict) with the CPU seconds the process used meanwhile, ``cpu_s``."""
    import resource

    import uvloop
    from benchlib import pin_self

    pin_self(cpu)
    before = resource.getrusage(resource.RUSAGE_SELF)
    out: dict[str, Any] = uvloop.run(main)
    after = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return out
