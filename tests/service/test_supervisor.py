"""The process model: one supervisor per home, its embedded servers, restarts and crashes.

The slow tests run `minerva-ai server start` as a real process on a temporary
MINERVA_HOME and check what a user relies on: data survives restarts and kill -9, a home
has one owner, nothing embedded is left running after a stop.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from minerva_ai.core import profiles as profile_store
from minerva_ai.core.errors import ConfigError, UsageError
from minerva_ai.core.protocol import API_PREFIX
from minerva_ai.service import admin, embedded, supervisor
from minerva_ai.service.home import (
    HomeInUseError,
    HomeLock,
    NotRunningError,
    owner_pid,
    server_info,
)
from tests.conftest import (
    ServerProcess,
    embedded_processes,
    run_cli,
    wait_until,
)


def alive(pid: int) -> bool:
    """A process that has not exited (zombies have)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def postmaster_pid(home: Path) -> int:
    return int((home / "postgres" / "postmaster.pid").read_text().split()[0])


def redis_pid(home: Path) -> int:
    return int((home / "redis" / "redis.pid").read_text())


def features(url: str, token: str) -> httpx.Response:
    return httpx.get(
        f"{url}{API_PREFIX}/features", headers={"Authorization": f"Bearer {token}"}, timeout=15
    )


def local_profile() -> profile_store.Profile:
    return profile_store.load_config().profiles["local"]


# ---------------------------------------------------------------- helpers of the supervisor


def test_mask_url_hides_only_the_password() -> None:
    assert (
        supervisor.mask_url("postgresql://postgres:s3cret@127.0.0.1:5432/minerva")
        == "postgresql://postgres:***@127.0.0.1:5432/minerva"
    )
    assert supervisor.mask_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert supervisor.mask_url("redis://host:6379/0") == "redis://host:6379/0"


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8765"),  # noqa: S104
        ("::", "http://127.0.0.1:8765"),
        ("127.0.0.1", "http://127.0.0.1:8765"),
        ("localhost", "http://localhost:8765"),
        ("::1", "http://[::1]:8765"),
    ],
)
def test_a_wildcard_bind_address_becomes_loopback_in_the_profile(host: str, url: str) -> None:
    assert supervisor.local_url(host, 8765) == url


def test_a_taken_port_is_a_usage_error_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=f"127.0.0.1:{port}.*--port"):
            supervisor.bind_listener("127.0.0.1", port)


def test_a_home_has_one_owner(home: Path) -> None:
    lock = HomeLock.acquire(home)
    try:
        assert owner_pid(home) == os.getpid()
        started = time.monotonic()
        with pytest.raises(HomeInUseError) as refused:
            HomeLock.acquire(home)
        assert time.monotonic() - started < 5
        assert str(home) in str(refused.value)
        assert f"pid {os.getpid()}" in str(refused.value)
    finally:
        lock.release()
    assert owner_pid(home) is None
    HomeLock.acquire(home).release()


def test_a_run_file_without_a_live_owner_is_ignored(home: Path) -> None:
    stale = {"home": str(home), "pid": 1, "database_url": "postgresql://x", "redis_url": "r"}
    (home / "run.json").write_text(json.dumps(stale))
    with pytest.raises(NotRunningError, match=f"no minerva-ai server is running for home {home}"):
        server_info(home)


def test_the_profile_of_another_home_is_never_overwritten(home: Path, database_url: str) -> None:
    admin.bootstrap(database_url)
    other = home.parent / "other-home"
    name, path, current = supervisor.write_local_profile(database_url, other, "http://127.0.0.1:1")
    assert (name, current) == ("local", True)
    assert path.stat().st_mode & 0o777 == 0o600

    name, _, current = supervisor.write_local_profile(database_url, home, "http://127.0.0.1:2")
    assert name.startswith("local-") and not current
    profiles = profile_store.load_config().profiles
    assert profiles["local"].url == "http://127.0.0.1:1"
    assert profiles["local"].home == str(other)
    assert profiles[name].home == str(home)
    assert admin.token_is_valid(database_url, profiles[name].token or "")


def test_restarting_on_another_port_updates_the_url_and_keeps_a_valid_token(
    home: Path, database_url: str
) -> None:
    admin.bootstrap(database_url)
    supervisor.write_local_profile(database_url, home, "http://127.0.0.1:1")
    first = local_profile()
    supervisor.write_local_profile(database_url, home, "http://127.0.0.1:2")
    second = local_profile()
    assert second.url == "http://127.0.0.1:2"
    assert second.token == first.token


def test_a_token_that_is_no_longer_valid_is_replaced(home: Path, database_url: str) -> None:
    admin.bootstrap(database_url)
    profile_store.save_profile("local", url="http://127.0.0.1:1", token="mnv_gone", home=str(home))
    supervisor.write_local_profile(database_url, home, "http://127.0.0.1:1")
    token = local_profile().token
    assert token and token != "mnv_gone"
    assert admin.token_is_valid(database_url, token)


def test_demo_data_is_found_beside_the_source_or_through_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert (supervisor.examples_dir() / "demo-organization.yaml").is_file()
    monkeypatch.setenv("MINERVA_EXAMPLES", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="MINERVA_EXAMPLES"):
        supervisor.examples_dir()


# ---------------------------------------------------------------- embedded servers


def test_a_second_start_on_a_home_stops_what_the_first_left(home: Path) -> None:
    first = embedded.start_postgres(home)
    with psycopg.connect(first.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (value text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
    assert first.pid in embedded.leftovers(home / "postgres", "postgres")
    second = embedded.start_postgres(home)
    try:
        assert first.process.poll() is not None
        assert embedded.leftovers(home / "postgres", "postgres")[0] == second.pid
        with psycopg.connect(second.url) as conn:
            assert conn.execute("SELECT value FROM kept").fetchall() == [("still here",)]
    finally:
        second.stop()
    assert embedded.leftovers(home / "postgres", "postgres") == []


def test_a_stale_pid_file_naming_another_process_does_not_block_a_start(home: Path) -> None:
    embedded.start_postgres(home).stop()
    pid_file = home / "postgres" / "postmaster.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # after a reboot the pid may be anyone's
    server = embedded.start_postgres(home)
    try:
        assert alive(os.getpid()) and server.process.poll() is None
    finally:
        server.stop()


def test_the_redis_password_is_not_on_its_command_line(home: Path) -> None:
    server = embedded.start_redis(home)
    try:
        password = (home / "redis.password").read_text().strip()
        assert password in server.url
        assert password.encode() not in Path(f"/proc/{server.pid}/cmdline").read_bytes()
    finally:
        server.stop()
    assert embedded.leftovers(home / "redis", "redis-server") == []


_OWNER = """
import sys
from pathlib import Path
from minerva_ai.service import embedded
home = Path(sys.argv[1])
servers = [embedded.start_postgres(home), embedded.start_redis(home)]
print(" ".join(str(s.pid) for s in servers), flush=True)
sys.stdin.read()
"""


@pytest.mark.slow
def test_embedded_servers_die_with_an_owner_killed_by_sigkill(home: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as owner:
        assert owner.stdout is not None
        pids = [int(pid) for pid in owner.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        owner.kill()
    wait_until(lambda: not any(map(alive, pids)), 30, "the embedded servers to exit")
    assert embedded_processes(home) == []


# ---------------------------------------------------------------- `minerva-ai server start`


@pytest.mark.slow
def test_restart_keeps_data_and_sigterm_stops_everything(
    home: Path, start_server: Callable[..., ServerProcess]
) -> None:
    first = start_server()
    url = first.wait_serving()
    run = json.loads((home / "run.json").read_text())
    assert (home / "run.json").stat().st_mode & 0o777 == 0o600
    assert run["pid"] == first.pid and run["home"] == str(home) and run["url"] == url
    assert local_profile().url == url and local_profile().home == str(home)
    profile_token = local_profile().token or ""
    assert features(url, profile_token).status_code == 200

    created = run_cli("server", "org", "create", "acme")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert features(url, token).status_code == 200

    passwords = [(home / f"{name}.password").read_text().strip() for name in ("postgres", "redis")]
    output = first.output()
    assert "PostgreSQL: embedded" in output and "Redis: embedded" in output
    assert not any(password in output for password in passwords)

    assert first.stop() == 0
    assert embedded_processes(home) == []
    assert not (home / "run.json").exists()

    second = start_server()
    url = second.wait_serving()
    assert local_profile().url == url
    assert local_profile().token == profile_token
    assert features(url, token).status_code == 200
    assert second.stop(signal.SIGINT) == 0
    assert embedded_processes(home) == []


@pytest.mark.slow
def test_a_second_start_on_the_same_home_fails_fast_and_leaves_the_owner_alone(
    home: Path, start_server: Callable[..., ServerProcess]
) -> None:
    owner = start_server()
    url = owner.wait_serving()
    started = time.monotonic()
    refused = run_cli("server", "start", "--port", "0")
    assert time.monotonic() - started < 15
    assert refused.returncode == 3
    assert str(home) in refused.stderr and f"pid {owner.pid}" in refused.stderr
    assert owner.process.poll() is None
    assert httpx.get(url + "/api/health", timeout=15).status_code == 200
    assert json.loads((home / "run.json").read_text())["pid"] == owner.pid


@pytest.mark.slow
def test_after_kill_9_the_next_start_stops_the_leftovers_and_keeps_the_data(
    home: Path, start_server: Callable[..., ServerProcess]
) -> None:
    first = start_server()
    first.wait_serving()
    token = run_cli("server", "org", "create", "acme").stdout.strip()
    old = embedded_processes(home)
    postmaster, redis = postmaster_pid(home), redis_pid(home)
    # Stopped servers cannot act on their parent-death signal: they outlive the owner,
    # as a busy server may.
    for pid in (postmaster, redis):
        os.kill(pid, signal.SIGSTOP)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert alive(postmaster) and alive(redis)

    second = start_server()
    url = second.wait_serving()
    assert not any(alive(pid) for pid in old)
    assert set(embedded_processes(home)).isdisjoint(old)
    assert json.loads((home / "run.json").read_text())["pid"] == second.pid
    assert features(url, token).status_code == 200
    assert second.stop() == 0
    assert embedded_processes(home) == []


@pytest.mark.slow
def test_kill_9_of_the_supervisor_leaves_nothing_running(
    home: Path, start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server()
    server.wait_serving()
    assert len(embedded_processes(home)) >= 2
    server.stop(signal.SIGKILL)
    wait_until(lambda: not embedded_processes(home), 30, "the embedded servers to exit")
    assert owner_pid(home) is None


@pytest.mark.slow
def test_a_second_instance_joins_with_the_urls_of_server_info(
    home: Path, start_server: Callable[..., ServerProcess]
) -> None:
    first = start_server()
    first_url = first.wait_serving()
    info = json.loads(run_cli("server", "info", "-o", "json").stdout)
    joined_env = {
        **os.environ,
        "DATABASE_URL": info["database_url"],
        "REDIS_URL": info["redis_url"],
    }
    second = start_server(env=joined_env)
    second_url = second.wait_serving()
    assert second_url != first_url
    assert json.loads((home / "run.json").read_text())["pid"] == first.pid

    token = run_cli("server", "org", "create", "acme").stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    create_url = f"{first_url}{API_PREFIX}/features"
    created = httpx.post(create_url, json={"name": "tagger"}, headers=headers)
    assert created.status_code == 201, created.text
    names = [feature["name"] for feature in features(second_url, token).json()["data"]]
    assert names == ["tagger"]

    owned = [postmaster_pid(home), redis_pid(home)]
    assert second.stop() == 0
    assert all(alive(pid) for pid in owned)
    assert httpx.get(first_url + "/api/health", timeout=15).status_code == 200


@pytest.mark.slow
def test_workers_share_the_socket_and_stop_with_the_supervisor(
    home: Path, start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server("--workers", "2")
    url = server.wait_serving()
    workers = wait_until(
        lambda: json.loads((home / "run.json").read_text())["worker_pids"], 30, "worker pids"
    )
    assert len(workers) == 2 and all(alive(pid) for pid in workers)
    with httpx.Client(base_url=url, timeout=15) as http:
        assert all(http.get("/api/health").status_code == 200 for _ in range(20))
    assert server.stop() == 0
    assert not any(alive(pid) for pid in workers)
    assert embedded_processes(home) == []


@pytest.mark.slow
def test_demo_data_and_profile_are_ready_when_health_first_answers(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--demo")
    url = server.wait_serving()
    listed = features(url, local_profile().token or "")
    assert listed.status_code == 200
    names = {feature["name"] for feature in listed.json()["data"]}
    assert {"photo-tagging", "content-moderation", "support-summarizer"} <= names


@pytest.mark.slow
def test_sigterm_closes_websockets_with_1012_and_exits_promptly(
    home: Path, start_server: Callable[..., ServerProcess]
) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    server = start_server()
    url = server.wait_serving().replace("http://", "ws://")
    headers = {"Authorization": f"Bearer {local_profile().token}"}
    with connect(f"{url}{API_PREFIX}/websocket", additional_headers=headers, open_timeout=15) as ws:
        assert json.loads(ws.recv(timeout=15))["type"] == "authenticated"
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert server.process.wait(30) == 0
    assert time.monotonic() - started < 20
    assert embedded_processes(home) == []


@pytest.mark.slow
def test_after_kill_9_the_next_start_stops_the_old_workers_and_takes_their_port(
    home: Path, start_server: Callable[..., ServerProcess]
) -> None:
    first = start_server("--workers", "2")
    url = first.wait_serving()
    workers = json.loads((home / "run.json").read_text())["worker_pids"]
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)  # so that they outlive the supervisor
    first.stop(signal.SIGKILL)
    assert all(alive(pid) for pid in workers)

    second = start_server("--port", url.rsplit(":", 1)[1])
    assert second.wait_serving() == url
    assert not any(alive(pid) for pid in workers)
    assert "left by a previous server" in second.output()
    assert second.stop() == 0
    assert embedded_processes(home) == []


@pytest.mark.slow
def test_on_sigterm_readiness_turns_503_first_then_the_drain(
    home: Path, start_server: Callable[..., ServerProcess]
) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    server = start_server(env={**os.environ, "MINERVA_DRAIN_DELAY": "3"})
    url = server.wait_serving()
    token = local_profile().token or ""
    headers = {"Authorization": f"Bearer {token}"}
    ws_url = url.replace("http://", "ws://") + f"{API_PREFIX}/websocket"
    with connect(ws_url, additional_headers=headers, open_timeout=15) as ws:
        assert json.loads(ws.recv(timeout=15))["type"] == "authenticated"
        assert httpx.get(url + "/api/health/ready", timeout=15).status_code == 200
        server.process.send_signal(signal.SIGTERM)

        def draining() -> httpx.Response | None:
            ready = httpx.get(url + "/api/health/ready", timeout=15)
            return ready if ready.status_code == 503 else None

        ready = wait_until(draining, 30, "readiness to turn 503")
        assert ready.json()["reason"] == "draining: the instance is shutting down"
        # Still serving meanwhile: the socket is open and requests are answered.
        assert features(url, token).status_code == 200
        assert httpx.get(url + "/api/health/live", timeout=15).status_code == 200
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert server.process.wait(30) == 0
