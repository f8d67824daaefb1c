"""The real servers of the production harness (harness.py): Debian's PostgreSQL 15,
redis-server and nginx, started from their binaries in a directory of their own on random
loopback ports, each a child process that dies with its parent (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from minerva_ai.service.embedded import die_with_parent, initdb, redis_ping
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "examples" / "deploy" / "nginx.conf"
INSTALL_SCRIPT = REPO / "examples" / "deploy" / "install-servers.sh"
# Debian's; another layout's with MINERVA_PG_BIN.
PG_BIN = Path(os.environ.get("MINERVA_PG_BIN") or "/usr/lib/postgresql/15/bin")
PER_SITE = "# per site"
WAIT = 60.0


class HarnessError(RuntimeError):
    """A server of the harness did not start or stop."""


def _binary(name: str, *candidates: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    return next((c for c in candidates if os.access(c, os.X_OK)), None)


def missing_packages() -> list[str]:
    """The Debian packages the harness needs and does not find (install-servers.sh's names)."""
    missing = []
    if not all(os.access(PG_BIN / b, os.X_OK) for b in ("postgres", "initdb")):
        missing.append("postgresql")
    if not _binary("redis-server", "/usr/bin/redis-server"):
        missing.append("redis-server")
    if not _binary("nginx", "/usr/sbin/nginx"):
        missing.append("nginx")
    if not _binary("openssl", "/usr/bin/openssl"):
        missing.append("openssl")
    return missing


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alive(process: subprocess.Popen[bytes] | None) -> bool:
    return process is not None and process.poll() is None


def stop_child(process: subprocess.Popen[bytes] | None, sig: int, timeout: float = 30) -> None:
    if not alive(process):
        return
    assert process is not None
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_child(
    argv: list[str], log: Path, sig: int = signal.SIGTERM, **options: Any
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(sig),
            **options,
        )


# ---------------------------------------------------------------- PostgreSQL


def _postgres_user() -> tuple[int, int] | None:
    """PostgreSQL refuses to run as root: the Debian package's user, else one made here."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "minerva-pg"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "minerva-pg"],
        check=True,
        capture_output=True,
    )
    entry = pwd.getpwnam("minerva-pg")
    return entry.pw_uid, entry.pw_gid


class Postgres:
    """Debian's PostgreSQL 15 on a data directory of its own (initdb once, start/stop)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.owner = _postgres_user()
        self.process: subprocess.Popen[bytes] | None = None
        root.mkdir(mode=0o755)
        if self.owner:
            os.chown(root, *self.owner)
        initdb(PG_BIN, self.data, self.password, self.owner)  # the embedded server's way

    def _as_owner(self) -> dict[str, Any]:
        if not self.owner:
            return {}
        return {"user": self.owner[0], "group": self.owner[1], "extra_groups": []}

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/minerva"

    @property
    def admin_url(self) -> str:
        return self.url.rsplit("/", 1)[0] + "/postgres"

    @property
    def running(self) -> bool:
        return alive(self.process)

    def start(self) -> None:
        self.process = start_child(
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(self.data),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                "",
                "-c",
                "max_connections=200",
            ],
            self.log,
            signal.SIGINT,
            **self._as_owner(),
        )
        wait_until(self._accepting, WAIT, f"PostgreSQL on port {self.port} (log: {self.log})")

    def _accepting(self) -> bool:
        import psycopg

        if not self.running:
            raise HarnessError(f"PostgreSQL exited: {self.log.read_text()[-2000:]}")
        try:
            with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=2) as conn:
                if not conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = 'minerva'"
                ).fetchone():
                    conn.execute("CREATE DATABASE minerva")
        except psycopg.OperationalError:
            return False
        return True

    def stop(self) -> None:
        """A fast shutdown (SIGINT): sessions are ended, committed data kept."""
        stop_child(self.process, signal.SIGINT)


# ---------------------------------------------------------------- Redis


class Redis:
    """Debian's redis-server, nothing persisted (Redis holds no facts)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = root / "redis.log"
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.process: subprocess.Popen[bytes] | None = None
        root.mkdir(mode=0o700)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return alive(self.process)

    def start(self) -> None:
        binary = _binary("redis-server", "/usr/bin/redis-server")
        assert binary is not None
        settings = (
            f'port {self.port}\nbind 127.0.0.1\ndir {self.root}\nsave ""\n'
            f"appendonly no\ndaemonize no\nrequirepass {self.password}\n"
        )
        # The configuration goes through stdin: a password in argv is visible to `ps`.
        self.process = start_child([binary, "-"], self.log, stdin=subprocess.PIPE)
        assert self.process.stdin is not None
        self.process.stdin.write(settings.encode())
        self.process.stdin.close()
        wait_until(self._ping, WAIT, f"Redis on port {self.port} (log: {self.log})")

    def _ping(self) -> bool:
        if not self.running:
            raise HarnessError(f"Redis exited: {self.log.read_text()[-2000:]}")
        return redis_ping(self.port, self.password)

    def kill(self) -> None:
        stop_child(self.process, signal.SIGKILL)


# ---------------------------------------------------------------- nginx


def render_nginx(template: str, values: dict[str, list[str]]) -> str:
    """The shipped configuration with its ``# per site`` lines filled in: each such line's
    directive gets its first argument from ``values`` (a list: the line is repeated once per
    item, e.g. the upstream's ``server`` line per instance); everything else is kept."""
    out = []
    line_re = re.compile(r"^(\s*)(\S+)(\s+)(\S+)(.*)$")
    for line in template.splitlines(keepends=True):
        if PER_SITE not in line or line.lstrip().startswith("#"):
            out.append(line)
            continue
        found = line_re.match(line)
        if found is None or found[2] not in values:
            raise HarnessError(f"no value for the per-site line {line.strip()!r}")
        indent, directive, space, first, rest = found.groups()
        first_value = first.removesuffix(";")
        ending = first[len(first_value) :]
        for value in values[directive]:
            out.append(f"{indent}{directive}{space}{value}{ending}{rest}\n")
    return "".join(out)


_MAIN_CONF = """\
daemon off;
worker_processes 1;
{user}pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    access_log off;
    include {prefix}/minerva.conf;
    # nginx's own cost, for bench/nginx_overhead.py: a static file, no upstream.
    server {{
        listen 127.0.0.1:{static_port};
        access_log off;
        root {prefix}/static;
    }}
}}
"""


class Nginx:
    """Debian's nginx (``-p prefix -c conf``) with the shipped configuration rendered."""

    def __init__(self, root: Path, upstreams: list[str], cert: Path, key: Path) -> None:
        self.root = root
        self.port = free_port()
        self.static_port = free_port()
        self.access_log = root / "access.log"
        self.process: subprocess.Popen[bytes] | None = None
        for sub in ("tmp", "static"):
            (root / sub).mkdir(parents=True)
        (root / "static" / "features.json").write_text(
            '{"success":true,"data":[{"id":"x","name":"tagger"}],"count":1}\n'
        )
        self.rendered = render_nginx(
            TEMPLATE.read_text(),
            {
                "server": [f"{address}" for address in upstreams],
                "listen": [f"127.0.0.1:{self.port}"],
                "server_name": ["localhost"],
                "ssl_certificate": [str(cert)],
                "ssl_certificate_key": [str(key)],
                "access_log": [str(self.access_log)],
            },
        )
        (root / "minerva.conf").write_text(self.rendered)
        user = "user root;\n" if os.geteuid() == 0 else ""
        self.conf = root / "nginx.conf"
        self.conf.write_text(
            _MAIN_CONF.format(prefix=root, static_port=self.static_port, user=user)
        )

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return alive(self.process)

    def test_config(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` on the rendered configuration."""
        return subprocess.run(
            [_nginx(), "-t", "-p", str(self.root), "-c", str(self.conf)],
            capture_output=True,
            text=True,
            check=False,
        )

    def start(self) -> None:
        self.process = start_child(
            [_nginx(), "-p", str(self.root), "-c", str(self.conf)], self.root / "stderr.log"
        )
        wait_until(self._answers, WAIT, f"nginx on port {self.port} ({self.root / 'error.log'})")

    def _answers(self) -> bool:
        if not self.running:
            raise HarnessError(f"nginx exited: {(self.root / 'stderr.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        stop_child(self.process, signal.SIGTERM)  # fast: open WebSockets are cut


def _nginx() -> str:
    found = _binary("nginx", "/usr/sbin/nginx")
    assert found is not None
    return found


def make_certificate(root: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 and localhost (openssl)."""
    cert, key = root / "tls.crt", root / "tls.key"
    subprocess.run(
        [
            _binary("openssl", "/usr/bin/openssl") or "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
