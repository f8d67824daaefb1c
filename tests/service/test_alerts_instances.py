"""Two service instances and a breaching rule: one evaluator at a time, so one alert, one
transition row per transition and one webhook-id per transition at a loopback receiver;
kill -9 the evaluating instance mid-breach, and the other takes over and resolves the
alert once when traffic recovers."""

from __future__ import annotations

import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from minerva_ai.core.protocol import API_PREFIX
from minerva_ai.service import admin
from tests.conftest import Servers, server_processes, wait_until
from tests.service.conftest import log_entry, stamp

RULE = {"name": "errors", "metric": "error_rate", "operator": ">", "threshold": 5, "window": "5m"}


def calls(status: str, count: int) -> list[dict[str, Any]]:
    at = stamp(seconds=1)
    return [log_entry("tagger", "call", timestamp=at, status=status) for _ in range(count)]


def rows(database_url: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(statement).fetchall()  # type: ignore[arg-type]


class Receiver:
    """A loopback webhook receiver: the (webhook-id, type) of every delivery it gets."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []
        received = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append((self.headers["webhook-id"], json.loads(body)["type"]))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *values: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def evaluator(database_url: str) -> dict[str, Any] | None:
    jobs = {j["name"]: j for j in admin.job_status(database_url)}
    job = jobs.get("alert-evaluation")
    return job if job and job["held"] and job["last_run_at"] else None


@pytest.mark.slow
def test_one_alert_across_instances_and_a_killed_evaluator(
    database_url: str, servers: Servers, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": servers.redis_url,
        "MINERVA_JOB_LEASE": "2",
        "MINERVA_ALERT_INTERVAL": "0.5",
        "MINERVA_SECRET_KEY": "w1Sw0tKx3Jm0bTqvnF8gq4kUj2yq9p3r5W8cX6dZ7aE=",
        "MINERVA_WEBHOOK_ALLOW": "127.0.0.1",
        "MINERVA_WEBHOOK_INTERVAL": "0.2",
    }
    receiver = Receiver()
    issued = admin.create_organization(database_url, "acme")
    headers = {"Authorization": f"Bearer {issued.token}"}
    with server_processes(tmp_path) as start:
        instances = [start(env=env), start(env=env)]
        for instance in instances:
            instance.wait_serving()
        with httpx.Client(base_url=instances[0].url + API_PREFIX, headers=headers) as http:
            assert http.post("/features", json={"name": "tagger"}).status_code == 201
            hook = {"name": "receiver", "url": receiver.url}
            assert http.post("/webhooks", json=hook).status_code == 201
            # the calls first: no evaluation sees the rule without them (no data)
            assert http.post("/logs", json=calls("error", 10)).status_code == 200
            settings = {"version": 1, "settings": {"monitoring": {"alert_rules": [RULE]}}}
            assert http.put("/features/tagger/settings", json=settings).status_code == 200

            def open_alerts() -> list[dict[str, Any]]:
                return list(http.get("/alerts", params={"state": "open"}).json()["data"])

            [alert] = wait_until(open_alerts, what="the alert to open")
            leader = wait_until(lambda: evaluator(database_url), what="an evaluator")
            killed = next(i for i in instances if i.pid == int(leader["holder"].split(":")[1]))
            survivor = next(i for i in instances if i is not killed)
            killed.process.send_signal(signal.SIGKILL)
            killed.process.wait(30)
        with httpx.Client(base_url=survivor.url + API_PREFIX, headers=headers) as http:
            assert http.post("/logs", json=calls("success", 500)).status_code == 200
            wait_until(
                lambda: http.get(f"/alerts/{alert['id']}").json()["data"]["state"] == "resolved",
                what="the other instance to resolve the alert",
            )
            taken = evaluator(database_url)
            assert taken is not None and taken["epoch"] > leader["epoch"]
            detail = http.get(f"/alerts/{alert['id']}").json()["data"]
    assert [t["event"] for t in detail["transitions"]] == ["breach", "recover"]
    assert rows(database_url, "SELECT count(*) FROM alerts") == [(1,)]
    assert rows(database_url, "SELECT event FROM alert_transitions ORDER BY seq") == [
        ("breach",),
        ("recover",),
    ]
    assert rows(database_url, "SELECT event FROM alert_notifications ORDER BY transition_seq") == [
        ("alert.firing",),
        ("alert.resolved",),
    ]
