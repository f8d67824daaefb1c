"""The shipped nginx configuration, as it runs: what is tested is what ships, it loads on
Debian's nginx, spreads requests over the instances and holds the service's body limit."""

from __future__ import annotations

import difflib
import re

import httpx

from minerva_ai.service.config import ServiceConfig
from tests.production.harness import PER_SITE, TEMPLATE, Stack

PER_SITE_DIRECTIVES = {
    "server",
    "listen",
    "server_name",
    "ssl_certificate",
    "ssl_certificate_key",
    "access_log",
}


def test_what_runs_differs_from_what_ships_only_in_its_per_site_lines(stack: Stack) -> None:
    shipped = TEMPLATE.read_text().splitlines()
    running = (stack.nginx.root / "minerva.conf").read_text().splitlines()
    changed = [line for line in difflib.ndiff(shipped, running) if line[:2] in ("- ", "+ ")]
    assert changed, "the rendered configuration should fill in the per-site lines"
    assert all(PER_SITE in line for line in changed), changed
    removed = [line[2:].split()[0] for line in changed if line.startswith("- ")]
    added = [line[2:].split()[0] for line in changed if line.startswith("+ ")]
    assert set(removed) == set(added) == PER_SITE_DIRECTIVES
    upstream = [line for line in changed if line.startswith("+ ") and line.split()[1] == "server"]
    assert len(upstream) == len(stack.instances)  # one server line per instance
    assert all("max_fails=2 fail_timeout=10s" in line for line in upstream)
    checked = stack.nginx.test_config()
    assert checked.returncode == 0, checked.stderr


def test_the_body_limit_is_the_ingest_limit(stack: Stack) -> None:
    found = re.search(r"^\s*client_max_body_size (\d+)m;", TEMPLATE.read_text(), re.M)
    assert found is not None
    limit = int(found[1]) * 1024 * 1024
    assert limit == ServiceConfig(database_url="", redis_url="").max_body_bytes
    with stack.http() as http:
        too_large = http.post(
            "/logs",
            content=b"[" + b" " * limit + b"]",
            headers={"Content-Type": "application/json"},
        )
    assert too_large.status_code == 413
    assert "X-Minerva-Instance" not in too_large.headers  # nginx refused it, not an instance


def test_requests_reach_every_instance_and_say_which_answered(stack: Stack) -> None:
    with stack.http() as http:
        answered = {http.get("/features").headers["X-Minerva-Instance"] for _ in range(10)}
    assert answered == {instance.name for instance in stack.instances}
    logged = stack.nginx.access_log.read_text()
    for instance in stack.instances:
        assert f"upstream={instance.address} status=200 instance={instance.name}" in logged


def test_health_probes_through_nginx(stack: Stack) -> None:
    ready = httpx.get(stack.url + "/api/health/ready", verify=stack.ssl_context(), timeout=10)
    live = httpx.get(stack.url + "/api/health/live", verify=stack.ssl_context(), timeout=10)
    assert ready.status_code == live.status_code == 200
    assert ready.json()["instance"] in {i.name for i in stack.instances}
