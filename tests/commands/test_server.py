"""`minerva-ai server ...`: what scripts capture from the admin commands, and exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from minerva_ai.commands.main import cli
from minerva_ai.service import admin, db, embedded
from minerva_ai.service.home import HomeLock, owner_pid
from tests.conftest import (
    ServerProcess,
    Servers,
    embedded_processes,
    run_cli,
    scratch_database,
)

TOKEN = r"mnv_[A-Za-z0-9_-]{20,}"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def with_database_url(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", database_url)
    return database_url


@pytest.fixture
def empty_database(servers: Servers) -> Iterator[str]:
    """A database with no schema at all, as a new production server has."""
    with scratch_database(servers, "minerva_empty", migrated=False) as url:
        yield url


def test_org_create_prints_only_the_new_admin_token(with_database_url: str) -> None:
    result = invoke("server", "org", "create", "acme")
    assert result.exit_code == 0, result.output
    token = result.stdout.removesuffix("\n")
    assert "\n" not in token and token.startswith("mnv_")
    assert admin.token_is_valid(with_database_url, token)


def test_org_create_json_is_id_token_and_scopes(with_database_url: str) -> None:
    result = invoke("server", "org", "create", "acme", "-o", "json")
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert set(created) == {"id", "token", "scopes"}
    assert created["scopes"] == ["admin"]
    assert admin.token_is_valid(with_database_url, created["token"])
    uuid.UUID(created["id"])


def test_token_create_with_repeated_scopes(with_database_url: str) -> None:
    admin.create_organization(with_database_url, "acme")
    plain = invoke("server", "token", "create", "--org", "acme", "--scope", "ingest")
    assert plain.exit_code == 0, plain.output
    assert admin.token_is_valid(with_database_url, plain.stdout.strip())
    assert plain.stdout.count("\n") == 1

    result = invoke(
        "-o", "json", "server", "token", "create", "--org", "acme",
        "--scope", "read", "--scope", "write", "--scope", "read",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["scopes"] == ["read", "write"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("server", "token", "create", "--org", "nobody", "--scope", "read"), "nobody"),
        (("server", "org", "create", "acme"), "already exists"),
        (("server", "token", "create", "--org", "acme", "--scope", "root"), "root"),
        (("server", "token", "create", "--org", "acme"), "--scope"),
    ],
)
def test_admin_mistakes_exit_2_with_the_reason(
    with_database_url: str, args: tuple[str, ...], message: str
) -> None:
    admin.create_organization(with_database_url, "acme")
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_migrate_on_a_current_schema_prints_nothing(with_database_url: str) -> None:
    result = invoke("server", "migrate")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "up to date" in result.stderr
    as_json = invoke("server", "migrate", "-o", "json")
    assert json.loads(as_json.stdout) == {"applied": []}


@pytest.mark.parametrize(
    "args",
    [
        ("server", "info"),
        ("server", "migrate"),
        ("server", "org", "create", "acme"),
        ("server", "token", "create", "--org", "acme", "--scope", "read"),
    ],
)
def test_without_a_server_or_database_url_exit_4_naming_the_home(
    home: Path, args: tuple[str, ...]
) -> None:
    result = invoke(*args)
    assert result.exit_code == 4
    assert f"no minerva-ai server is running for home {home}" in result.stderr


def test_an_unreachable_database_is_exit_4_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:hunter2@127.0.0.1:{port}/minerva")
    result = invoke("server", "migrate")
    assert result.exit_code == 4
    assert f"cannot reach PostgreSQL at postgresql://app:***@127.0.0.1:{port}" in result.stderr
    assert "hunter2" not in result.output


def test_info_prints_the_run_file_of_the_live_owner(home: Path) -> None:
    lock = HomeLock.acquire(home)
    try:
        (home / "run.json").write_text(json.dumps({
            "home": str(home), "pid": os.getpid(), "url": "http://127.0.0.1:1",
            "database_url": "postgresql://postgres:pw@127.0.0.1:2/minerva",
            "redis_url": "redis://:pw@127.0.0.1:3/0", "started_at": "2026-01-01T00:00:00Z",
        }))  # fmt: skip
        result = invoke("server", "info", "-o", "json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {
            "home": str(home),
            "pid": os.getpid(),
            "database_url": "postgresql://postgres:pw@127.0.0.1:2/minerva",
            "redis_url": "redis://:pw@127.0.0.1:3/0",
        }
        piped = invoke("server", "info")
        assert piped.stdout.splitlines()[:2] == [f"home\t{home}", f"pid\t{os.getpid()}"]
    finally:
        lock.release()
    assert invoke("server", "info").exit_code == 4


def test_stop_without_a_server_is_a_quiet_success(home: Path) -> None:
    result = invoke("server", "stop")
    assert result.exit_code == 0
    assert f"no minerva-ai server is running for home {home}" in result.stderr


def test_start_on_a_taken_port_exits_2_before_starting_anything(home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = invoke("server", "start", "--port", port)
    assert result.exit_code == 2
    assert f"127.0.0.1:{port}" in result.stderr
    assert embedded_processes(home) == []
    assert owner_pid(home) is None


def test_demo_needs_the_embedded_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://127.0.0.1:1/minerva")
    result = invoke("server", "start", "--demo")
    assert result.exit_code == 2
    assert "unset DATABASE_URL" in result.stderr


def test_demo_without_its_data_exits_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MINERVA_EXAMPLES", str(tmp_path / "missing"))
    result = invoke("server", "start", "--demo")
    assert result.exit_code == 2
    assert "MINERVA_EXAMPLES" in result.stderr


def test_help_documents_the_exit_codes() -> None:
    result = invoke("server", "--help")
    assert result.exit_code == 0
    assert "Exit codes" in result.stdout and "4  no server is running" in result.stdout


@pytest.mark.slow
def test_an_external_database_must_be_migrated_before_start(
    home: Path,
    empty_database: str,
    servers: Servers,
    start_server: Callable[..., ServerProcess],
) -> None:
    env = {**os.environ, "DATABASE_URL": empty_database, "REDIS_URL": servers.redis_url}
    env["MINERVA_SECRET_KEY"] = "w1Sw0tKx3Jm0bTqvnF8gq4kUj2yq9p3r5W8cX6dZ7aE="
    refused = run_cli("server", "start", "--port", "0", env=env)
    assert refused.returncode == 2
    assert "minerva-ai server migrate" in refused.stderr
    assert not (home / "lock").exists()  # given both URLs, it owns nothing

    migrated = run_cli("server", "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.split() == [version for version, _ in db.migrations()]
    assert run_cli("server", "migrate", env=env).stdout == ""

    server = start_server(env=env)
    server.wait_serving()
    assert not (home / "lock").exists()
    assert server.stop() == 0


@pytest.mark.slow
def test_stop_waits_until_the_server_and_its_databases_are_gone(
    home: Path, start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server()
    server.wait_serving()
    postgres = embedded.leftovers(home / "postgres", "postgres")
    assert postgres
    stopped = run_cli("server", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert f"pid {server.pid}" in stopped.stderr
    assert server.process.wait(5) == 0
    assert embedded_processes(home) == []


@pytest.mark.slow
def test_stop_gives_up_after_its_timeout_with_exit_3(
    home: Path, start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server()
    server.wait_serving()
    os.kill(server.pid, signal.SIGSTOP)  # a server that cannot act on SIGTERM
    try:
        stopped = run_cli("server", "stop", "--timeout", "1")
        assert stopped.returncode == 3
        assert f"pid {server.pid}" in stopped.stderr and "has not stopped" in stopped.stderr
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert server.process.wait(60) == 0  # the SIGTERM it was sent is acted on now
    assert embedded_processes(home) == []
