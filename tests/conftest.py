"""Shared fixtures: real PostgreSQL and Redis, a template database, a live service.

PostgreSQL and Redis are the embedded ones (started once per session) unless
DATABASE_URL and REDIS_URL point at servers of your own. Each test gets its own database
cloned from a migrated template, and its own service on a random loopback port.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import uvicorn

from minerva_ai.service import admin, embedded
from minerva_ai.service.app import UVICORN_OPTIONS, Server, create_app
from minerva_ai.service.config import ServiceConfig

EXTERNAL_DATABASE_URL = os.environ.get("DATABASE_URL")
EXTERNAL_REDIS_URL = os.environ.get("REDIS_URL")
REPO = Path(__file__).resolve().parent.parent


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


@pytest.fixture
def database_url(servers: Servers) -> Iterator[str]:
    """A fresh, migrated database of this test's own."""
    name = f"minerva_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{servers.template}"')
    try:
        yield with_database(servers.database_url, name)
    finally:
        with psycopg.connect(servers.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
        probe = httpx.get(url + "/api/platform/ai-management/no-such-route", timeout=15)
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
        return self.url + "/api/platform/ai-management"

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
    )
    return ServiceConfig(**{**base.__dict__, **overrides})  # type: ignore[arg-type]


@pytest.fixture
def live_service(database_url: str, servers: Servers) -> Iterator[LiveService]:
    """The service on a random port, with organization "acme" and its admin token."""
    config = service_config(database_url, servers.redis_url)
    issued = admin.create_organization(database_url, "acme")
    with ThreadedServer(create_app(config)) as url:
        yield LiveService(
            url, database_url, servers.redis_url, str(issued.organization_id), issued.token, config
        )


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
