"""`minerva-ai load-test` against a live service: report, thresholds, workers, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from minerva_ai.core.protocol import API_PREFIX
from minerva_ai.service import admin
from tests.commands.conftest import MINERVA_AI, Run, invoke
from tests.commands.test_main import closed_port
from tests.conftest import REPO, LiveService
from tests.loadtest.test_engine import LoopbackServer

DEMO = REPO / "examples" / "scenarios" / "demo.yaml"
JOURNEY = REPO / "examples" / "scenarios" / "journey.yaml"
PERCENTILES = {"min", "avg", "p50", "p90", "p95", "p99", "max"}


def test_fifty_users_run_the_default_scenario_without_errors(run: Run, tmp_path: Path) -> None:
    out, junit = tmp_path / "report.json", tmp_path / "junit.xml"
    thresholds = [
        "http_req_failed:rate<0.01",
        "http_req_duration{step:list-features}:p(95)<10000",
        "ws_connecting:p(95)<10000",
    ]
    result = run(
        "load-test",
        "--users", "50",
        "--duration", "3s",
        "--think-time", "0.2s-0.5s",
        "--out", str(out),
        "--junit", str(junit),
        *(arg for expr in thresholds for arg in ("--threshold", expr)),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr + result.stdout
    assert "http_reqs" in result.stdout and "pass  http_req_failed:rate<0.01" in result.stdout
    assert "model .............. closed, 50 users; scenario default (sequence)" in result.stdout
    report = json.loads(out.read_text())
    assert 2.5 <= report["duration_s"] <= 8
    assert report["http_reqs"]["count"] >= 50
    assert report["http_reqs"]["rate"] > 0
    assert report["http_req_failed"] == {"count": 0, "rate": 0.0}
    assert report["errors"] == {"status": 0, "timeout": 0, "connection": 0}
    assert set(report["http_req_duration"]) == PERCENTILES
    assert 0 < report["http_req_duration"]["p50"] <= report["http_req_duration"]["p99"]
    assert report["ws_sessions"]["ok"] > 0 and report["ws_sessions"]["failed"] == 0
    assert report["ws_connecting"]["p95"] > 0
    assert set(report["steps"]) == {"list-features", "websocket"}
    listing = report["steps"]["list-features"]
    assert listing["http_reqs"]["count"] == report["http_reqs"]["count"]
    # Each iteration lists, then opens a WebSocket: a user's last one may be cut short.
    sessions = report["ws_sessions"]["ok"] + report["ws_sessions"]["failed"]
    assert 0 <= listing["http_reqs"]["count"] - sessions <= 50
    assert report["model"]["flow"] == "sequence"
    assert report["steps"]["websocket"]["ws_sessions"] == report["ws_sessions"]
    assert report["model"]["type"] == "closed" and report["model"]["users"] == 50
    assert set(report["generator"]) >= {"cpu_percent", "limited"}
    assert [(c["expr"], c["ok"]) for c in report["thresholds"]] == [(t, True) for t in thresholds]
    assert report["thresholds"][0]["observed"] == 0.0
    suite = ET.parse(junit).getroot()  # noqa: S314 - our own file
    assert (suite.tag, suite.get("tests"), suite.get("failures")) == ("testsuite", "3", "0")
    assert [case.get("name") for case in suite.iter("testcase")] == thresholds


def test_the_demo_scenario_measures_websocket_messages(run: Run, live_service: LiveService) -> None:
    admin.load_demo(live_service.database_url, uuid.UUID(live_service.org_id), REPO / "examples")
    result = run(
        "load-test", "--scenario", str(DEMO), "--users", "10", "--duration", "3s",
        "--think-time", "0.05s-0.1s", "-o", "json",
        "--threshold", "ws_msg_delay:p(95)<10000",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["http_req_failed"]["count"] == 0, report["errors"]
    assert report["steps"]["ingest"]["http_reqs"]["count"] > 0
    assert report["steps"]["feature"]["http_reqs"]["count"] > 0
    assert report["ws_sessions"]["ok"] > 0 and report["ws_sessions"]["failed"] == 0
    assert report["ws_msgs_received"] > 0
    assert 0 < report["ws_msg_delay"]["p95"] < 10000
    assert report["thresholds"] == [
        {"expr": "ws_msg_delay:p(95)<10000", "ok": True, "observed": report["ws_msg_delay"]["p95"]}
    ]


def test_the_journey_scenario_runs_its_steps_in_order(run: Run, live_service: LiveService) -> None:
    """Under the open model each arrival walks the whole journey: list, feature, settings,
    recent errors, then a WebSocket that follows the feature's logs."""
    admin.load_demo(live_service.database_url, uuid.UUID(live_service.org_id), REPO / "examples")
    result = run(
        "load-test", "--scenario", str(JOURNEY), "--rate", "4/s", "--duration", "2s",
        "-o", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["model"]["flow"] == "sequence" and report["model"]["type"] == "open"
    assert report["http_req_failed"]["count"] == 0, report["errors"]
    counts = [
        report["steps"][name]["http_reqs"]["count"]
        for name in ("list", "feature", "settings", "recent-errors")
    ]
    # 8 arrivals; each reaches a step only after the ones before it.
    assert counts[0] == 8 and counts == sorted(counts, reverse=True) and counts[-1] > 0
    sessions = report["steps"]["follow"]["ws_sessions"]
    assert sessions["failed"] == 0 and 0 < sessions["ok"] <= counts[-1]


def test_a_failed_threshold_exits_1_and_is_marked(run: Run, tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    result = run(
        "load-test", "--get", "/api/health", "--users", "2", "--duration", "1s",
        "--think-time", "0", "--junit", str(junit),
        "--threshold", "http_reqs:count<1", "--threshold", "http_req_failed:rate<0.01",
    )  # fmt: skip
    assert result.exit_code == 1, result.stderr
    assert "FAIL  http_reqs:count<1" in result.stdout
    assert "pass  http_req_failed:rate<0.01" in result.stdout
    assert "1 threshold(s) failed: http_reqs:count<1" in result.stderr
    cases = ET.parse(junit).getroot().iter("testcase")  # noqa: S314 - our own file
    failures = [case.find("failure") for case in cases]
    assert failures[0] is not None and failures[1] is None


def test_two_workers_merge_counts_exactly(run: Run) -> None:
    result = run(
        "load-test", "--get", f"{API_PREFIX}/features", "--users", "4", "--workers", "2",
        "--max-requests", "120", "--duration", "30s", "--think-time", "0", "-o", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    generator = report["generator"]
    assert generator["workers"] == 2
    assert sum(generator["worker_requests"]) == report["http_reqs"]["count"] == 120
    assert generator["worker_requests"] == [60, 60]
    assert report["steps"][f"GET {API_PREFIX}/features"]["http_reqs"]["count"] == 120
    assert report["http_req_failed"]["count"] == 0
    assert report["duration_s"] < 30


def test_workers_report_progress_together(run: Run) -> None:
    """With -v off a terminal, the progress line comes every second or so: the users of both
    workers, summed."""
    result = run(
        "-v", "load-test", "--get", f"{API_PREFIX}/features", "--users", "4", "--workers", "2",
        "--duration", "4s", "--think-time", "0.05s", "-o", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "req/s" in line]
    assert lines, result.stderr
    # Every worker's users, summed (a line taken as the run winds down may show fewer).
    assert any(re.search(r"\busers 4 ", line) for line in lines), lines
    assert all(re.search(r"p95 [\d.,]+ ms  errors 0$", line) for line in lines), lines


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--users", "0"], "--users"),
        (["--rate", "200/fortnight"], "invalid rate '200/fortnight'"),
        (["--duration", "10 parsecs"], "invalid duration"),
        (["--ramp-up", "5x"], "invalid duration"),
        (["--threshold", "http_req_duration:p95<500"], "threshold := METRIC"),
        (["--think-time", "3s-1s"], "ends before it starts"),
        (["--get", "api/health"], "relative to the service root"),
        (["--rate", "10/s", "--ramp-up", "5s"], "--ramp-up applies to --users"),
        (["--users", "10", "--rate", "5/s"], "--users (closed model) and --rate (open model)"),
        (["--max-in-flight", "5"], "--max-in-flight applies to --rate"),
        (["--rate", "5/s", "--max-in-flight", "0"], "--max-in-flight"),
        (["--rate", "5/s", "--max-in-flight", "1", "--workers", "2"], "at least one per worker"),
        (["--scenario", "BAD", "--get", "/x"], "alternatives"),
        (
            ["--get", "/x", "--threshold", "http_req_duration{step:nope}:p(95)<1"],
            "no step has the tag step:nope (step is one of: GET /x)",
        ),
        (["--threshold", "ws_connecting{kind:read}:p(95)<1"], "no step has a 'kind' tag"),
        (["--scenario", "BAD"], "bad.yaml:4: unknown field 'grpc' in step 2"),
        (["--scenario", "MISSING"], "cannot read scenario"),
        (["-o", "csv"], "load-test prints table, json"),
    ],
)
def test_bad_input_exits_2_before_any_request(
    args: list[str], problem: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - http: {path: /x}\n  - name: b\n    grpc: {}\n")
    names = {"BAD": str(bad), "MISSING": str(tmp_path / "missing.yaml")}
    args = [names.get(arg, arg) for arg in args]
    # A closed port: a request would be exit 4, so exit 2 proves none was attempted.
    result = invoke(["load-test", *args], MINERVA_URL=f"http://127.0.0.1:{closed_port()}")
    assert result.exit_code == 2, result.stderr + result.stdout
    assert problem in result.stderr


def test_an_unreachable_target_exits_4() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = invoke(["load-test", "--get", "/x", "--duration", "1s"], MINERVA_URL=url)
    assert result.exit_code == 4
    assert "cannot reach" in result.stderr


def test_a_tls_failure_at_start_exits_4_naming_it() -> None:
    """https:// to a server that answers in plain text: the handshake fails before any
    request, and the message says it is TLS (no retrying a problem that will not pass)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def answer_in_plain_text() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return  # the listener was closed: the test is over
                with conn:
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        threading.Thread(target=answer_in_plain_text, daemon=True).start()
        result = invoke(
            ["load-test", "--get", "/x", "--duration", "1s"],
            MINERVA_URL=f"https://127.0.0.1:{port}",
        )
    assert result.exit_code == 4, result.stderr
    assert "cannot reach https://127.0.0.1" in result.stderr and "(TLS: " in result.stderr


def test_the_first_error_of_each_kind_is_shown(run: Run) -> None:
    """A token the service does not know: every request fails with 401, and the summary
    says so in the service's words instead of only counting."""
    result = run(
        "load-test", "--get", f"{API_PREFIX}/features", "--users", "1", "--max-requests", "3",
        "--duration", "10s", "--think-time", "0", MINERVA_TOKEN="mnv_" + "x" * 43,
    )  # fmt: skip
    assert result.exit_code == 1, result.stderr
    assert f"  first status error: GET {API_PREFIX}/features answered 401: " in result.stdout
    assert "http_req_failed .... 3  (100.00%)" in result.stdout
    assert "x" * 43 not in result.stdout + result.stderr


@contextmanager
def threaded_loopback(
    on_request: Callable[[LoopbackServer], Awaitable[None]],
) -> Iterator[tuple[str, LoopbackServer]]:
    """A loopback HTTP server in a thread of its own (the CLI runs its own event loop):
    its URL, and the server to read ``heads`` from once the block is left."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    loopback = LoopbackServer(on_request)
    url = asyncio.run_coroutine_threadsafe(loopback.__aenter__(), loop).result(10)
    try:
        yield url, loopback
    finally:
        loop.call_soon_threadsafe(loopback.stop)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextmanager
def vanishing_server(after: int) -> Iterator[str]:
    """A loopback HTTP server that goes away after ``after`` requests (listener and
    connections closed)."""

    async def vanish(server: LoopbackServer) -> None:
        if server.requests == after:
            server.stop()

    with threaded_loopback(vanish) as (url, _server):
        yield url


async def answer(_server: LoopbackServer) -> None:
    return None


@pytest.mark.parametrize(
    ("typed", "request_line"),
    [
        (
            f"{API_PREFIX}/features?search=photo tagging",
            f"GET {API_PREFIX}/features?search=photo%20tagging HTTP/1.1",
        ),
        (
            "/caf\u00e9/\u00fc?q=50%&r=%41&s=a+b#top",
            "GET /caf%C3%A9/%C3%BC?q=50%25&r=%41&s=a+b HTTP/1.1",
        ),
    ],
)
def test_get_sends_the_path_as_typed_percent_encoded(typed: str, request_line: str) -> None:
    with threaded_loopback(answer) as (url, server):
        result = invoke(
            ["load-test", "--get", typed, "--users", "1", "--max-requests", "2",
             "--think-time", "0", "-o", "json"],
            MINERVA_URL=url,
        )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert [head.split(b"\r\n")[0].decode() for head in server.heads] == [request_line] * 2
    assert list(json.loads(result.stdout)["steps"]) == [f"GET {typed}"]


def test_a_search_with_a_space_works_against_the_service(run: Run) -> None:
    """The issue's example: every request used to fail, the space splitting the line."""
    result = run(
        "load-test", "--get", f"{API_PREFIX}/features?search=photo tagging", "--users", "1",
        "--max-requests", "5", "--think-time", "0", "-o", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["http_reqs"]["count"] == 5
    assert report["http_req_failed"]["count"] == 0, report["error_samples"]


@pytest.mark.parametrize(
    ("args", "scenario", "problem"),
    [
        (
            ["--get", "/x\r\nX-Injected: 1"],
            None,
            "Invalid value for '--get': '/x\\r\\nX-Injected: 1': it holds the control "
            "character U+000D, which has no place in a request line (write %0D if you mean",
        ),
        (["--get", "/x\x00"], None, "'--get': '/x\\x00': it holds the control character U+0000"),
        (["--get", "/ok", "--get", "/x?q=a\nb"], None, "'--get': '/x?q=a\\nb': it holds the"),
        (
            ["--scenario", "SCENARIO"],
            'steps:\n  - name: a\n    http: {path: /a}\n  - http: {path: "/b\\r\\nX: 1"}\n',
            "s.yaml:4: path '/b\\r\\nX: 1': it holds the control character U+000D",
        ),
        (
            ["--scenario", "SCENARIO"],
            'variables:\n  id: "7\\0"\nsteps:\n  - {name: a, http: {path: "/a/${id}"}}\n',
            "s.yaml:2: variable 'id' is in the path of step 'a': it holds the control character "
            "U+0000",
        ),
    ],
)
def test_a_control_character_in_a_target_exits_2_before_any_request(
    args: list[str], scenario: str | None, problem: str, tmp_path: Path
) -> None:
    file = tmp_path / "s.yaml"
    if scenario is not None:
        file.write_text(scenario)
    args = [str(file) if arg == "SCENARIO" else arg for arg in args]
    with threaded_loopback(answer) as (url, server):
        result = invoke(["load-test", *args, "--max-requests", "1"], MINERVA_URL=url)
    assert result.exit_code == 2, result.stderr + result.stdout
    assert problem in result.stderr
    assert server.heads == []


def test_a_target_lost_mid_run_exits_5_with_the_partial_report() -> None:
    with vanishing_server(after=20) as url:
        result = invoke(
            ["load-test", "--get", "/x", "--users", "2", "--think-time", "0",
             "--duration", "60s", "-o", "json"],
            MINERVA_URL=url,
        )  # fmt: skip
    assert result.exit_code == 5, result.stderr
    assert "the target was lost mid-run: no connection for 5 s" in result.stderr
    report = json.loads(result.stdout)
    assert report["lost"].startswith("no connection for 5 s")
    assert report["http_reqs"]["count"] >= 20
    assert report["errors"]["connection"] > 0
    assert report["duration_s"] < 30


def test_ctrl_c_prints_the_partial_report_and_exits_130(live_service: LiveService) -> None:
    process = subprocess.Popen(
        [MINERVA_AI, "-v", "load-test", "--get", "/api/health", "--users", "2",
         "--think-time", "0.01s", "--duration", "60s", "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MINERVA_URL": live_service.url, "MINERVA_TOKEN": live_service.token},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert process.stderr is not None
        for line in process.stderr:  # the first progress line: the run is under way
            if "req/s" in line:
                break
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    report = json.loads(stdout)
    assert report["interrupted"] is True
    assert report["http_reqs"]["count"] > 0
    assert report["duration_s"] < 30


def test_the_open_model_sends_every_scheduled_arrival(run: Run) -> None:
    """40/s for 1 s schedules exactly 40 arrivals (due at 0, 25 ms, ... 975 ms)."""
    result = run(
        "load-test", "--get", "/api/health", "--rate", "40/s", "--duration", "1s", "-o", "json",
        "--threshold", "http_req_duration:p(99)<10000",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"]["type"] == "open" and report["model"]["rate"] == 40
    assert report["http_reqs"]["count"] == 40
    assert report["http_req_failed"]["count"] == 0
    assert report["thresholds"][0]["ok"] is True


def test_the_open_model_summary_names_its_rate_and_cap(run: Run) -> None:
    result = run(
        "load-test", "--get", "/api/health", "--rate", "20/s", "--max-in-flight", "3",
        "--duration", "1s",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (
        "model .............. open, 20 arrivals/s, at most 3 in flight; scenario get (weighted)"
        in result.stdout
    )
    assert "http_reqs .......... 20  (" in result.stdout


def test_latencies_have_sub_millisecond_resolution() -> None:
    """uvloop's loop.time() ticks in whole milliseconds; the generator's clock must not."""
    with vanishing_server(after=10**9) as url:
        result = invoke(
            ["load-test", "--get", "/x", "--users", "2", "--think-time", "0",
             "--max-requests", "200", "-o", "json"],
            MINERVA_URL=url,
        )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    durations = json.loads(result.stdout)["http_req_duration"]
    measured = [durations[key] for key in ("min", "p50", "p90", "p95", "p99", "max")]
    assert any(value % 1 not in (0.0, 0.001) for value in measured), durations
