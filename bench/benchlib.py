"""What the benchmarks share: the command line and the JSON results, the machine's
description, embedded databases in a temp home, a service in a pinned subprocess, a small
loopback HTTP client, wrk, and percentiles.

Everything here talks to 127.0.0.1 only, and everything it starts it stops.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minerva_ai.core.protocol import API_PREFIX

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
FEATURES_PATH = f"{API_PREFIX}/features"


# --- the command line and the results ----------------------------------------------------


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose description is the benchmark's docstring, line breaks kept."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_run_options(parser: argparse.ArgumentParser, py_spy: str | None = None) -> None:
    """``--json FILE``, ``--py-spy DIR`` when ``py_spy`` (its help) is given, and
    ``--wait-quiet SECONDS``."""
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    if py_spy is not None:
        parser.add_argument("--py-spy", type=Path, metavar="DIR", help=py_spy)
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to SECONDS for other processes to go idle",
    )


def command_line() -> str:
    """How this benchmark was run, for its results."""
    return " ".join([sys.executable, *sys.argv])


def finish(
    results: dict[str, Any],
    json_path: Path | None,
    default: Callable[[Any], Any] | None = None,
) -> int:
    """Write ``results`` to ``json_path`` (when given) as indented JSON; exit status 0."""
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2, default=default) + "\n")
    return 0


# --- the machine -------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_gib() -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return 0.0


def machine() -> dict[str, str]:
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "memory": f"{memory_gib():.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _cpu_times() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]  # total, idle + iowait


def busy_cpu_s() -> float:
    """CPU seconds all processes have used since boot (every CPU's non-idle time)."""
    total, idle = _cpu_times()
    return (total - idle) / os.sysconf("SC_CLK_TCK")


def busy_share(seconds: float = 1.0) -> float | None:
    """The share of all CPUs that other processes kept busy over ``seconds``."""
    try:
        total0, idle0 = _cpu_times()
        time.sleep(seconds)
        total1, idle1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def warn_if_busy() -> str:
    """Say (on stderr) when something else is using the CPUs a benchmark needs."""
    share = busy_share()
    if share is None:
        return "unknown"
    if share > 0.10:
        print(
            f"warning: other processes keep {share:.0%} of the CPUs busy; the figures "
            "will be lower and noisier than on a quiet machine",
            file=sys.stderr,
        )
    return f"{share:.0%}"


def wait_quiet(max_wait_s: float, threshold: float = 0.10) -> None:
    """Wait up to ``max_wait_s`` for other processes to leave the CPUs mostly idle."""
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        share = busy_share(2.0)
        if share is None or share <= threshold:
            return
        print(f"waiting for a quiet machine ({share:.0%} busy)...", file=sys.stderr)
        time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))


def print_machine(extra: dict[str, str] | None = None) -> None:
    for key, value in {**machine(), **(extra or {})}.items():
        print(f"  {key:<12} {value}")


def quiet_machine(
    wait_s: float, extra: dict[str, str] | None = None, after: dict[str, str] | None = None
) -> str:
    """Wait up to ``wait_s`` for a quiet machine, warn when it is still busy, and print it
    with ``extra``, the busy share ("busy before") and ``after``; return that share."""
    wait_quiet(wait_s)
    busy = warn_if_busy()
    print_machine({**(extra or {}), "busy before": busy, **(after or {})})
    return busy


def taskset(cpu: int) -> list[str]:
    """A command prefix pinning to ``cpu``, or nothing when taskset or that CPU is missing."""
    if shutil.which("taskset") and cpu < (os.cpu_count() or 1):
        return ["taskset", "-c", str(cpu)]
    return []


def pin_tree(pid: int, cpu: int) -> None:
    """Pin a process and its children (new children inherit it) to ``cpu``, if it exists."""
    if not hasattr(os, "sched_setaffinity") or cpu >= (os.cpu_count() or 1):
        return
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for child in children:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(child), {cpu})
    os.sched_setaffinity(pid, {cpu})


def pin_self(cpu: int) -> bool:
    """Pin this process to ``cpu`` when it exists; say whether it did."""
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})
        return True
    return False


@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """This process pinned to ``cpu`` (when it exists) for the block, then as before."""
    previous = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    pin_self(cpu)
    try:
        yield
    finally:
        if previous is not None:
            os.sched_setaffinity(0, previous)


def stop_process(process: subprocess.Popen[Any], sig: int, timeout_s: float) -> None:
    """Send ``sig``, wait up to ``timeout_s`` for the process to end, else kill it."""
    process.send_signal(sig)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


# --- embedded databases with an organization of many features ----------------------------

_DOMAINS = [
    "support",
    "billing",
    "search",
    "catalog",
    "checkout",
    "onboarding",
    "fraud",
    "marketing",
    "hr",
    "legal",
    "sales",
    "logistics",
    "inventory",
    "reviews",
    "community",
    "docs",
    "analytics",
    "security",
    "compliance",
    "media",
]
_TASKS = [
    ("summarizer", "Summarizes {d} conversations into three bullet points for the agent"),
    ("classifier", "Routes incoming {d} requests to the right queue by intent and urgency"),
    ("moderation", "Flags {d} content that breaks the community guidelines before it is shown"),
    ("photo-tagging", "Suggests tags for images uploaded in {d}, with confidence scores"),
    ("translator", "Translates {d} messages between the customer's and the agent's language"),
    ("reply-drafter", "Drafts a first reply for {d} tickets that an agent reviews and sends"),
    ("sentiment", "Scores the sentiment of {d} feedback and raises very negative cases"),
    ("extractor", "Extracts structured fields (dates, amounts, names) from {d} documents"),
    ("qa-bot", "Answers {d} questions from the knowledge base, citing the articles it used"),
    ("anomaly-explainer", "Explains unusual {d} metrics in plain words for the on-call"),
]
_MODELS = ["gpt-4o-mini", "claude-3-5-haiku", "gpt-4o", "claude-sonnet-4", "simulator"]


def feature_rows(count: int, seed: int = 42) -> list[dict[str, str]]:
    """``count`` realistic, distinct features (name, display name, description, status)."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        domain = _DOMAINS[i % len(_DOMAINS)]
        task, blurb = _TASKS[(i // len(_DOMAINS)) % len(_TASKS)]
        name = f"{domain}-{task}-{i:04d}"
        model = rng.choice(_MODELS)
        budget = rng.choice([300, 800, 1500])
        rows.append(
            {
                "name": name,
                "display_name": f"{domain.title()} {task.replace('-', ' ')} #{i}",
                "description": blurb.format(d=domain) + f". Runs on {model}; owned by the "
                f"{domain} team, reviewed weekly. Latency budget {budget} ms.",
                "status": rng.choices(["active", "inactive", "maintenance"], [85, 10, 5])[0],
            }
        )
    return rows


@dataclass
class Databases:
    home: Path
    database_url: str
    redis_url: str
    organization_id: str
    token: str
    postgres_version: str


@contextlib.contextmanager
def embedded_databases(features: int, postgres_cpu: int | None = None) -> Iterator[Databases]:
    """Embedded PostgreSQL and Redis in a temp home, migrated, with one organization owning
    ``features`` features; everything is stopped and removed on exit. With ``postgres_cpu``,
    PostgreSQL (and so every backend it forks) is pinned to that CPU."""
    import psycopg
    from psycopg.types.json import Jsonb

    from minerva_ai.service import admin, embedded
    from minerva_ai.service.feature_settings import empty_settings

    with tempfile.TemporaryDirectory(prefix="minerva-bench-") as tmp:
        home = Path(tmp)
        servers = []
        try:
            postgres = embedded.start_postgres(home)
            servers.append(postgres)
            if postgres_cpu is not None:
                pin_tree(postgres.pid, postgres_cpu)
            redis = embedded.start_redis(home)
            servers.append(redis)
            admin.migrate(postgres.url)
            issued = admin.create_organization(postgres.url, "bench")
            with psycopg.connect(postgres.url) as conn, conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO features (organization_id, name, display_name, description,"
                    " status) VALUES (%(org)s, %(name)s, %(display_name)s, %(description)s,"
                    " %(status)s)",
                    [{"org": issued.organization_id, **row} for row in feature_rows(features)],
                )
                cur.execute(
                    "INSERT INTO feature_settings (feature_id, version, settings, author_name)"
                    " SELECT id, 1, %s, 'bench' FROM features WHERE organization_id = %s",
                    (Jsonb(empty_settings()), issued.organization_id),
                )
                cur.execute("ANALYZE")
                version = cur.execute("SHOW server_version").fetchone()
            yield Databases(
                home,
                postgres.url,
                redis.url,
                str(issued.organization_id),
                issued.token,
                version[0] if version else "unknown",
            )
        finally:
            for server in reversed(servers):
                server.stop()


# --- a service in a pinned subprocess ----------------------------------------------------


class Service:
    """``bench/serve.py APP`` under uvicorn in a subprocess, pinned to one CPU."""

    def __init__(self, app: str, dbs: Databases, cpu: int = 0, profile: Path | None = None) -> None:
        self.app = app
        self.profile = profile
        self.dbs = dbs
        self.cpu = cpu
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Service:
        from minerva_ai.service.embedded import free_port

        env = {
            **os.environ,
            "DATABASE_URL": self.dbs.database_url,
            "REDIS_URL": self.dbs.redis_url,
            "BENCH_ORGANIZATION_ID": self.dbs.organization_id,
        }
        for _ in range(3):  # the free port may be taken before the child binds it
            self.port = free_port()
            command = [
                *taskset(self.cpu),
                sys.executable,
                str(BENCH_DIR / "serve.py"),
                self.app,
                "--port",
                str(self.port),
            ]
            if self.profile is not None:
                command += ["--profile", str(self.profile)]
            self.process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
            if self._wait_ready(timeout=60):
                return self
            self.stop()
        raise RuntimeError(f"the {self.app} service did not start")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.dbs.token}"}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", f"{FEATURES_PATH}?limit=1", headers=headers)
                if conn.getresponse().status == 200:
                    return True
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        stop_process(self.process, signal.SIGTERM, 20)

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- a minimal keep-alive HTTP/1.1 client (GET only) -------------------------------------


class HttpPool:
    """Keep-alive connections to a loopback server, one request at a time each: the
    load-test engine's HTTP client (``minerva_ai.loadtest.http``)."""

    def __init__(self, port: int, token: str, timeout_s: float = 30.0) -> None:
        from minerva_ai.loadtest.http import Target

        self.timeout_s = timeout_s
        self.target = Target.from_url(f"http://127.0.0.1:{port}")
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self.idle: list[Any] = []
        self.made: list[Any] = []

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body); ``ConnectionFailed``, or ``TimeoutError`` past ``timeout_s``."""
        from minerva_ai.loadtest.http import Connection

        if self.idle:
            conn = self.idle.pop()
        else:
            conn = Connection(self.target, self.headers)
            self.made.append(conn)
        response = await conn.request(
            method, path, body, "application/json", timeout=self.timeout_s
        )
        self.idle.append(conn)  # it reconnects by itself when the server closed it
        return response.status, response.body

    @property
    def opened(self) -> int:
        """TCP connections opened, reconnections included."""
        return sum(conn.connects for conn in self.made)

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


# --- wrk ----------------------------------------------------------------------------------

WRK_MISSING = (
    "wrk is not installed: `apt-get update && apt-get install -y wrk` "
    "(Debian package `wrk`), then run this again"
)


@dataclass
class WrkResult:
    requests_per_s: float
    latency_avg: str
    latency_p99: str
    requests: int
    errors: str
    output: str


def run_wrk(
    url: str,
    token: str,
    *,
    cpu: int = 1,
    threads: int = 1,
    connections: int = 50,
    duration_s: int = 15,
    script: Path | None = None,
) -> WrkResult:
    """wrk against ``url`` (``script``: a Lua script, e.g. a POST body)."""
    command = [
        *taskset(cpu),
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--latency",
        "-H",
        f"Authorization: Bearer {token}",
        *(["-s", str(script)] if script else []),
        url,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    out = done.stdout
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or out}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    avg = re.search(r"Latency\s+(\S+)", out)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.MULTILINE)
    problems = [
        line.strip() for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line
    ]
    if rps is None or total is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return WrkResult(
        float(rps.group(1)),
        avg.group(1) if avg else "?",
        p99.group(1) if p99 else "?",
        int(total.group(1)),
        "; ".join(problems) or "none",
        out,
    )


# --- statistics -----------------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
