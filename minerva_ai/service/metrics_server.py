"""`server start --metrics-bind HOST:PORT`: the service's Prometheus metrics, on their own
address, added up over every worker process.

The metrics are never served on the public port: they count every organization's traffic.
Each worker (and an in-process server) writes its values to files in a private
``PROMETHEUS_MULTIPROC_DIR`` that ``prepare()`` creates before anything imports
prometheus_client; the supervisor reads them all at each scrape.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

from minerva_ai.core.errors import UsageError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DEFAULT_PORT = 9464  # Prometheus' registered default for exporters of this kind


def parse_bind(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (loopback) as ``(host, port)``."""
    raw = value.strip()
    host, sep, port_text = raw.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise UsageError(
            f"--metrics-bind {value!r}: expected HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}"
        )
    host = host.strip("[]") or "127.0.0.1"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UsageError(f"--metrics-bind {value!r}: {host!r} is not an IPv6 address") from None
    return host, int(port_text)


@dataclass
class MetricsServer:
    host: str
    port: int
    directory: str
    _server: Any = None

    @classmethod
    def prepare(cls, host: str, port: int) -> MetricsServer:
        """A fresh directory for the workers' values, in the environment they inherit."""
        directory = tempfile.mkdtemp(prefix="minerva-metrics-")
        os.environ[MULTIPROC_ENV] = directory
        return cls(host, port, directory)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> None:
        """Serve the sum of every process's values (in a thread of the supervisor)."""
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.directory)  # type: ignore[no-untyped-call]
        try:
            self._server, _ = start_http_server(self.port, addr=self.host, registry=registry)
        except OSError as exc:
            raise UsageError(
                f"--metrics-bind: cannot listen on {self.host}:{self.port} ({exc.strerror})"
            ) from None
        self.port = int(self._server.server_address[1])

    def process_died(self, pid: int) -> None:
        """Forget a dead worker's live gauges (open connections, pool, Redis state)."""
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        shutil.rmtree(self.directory, ignore_errors=True)
        if os.environ.get(MULTIPROC_ENV) == self.directory:
            del os.environ[MULTIPROC_ENV]
