"""examples/deploy/nginx.compose.conf: the shipped nginx configuration (nginx.conf) with its
`# per site` lines filled in for docker-compose.yml, by the renderer the production suite
uses. Regenerate after editing nginx.conf: `.venv/bin/python -m tests.deploy.nginx_compose`
(tests/deploy/test_compose.py fails while the two differ)."""

from __future__ import annotations

from pathlib import Path

from tests.deploy.service_contract import APP_PORT
from tests.production.servers import render_nginx

DEPLOY = Path(__file__).resolve().parents[2] / "examples" / "deploy"
HEADER = (
    "# Generated from nginx.conf for docker-compose.yml by tests/deploy/nginx_compose.py: edit\n"
    "# nginx.conf, then regenerate (python -m tests.deploy.nginx_compose).\n"
)
COMPOSE_SITE = {
    "server": [f"app1:{APP_PORT}", f"app2:{APP_PORT}"],
    "listen": ["443"],
    "server_name": ["_"],
    "ssl_certificate": ["/etc/ssl/minerva.crt"],
    "ssl_certificate_key": ["/etc/ssl/minerva.key"],
    "access_log": ["/dev/stdout"],  # docker logs
}


def rendered() -> str:
    return HEADER + render_nginx((DEPLOY / "nginx.conf").read_text(), COMPOSE_SITE)


if __name__ == "__main__":
    (DEPLOY / "nginx.compose.conf").write_text(rendered())
