"""Shared fixtures: real PostgreSQL and Redis, a template database, a live service, and
`minerva-ai server start` as a real process on a home of its own.

PostgreSQL and Redis are the embedded ones (started once per session) unless
DATABASE_URL and REDIS_URL point at servers of your own. Each test gets its own database
cloned from a migrated template, and its own service on a random loopback port.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import uvicorn

from minerva_ai.core.protocol import API_PREFIX
from minerva_ai.service import admin, embedded
from minerva_ai.service.app import UVICORN_OPTIONS, Server, create_app
from minerva_ai.service.config import ServiceConfig

EXTERNAL_DATABASE_URL = os.environ.get("DATABASE_URL")
EXTERNAL_REDIS_URL = os.environ.get("REDIS_URL")
REPO = Path(__file__).resolve().parent.parent
MINERVA_AI = str(Path(sys.executable).parent / "minerva-ai")  # the installed script


WAIT = 30.0  # generous bound of every wait on a condition


def wait_until(condition: Callable[[], Any], timeout: float = WAIT, what: str = "it") -> Any:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def loaded_by(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported after running ``code``."""
    check = f"import sys\nprint(' '.join(m for m in {modules!r} if m in sys.modules))\n"
    done = subprocess.run(
        [sys.executable, "-c", code + "\n" + check], capture_output=True, text=True, check=True
    )
    return done.stdout.splitlines()[-1].split() if done.stdout.strip() else []


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@dataclass
class Servers:
    database_url: str  # a database on the server we may create databases from
    redis_url: str
    template: str


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    owned: list[embedded.EmbeddedServer] = []
    if EXTERNAL_DATABASE_URL:
        database_url = EXTERNAL_DATABASE_URL
    else:
        # Not under pytest's temp root: pytest prunes old session dirs there, which would
        # pull the data directory from under a concurrent session.
        pg = embedded.start_postgres(Path(tempfile.mkdtemp(prefix="minerva-test-pg-")))
        owned.append(pg)
        database_url = pg.url
    if EXTERNAL_REDIS_URL:
        redis_url = EXTERNAL_REDIS_URL
    else:
        redis = embedded.start_redis(Path(tempfile.mkdtemp(prefix="minerva-test-redis-")))
        owned.append(redis)
        redis_url = redis.url
    template = f"minerva_template_{os.getpid()}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{template}"')
        conn.execute(f'CREATE DATABASE "{template}"')
    admin.migrate(with_database(database_url, template))
    try:
        yield Servers(database_url, redis_url, template)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
        for server in reversed(owned):
            server.stop()
            shutil.rmtree(server.log_path.parent, ignore_errors=True)


@contextlib.contextmanager
def scratch_database(servers: Servers, prefix: str, migrated: bool = True) -> Iterator[str]:
    """The URL of a database of its own (a clone of the migrated template, or empty with
    ``migrated=False``), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    template = f' TEMPLATE "{servers.template}"' if migrated else ""
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{template}')
    try:
        yield with_database(servers.database_url, name)
    finally:
        with psycopg.connect(servers.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(servers: Servers) -> Iterator[str]:
    """A fresh, migrated database of this test's own."""
    with scratch_database(servers, "minerva_test") as url:
        yield url


class ThreadedServer:
    """uvicorn serving an app in a background thread on a random loopback port."""

    def __init__(self, app: object) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, **UVICORN_OPTIONS)  # type: ignore[arg-type]
        self.server = Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = threading.Event()
        for _ in range(600):
            if self.server.started or not self.thread.is_alive():
                break
            deadline.wait(0.05)
        if not self.server.started:
            raise RuntimeError("the test service did not start")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        # FastAPI builds routes on the first request that reaches them, inside
        # warnings.catch_warnings(), which is not thread-safe: two servers doing it at once
        # can leak a pydantic warning (a 500 under warnings-as-errors). One request that
        # walks every route, made now, alone, builds them all.
        probe = httpx.get(f"{url}{API_PREFIX}/no-such-route", timeout=15)
        assert probe.status_code == 404, probe.text
        return url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@dataclass
class LiveService:
    url: str
    database_url: str
    redis_url: str
    org_id: str
    token: str
    config: ServiceConfig
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return self.url + API_PREFIX

    def make_token(self, scopes: list[str], org: str = "acme") -> str:
        return admin.create_token(self.database_url, org, scopes).token

    def make_org(self, name: str) -> tuple[str, str]:
        issued = admin.create_organization(self.database_url, name)
        return str(issued.organization_id), issued.token


def service_config(database_url: str, redis_url: str, **overrides: object) -> ServiceConfig:
    base = ServiceConfig(
        database_url=database_url,
        redis_url=redis_url,
        ws_heartbeat_s=0.2,
        ws_auth_timeout_s=2.0,
        pool_max_size=5,
        metrics_interval_s=0.3,
    )
    return ServiceConfig(**{**base.__dict__, **overrides})  # type: ignore[arg-type]


@contextlib.contextmanager
def running_service(
    database_url: str, redis_url: str, wrap: Callable[[Any], Any] | None = None
) -> Iterator[LiveService]:
    """The service on ``database_url`` on a random port, with organization "acme" and its
    admin token; ``wrap`` (given the app) puts something in front of it."""
    config = service_config(database_url, redis_url)
    issued = admin.create_organization(database_url, "acme")
    app = create_app(config)
    with ThreadedServer(wrap(app) if wrap else app) as url:
        yield LiveService(
            url, database_url, redis_url, str(issued.organization_id), issued.token, config
        )


@pytest.fixture
def live_service(database_url: str, servers: Servers) -> Iterator[LiveService]:
    """The service on a random port, with organization "acme" and its admin token."""
    with running_service(database_url, servers.redis_url) as live:
        yield live


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No test reads the developer's profile, home or MINERVA_* settings."""
    for name in list(os.environ):
        if name.startswith("MINERVA_") or name in ("DATABASE_URL", "REDIS_URL", "NO_COLOR"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MINERVA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MINERVA_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    return tmp_path


# `minerva-ai server start` as a real process, on a MINERVA_HOME of its own.


def embedded_processes(home: Path) -> list[int]:
    """Every PostgreSQL and Redis process working in ``home``."""
    return embedded.leftovers(home / "postgres", "postgres") + embedded.leftovers(
        home / "redis", "redis-server"
    )


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MINERVA_AI, *args], capture_output=True, text=True, env=env, timeout=90, check=False
    )


class ServerProcess:
    """`minerva-ai server start` in a subprocess, its stderr kept in a file."""

    def __init__(self, log: Path, args: tuple[str, ...], env: dict[str, str] | None) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [MINERVA_AI, "server", "start", "--port", "0", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.url = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_serving(self, timeout: float = 90) -> str:
        """Wait until /api/health answers 200; return the base URL."""

        def healthy() -> str | None:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}:\n{self.output()}")
            found = re.search(r"serving on (http://\S+)", self.output())
            if not found:
                return None
            try:
                response = httpx.get(found[1] + "/api/health", timeout=5)
            except httpx.TransportError:
                return None
            return found[1] if response.status_code == 200 else None

        self.url = wait_until(healthy, timeout, "the server to answer /api/health")
        return self.url

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


@contextlib.contextmanager
def server_processes(logs: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers (logs in ``logs``); whatever is still running at the end is stopped."""
    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(logs / f"server-{len(started)}.log", args, env)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
                try:
                    server.process.wait(60)
                except subprocess.TimeoutExpired:
                    server.process.kill()
                    server.process.wait()


@contextlib.contextmanager
def traversable_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh MINERVA_HOME in the system temp dir, not pytest's.

    Run as root, the embedded PostgreSQL runs as another user that must traverse the
    home's parents, and every pytest session starting meanwhile resets pytest's temp
    root to 0700.
    """
    directory = Path(tempfile.mkdtemp(prefix="minerva-test-home-")).resolve()
    monkeypatch.setenv("MINERVA_HOME", str(directory))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def home(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with traversable_home(monkeypatch) as directory:
        yield directory


@pytest.fixture
def start_server(tmp_path: Path, home: Path) -> Iterator[Callable[..., ServerProcess]]:
    with server_processes(tmp_path) as start:
        yield start


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say loudly when the production suite (tests/production/) was skipped."""
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if "production suite skipped" in str(getattr(report, "longrepr", ""))
    ]
    if skipped:
        reason = str(skipped[0].longrepr[-1]) if isinstance(skipped[0].longrepr, tuple) else ""
        terminalreporter.write_sep("!", f"{len(skipped)} PRODUCTION TESTS SKIPPED", red=True)
        terminalreporter.write_line(reason.removeprefix("Skipped: "), red=True, bold=True)
