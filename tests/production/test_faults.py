"""Faults under a bounded load through nginx: PostgreSQL stopped and started, Redis killed and
restarted, a lock held for long in PostgreSQL."""

from __future__ import annotations

import json
import threading

import httpx
import psycopg
from websockets.sync.client import connect

from minerva_ai.core.protocol import API_PREFIX
from tests.conftest import WAIT, wait_until
from tests.logs_support import CliProcess
from tests.production.harness import Stack
from tests.production.support import (
    Load,
    assert_exactly_once_in_cursor_order,
    ingest,
    new_feature,
    started_tails,
    stored_ids,
)
from tests.service.conftest import log_entry


def _get(stack: Stack, path: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {stack.token}"}
    return httpx.get(stack.url + path, headers=headers, verify=stack.ssl_context(), timeout=WAIT)


def test_postgres_stopped_and_started_under_load(stack: Stack) -> None:
    feature = new_feature(stack)
    pids = [instance.pid for instance in stack.instances]
    with Load(stack, feature) as load:
        stack.postgres.stop()
        first = wait_until(
            lambda: (r := _get(stack, "/api/health/ready")).status_code == 503 and r,
            what="readiness to say PostgreSQL is down",
        )
        # the first answers may carry the server's own "terminating connection due to
        # administrator command" (a pooled connection cut as it stopped); then the refusal
        assert first.json()["reason"].startswith("PostgreSQL is unreachable: "), first.json()
        wait_until(
            lambda: "Connection refused" in _get(stack, "/api/health/ready").json()["reason"],
            what="readiness to give the connection's refusal as its reason",
        )
        assert _get(stack, "/api/health").json()["postgres"] == "down"
        refused = _get(stack, API_PREFIX + "/features")
        assert refused.status_code == 503
        assert refused.json()["error"]["message"] == "the database is unavailable"
        mark = len(load.statuses)
        wait_until(lambda: 503 in load.statuses_since(mark), what="a 503 to the load")
        # A CLI ingest started while PostgreSQL is down retries its batch until it is back.
        entries = [log_entry(feature, f"while down {i}") for i in range(10)]
        cli = CliProcess(["logs", "ingest", "-", "-o", "json"], stack.client_env(), stdin=True)
        cli.write("".join(json.dumps(e) + "\n" for e in entries))
        cli.close_stdin()
        stack.postgres.start()
        assert cli.wait() == 0, cli.err()
        assert json.loads("".join(cli.stdout))["stored"] == 10
        for instance in stack.instances:
            instance.wait_ready()  # recovered by itself
        mark = len(load.statuses)
        wait_until(lambda: 200 in load.statuses_since(mark), what="the load to succeed again")
    assert [instance.pid for instance in stack.instances] == pids  # no restart
    assert not load.errors, load.errors[:3]
    assert set(load.statuses) <= {200, 503}, sorted(set(load.statuses))
    stored = set(stored_ids(stack, feature))
    assert load.acknowledged <= stored  # nothing acknowledged was lost
    assert {e["id"] for e in entries} <= stored


def test_redis_killed_and_restarted_under_load(stack: Stack) -> None:
    feature = new_feature(stack)
    tails = started_tails(stack, feature, "ws")
    expected: set[str] = set()

    def ingest_through_each(label: str) -> None:
        for instance in stack.instances:
            entries = [log_entry(feature, f"{label} via {instance.name}") for _ in range(5)]
            assert ingest(instance.url, stack.token, entries).status_code == 200
            expected.update(e["id"] for e in entries)

    try:
        with Load(stack, new_feature(stack)) as load:  # a feature of its own: not tailed
            stack.redis.kill()
            wait_until(
                lambda: _get(stack, "/api/health").json()["redis"] == "degraded",
                what="health to say Redis is degraded",
            )
            assert _get(stack, "/api/health/ready").status_code == 200
            ingest_through_each("redis down")
            tails[0].wait_for(expected)  # the tail fell back to polling PostgreSQL
            stack.redis.start()
            wait_until(lambda: _get(stack, "/api/health").json()["status"] == "ok", what="ok")
            # Push is back: every instance listens on the new Redis again.
            wait_until(lambda: _subscribers(stack) == len(stack.instances), what="resubscribe")
            ingest_through_each("redis back")
            tails[0].wait_for(expected)
        assert not load.errors, load.errors[:3]
        assert set(load.statuses) == {200}  # ingest and queries went on throughout
        assert load.acknowledged <= set(stored_ids(stack, load.feature))
        assert expected <= set(stored_ids(stack, feature))
        assert_exactly_once_in_cursor_order(tails[0].wait_for(expected), expected)
    finally:
        tails[0].stop()


def _subscribers(stack: Stack) -> int:
    """Redis clients holding a pattern subscription (each instance's bus holds one)."""
    import redis

    with redis.Redis.from_url(stack.redis.url) as client:
        return sum(1 for c in client.client_list() if int(c.get("psub", 0)) > 0)


def test_a_long_held_lock_stalls_neither_health_nor_heartbeats(stack: Stack) -> None:
    url = stack.url.replace("https://", "wss://") + API_PREFIX + "/websocket"
    headers = {"Authorization": f"Bearer {stack.token}"}
    blocked: list[int] = []
    with psycopg.connect(stack.postgres.url) as holder:
        holder.execute("LOCK TABLE features IN ACCESS EXCLUSIVE MODE")  # until rollback
        readers = [
            threading.Thread(
                target=lambda: blocked.append(_get(stack, API_PREFIX + "/features").status_code)
            )
            for _ in range(3)
        ]
        with connect(
            url, additional_headers=headers, ssl=stack.ssl_context(), open_timeout=WAIT
        ) as ws:
            for reader in readers:
                reader.start()
            heartbeats = 0
            while heartbeats < 3:  # MINERVA_WS_HEARTBEAT=1 in the suite
                if json.loads(ws.recv(timeout=5))["type"] == "heartbeat":
                    heartbeats += 1
            assert _get(stack, "/api/health").status_code == 200
            assert _get(stack, "/api/health/ready").status_code == 200
            assert _get(stack, "/api/health/live").status_code == 200
            assert blocked == []  # still waiting for the lock meanwhile
        holder.rollback()
    for reader in readers:
        reader.join(WAIT)
    assert len(blocked) == 3
