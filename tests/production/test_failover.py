"""One instance killed with -9 behind nginx: no failed request, nothing acknowledged lost
or repeated, followers reconnected; no instance at all: exit 4. And load through nginx."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.logs_support import CliProcess
from tests.production.harness import Stack
from tests.production.support import (
    assert_exactly_once_in_cursor_order,
    new_feature,
    started_tails,
    stored_ids,
)
from tests.service.conftest import log_entry

FEATURES = "GET /api/platform/ai-management/features"


def _upstreams_since(log: Path, mark: int, request: str) -> list[str]:
    """The upstream field of each ``request`` nginx logged after line ``mark``."""
    lines = log.read_text().splitlines()[mark:]
    return [re.search(r"upstream=(.*?) status=", line)[1] for line in lines if request in line]  # type: ignore[index]


def test_kill_9_mid_tail_and_mid_ingest_loses_and_repeats_nothing(stack: Stack) -> None:
    feature = new_feature(stack)
    victim, survivor = stack.instances[1], stack.instances[0]
    tails = started_tails(stack, feature, "ws", "sse")  # least_conn: one on each instance
    ingest = CliProcess(["logs", "ingest", "-", "-o", "json"], stack.client_env(), stdin=True)
    sent: set[str] = set()

    def send(count: int) -> None:
        for _ in range(count):
            entry = log_entry(feature, "ingested")
            sent.add(entry["id"])
            ingest.write(json.dumps(entry) + "\n")

    try:
        send(300)
        first = set(sent)
        for tail in tails:
            tail.wait_for(first)  # the ingest and both tails run
        mark = len(stack.nginx.access_log.read_text().splitlines())
        send(300)  # an unsent batch, in flight or buffered when the instance dies
        victim.kill()
        with stack.http() as http:
            answers = [http.get("/features") for _ in range(20)]
        send(300)
        ingest.close_stdin()
        assert ingest.wait() == 0, ingest.err()
        result = json.loads("".join(ingest.stdout))
        assert (result["entries"], result["rejected"]) == (900, [])
        assert result["stored"] + result["duplicates"] == 900
        # No read failed: nginx passed each to the survivor.
        assert [a.status_code for a in answers] == [200] * 20
        assert {a.headers["X-Minerva-Instance"] for a in answers} == {survivor.name}
        # nginx stopped trying the dead instance: at most max_fails=2 attempts reached it.
        tried = _upstreams_since(stack.nginx.access_log, mark, FEATURES)
        assert sum(victim.address in upstream for upstream in tried) <= 2, tried
        assert tried[-10:] == [survivor.address] * 10, tried
        # Everything acknowledged is stored once, and every follower printed it once, in order.
        stored = [i for i in stored_ids(stack, feature) if i in sent]
        assert len(stored) == len(set(stored)) == len(sent)
        for tail in tails:
            assert_exactly_once_in_cursor_order(tail.wait_for(sent), sent)
        assert any("reconnected" in tail.cli.err() for tail in tails), [
            tail.cli.err() for tail in tails
        ]
    finally:
        ingest.kill()
        for tail in tails:
            tail.stop()


def test_with_no_instance_answering_the_cli_exits_4(stack: Stack) -> None:
    for instance in stack.instances:
        instance.kill()
    listed = stack.run_cli("features", "list")
    assert listed.returncode == 4, listed.stderr
    assert "HTTP 502 from a proxy: no instance answered" in listed.stderr
    assert "Traceback" not in listed.stderr


def test_load_test_through_nginx_fails_no_request(stack: Stack) -> None:
    run = stack.run_cli(
        "load-test", "--users", "8", "--duration", "5s", "--think-time", "0", "-o", "json"
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["http_reqs"]["count"] > 0 and report["ws_sessions"]["ok"] > 0
    assert report["http_req_failed"]["count"] == 0, report["error_samples"]
    assert report["ws_sessions"]["failed"] == 0
