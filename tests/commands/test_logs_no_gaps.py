"""No gaps, no duplicates, through the CLI: DESIGN.md's "Real time, without gaps", end to end.

Two service instances run as real processes (`server start` owning a home, a second one
joined with the URLs of `server info`). Two writers ingest numbered entries concurrently,
one through each instance; a transaction holds the organization's commit lock for
seconds so both writers block mid-commit; `minerva-ai logs tail -f -o jsonl` follows
through the second instance, which is killed with SIGKILL and restarted mid-stream. The
tail must print every acknowledged entry exactly once, and exactly what the database
committed, in commit (cursor) order.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from minerva_ai.client import Client
from tests.conftest import ServerProcess, run_cli, wait_until
from tests.logs_support import CliProcess, entry

LONG = 120.0
HELD_FOR = 3.0  # how long the commit lock is held: the scenario, not a synchronisation


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Writer(threading.Thread):
    """Ingests numbered entries through one instance; remembers which were acknowledged."""

    def __init__(self, name: str, url: str, token: str, stop: threading.Event) -> None:
        super().__init__(name=f"writer-{name}", daemon=True)
        self.label = name
        self.url = url
        self.token = token
        self.stop = stop
        self.acked: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        number = 0
        try:
            # Retries ride out the restart of its instance; the ids keep them idempotent.
            with Client(self.url, self.token, retry_for=LONG) as client:
                while not self.stop.is_set():
                    batch = [
                        entry("e2e", f"{self.label}-{number + i}", id=f"{self.label}-{number + i}")
                        for i in range(10)
                    ]
                    totals = client.logs.ingest(batch)
                    assert totals["rejected"] == [], totals
                    self.acked.extend(e["id"] for e in batch)
                    number += len(batch)
                    self.stop.wait(0.02)  # a steady stream, not a flood
        except BaseException as exc:
            self.error = exc

    def count(self) -> int:
        """How many entries were acknowledged; raises what stopped the writer, if anything."""
        if self.error is not None:
            raise AssertionError(f"{self.name} failed: {self.error!r}") from self.error
        return len(self.acked)


@pytest.fixture
def dirs() -> Iterator[tuple[Path, Path, Path]]:
    """Home, config dir and logs dir under /tmp (the embedded PostgreSQL must traverse
    the home's parents, which pytest's temp root does not allow when run as root)."""
    root = Path(tempfile.mkdtemp(prefix="minerva-logs-e2e-")).resolve()
    home, config, logs = root / "home", root / "config", root / "logs"
    for directory in (home, config, logs):
        directory.mkdir()
    try:
        yield home, config, logs
    finally:
        shutil.rmtree(root, ignore_errors=True)


def commit_waiters(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
        ).fetchone()
    return int(row[0]) if row else 0


def committed_after(client: Client, cursor: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    while True:
        page = client.logs.after(cursor, {"feature": "e2e"})
        if not page.items:
            return entries
        entries.extend(page.items)
        cursor = page.next_cursor


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tail_f_prints_every_acknowledged_entry_once_in_commit_order(
    dirs: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    home, config, logs = dirs
    monkeypatch.setenv("MINERVA_HOME", str(home))
    monkeypatch.setenv("MINERVA_CONFIG_DIR", str(config))
    servers: list[ServerProcess] = []
    tail: CliProcess | None = None
    stop = threading.Event()
    writers: list[Writer] = []
    try:
        owner = ServerProcess(logs / "owner.log", (), dict(os.environ))
        servers.append(owner)
        first_url = owner.wait_serving()
        info = json.loads(run_cli("server", "info", "-o", "json").stdout)
        token = run_cli("server", "org", "create", "e2e").stdout.strip()
        joined_env = {
            **os.environ,
            "DATABASE_URL": info["database_url"],
            "REDIS_URL": info["redis_url"],
        }
        port = free_port()

        def start_second(name: str) -> str:
            server = ServerProcess(logs / name, ("--port", str(port)), joined_env)
            servers.append(server)
            return server.wait_serving()

        second_url = start_second("second.log")
        with Client(first_url, token) as client:
            client.features.create("e2e")
            org_id = client.whoami()["organization"]["id"]
            client.logs.ingest([entry("e2e", "marker", id="marker")])
            marker = client.logs.list(limit=1)[0]["cursor"]

        env = {"MINERVA_URL": second_url, "MINERVA_TOKEN": token}
        tail = CliProcess(["logs", "tail", "e2e", "-f", "-n", "1", "-o", "jsonl"], env)
        wait_until(lambda: tail.stdout, LONG, "the tail to print the marker")

        writers = [
            Writer("a", first_url, token, stop),
            Writer("b", second_url, token, stop),
        ]
        for writer in writers:
            writer.start()
        wait_until(lambda: all(w.count() >= 50 for w in writers), LONG, "both writers")

        # Hold the organization's commit lock: both writers block mid-commit.
        with psycopg.connect(info["database_url"]) as holder:
            holder.execute("SELECT pg_advisory_xact_lock(1835626101, hashtext(%s))", (str(org_id),))
            wait_until(
                lambda: [w.count() for w in writers] and commit_waiters(info["database_url"]) >= 2,
                LONG,
                "both writers to block on the lock",
            )
            blocked = [w.count() for w in writers]
            time.sleep(HELD_FOR)
            assert [w.count() for w in writers] == blocked, "a writer committed past the lock"
            holder.rollback()
        wait_until(
            lambda: all(w.count() >= b + 50 for w, b in zip(writers, blocked, strict=True)),
            LONG,
            "the writers to go on after the lock",
        )

        # SIGKILL the instance the tail (and writer b) use, mid-stream; start it again.
        servers[-1].stop(signal.SIGKILL)
        wait_until(lambda: "connection lost" in tail.err(), LONG, "the tail to notice")
        before_restart = writers[1].count()
        assert start_second("second-restarted.log") == second_url
        wait_until(lambda: "reconnected" in tail.err(), LONG, "the tail to reconnect")
        wait_until(lambda: writers[1].count() >= before_restart + 50, LONG, "writer b again")

        stop.set()
        for writer in writers:
            writer.join(LONG)
            assert writer.error is None, f"{writer.name}: {writer.error!r}"
        acked = [i for w in writers for i in w.acked]

        with Client(first_url, token) as client:
            committed = committed_after(client, marker)
        wait_until(lambda: len(tail.stdout) >= 1 + len(committed), LONG, "the tail to catch up")
        assert tail.interrupt() == 130
    finally:
        stop.set()
        if tail is not None:
            tail.kill()
        for server in reversed(servers):
            if server.process.poll() is None:
                server.stop()

    printed = [json.loads(line) for line in tail.stdout]
    assert printed[0]["id"] == "marker"
    printed_ids = [e["id"] for e in printed[1:]]
    assert len(printed_ids) == len(set(printed_ids)), "an entry was printed twice"
    assert set(acked) <= set(printed_ids), "an acknowledged entry was never printed"
    assert printed_ids == [e["id"] for e in committed], "tail differs from what committed"
    cursors = [int(e["cursor"]) for e in printed]
    assert cursors == sorted(cursors)
    for writer in ("a", "b"):  # each writer's entries commit in the order it sent them
        numbers = [int(i.split("-")[1]) for i in printed_ids if i.startswith(f"{writer}-")]
        assert numbers == list(range(len(numbers)))
    assert len(acked) >= 300
