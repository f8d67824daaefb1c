"""GET /api/health (503 only when PostgreSQL is down), /api/health/live and /api/health/ready,
and X-Minerva-Instance on every answer."""

from __future__ import annotations

import os
import socket
import threading

import httpx
import psycopg
import pytest

from minerva_ai import __version__
from minerva_ai.core.errors import ConfigError
from minerva_ai.core.protocol import API_PREFIX
from minerva_ai.service import admin
from minerva_ai.service.app import create_app
from minerva_ai.service.config import ServiceConfig
from minerva_ai.service.db import expected_version
from tests.conftest import LiveService, Servers, ThreadedServer, service_config, wait_until
from tests.service.conftest import client, create_feature


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _refuse_connections(live: LiveService, servers: Servers) -> None:
    name = psycopg.conninfo.conninfo_to_dict(live.database_url)["dbname"]
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


def test_health_reports_version_and_both_dependencies(shared_service: LiveService) -> None:
    response = httpx.get(shared_service.url + "/api/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "version": __version__,
        "postgres": "ok",
        "redis": "ok",
    }


def test_health_needs_no_token(live_service: LiveService) -> None:
    response = httpx.get(
        live_service.url + "/api/health", headers={"Authorization": "Bearer not-a-token"}
    )
    assert response.status_code == 200


def test_redis_down_is_degraded_and_the_api_goes_on(database_url: str) -> None:
    config = service_config(database_url, f"redis://127.0.0.1:{_closed_port()}/0")
    issued = admin.create_organization(database_url, "acme")
    with ThreadedServer(create_app(config)) as url:
        response = httpx.get(url + "/api/health", timeout=15)
        assert response.status_code == 200
        assert response.json() == {
            "status": "degraded",
            "version": __version__,
            "postgres": "ok",
            "redis": "degraded",
        }
        live = LiveService(
            url, database_url, config.redis_url, str(issued.organization_id), issued.token, config
        )
        with client(live) as api:
            create_feature(api, "tagger")
            written = api.put(
                "/features/tagger/settings",
                json={"version": 1, "settings": {"rate_limits": {"requests_per_minute": 10}}},
            )
            assert written.status_code == 200, written.text
            assert api.get("/features/tagger/settings").json()["data"]["version"] == 2


def test_postgres_unreachable_is_503(live_service: LiveService, servers: Servers) -> None:
    _refuse_connections(live_service, servers)
    response = httpx.get(live_service.url + "/api/health", timeout=15)
    assert response.status_code == 503
    assert response.json() == {
        "status": "down",
        "version": __version__,
        "postgres": "down",
        "redis": "ok",
    }


# ---------------------------------------------------------------- liveness and readiness


def test_live_and_ready_name_the_instance_that_answered(shared_service: LiveService) -> None:
    live = httpx.get(shared_service.url + "/api/health/live", timeout=15)
    ready = httpx.get(shared_service.url + "/api/health/ready", timeout=15)
    instance = shared_service.config.instance
    assert live.status_code == 200
    assert live.json() == {"status": "alive", "version": __version__, "instance": instance}
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "version": __version__,
        "instance": instance,
        "reason": None,
    }
    assert live.headers["X-Minerva-Instance"] == ready.headers["X-Minerva-Instance"] == instance


def test_the_default_instance_is_host_and_pid() -> None:
    assert ServiceConfig(database_url="x", redis_url="y").instance == (
        f"{socket.gethostname()}:{os.getpid()}"
    )


def test_every_answer_carries_the_instance_header(live_service: LiveService) -> None:
    from websockets.sync.client import connect

    url = live_service.url
    instance = live_service.config.instance
    refused = httpx.get(url + API_PREFIX + "/features", timeout=15)  # no token: 401
    missing = httpx.get(url + "/no-such-page", timeout=15)
    assert refused.status_code == 401 and missing.status_code == 404
    assert (
        refused.headers["X-Minerva-Instance"] == missing.headers["X-Minerva-Instance"] == instance
    )
    with connect(
        url.replace("http://", "ws://") + API_PREFIX + "/websocket", open_timeout=15
    ) as ws:
        assert ws.response is not None
        assert ws.response.headers["X-Minerva-Instance"] == instance


def test_a_named_instance_and_a_bad_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
    monkeypatch.setenv("REDIS_URL", "redis://x")
    monkeypatch.setenv("MINERVA_INSTANCE", "web-1")
    assert ServiceConfig.from_env().instance == "web-1"
    monkeypatch.setenv("MINERVA_INSTANCE", "web 1")
    with pytest.raises(ConfigError, match="MINERVA_INSTANCE='web 1' must be"):
        ServiceConfig.from_env()
    monkeypatch.setenv("MINERVA_INSTANCE", "")
    monkeypatch.setenv("MINERVA_DRAIN_DELAY", "soon")
    with pytest.raises(ConfigError, match="MINERVA_DRAIN_DELAY='soon' is not a number"):
        ServiceConfig.from_env()


def test_postgres_down_is_not_ready_but_still_live(
    live_service: LiveService, servers: Servers
) -> None:
    _refuse_connections(live_service, servers)
    ready = httpx.get(live_service.url + "/api/health/ready", timeout=15)
    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready"
    assert ready.json()["reason"].startswith("PostgreSQL is unreachable: ")
    live = httpx.get(live_service.url + "/api/health/live", timeout=15)
    assert live.status_code == 200 and live.json()["status"] == "alive"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            "DELETE FROM schema_migrations WHERE version = %(last)s",
            "the database schema is behind (missing {last}): run `minerva-ai server migrate`",
        ),
        (
            "INSERT INTO schema_migrations (version) VALUES ('9999_from_a_newer_release')",
            "the database has migrations this version does not know (9999_from_a_newer_release)",
        ),
    ],
    ids=["behind", "ahead"],
)
def test_never_ready_on_a_schema_it_does_not_expect(
    live_service: LiveService, change: str, reason: str
) -> None:
    last = expected_version()
    with psycopg.connect(live_service.database_url, autocommit=True) as conn:
        conn.execute(change, {"last": last})  # type: ignore[arg-type]
    ready = httpx.get(live_service.url + "/api/health/ready", timeout=15)
    assert ready.status_code == 503
    assert ready.json()["reason"].startswith(reason.format(last=last))
    assert httpx.get(live_service.url + "/api/health", timeout=15).status_code == 200


def test_redis_down_is_still_ready(database_url: str) -> None:
    config = service_config(database_url, f"redis://127.0.0.1:{_closed_port()}/0")
    with ThreadedServer(create_app(config)) as url:
        ready = httpx.get(url + "/api/health/ready", timeout=15)
        assert ready.status_code == 200, ready.text


def test_a_pool_with_no_free_connection_is_not_ready_and_says_so(database_url: str) -> None:
    config = service_config(database_url, f"redis://127.0.0.1:{_closed_port()}/0", pool_max_size=2)
    issued = admin.create_organization(database_url, "acme")
    headers = {"Authorization": f"Bearer {issued.token}"}
    with ThreadedServer(create_app(config)) as url, psycopg.connect(database_url) as holder:
        holder.execute("LOCK TABLE features IN ACCESS EXCLUSIVE MODE")
        listings = [
            threading.Thread(
                target=httpx.get,
                args=(url + API_PREFIX + "/features",),
                kwargs={"headers": headers},
            )
            for _ in range(2)
        ]
        for listing in listings:
            listing.start()

        def both_wait_for_the_lock() -> bool:
            with psycopg.connect(database_url) as probe:
                row = probe.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchone()
            return row is not None and row[0] == 2

        wait_until(both_wait_for_the_lock, what="two listings waiting for the lock")
        ready = httpx.get(url + "/api/health/ready", timeout=15)
        holder.rollback()
        for listing in listings:
            listing.join(30)
    assert ready.status_code == 503
    assert ready.json()["reason"] == "no PostgreSQL connection of the pool was free within 2 s"


def test_connections_cut_under_the_pool_fail_no_probe(
    live_service: LiveService, servers: Servers
) -> None:
    # What a PostgreSQL restart leaves behind: the pool's idle connections are dead. A probe
    # answers with PostgreSQL as it is now (up), not with a dead connection's failure.
    name = psycopg.conninfo.conninfo_to_dict(live_service.database_url)["dbname"]
    for path in ("/api/health", "/api/health/ready"):
        with httpx.Client(base_url=live_service.url, timeout=30) as http:
            assert http.get(path).status_code == 200  # a pooled connection exists
            with psycopg.connect(servers.database_url, autocommit=True) as conn:
                cut = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                ).fetchone()
            assert cut is not None and cut[0] >= 1
            answer = http.get(path)
            assert answer.status_code == 200, answer.text
