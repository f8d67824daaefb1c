"""Helpers of the alerts client and CLI tests: a service whose evaluator the test runs (on
a clock of its own, through ``alerts.evaluate``), traffic that breaches a rule, and alerts
opened, acknowledged and resolved on demand."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from minerva_ai.service import admin, alerts
from minerva_ai.service.app import create_app
from tests.conftest import LiveService, ThreadedServer, service_config
from tests.logs_support import PortServer
from tests.service.conftest import (
    async_pool,
    client,
    create_feature,
    log_entry,
    post_logs,
    put_settings,
)

RULE = {"name": "errors", "metric": "error_rate", "operator": ">", "threshold": 5, "window": "1h"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class Alerting:
    """A live service with evaluation left to the test, and organization acme's token."""

    service: LiveService
    http: httpx.Client
    servers: list[ThreadedServer] = field(default_factory=list)
    clock: datetime = field(default_factory=lambda: datetime.now(UTC))

    def stop(self) -> None:
        """Stop the service gracefully (its WebSockets are closed with 1012)."""
        self.servers[-1].__exit__(None, None, None)

    def start_again(self) -> None:
        """Start the service again where it was (``alerting_service(port=...)``)."""
        port = int(self.service.url.rsplit(":", 1)[1])
        self.servers.append(PortServer(create_app(self.service.config), port))
        self.servers[-1].__enter__()

    @property
    def env(self) -> dict[str, str]:
        return {"MINERVA_URL": self.service.url, "MINERVA_TOKEN": self.service.token}

    def evaluate(self) -> None:
        """One evaluation cycle, each on a clock 20 s after the one before."""
        self.clock += timedelta(seconds=20)

        async def run() -> None:
            async with (
                async_pool(self.service.database_url) as pool,
                pool.connection() as conn,
            ):
                await alerts.evaluate(conn, now=self.clock)

        asyncio.run(run())

    def calls(self, status: str, count: int = 10, feature: str = "tagger") -> None:
        entries = [
            log_entry(feature, f"call {i}", status=status, latency_ms=100.0) for i in range(count)
        ]
        post_logs(self.http, entries)

    def rules(self, *rules: dict[str, Any], feature: str = "tagger") -> None:
        version = self.http.get(f"/features/{feature}").json()["data"]["settings_version"]
        saved = put_settings(
            self.http, feature, version, {"monitoring": {"alert_rules": list(rules)}}
        )
        assert saved.status_code == 200, saved.text

    def open_alerts(self, feature: str | None = None) -> list[dict[str, Any]]:
        params = {"state": "open", **({"feature": feature} if feature else {})}
        found: list[dict[str, Any]] = self.http.get("/alerts", params=params).json()["data"]
        return found

    def open_alert(self, feature: str = "tagger") -> dict[str, Any]:
        """The feature's open alert, evaluating (a breaching rule) until there is one."""
        for _ in range(6):
            found = self.open_alerts(feature)
            if found:
                return found[0]
            self.evaluate()
        raise AssertionError(f"no alert opened on {feature}")

    def cycle(self, feature: str = "tagger") -> None:
        """An alert opened (if none is), acknowledged and resolved: transitions."""
        alert = self.open_alert(feature)
        for verb in ("acknowledge", "resolve"):
            done = self.http.post(f"/alerts/{alert['id']}/{verb}")
            assert done.status_code == 200, done.text

    def transitions(self, after: str = "0") -> list[dict[str, Any]]:
        """Every transition committed after ``after``, oldest first, from the database
        (the truth a follower is held to): ``{"cursor", "event"}``."""
        with psycopg.connect(self.service.database_url, row_factory=dict_row) as conn:
            rows = conn.execute(
                "SELECT seq, event FROM alert_transitions WHERE seq > %s ORDER BY seq",
                (int(after),),
            ).fetchall()
        return [{"cursor": str(r["seq"]), "event": r["event"]} for r in rows]

    def head(self) -> str:
        found = self.transitions()
        return found[-1]["cursor"] if found else "0"


@contextlib.contextmanager
def alerting_service(
    database_url: str, redis_url: str, *, port: int | None = None, wrap: Any = None
) -> Iterator[Alerting]:
    """Organization acme with feature tagger on a service that evaluates nothing by itself;
    on ``port`` when given (to restart it there: ``restart``)."""
    config = service_config(database_url, redis_url, run_jobs=False)
    issued = admin.create_organization(database_url, "acme")
    app = create_app(config)
    server = PortServer(app, port) if port else ThreadedServer(wrap(app) if wrap else app)
    url = server.__enter__()
    found: Alerting | None = None
    try:
        service = LiveService(
            url, database_url, redis_url, str(issued.organization_id), issued.token, config
        )
        with client(service) as http:
            create_feature(http, "tagger")
            found = Alerting(service, http, [server])
            yield found
    finally:
        for running in found.servers if found else [server]:
            running.__exit__(None, None, None)
