"""``client.logs``: batched idempotent ingest, both reading directions, streamed export.

Everything runs against a live service; where a network fault is needed, an httpx
transport in front of the real one loses an answer, or a gatekeeper cuts a stream.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from minerva_ai.cli.logexport import AtomicFile, write_export
from minerva_ai.client import Client
from minerva_ai.core.errors import AuthError, NotFoundError, UnreachableError, UsageError
from tests.conftest import LiveService
from tests.logs_support import Org, entry, new_org, service_fixture

service = service_fixture()
cutting_service = service_fixture(cut_exports=True)


@pytest.fixture
def org(service: LiveService) -> Org:
    return new_org(service)


@pytest.fixture
def client(org: Org) -> Iterator[Client]:
    with org.client() as c:
        yield c


def messages(entries: list[dict[str, Any]]) -> list[str]:
    return [e["message"] for e in entries]


def test_ingest_batches_and_reports_rejections_by_position_in_the_whole_input(
    client: Client,
) -> None:
    entries: list[Any] = [entry("tagger", f"m{i}") for i in range(5)]
    entries[3]["level"] = "loud"
    entries.insert(4, "not an entry")
    batches: list[dict[str, Any]] = []

    totals = client.logs.ingest(entries, batch_size=2, on_batch=lambda t: batches.append(dict(t)))

    assert (totals["stored"], totals["duplicates"]) == (4, 0)
    assert [(r["index"], r["field"]) for r in totals["rejected"]] == [(3, "level"), (4, None)]
    assert "loud" in totals["rejected"][0]["error"]
    assert "JSON object" in totals["rejected"][1]["error"]
    assert len(batches) == 3  # 6 inputs, 2 per request; the non-entry is refused locally
    assert totals["cursor"] == client.logs.list(limit=1)[0]["cursor"]
    assert messages(client.logs.list()) == ["m4", "m2", "m1", "m0"]


def test_entries_get_an_id_before_the_first_send_so_a_callers_retry_is_idempotent(
    client: Client,
) -> None:
    entries = [entry("tagger", f"m{i}") for i in range(3)] + [entry("mod", "own", id="my-id")]
    first = client.logs.ingest(entries)
    assert all(isinstance(e["id"], str) and e["id"] for e in entries)
    assert entries[3]["id"] == "my-id"

    again = client.logs.ingest(entries)

    assert (first["stored"], first["duplicates"]) == (4, 0)
    assert (again["stored"], again["duplicates"], again["rejected"]) == (0, 4, [])
    assert len(client.logs.list()) == 4


class LosesTheFirstAnswer(httpx.BaseTransport):
    """Delivers the first POST to the service, then loses its answer (a reset)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.posts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST":
            self.posts += 1
            if self.posts == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection reset by peer", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_lost_answer_is_retried_and_nothing_is_stored_twice(org: Org) -> None:
    transport = LosesTheFirstAnswer()
    with Client(org.url, org.token, transport=transport) as client:
        totals = client.logs.ingest([entry("tagger", f"m{i}") for i in range(3)])
        stored = client.logs.list()
    assert transport.posts == 2
    assert (totals["stored"], totals["duplicates"]) == (0, 3)  # the lost answer stored them
    assert sorted(messages(stored)) == ["m0", "m1", "m2"]


def test_a_batch_with_nothing_accepted_is_counted_not_raised(client: Client) -> None:
    entries = [entry("tagger", "ok"), entry("nope", "unknown feature"), entry("tagger", "ok2")]
    entries[2]["timestamp"] = "2026-01-01T00:00:00"  # no offset

    totals = client.logs.ingest(entries, batch_size=1)

    assert totals["stored"] == 1
    assert [(r["index"], r["field"]) for r in totals["rejected"]] == [
        (1, "feature"),
        (2, "timestamp"),
    ]


def test_requests_are_split_by_size_and_an_oversized_entry_is_refused_locally(
    client: Client,
) -> None:
    entries = [entry("tagger", "x" * 150) for _ in range(6)]
    entries.append(entry("tagger", "y" * 5000))
    requests: list[int] = []

    totals = client.logs.ingest(entries, max_bytes=700, on_batch=lambda t: requests.append(1))

    assert totals["stored"] == 6
    assert [r["index"] for r in totals["rejected"]] == [6]
    assert "bytes" in totals["rejected"][0]["error"]
    assert len(requests) >= 3


def test_a_refused_token_raises(org: Org) -> None:
    with Client(org.url, "mnv_" + "x" * 43) as client, pytest.raises(AuthError):
        client.logs.ingest([entry("tagger", "m")])


def test_list_is_newest_first_filtered_and_pages_with_a_cursor(client: Client) -> None:
    levels = ["debug", "info", "warn", "error", "critical"]
    client.logs.ingest(
        [entry("tagger", f"m{i} {levels[i % 5]}", levels[i % 5]) for i in range(10)]
        + [entry("mod", "other feature", "error", source="api")]
    )

    assert messages(client.logs.list({"feature": "tagger"}, limit=3)) == [
        "m9 critical",
        "m8 error",
        "m7 warn",
    ]
    older = client.logs.list(
        {"feature": "tagger"}, limit=2, cursor=client.logs.list(limit=4)[-1]["cursor"]
    )
    assert messages(older) == ["m6 info", "m5 debug"]
    assert messages(client.logs.list({"level": "error+", "feature": "tagger"})) == [
        "m9 critical",
        "m8 error",
        "m4 critical",
        "m3 error",
    ]
    assert messages(client.logs.list({"level": ["warn", "debug"], "q": r"^m[0-4] "})) == [
        "m2 warn",
        "m0 debug",
    ]
    assert messages(client.logs.list({"source": "api"})) == ["other feature"]
    assert len(client.logs.list(limit=0)) == 11


def test_bad_filters_fail_before_or_at_the_service(client: Client) -> None:
    with pytest.raises(UsageError, match="unknown log filter"):
        client.logs.list({"grep": "x"})
    with pytest.raises(NotFoundError):
        client.logs.list({"feature": "missing"})


def test_after_lists_what_committed_since_a_cursor_oldest_first(client: Client) -> None:
    client.logs.ingest([entry("tagger", f"a{i}") for i in range(3)])
    start = client.logs.list(limit=1)[0]["cursor"]
    client.logs.ingest([entry("tagger", f"b{i}") for i in range(5)])

    first = client.logs.after(start, limit=3)
    second = client.logs.after(first.next_cursor, limit=3)
    empty = client.logs.after(second.next_cursor)

    assert messages(first.items) == ["b0", "b1", "b2"]
    assert messages(second.items) == ["b3", "b4"]
    assert (empty.items, empty.next_cursor, empty.gap) == ([], second.next_cursor, None)


def test_after_reports_a_gap_when_retention_dropped_entries(client: Client, org: Org) -> None:
    client.logs.ingest([entry("tagger", "kept")])
    with psycopg.connect(org.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO log_expired (organization_id, max_seq, before) "
            "VALUES (%s, 1, '2026-01-02T00:00:00Z')",
            (org.id,),
        )
    page = client.logs.after("0")
    assert page.gap is not None and page.gap["reason"] == "expired"
    assert messages(page.items) == ["kept"]


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_export_streams_every_matching_entry_oldest_first(client: Client, fmt: str) -> None:
    tricky = 'multi\nline, with "quotes"\r\nand =formula'
    client.logs.ingest(
        [entry("tagger", f"m{i}", "error" if i % 2 else "info") for i in range(5)]
        + [entry("tagger", tricky, "error")]
    )
    sink = io.BytesIO()

    count = write_export(sink, client.logs.export(fmt, {"level": "error"}), fmt)

    text = sink.getvalue().decode()
    if fmt == "json":
        rows = json.loads(text)
    elif fmt == "jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
    else:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert count == len(rows) == 3
    assert [r["message"] for r in rows] == ["m1", "m3", tricky]
    assert [r["cursor"] for r in rows] == [
        e["cursor"] for e in reversed(client.logs.list({"level": "error"}))
    ]


def test_an_export_cut_short_raises_and_leaves_no_file(
    cutting_service: LiveService, tmp_path: Path
) -> None:
    org = new_org(cutting_service)
    out = tmp_path / "logs.jsonl"
    with org.client() as client:
        client.logs.ingest([entry("tagger", f"m{i}") for i in range(20)])
        with pytest.raises(UnreachableError, match="broke off"), AtomicFile(out) as sink:
            write_export(sink, client.logs.export("jsonl"), "jsonl")
    assert list(tmp_path.iterdir()) == []
