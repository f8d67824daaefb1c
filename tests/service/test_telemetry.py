"""The service's Prometheus metrics (`server start --metrics-bind`), scraped from a real
`minerva-ai server start` while real traffic moves them, with one worker and with two."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from minerva_ai.core import profiles as profile_store
from minerva_ai.core.errors import UsageError
from minerva_ai.core.protocol import API_PREFIX
from minerva_ai.service.metrics_server import parse_bind
from tests.conftest import ServerProcess, run_cli, wait_until

FEATURES_ROUTE = f"{API_PREFIX}/features"
LOGS_ROUTE = f"{API_PREFIX}/logs"
STREAM_ROUTE = f"{API_PREFIX}/logs/stream"


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of the metrics endpoint: (name, sorted labels) -> value."""
    response = httpx.get(url, timeout=15)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape_when(url: str, ready: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape until ``ready`` holds (the workers sample some values every second)."""

    def attempt() -> Samples | None:
        samples = scrape(url)
        return samples if ready(samples) else None

    found: Samples = wait_until(attempt, 60, what)
    return found


def metrics_url(server: ServerProcess) -> str:
    found = wait_until(
        lambda: re.search(r"metrics on (http://\S+/metrics)", server.output()), 30, "metrics url"
    )
    return str(found[1])


def entries(feature: str, count: int, tag: str) -> list[dict[str, object]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "timestamp": now,
            "feature": feature,
            "level": "info",
            "message": f"{tag} {i}",
            "id": f"{tag}-{i}",
        }
        for i in range(count)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_metrics_move_with_real_traffic_and_stay_off_the_public_port(
    workers: str, start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server("--workers", workers, "--metrics-bind", "127.0.0.1:0")
    url = server.wait_serving()
    metrics = metrics_url(server)
    token = profile_store.load_config().profiles["local"].token
    headers = {"Authorization": f"Bearer {token}"}
    before = scrape(metrics)

    with httpx.Client(base_url=url + API_PREFIX, headers=headers, timeout=15) as api:
        assert api.post("/features", json={"name": "tagger"}).status_code == 201
        for _ in range(10):
            assert api.get("/features").status_code == 200
        assert api.get("/features/no-such-feature").status_code == 404
        batch = entries("tagger", 7, "a")
        stored = api.post("/logs", json=batch)
        assert stored.json()["data"]["stored"] == 7
        again = api.post("/logs", json=batch[:3])  # retried: duplicates
        assert again.json()["data"]["duplicates"] == 3
        # The public port never serves the metrics: they count every organization's traffic.
        assert httpx.get(url + "/metrics", timeout=15).status_code == 404
        assert api.get("/metrics").status_code == 404

        after = scrape(metrics)
        assert (
            value(
                after,
                "minerva_http_requests_total",
                method="GET",
                route=FEATURES_ROUTE,
                status="200",
            )
            - value(
                before,
                "minerva_http_requests_total",
                method="GET",
                route=FEATURES_ROUTE,
                status="200",
            )
            == 10
        )
        assert (
            value(
                after,
                "minerva_http_requests_total",
                method="GET",
                route=f"{FEATURES_ROUTE}/{{feature}}",
                status="404",
            )
            == 1
        )
        assert (
            value(
                after,
                "minerva_http_request_duration_seconds_count",
                method="POST",
                route=LOGS_ROUTE,
            )
            == 2
        )
        assert (
            value(
                after,
                "minerva_http_request_duration_seconds_bucket",
                method="GET",
                route=FEATURES_ROUTE,
                le="+Inf",
            )
            >= 10
        )
        assert value(after, "minerva_log_entries_ingested_total", outcome="stored") == 7
        assert value(after, "minerva_log_entries_ingested_total", outcome="duplicate") == 3
        assert value(after, "minerva_db_query_duration_seconds_count", query="list_features") >= 10
        assert (
            value(after, "minerva_db_query_duration_seconds_count", query="authenticate_token")
            >= 14
        )

        # Live clients: a WebSocket and an SSE stream open, then closed.
        ws_url = url.replace("http://", "ws://") + f"{API_PREFIX}/websocket"
        with connect(ws_url, additional_headers=headers, open_timeout=15) as ws:
            assert json.loads(ws.recv(timeout=15))["type"] == "authenticated"
            with api.stream("GET", "/logs/stream") as stream:
                assert stream.status_code == 200
                open_now = scrape_when(
                    metrics,
                    lambda s: (
                        value(s, "minerva_websocket_clients") == 1
                        and value(s, "minerva_sse_clients", route=STREAM_ROUTE) == 1
                    ),
                    "one WebSocket and one SSE client to be counted",
                )
                assert value(open_now, "minerva_redis_up") == 1
                assert value(open_now, "minerva_db_pool_connections", state="open") >= 2
        scrape_when(
            metrics,
            lambda s: (
                value(s, "minerva_websocket_clients") == 0
                and value(s, "minerva_sse_clients", route=STREAM_ROUTE) == 0
            ),
            "the closed clients to be uncounted",
        )

    # Background jobs run on one of the workers; their runs and last success are exported.
    jobs = scrape_when(
        metrics,
        lambda s: value(s, "minerva_job_runs_total", job_name="alert-evaluation") >= 1,
        "a run of the alert evaluation job",
    )
    assert value(jobs, "minerva_job_last_success_timestamp_seconds", job_name="log-maintenance") > 0
    assert ("minerva_job_lag_seconds", (("job_name", "alert-evaluation"),)) in jobs


def test_metrics_bind_is_host_and_port() -> None:
    assert parse_bind("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_bind("[::1]:9464") == ("::1", 9464)
    assert parse_bind(":9464") == ("127.0.0.1", 9464)
    for bad in ("9464", "localhost:", "host:99999", "[::zz]:1"):
        with pytest.raises(UsageError, match="--metrics-bind"):
            parse_bind(bad)


def test_the_metrics_port_may_not_be_the_public_port(home: Path) -> None:
    done = run_cli("server", "start", "--port", "8799", "--metrics-bind", "127.0.0.1:8799")
    assert done.returncode == 2
    assert "--metrics-bind" in done.stderr and "public port" in done.stderr


def test_a_taken_metrics_port_is_a_usage_error_naming_the_option(home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("server", "start", "--port", "0", "--metrics-bind", f"127.0.0.1:{port}")
    assert done.returncode == 2
    assert f"--metrics-bind: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_replaced_worker_is_forgotten_by_the_live_gauges(
    home: Path, start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server("--workers", "2", "--metrics-bind", "127.0.0.1:0")
    url = server.wait_serving()
    metrics = metrics_url(server)
    started = time.monotonic()
    token = profile_store.load_config().profiles["local"].token
    workers = wait_until(
        lambda: json.loads((home / "run.json").read_text())["worker_pids"], 30, "worker pids"
    )
    ws_url = url.replace("http://", "ws://") + f"{API_PREFIX}/websocket"
    headers = {"Authorization": f"Bearer {token}"}
    with connect(ws_url, additional_headers=headers, open_timeout=15) as ws:
        assert json.loads(ws.recv(timeout=15))["type"] == "authenticated"
        scrape_when(metrics, lambda s: value(s, "minerva_websocket_clients") == 1, "one client")
        # A worker that dies in its first 10 s stops the service (a crash loop): wait that out.
        wait_until(lambda: time.monotonic() - started > 11, 30, "the workers to be 11 s old")
        for pid in workers:
            os.kill(pid, signal.SIGKILL)  # one of them held the WebSocket, and its gauge file
        replaced = wait_until(
            lambda: (
                (pids := json.loads((home / "run.json").read_text())["worker_pids"])
                and not set(pids) & set(workers)
                and pids
            ),
            60,
            "both workers to be replaced",
        )
        assert len(replaced) == 2
        scrape_when(
            metrics,
            lambda s: (
                value(s, "minerva_websocket_clients") == 0 and value(s, "minerva_redis_up") == 1
            ),
            "the dead worker's client to be forgotten",
        )
