"""`server start` behind a proxy: --proxy-headers with its allow-list, --root-path, and
--log-format json (one JSON object a line on stderr, no secrets), on a real service."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from minerva_ai.core import profiles as profile_store
from minerva_ai.core.protocol import API_PREFIX
from minerva_ai.service.logjson import scrub
from tests.conftest import ServerProcess, run_cli, wait_until

FORWARDED_FOR = "203.0.113.7"


def json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    """Every line the server wrote: each must be one JSON object."""
    lines = [line for line in server.output().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def access_line(server: ServerProcess, path: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for line in json_lines(server):
            if line.get("logger") == "uvicorn.access" and line.get("path", "").startswith(path):
                return line
        return None

    line: dict[str, Any] = wait_until(found, 30, f"the access line of {path}")
    return line


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_behind_a_trusted_proxy_the_client_is_the_forwarded_one_and_logs_are_json(
    workers: str, start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server(
        "--workers", workers, "--log-format", "json", "--root-path", "/minerva",
        "--proxy-headers", "--forwarded-allow-ips", "127.0.0.1,10.0.0.0/8",
    )  # fmt: skip
    url = server.wait_serving()
    token = profile_store.load_config().profiles["local"].token
    assert token
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": FORWARDED_FOR}
    # The proxy strips the prefix; the service's own links carry it.
    listed = httpx.get(f"{url}{API_PREFIX}/features", headers=headers, timeout=15)
    assert listed.status_code == 200, listed.text
    document = httpx.get(f"{url}/openapi.json", timeout=15).json()
    assert document["servers"] == [{"url": "/minerva"}]
    plain = httpx.get(f"{url}{API_PREFIX}/features?token=hunter2", headers=headers, timeout=15)
    assert plain.status_code == 200

    line = access_line(server, f"/minerva{API_PREFIX}/features")
    assert line["client"].startswith(FORWARDED_FOR + ":") or line["client"] == FORWARDED_FOR
    assert line["method"] == "GET" and line["status"] == 200 and line["level"] == "info"
    assert line["time"].endswith("Z")
    secret_query = access_line(server, f"/minerva{API_PREFIX}/features?token=")
    assert secret_query["path"].endswith("?token=***")
    # Every line is JSON (the supervisor's own too), and no token or password is in any.
    lines = json_lines(server)
    assert any("serving on" in line["message"] for line in lines)
    output = server.output()
    assert token not in output and "hunter2" not in output
    assert ":***@" in output  # the database URL is logged with its password masked


@pytest.mark.slow
def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(
        "--log-format", "json", "--proxy-headers", "--forwarded-allow-ips", "10.1.2.3"
    )
    url = server.wait_serving()
    response = httpx.get(f"{url}/api/health", headers={"X-Forwarded-For": FORWARDED_FOR})
    assert response.status_code == 200
    line = access_line(server, "/api/health")
    assert line["client"].startswith("127.0.0.1")
    assert FORWARDED_FOR not in server.output()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--forwarded-allow-ips", "127.0.0.1,proxy"), "--forwarded-allow-ips: 'proxy'"),
        (("--root-path", "minerva"), "--root-path 'minerva'"),
        (("--root-path", "/minerva/"), "--root-path '/minerva/'"),
        (("--log-format", "xml"), "--log-format"),
    ],
)
def test_bad_proxy_options_exit_2_naming_the_option(
    args: tuple[str, ...], message: str, home: object
) -> None:
    done = run_cli("server", "start", "--port", "0", *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_scrub_masks_tokens_passwords_and_secret_query_values() -> None:
    assert scrub("Authorization: Bearer mnv_abc.def") == "Authorization: Bearer ***"
    assert scrub("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert scrub("GET /x?a=1&api_key=k&password=p") == "GET /x?a=1&api_key=***&password=***"
    assert scrub("nothing secret here") == "nothing secret here"
