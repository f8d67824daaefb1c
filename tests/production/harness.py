"""The production shape on one machine: Debian's PostgreSQL 15, Redis and nginx (servers.py)
started from their binaries in a temporary directory on random loopback ports, `minerva-ai
server migrate`, N `minerva-ai server start` instances on those servers, and nginx in front
of them with the shipped configuration (examples/deploy/nginx.conf, its `# per site` lines
filled in) and a throwaway TLS certificate.

Used by tests/production/ and by bench/ scripts (``with production_stack() as stack``).
Every process is a child that dies with its parent; leaving the ``with`` stops them all
and removes the directory. The packages come from examples/deploy/install-servers.sh.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from minerva_ai.core.protocol import API_PREFIX
from minerva_ai.service.config import new_secret_key
from tests.conftest import wait_until
from tests.production.servers import (
    INSTALL_SCRIPT,
    PER_SITE,
    REPO,
    TEMPLATE,
    WAIT,
    HarnessError,
    Nginx,
    Postgres,
    Redis,
    alive,
    free_port,
    make_certificate,
    missing_packages,
    start_child,
    stop_child,
)

__all__ = [
    "INSTALL_SCRIPT",
    "PER_SITE",
    "REPO",
    "SERVICE_DEFAULTS",
    "TEMPLATE",
    "HarnessError",
    "Instance",
    "Stack",
    "missing_packages",
    "production_stack",
]

MINERVA_AI = str(Path(sys.executable).parent / "minerva-ai")

# The service settings the suite runs with: short intervals so that faults show in seconds.
SERVICE_ENV = {
    "MINERVA_WS_HEARTBEAT": "1",
    "MINERVA_JOB_LEASE": "2",
    "MINERVA_ALERT_INTERVAL": "0.5",
    "MINERVA_WEBHOOK_INTERVAL": "0.2",
    "MINERVA_WEBHOOK_ALLOW": "127.0.0.1",
    "MINERVA_METRICS_INTERVAL": "1",
    "MINERVA_TOKEN_RECHECK": "2",
    "MINERVA_POOL_SIZE": "10",
}
# The service's own defaults instead (benchmarks: bench/nginx_overhead.py, bench/soak.py).
SERVICE_DEFAULTS = {
    "MINERVA_WS_HEARTBEAT": "15",
    "MINERVA_ALERT_INTERVAL": "15",
    "MINERVA_WEBHOOK_INTERVAL": "1",
    "MINERVA_METRICS_INTERVAL": "5",
    "MINERVA_POOL_SIZE": "20",
    "MINERVA_JOB_LEASE": "15",
}


# ---------------------------------------------------------------- the service


@dataclass
class Instance:
    """One `minerva-ai server start` on the real servers (it owns nothing, takes no lock)."""

    name: str
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return alive(self.process)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.process = start_child(
            [MINERVA_AI, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            self.log,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )

    def ready(self) -> bool:
        if not self.running:
            raise HarnessError(f"instance {self.name} exited: {self.log.read_text()[-3000:]}")
        try:
            return httpx.get(self.url + "/api/health/ready", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self) -> None:
        wait_until(self.ready, WAIT, f"instance {self.name} to be ready (log: {self.log})")

    def kill(self) -> None:
        """kill -9: no drain, nothing closed."""
        stop_child(self.process, signal.SIGKILL)

    def stop(self) -> None:
        stop_child(self.process, signal.SIGTERM)


def service_env(root: Path, database_url: str, redis_url: str, secret: str) -> dict[str, str]:
    """The environment of the service's commands: the URLs and nothing of the developer's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MINERVA_") and k not in ("DATABASE_URL", "REDIS_URL", "NO_COLOR")
    }
    return env | {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "MINERVA_SECRET_KEY": secret,
        "MINERVA_HOME": str(root / "home"),
        "MINERVA_CONFIG_DIR": str(root / "config"),
        **SERVICE_ENV,
    }


# ---------------------------------------------------------------- the whole stack


@dataclass
class Stack:
    root: Path
    postgres: Postgres
    redis: Redis
    instances: list[Instance]
    nginx: Nginx
    cert: Path
    token: str  # an admin token of the organization "acme"
    secret: str
    env: dict[str, str] = field(default_factory=dict)  # what the instances run with

    @property
    def url(self) -> str:
        """The service through nginx (https)."""
        return self.nginx.url

    @property
    def api(self) -> str:
        return self.url + API_PREFIX

    def client_env(self, token: str | None = None) -> dict[str, str]:
        """The environment of a CLI run through nginx: URL, token, the CA of the certificate."""
        env = {k: v for k, v in self.env.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        return env | {
            "MINERVA_URL": self.url,
            "MINERVA_TOKEN": token or self.token,
            "SSL_CERT_FILE": str(self.cert),
        }

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    def http(self, token: str | None = None, **options: Any) -> httpx.Client:
        """An httpx client of the API through nginx."""
        return httpx.Client(
            base_url=self.api,
            verify=self.ssl_context(),
            headers={"Authorization": f"Bearer {token or self.token}"},
            timeout=options.pop("timeout", 30),
            **options,
        )

    def run_cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MINERVA_AI, *args],
            capture_output=True,
            text=True,
            env=self.client_env(),
            timeout=timeout,
            check=False,
        )

    def ensure_up(self) -> None:
        """Start again whatever a test stopped or killed, and wait until all are ready."""
        if not self.postgres.running:
            self.postgres.start()
        if not self.redis.running:
            self.redis.start()
        restarted = [instance for instance in self.instances if not instance.running]
        for instance in restarted:
            instance.start()
        for instance in self.instances:
            instance.wait_ready()
        if restarted and self.nginx.running:
            self.nginx.stop()  # it would keep an instance it saw fail out for fail_timeout
        if not self.nginx.running:
            self.nginx.start()


@contextlib.contextmanager
def production_stack(
    instances: int = 2, extra_env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """PostgreSQL, Redis, ``instances`` service instances and nginx, all stopped at the end."""
    missing = missing_packages()
    if missing:
        raise HarnessError(
            f"missing {', '.join(missing)}: run `sudo {INSTALL_SCRIPT.relative_to(REPO)}`"
        )
    root = Path(tempfile.mkdtemp(prefix="minerva-production-")).resolve()
    root.chmod(0o755)  # PostgreSQL's user must reach its data directory
    started: list[Callable[[], None]] = []
    try:
        postgres = Postgres(root / "postgres")
        postgres.start()
        started.append(postgres.stop)
        redis = Redis(root / "redis")
        redis.start()
        started.append(redis.kill)
        secret = new_secret_key()
        env = service_env(root, postgres.url, redis.url, secret) | (extra_env or {})
        migrate = subprocess.run(
            [MINERVA_AI, "server", "migrate"], env=env, capture_output=True, text=True, check=False
        )
        if migrate.returncode != 0:
            raise HarnessError(f"server migrate failed: {migrate.stderr}")
        created = subprocess.run(
            [MINERVA_AI, "server", "org", "create", "acme"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if created.returncode != 0:
            raise HarnessError(f"server org create failed: {created.stderr}")
        members = []
        for index in range(instances):
            name = f"instance-{chr(ord('a') + index)}"
            member = Instance(
                name,
                free_port(),
                env | {"MINERVA_INSTANCE": name},
                root / f"{name}.log",
            )
            member.start()
            started.append(member.stop)
            members.append(member)
        for member in members:
            member.wait_ready()
        cert, key = make_certificate(root)
        nginx = Nginx(root / "nginx", [m.address for m in members], cert, key)
        nginx.start()
        started.append(nginx.stop)
        stack = Stack(
            root, postgres, redis, members, nginx, cert, created.stdout.strip(), secret, env
        )
        yield stack
    finally:
        for stop in reversed(started):
            with contextlib.suppress(Exception):
                stop()
        shutil.rmtree(root, ignore_errors=True)
