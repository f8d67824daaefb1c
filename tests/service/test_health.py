"""GET /api/health: version and dependency status; 503 only when PostgreSQL is down."""

from __future__ import annotations

import socket

import httpx
import psycopg

from minerva_ai import __version__
from minerva_ai.service import admin
from minerva_ai.service.app import create_app
from tests.conftest import LiveService, Servers, ThreadedServer, service_config
from tests.service.conftest import client, create_feature


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


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
    name = psycopg.conninfo.conninfo_to_dict(live_service.database_url)["dbname"]
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
    response = httpx.get(live_service.url + "/api/health", timeout=15)
    assert response.status_code == 503
    assert response.json() == {
        "status": "down",
        "version": __version__,
        "postgres": "down",
        "redis": "ok",
    }
