"""`minerva-ai auth`: login from stdin, tokens bound to their URL, status, API tokens."""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import yaml

from minerva_ai.core.profiles import config_path
from tests.commands.conftest import Run, invoke, run_process
from tests.conftest import LiveService


def whoami(live: LiveService, token: str) -> httpx.Response:
    return httpx.get(f"{live.api}/auth/whoami", headers={"Authorization": f"Bearer {token}"})


class Recorded:
    def __init__(self) -> None:
        self.authorization: list[str | None] = []


@pytest.fixture
def other_server() -> Iterator[tuple[str, Recorded]]:
    """Another server on loopback that records the Authorization header it receives."""
    recorded = Recorded()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            recorded.authorization.append(self.headers.get("Authorization"))
            body = json.dumps(
                {
                    "success": False,
                    "error": {"code": "unauthorized", "message": "no token", "details": None},
                }
            ).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorded
    finally:
        server.shutdown()
        server.server_close()


def test_login_reads_stdin_checks_the_token_and_stores_it_bound_to_the_url(
    live_service: LiveService,
) -> None:
    result = invoke(
        ["--url", live_service.url, "auth", "login", "--with-token"],
        input=live_service.token + "\n",
    )
    assert result.exit_code == 0, result.stderr
    assert live_service.token not in result.stdout + result.stderr
    assert "organization 'acme'" in result.stderr
    path = config_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = yaml.safe_load(path.read_text())
    ((name, profile),) = document["profiles"].items()
    assert profile == {"url": live_service.url, "token": live_service.token, "org": "acme"}
    assert document["current_profile"] == name

    # later commands use the stored token, with no MINERVA_TOKEN
    listed = invoke(["features", "list"])
    assert listed.exit_code == 0, listed.stderr
    status = invoke(["-o", "json", "auth", "status"])
    assert status.exit_code == 0
    shown = json.loads(status.stdout)
    assert shown["organization"]["id"] == live_service.org_id
    assert shown["token_source"] == f"profile {name!r}"


def test_a_stored_token_is_never_sent_to_another_url(
    live_service: LiveService, other_server: tuple[str, Recorded]
) -> None:
    invoke(["--url", live_service.url, "auth", "login", "--with-token"], input=live_service.token)
    other_url, recorded = other_server
    for args in (["--url", other_url], []):
        env = {"MINERVA_URL": other_url} if not args else {}
        result = invoke([*args, "-v", "auth", "status"], **env)
        assert result.exit_code == 3
        assert "minerva-ai auth login" in result.stderr
        assert f"no token stored for {other_url}" in result.stderr
    assert recorded.authorization == [None, None]


def test_minerva_token_is_sent_to_whatever_url_is_in_force(
    other_server: tuple[str, Recorded],
) -> None:
    other_url, recorded = other_server
    invoke(["--url", other_url, "auth", "status"], MINERVA_TOKEN="mnv_from_env")
    assert recorded.authorization == ["Bearer mnv_from_env"]


def test_no_token_over_plain_http_to_a_remote_host_without_insecure() -> None:
    result = invoke(
        ["--url", "http://minerva.example.invalid", "auth", "status"], MINERVA_TOKEN="mnv_x"
    )
    assert result.exit_code == 2
    assert "refusing to send a token over plain http" in result.stderr
    login = invoke(
        ["--url", "http://minerva.example.invalid", "auth", "login", "--with-token"], input="mnv_x"
    )
    assert login.exit_code == 2
    assert not config_path().exists()


def test_login_needs_with_token_and_a_token(live_service: LiveService) -> None:
    url = ["--url", live_service.url]
    without_flag = invoke([*url, "auth", "login"], input=live_service.token)
    assert without_flag.exit_code == 2
    assert "--with-token" in without_flag.stderr
    empty = invoke([*url, "auth", "login", "--with-token"], input="")
    assert empty.exit_code == 2
    assert "no token on stdin" in empty.stderr
    as_flag = invoke([*url, "auth", "login", "--token", live_service.token])
    assert as_flag.exit_code == 2
    assert not config_path().exists()


def test_login_with_a_bad_token_exits_3_and_stores_nothing(live_service: LiveService) -> None:
    result = invoke(
        ["--url", live_service.url, "auth", "login", "--with-token"], input="mnv_" + "x" * 43
    )
    assert result.exit_code == 3
    assert not config_path().exists()


def test_login_into_a_named_profile_from_a_real_subprocess(live_service: LiveService) -> None:
    done = run_process(
        ["--url", live_service.url, "--profile", "ci", "auth", "login", "--with-token"],
        input=live_service.token,
    )
    assert done.returncode == 0, done.stderr
    assert "profile 'ci'" in done.stderr
    status = run_process(["--profile", "ci", "-o", "json", "auth", "status"])
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["url"] == live_service.url


def test_status_without_any_token_exits_3_with_the_login_hint(live_service: LiveService) -> None:
    result = invoke(["--url", live_service.url, "auth", "status"])
    assert result.exit_code == 3
    assert "hint: log in with `minerva-ai auth login --with-token`" in result.stderr


def test_token_create_prints_the_secret_once_on_stdout(run: Run, live_service: LiveService) -> None:
    result = run("auth", "token", "create", "--scope", "ingest", "--name", "photo-app")
    assert result.exit_code == 0
    secret = result.stdout.strip()
    assert secret.startswith("mnv_") and "\n" not in secret
    assert "only time the token is shown" in result.stderr
    assert whoami(live_service, secret).json()["data"]["token"]["scopes"] == ["ingest"]


def test_token_create_json_is_id_token_scopes(run: Run, live_service: LiveService) -> None:
    result = run("auth", "token", "create", "--scope", "read", "--scope", "write", "-o", "json")
    created = json.loads(result.stdout)
    assert set(created) == {"id", "token", "scopes"}
    assert sorted(created["scopes"]) == ["read", "write"]
    assert whoami(live_service, created["token"]).status_code == 200


def test_token_list_and_revoke(run: Run, live_service: LiveService) -> None:
    created = json.loads(run("auth", "token", "create", "--name", "temp", "-o", "json").stdout)
    listed = run("auth", "token", "list")
    assert listed.exit_code == 0
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [created["id"], "temp", "read"] in [row[:3] for row in rows]
    as_json = json.loads(run("auth", "token", "list", "-o", "json").stdout)
    assert all("token" not in item for item in as_json)

    revoked = run("auth", "token", "revoke", created["id"])
    assert revoked.exit_code == 0
    assert f"revoked token {created['id']}" in revoked.stderr
    assert whoami(live_service, created["token"]).status_code == 401
    again = run("auth", "token", "revoke", "00000000-0000-0000-0000-000000000000")
    assert again.exit_code == 3


def test_token_commands_need_the_admin_scope(run: Run, live_service: LiveService) -> None:
    reader = live_service.make_token(["read"])
    result = run("auth", "token", "create", MINERVA_TOKEN=reader)
    assert result.exit_code == 3
    assert "admin" in result.stderr
