"""`minerva-ai server start`: one supervisor process that owns a home and serves the API.

The supervisor holds an flock on ``MINERVA_HOME/lock`` (released by the kernel when it
dies, however it dies), starts the embedded PostgreSQL and Redis that ``DATABASE_URL`` and
``REDIS_URL`` do not replace, stops what a killed predecessor left running, records the
URLs in ``MINERVA_HOME/run.json`` (0600), migrates and bootstraps an embedded database,
and then serves: uvicorn in-process with one worker, else worker processes sharing the
listening socket (``python -m minerva_ai.service.supervisor --worker-fd FD``). On SIGTERM,
SIGINT or SIGHUP it lets uvicorn drain (WebSockets closed with 1012, at most
``timeout_graceful_shutdown`` seconds), stops Redis, then PostgreSQL, and returns only
once they have exited. Given both URLs it owns nothing and takes no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

from minerva_ai.core.errors import ConfigError, MinervaError, UsageError
from minerva_ai.service import embedded, logjson
from minerva_ai.service.config import provide_secret_key
from minerva_ai.service.home import (
    HomeLock,
    read_run_file,
    resolve_home,
    run_file,
    stop_processes,
    write_run_file,
)
from minerva_ai.service.metrics_server import MULTIPROC_ENV, MetricsServer

if TYPE_CHECKING:
    import uvicorn

    from minerva_ai.core.profiles import Profile

APP = "minerva_ai.service.app:create_app"
WORKER_FLAG = "--worker-fd"
OPTIONS_FLAG = "--options"
LOCAL_PROFILE = "local"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_WILDCARD_HOSTS = {"", "0.0.0.0", "::"}  # noqa: S104 (recognised, not bound)
_BACKLOG = 2048  # uvicorn's default
_CRASH_LOOP_S = 10.0  # a worker that dies this soon after its start is not restarted
_WORKER_MARK = b"minerva_ai.service.supervisor"


class DatabaseError(MinervaError):
    """PostgreSQL could not be reached."""

    exit_code = 4


class DatabaseRefusedError(DatabaseError):
    """PostgreSQL refused a statement (permissions, a constraint, ...)."""

    exit_code = 3


class ServeError(MinervaError):
    """The service could not be started or kept running."""

    exit_code = 4


class _Stopped(Exception):
    """A stop signal arrived before the service was serving."""


@dataclass(frozen=True)
class HttpOptions:
    """How uvicorn serves the app, the same in every worker (passed to them as JSON)."""

    proxy_headers: bool = False
    forwarded_allow_ips: str = "127.0.0.1"
    root_path: str = ""
    log_format: str = "text"


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    workers: int = 1
    demo: bool = False
    metrics_bind: tuple[str, int] | None = None
    http: HttpOptions = HttpOptions()


def check_http_options(http: HttpOptions) -> None:
    """UsageError naming the option whose value uvicorn would misread."""
    for item in (part.strip() for part in http.forwarded_allow_ips.split(",")):
        if item == "*" or item.startswith("unix:"):
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise UsageError(
                f"--forwarded-allow-ips: {item!r} is neither an IP address, a CIDR nor *"
            ) from None
    if http.root_path and (not http.root_path.startswith("/") or http.root_path.endswith("/")):
        raise UsageError(
            f"--root-path {http.root_path!r}: a path that starts with / and does not end "
            "with one, e.g. /minerva"
        )


_json_messages = False  # `--log-format json`: the supervisor's lines are JSON too


def _say(message: str) -> None:
    line = logjson.message_line(message) if _json_messages else f"minerva-ai: {message}"
    print(line, file=sys.stderr, flush=True)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


@contextlib.contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn psycopg's errors into ours: unreachable is exit 4, refused exit 3."""
    import psycopg

    try:
        yield
    except psycopg.OperationalError as exc:
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise DatabaseError(f"cannot reach PostgreSQL at {mask_url(url)}: {reason}") from exc
    except psycopg.Error as exc:
        raise DatabaseRefusedError(f"PostgreSQL at {mask_url(url)} refused: {exc}") from exc


def _clear_stale_run(home: Path, grace: float) -> None:
    """Stop the workers a killed predecessor recorded, and forget its run.json."""
    stale = read_run_file(home)
    if stale is None:
        return
    leftover = []
    for pid in stale.get("worker_pids") or []:
        with contextlib.suppress(OSError):
            if isinstance(pid, int) and _WORKER_MARK in Path(f"/proc/{pid}/cmdline").read_bytes():
                leftover.append(pid)
    if leftover:
        _say(f"stopping workers {', '.join(map(str, leftover))} left by a previous server")
        stop_processes(leftover, grace + 5)
    run_file(home).unlink(missing_ok=True)


# ---------------------------------------------------------------- the listening socket, profile


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; UsageError naming them when that fails."""
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise UsageError(f"--host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port} ({exc.strerror}): choose another --port, "
            "or stop what is using it"
        ) from None
    return sock


def probe_port(host: str, port: int) -> int:
    """Fail fast if ``host:port`` is taken; the port to use (a free one for port 0).

    The real socket is bound only once the service is ready, so that a connection
    accepted means a service that answers.
    """
    with bind_listener(host, port) as sock:
        return int(sock.getsockname()[1])


def local_url(host: str, port: int) -> str:
    """The URL a local client uses: a wildcard bind address becomes 127.0.0.1."""
    host = host.strip("[]")
    if host in _WILDCARD_HOSTS:
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _same_home(profile: Profile, home: Path) -> bool:
    return profile.home is not None and Path(profile.home).expanduser().resolve() == home


def profile_name_for(profiles: Mapping[str, Profile], home: Path) -> str:
    """``local``, unless it belongs to another home: then ``local-<hash of the home>``."""
    digest = hashlib.sha256(str(home).encode()).hexdigest()
    names = [LOCAL_PROFILE] + [f"{LOCAL_PROFILE}-{digest[:n]}" for n in (8, 16)]
    for name in names:
        if name in profiles and _same_home(profiles[name], home):
            return name
    for name in names:
        if name not in profiles:
            return name
    raise ConfigError(f"profiles {', '.join(names)} all belong to other homes: remove one")


def write_local_profile(database_url: str, home: Path, url: str) -> tuple[str, Path, bool]:
    """Write or refresh this home's CLI profile; return its name, file and whether current.

    Its token is kept while it is still valid, else a new admin token is issued.
    """
    from minerva_ai.core import profiles as profile_store
    from minerva_ai.service import admin

    directory = profile_store.config_path().parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Servers of two homes starting at once must not both pick the free name `local`.
    with open(directory / ".server-profile.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        profiles = profile_store.load_config().profiles
        name = profile_name_for(profiles, home)
        stored = profiles[name].token if name in profiles else None
        token = stored if stored and admin.token_is_valid(database_url, stored) else None
        if token is None:
            token = admin.create_token(
                database_url, admin.DEFAULT_ORGANIZATION, ["admin"], name="local profile"
            ).token
        path = profile_store.save_profile(name, url=url, token=token, home=str(home))
    return name, path, profile_store.load_config(path).current_profile == name


def examples_dir() -> Path:
    """The demo data: ``$MINERVA_EXAMPLES``, else the ``examples/`` the package ships."""
    raw = os.environ.get("MINERVA_EXAMPLES")
    if raw:
        path = Path(raw).expanduser()
    else:
        import importlib.util

        spec = importlib.util.find_spec("minerva_ai.examples")
        locations = list(spec.submodule_search_locations or []) if spec else []
        path = Path(locations[0]) if locations else Path("examples")
    if not path.is_dir():
        raise ConfigError(
            f"--demo needs the demo data, and {path} is not a directory: "
            "set MINERVA_EXAMPLES to the examples/ directory of minerva-ai's source"
        )
    return path


# ---------------------------------------------------------------- signals and uvicorn


class _StopSignals:
    """Turn SIGINT/SIGTERM/SIGHUP into a stop request, handed to uvicorn while it serves."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.server: uvicorn.Server | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        for sig in STOP_SIGNALS:
            if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
                continue  # started under nohup: closing the terminal must not stop it
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        repeated = self.received is not None
        self.received = sig
        if self.server is not None:
            self.server.handle_exit(sig, frame)  # a second Ctrl-C forces uvicorn's exit
        elif repeated and sig == signal.SIGINT:
            raise KeyboardInterrupt

    def check(self) -> None:
        if self.received is not None:
            raise _Stopped


def _uvicorn_config(http: HttpOptions) -> uvicorn.Config:
    import uvicorn

    from minerva_ai.service.serving import UVICORN_OPTIONS

    options = cast(dict[str, Any], dict(UVICORN_OPTIONS))
    options.update(
        proxy_headers=http.proxy_headers,
        forwarded_allow_ips=http.forwarded_allow_ips,
        root_path=http.root_path,
    )
    config = logjson.log_config(http.log_format)
    if config is not None:  # access lines are info; text keeps warnings only, no access log
        options.update(log_config=config, log_level="info", access_log=True)
    return uvicorn.Config(APP, factory=True, **options)


def _graceful_timeout() -> float:
    """How long a stop may take: MINERVA_DRAIN_DELAY, then uvicorn's drain."""
    from minerva_ai.service.serving import UVICORN_OPTIONS

    drain = float(cast(float, UVICORN_OPTIONS.get("timeout_graceful_shutdown") or 10))
    try:
        delay = max(0.0, float(os.environ.get("MINERVA_DRAIN_DELAY") or 0))
    except ValueError:
        delay = 0.0  # the service refuses it at start, naming it
    return drain + delay


def _supervised_server(config: uvicorn.Config) -> uvicorn.Server:
    """A uvicorn server whose signals the supervisor handles (it must outlive uvicorn)."""
    from minerva_ai.service.app import Server

    class SupervisedServer(Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return SupervisedServer(config)


# ---------------------------------------------------------------- the supervisor


class Supervisor:
    """Start what the home needs, serve until told to stop, then stop all it started."""

    def __init__(self, options: ServeOptions, signals: _StopSignals) -> None:
        self.options = options
        self.signals = signals
        self.database_url = os.environ.get("DATABASE_URL") or None
        self.redis_url = os.environ.get("REDIS_URL") or None
        self.embedded_database = self.database_url is None
        if options.demo and not self.embedded_database:
            raise UsageError("--demo loads the demo into the embedded database: unset DATABASE_URL")
        self.examples = examples_dir() if options.demo else None
        self.home: Path | None = None
        self.lock: HomeLock | None = None
        self.owned: list[embedded.EmbeddedServer] = []
        self.run_info: dict[str, Any] = {}
        self.metrics: MetricsServer | None = None
        if options.metrics_bind is not None:
            self.metrics = MetricsServer.prepare(*options.metrics_bind)
        else:  # nobody would read or clear it
            os.environ.pop(MULTIPROC_ENV, None)

    def run(self) -> None:
        try:
            self._start_and_serve()
        except _Stopped:
            _say("stopped before serving")
        finally:
            self._stop()

    def _start_and_serve(self) -> None:
        if self.database_url is None or self.redis_url is None:
            self.home = resolve_home()
            self.lock = HomeLock.acquire(self.home)
            _say(f"home {self.home} (this server, pid {os.getpid()}, owns it)")
            _clear_stale_run(self.home, _graceful_timeout())
        port = probe_port(self.options.host, self.options.port)
        if self.metrics is not None:
            try:
                self.metrics.port = probe_port(self.metrics.host, self.metrics.port)
            except UsageError as exc:
                raise UsageError(f"--metrics-bind: {exc}") from None
        url = local_url(self.options.host, port)
        self._start_databases(url)
        assert self.database_url is not None and self.redis_url is not None
        with database_errors(self.database_url):
            self._prepare(url)
        self.signals.check()
        provide_secret_key(self.home or resolve_home(), self.embedded_database)
        os.environ["DATABASE_URL"] = self.database_url
        os.environ["REDIS_URL"] = self.redis_url
        if self.metrics is not None:
            self.metrics.start()
            _say(f"metrics on {self.metrics.url} (Prometheus; not on the public port)")
        with bind_listener(self.options.host, port) as listener:
            workers = self.options.workers
            how = (
                "Ctrl-C or `minerva-ai server stop`"
                if self.lock is not None
                else f"Ctrl-C or `kill {os.getpid()}` (it owns no home)"
            )
            _say(
                f"serving on {url} ({workers} worker{'s' if workers > 1 else ''}); stop with {how}"
            )
            if workers == 1:
                self._serve_in_process(listener)
            else:
                self._serve_workers(listener)

    def _start_databases(self, url: str) -> None:
        home = self.home
        if self.database_url is None:
            assert home is not None
            self.signals.check()
            postgres = embedded.start_postgres(home)
            self.owned.append(postgres)
            self.database_url = postgres.url
            _say(f"PostgreSQL: embedded, {mask_url(postgres.url)} (data in {home / 'postgres'})")
        else:
            _say(f"PostgreSQL: {mask_url(self.database_url)} (DATABASE_URL)")
        if self.redis_url is None:
            assert home is not None
            self.signals.check()
            redis = embedded.start_redis(home)
            self.owned.append(redis)
            self.redis_url = redis.url
            _say(f"Redis: embedded, {mask_url(redis.url)}")
        else:
            _say(f"Redis: {mask_url(self.redis_url)} (REDIS_URL)")
        if home is not None:
            self.run_info = {
                "home": str(home),
                "pid": os.getpid(),
                "database_url": self.database_url,
                "redis_url": self.redis_url,
                "url": url,
                "started_at": datetime.now(UTC)
                .isoformat(timespec="seconds")
                .replace("+00:00", "Z"),
                "worker_pids": [],
            }
            write_run_file(home, self.run_info)

    def _prepare(self, url: str) -> None:
        """Schema, default organization, CLI profile and demo: all before the socket listens."""
        from minerva_ai.service import admin

        database_url = cast(str, self.database_url)
        self.signals.check()
        if not self.embedded_database:
            admin.check_schema(database_url)
            return
        applied = admin.migrate(database_url)
        _say(f"applied migrations {', '.join(applied)}" if applied else "schema is up to date")
        self.signals.check()
        organization = admin.bootstrap(database_url)
        assert self.home is not None
        name, path, current = write_local_profile(database_url, self.home, url)
        _say(
            f"CLI profile {name!r} for {url} in {path}"
            + ("" if current else f" (not the current profile: use --profile {name})")
        )
        if self.examples is not None:
            self.signals.check()
            admin.load_demo(database_url, organization.id, self.examples)
            _say(f"demo data loaded from {self.examples}")

    def _serve_in_process(self, listener: socket.socket) -> None:
        server = _supervised_server(_uvicorn_config(self.options.http))
        self.signals.server = server
        try:
            if self.signals.received is None:
                server.run(sockets=[listener])
        except SystemExit as exc:
            raise ServeError(
                f"the service failed to start (uvicorn exit {exc.code}): see the messages above"
            ) from None
        finally:
            self.signals.server = None

    def _serve_workers(self, listener: socket.socket) -> None:
        workers: list[tuple[subprocess.Popen[bytes], float]] = []
        try:
            for _ in range(self.options.workers):
                workers.append((self._spawn_worker(listener), time.monotonic()))
            self._record_workers(workers)
            while self.signals.received is None:
                for index, (process, started) in enumerate(workers):
                    code = process.poll()
                    if code is None:
                        continue
                    if time.monotonic() - started < _CRASH_LOOP_S:
                        raise ServeError(
                            f"worker pid {process.pid} exited with code {code} right after "
                            "starting: see the messages above"
                        )
                    _say(f"worker pid {process.pid} exited with code {code}; starting another")
                    if self.metrics is not None:
                        self.metrics.process_died(process.pid)
                    workers[index] = (self._spawn_worker(listener), time.monotonic())
                    self._record_workers(workers)
                time.sleep(0.1)
        finally:
            stop_processes([p.pid for p, _ in workers if p.poll() is None], _graceful_timeout() + 5)
            for process, _ in workers:
                process.wait()

    def _spawn_worker(self, listener: socket.socket) -> subprocess.Popen[bytes]:
        fd = listener.fileno()
        http = json.dumps(self.options.http.__dict__)
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "minerva_ai.service.supervisor",
                WORKER_FLAG,
                str(fd),
                OPTIONS_FLAG,
                http,
            ],
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops them
            preexec_fn=embedded.die_with_parent(signal.SIGTERM),
        )

    def _record_workers(self, workers: list[tuple[subprocess.Popen[bytes], float]]) -> None:
        if self.home is not None:
            self.run_info["worker_pids"] = [p.pid for p, _ in workers]
            write_run_file(self.home, self.run_info)

    def _stop(self) -> None:
        self.signals.server = None
        for server in reversed(self.owned):  # Redis first, PostgreSQL last
            server.stop()
            _say(f"embedded {server.name} stopped")
        if self.metrics is not None:
            self.metrics.close()
        if self.lock is not None and self.home is not None:
            run_file(self.home).unlink(missing_ok=True)
            self.lock.release()


def serve(options: ServeOptions) -> None:
    """Run the service until SIGTERM, SIGINT or SIGHUP; return once all it owns has exited."""
    global _json_messages
    _json_messages = options.http.log_format == "json"
    with _StopSignals() as signals:
        Supervisor(options, signals).run()


def worker_main(fd: int, http: HttpOptions) -> None:
    """One worker process: uvicorn on the supervisor's listening socket."""
    from minerva_ai.service.app import Server

    listener = socket.socket(fileno=fd)
    Server(_uvicorn_config(http)).run(sockets=[listener])


def _main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != WORKER_FLAG or not argv[1].isdigit() or argv[2] != OPTIONS_FLAG:
        print(
            "this is a worker of `minerva-ai server start --workers N`; run that instead",
            file=sys.stderr,
        )
        return 2
    worker_main(int(argv[1]), HttpOptions(**json.loads(argv[3])))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
