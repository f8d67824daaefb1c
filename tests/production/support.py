"""Helpers of the production suite: features, followers run as the CLI through nginx, and a
bounded background load that records what the service acknowledged."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.conftest import WAIT, wait_until
from tests.logs_support import CliProcess
from tests.production.harness import Stack
from tests.service.conftest import all_logs, create_feature, log_entry


def new_feature(stack: Stack) -> str:
    name = f"f-{uuid.uuid4().hex[:10]}"
    with stack.http() as http:
        create_feature(http, name)
    return name


def ingest(url: str, token: str, entries: list[dict[str, Any]], **options: Any) -> httpx.Response:
    """POST /logs at ``url`` (an instance, or nginx: pass ``verify``)."""
    return httpx.post(
        f"{url}/api/platform/ai-management/logs",
        json=entries,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        **options,
    )


def stored_ids(stack: Stack, feature: str) -> list[str]:
    """The ids of the feature's entries in PostgreSQL, in cursor order (through nginx)."""
    with stack.http() as http:
        return [entry["id"] for entry in all_logs(http, feature=feature)]


class Tail:
    """`minerva-ai logs tail FEATURE -f -n 0 -o jsonl` through nginx."""

    def __init__(self, stack: Stack, feature: str, *options: str) -> None:
        self.feature = feature
        self.cli = CliProcess(
            ["logs", "tail", feature, "-f", "-n", "0", "-o", "jsonl", *options],
            stack.client_env(),
        )

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.cli.stdout) if line.strip()]

    def messages(self) -> list[str]:
        return [entry["message"] for entry in self.entries()]

    def wait_for(self, ids: set[str], timeout: float = WAIT) -> list[dict[str, Any]]:
        """Every entry printed, once each of ``ids`` has been."""

        def enough() -> list[dict[str, Any]] | None:
            if not self.cli.running():
                raise AssertionError(f"logs tail exited: {self.cli.err()}")
            entries = self.entries()
            return entries if ids <= {entry["id"] for entry in entries} else None

        return wait_until(enough, timeout, f"{len(ids)} entries on `logs tail` ({self.cli.err()})")

    def stop(self) -> None:
        self.cli.interrupt()


MARKER = "marker: the tail follows"


def started_tails(stack: Stack, feature: str, *transports: str) -> list[Tail]:
    """Tails on ``transports`` (ws, sse, poll, auto), each proven to follow: a marker entry
    ingested after they started reached every one of them."""
    tails = [Tail(stack, feature, "--transport", transport) for transport in transports]

    def all_follow() -> bool:
        ingest(stack.instances[0].url, stack.token, [log_entry(feature, MARKER)])
        return all(tail.entries() for tail in tails)

    try:
        wait_until(all_follow, WAIT, "every tail to follow")
    except BaseException:
        for tail in tails:
            tail.cli.kill()
        raise
    return tails


def assert_exactly_once_in_cursor_order(seen: list[dict[str, Any]], expected_ids: set[str]) -> None:
    """Every expected entry, no entry twice, cursors ascending (markers aside)."""
    ids = [entry["id"] for entry in seen]
    assert len(ids) == len(set(ids)), "an entry was printed twice"
    assert {e["id"] for e in seen if e["message"] != MARKER} == expected_ids
    cursors = [int(entry["cursor"]) for entry in seen]
    assert cursors == sorted(cursors), "entries out of cursor order"


@dataclass
class Load:
    """A bounded load through nginx while a fault happens: batches of entries ingested and
    features listed, one request at a time; what was acknowledged is recorded."""

    stack: Stack
    feature: str
    batch: int = 5
    acknowledged: set[str] = field(default_factory=set)
    statuses: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        wait_until(lambda: len(self.acknowledged) >= self.batch * 3, WAIT, "the load to run")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(WAIT)

    def _run(self) -> None:
        with self.stack.http(timeout=10) as http:
            while not self._stop.is_set():
                entries = [log_entry(self.feature, "load") for _ in range(self.batch)]
                try:
                    answer = http.post("/logs", json=entries)
                    self.statuses.append(answer.status_code)
                    if answer.status_code == 200:
                        self.acknowledged.update(e["id"] for e in entries)
                    listed = http.get("/features", params={"limit": 5})
                    self.statuses.append(listed.status_code)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                time.sleep(0.02)  # a bounded load, not a flood

    def statuses_since(self, mark: int) -> list[int]:
        return self.statuses[mark:]
