"""POST /logs: JSON and NDJSON, idempotent retries, partial batches, every bad input of
the logs issue, the body limit, durability and cursor order within a request."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from minerva_ai.service.app import create_app
from minerva_ai.service.logs import MAX_ROWS_GIVEN
from tests.conftest import Servers, service_config
from tests.service.conftest import (
    LOG_ENTRY_FIELDS,
    Org,
    all_logs,
    assert_error,
    create_feature,
    log_entry,
    post_logs,
    serving,
    stamp,
)

PLUS_TWO = timezone(timedelta(hours=2))


def stored_ids(http: httpx.Client) -> list[str]:
    return [e["id"] for e in all_logs(http)]


def test_a_json_array_is_stored_with_every_field(http: httpx.Client) -> None:
    full = log_entry(
        "tagger",
        "tagged 3 photos",
        timestamp=(datetime.now(UTC) - timedelta(seconds=90)).astimezone(PLUS_TWO).isoformat(),
        level="WARNING",
        request_id="req-1",
        model="gpt-4o-mini",
        latency_ms=12.5,
        tokens_in=120,
        tokens_out=30,
        cost=0.0042,
        status="success",
        attributes={"user": "u1", "nested": {"n": [1, 2]}},
    )
    minimal = {"timestamp": stamp(), "feature": "summary", "level": "debug", "message": ""}
    result = post_logs(http, [full, minimal])
    assert result["stored"] == 2 and result["duplicates"] == 0 and result["rejected"] == []

    newest_first = http.get("/logs").json()
    assert newest_first["count"] == 2 and newest_first["next_cursor"] is None
    second, first = newest_first["data"]
    assert result["cursor"] == second["cursor"]
    assert set(first) == set(second) == set(LOG_ENTRY_FIELDS)
    local = datetime.fromisoformat(full["timestamp"])
    assert first == {
        **{k: v for k, v in full.items() if k != "timestamp"},
        "timestamp": stamp(local.astimezone(UTC)),  # stored and shown in UTC with Z
        "level": "warn",  # the alias, normalised
        "committed_at": first["committed_at"],
        "cursor": first["cursor"],
    }
    assert first["committed_at"].endswith("Z")
    assert int(first["cursor"]) < int(second["cursor"])
    # optional fields absent: null; a missing id is generated; source defaults to ""
    assert second["source"] == "" and second["feature"] == "summary"
    assert uuid.UUID(second["id"])
    for name in ("request_id", "model", "latency_ms", "tokens_in", "cost", "status"):
        assert second[name] is None


def test_ndjson_is_accepted_with_blank_lines_and_crlf(http: httpx.Client) -> None:
    entries = [log_entry("tagger", f"line {n}") for n in range(3)]
    body = b"\r\n".join(orjson.dumps(e) for e in entries[:2]) + b"\r\n\r\n"
    body += orjson.dumps(entries[2])  # no final newline
    response = http.post(
        "/logs", content=body, headers={"Content-Type": "application/x-ndjson; charset=utf-8"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["stored"] == 3
    assert stored_ids(http) == [e["id"] for e in entries]


def test_a_feature_is_named_or_given_by_id(http: httpx.Client) -> None:
    tagger = http.get("/features/tagger").json()["data"]
    post_logs(http, [log_entry(tagger["id"], "by id"), log_entry("tagger", "by name")])
    assert [e["feature"] for e in all_logs(http)] == ["tagger", "tagger"]
    assert len(all_logs(http, feature=tagger["id"])) == 2


@pytest.mark.parametrize(
    ("given", "stored"),
    [("WARNING", "warn"), ("Err", "error"), ("FATAL", "critical"), ("information", "info")],
)
def test_level_aliases_are_accepted_case_insensitively(
    http: httpx.Client, given: str, stored: str
) -> None:
    post_logs(http, [log_entry("tagger", "x", level=given)])
    assert [e["level"] for e in all_logs(http)] == [stored]


def test_a_retried_batch_stores_nothing_twice(http: httpx.Client) -> None:
    batch = [log_entry("tagger", f"entry {n}") for n in range(5)]
    first = post_logs(http, batch)
    assert (first["stored"], first["duplicates"]) == (5, 0)
    listed = all_logs(http)
    for _ in range(2):  # as a client retrying after a lost answer would
        again = post_logs(http, batch)
        assert again == {"stored": 0, "duplicates": 5, "rejected": [], "cursor": None}
    again = post_logs(http, batch, ndjson=True)
    assert (again["stored"], again["duplicates"]) == (0, 5)
    assert all_logs(http) == listed  # nothing stored twice, nothing changed


def test_a_retry_mixing_new_and_stored_entries_stores_only_the_new(http: httpx.Client) -> None:
    old = [log_entry("tagger", f"old {n}") for n in range(3)]
    post_logs(http, old)
    new = [log_entry("tagger", f"new {n}") for n in range(2)]
    same_twice = log_entry("tagger", "twice in one batch")
    result = post_logs(http, [new[0], *old, same_twice, new[1], same_twice])
    assert (result["stored"], result["duplicates"]) == (3, 4)
    assert stored_ids(http) == [e["id"] for e in (*old, new[0], same_twice, new[1])]


def test_the_same_id_at_another_time_is_another_entry(http: httpx.Client) -> None:
    entry = log_entry("tagger", "tick", timestamp=stamp(seconds=5))
    later = {**entry, "timestamp": stamp(seconds=1)}
    post_logs(http, [entry])
    assert post_logs(http, [later])["stored"] == 1
    assert [e["timestamp"] for e in all_logs(http)] == [entry["timestamp"], later["timestamp"]]


def test_a_partial_batch_stores_the_good_and_reports_the_bad_by_index(
    http: httpx.Client,
) -> None:
    good = [log_entry("tagger", f"good {n}") for n in range(3)]
    batch = [good[0], log_entry("tagger", "x", level="loud"), good[1], "not an object", good[2]]
    result = post_logs(http, batch)
    assert result["stored"] == 3 and result["duplicates"] == 0
    assert [(r["index"], r["field"]) for r in result["rejected"]] == [(1, "level"), (3, None)]
    assert "loud" in result["rejected"][0]["error"]
    assert "object" in result["rejected"][1]["error"]
    assert "line" not in result["rejected"][0]  # lines are NDJSON's
    assert stored_ids(http) == [e["id"] for e in good]
    assert result["cursor"] == all_logs(http)[-1]["cursor"]


def test_a_broken_ndjson_line_spoils_only_itself(http: httpx.Client) -> None:
    good = [log_entry("tagger", f"good {n}") for n in range(4)]
    lines = [
        orjson.dumps(good[0]),
        b'{"timestamp": "2026-01-01T00:00:00Z", "feature": "tagger", "message": "cut',
        orjson.dumps(good[1]),
        b"",  # a blank line is skipped: not an entry, but it still counts as a line
        b"[1, 2",
        orjson.dumps(good[2]),
        orjson.dumps({**good[3], "level": "shout"}),
        orjson.dumps(log_entry("tagger", "last")),
    ]
    response = http.post(
        "/logs", content=b"\n".join(lines), headers={"Content-Type": "application/x-ndjson"}
    )
    assert response.status_code == 200, response.text
    result = response.json()["data"]
    assert result["stored"] == 4
    rejected = result["rejected"]
    assert [(r["index"], r["line"], r["field"]) for r in rejected] == [
        (1, 2, None),
        (3, 5, None),
        (5, 7, "level"),
    ]
    assert "line 2 is not valid JSON" in rejected[0]["error"]
    assert "line 5 is not valid JSON" in rejected[1]["error"]
    assert [e["message"] for e in all_logs(http)] == ["good 0", "good 1", "good 2", "last"]


def test_a_duplicate_an_expired_entry_and_good_ones_in_one_batch(http: httpx.Client) -> None:
    stored = log_entry("tagger", "stored before")
    post_logs(http, [stored])
    expired = log_entry("tagger", "too old", timestamp=stamp(days=40))
    fresh = [log_entry("tagger", f"fresh {n}") for n in range(2)]
    result = post_logs(http, [fresh[0], stored, expired, fresh[1]])
    assert (result["stored"], result["duplicates"]) == (2, 1)
    assert [(r["index"], r["field"]) for r in result["rejected"]] == [(2, "timestamp")]
    assert "older than the retention window (30 days)" in result["rejected"][0]["error"]
    assert stored_ids(http) == [stored["id"], fresh[0]["id"], fresh[1]["id"]]
    # and retried as a whole: nothing more is stored, the old entry is refused again
    again = post_logs(http, [fresh[0], stored, expired, fresh[1]])
    assert (again["stored"], again["duplicates"], len(again["rejected"])) == (0, 3, 1)
    assert len(all_logs(http)) == 3


def _without(name: str) -> Any:
    return lambda e: {k: v for k, v in e.items() if k != name}


def _with(**fields: Any) -> Any:
    return lambda e: {**e, **fields}


# (change to a good entry, the field named, words the reason must contain)
BAD_ENTRIES = {
    "unknown level": (_with(level="verbose"), "level", "debug, info, warn, error, critical"),
    "level not a string": (_with(level=3), "level", "level must be a string"),
    "no level": (_without("level"), "level", "level is required"),
    "unknown feature": (_with(feature="ghost"), "feature", "unknown feature 'ghost'"),
    "no feature": (_without("feature"), "feature", "feature is required"),
    "no offset": (_with(timestamp="2026-01-01T10:00:00"), "timestamp", "has no offset"),
    "a date only": (_with(timestamp="2026-01-01"), "timestamp", "has no offset"),
    "unparseable": (_with(timestamp="yesterday noon"), "timestamp", "is not ISO 8601"),
    "timestamp a number": (_with(timestamp=1767225600), "timestamp", "ISO 8601"),
    "no timestamp": (_without("timestamp"), "timestamp", "timestamp is required"),
    "in the future": (
        lambda entry: {**entry, "timestamp": stamp(minutes=-10)},  # ten minutes from now, when run
        "timestamp",
        "more than 5 minutes in the future",
    ),
    "oversize message": (
        _with(message="x" * (64 * 1024 + 1)),
        "message",
        "longer than 65536 characters",
    ),
    "no message": (_without("message"), "message", "message is required"),
    "message not a string": (_with(message=["a"]), "message", "message must be a string"),
    "NUL in the message": (_with(message="a\u0000b"), "message", "NUL"),
    "NUL in attributes": (_with(attributes={"k": ["a\u0000b"]}), "attributes", "NUL"),
    "NUL in the feature": (_with(feature="tag\u0000ger"), "feature", "NUL"),
    "NUL in the source": (_with(source="\u0000"), "source", "NUL"),
    "unknown field": (_with(severity="high"), "severity", "unknown field severity"),
    "latency a string": (_with(latency_ms="fast"), "latency_ms", "non-negative number"),
    "negative latency": (_with(latency_ms=-5), "latency_ms", "non-negative number"),
    "latency a boolean": (_with(latency_ms=True), "latency_ms", "non-negative number"),
    "tokens not whole": (_with(tokens_in=1.5), "tokens_in", "non-negative integer"),
    "tokens too many": (_with(tokens_out=2**31), "tokens_out", "too large"),
    "cost negative": (_with(cost=-0.1), "cost", "non-negative number"),
    "unknown status": (_with(status="ok"), "status", "success, error, timeout"),
    "attributes a list": (_with(attributes=[1]), "attributes", "must be an object"),
    "attributes too large": (
        _with(attributes={"blob": "x" * 17_000}),
        "attributes",
        "larger than 16384 bytes",
    ),
    "id a number": (_with(id=7), "id", "id must be a string"),
    "source too long": (_with(source="s" * 300), "source", "longer than 256"),
    "request_id not a string": (_with(request_id={"a": 1}), "request_id", "must be a string"),
}


@pytest.mark.parametrize("case", BAD_ENTRIES, ids=str)
@pytest.mark.parametrize("ndjson", [False, True], ids=["json", "ndjson"])
def test_each_bad_entry_is_refused_by_position_with_its_reason(
    http: httpx.Client, case: str, ndjson: bool
) -> None:
    change, field, reason = BAD_ENTRIES[case]
    before, after = log_entry("tagger", "before"), log_entry("tagger", "after")
    bad = change(log_entry("tagger", "bad"))
    result = post_logs(http, [before, bad, after], ndjson=ndjson)
    assert result["stored"] == 2
    [rejected] = result["rejected"]
    assert rejected["index"] == 1 and rejected["field"] == field, rejected
    assert reason in rejected["error"], rejected
    if ndjson:
        assert rejected["line"] == 2
    assert stored_ids(http) == [before["id"], after["id"]]


def test_when_no_entry_is_accepted_the_answer_is_422_with_every_reason(
    http: httpx.Client,
) -> None:
    batch = [log_entry("ghost", "a"), log_entry("tagger", "b", level="loud")]
    error = assert_error(http.post("/logs", json=batch), 422, "validation_failed")
    assert "no entry was accepted" in error["message"] and "ghost" in error["message"]
    assert [(d["index"], d["field"]) for d in error["details"]] == [(0, "feature"), (1, "level")]
    assert all_logs(http) == []


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (b'[{"message": "cut', "application/json", "not valid JSON"),
        (b"", "application/json", "not valid JSON"),
        (b'"just a string"', "application/json", "JSON array"),
        (b"42", "application/json", "JSON array"),
    ],
)
def test_a_body_that_is_not_a_json_array_is_400(
    http: httpx.Client, body: bytes, content_type: str, words: str
) -> None:
    response = http.post("/logs", content=body, headers={"Content-Type": content_type})
    error = assert_error(response, 400, "bad_request")
    assert words in error["message"]
    assert all_logs(http) == []


def test_an_empty_array_stores_nothing_and_is_not_an_error(http: httpx.Client) -> None:
    assert post_logs(http, []) == {"stored": 0, "duplicates": 0, "rejected": [], "cursor": None}


def test_a_body_over_10_mib_is_413_with_the_limit_in_the_message(http: httpx.Client) -> None:
    entry = orjson.dumps(log_entry("tagger", "y" * 60_000))
    body = b"[" + b",".join([entry] * (10 * 1024 * 1024 // len(entry) + 1)) + b"]"
    assert len(body) > 10 * 1024 * 1024
    error = assert_error(http.post("/logs", content=body), 413, "payload_too_large")
    assert "10 MiB" in error["message"]
    assert all_logs(http) == []


@pytest.fixture
def small_limit(org: Org, servers: Servers) -> Iterator[httpx.Client]:
    """A second instance on the shared database that takes bodies of at most 4 KiB."""
    config = service_config(org.service.database_url, servers.redis_url, max_body_bytes=4096)
    with (
        serving(create_app(config)) as url,
        httpx.Client(
            base_url=url + "/api/platform/ai-management",
            headers={"Authorization": f"Bearer {org.token}"},
            timeout=15,
        ) as client,
    ):
        create_feature(client, "tagger")
        yield client


def test_the_body_limit_holds_with_and_without_a_content_length(small_limit: httpx.Client) -> None:
    fits = [log_entry("tagger", "z" * 3000)]
    assert post_logs(small_limit, fits)["stored"] == 1
    too_big = orjson.dumps([log_entry("tagger", "z" * 5000)])
    error = assert_error(small_limit.post("/logs", content=too_big), 413, "payload_too_large")
    assert "4 KiB" in error["message"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit counts what arrives
        yield too_big[:3000]
        yield too_big[3000:]

    response = small_limit.post("/logs", content=chunked())
    assert "4 KiB" in assert_error(response, 413, "payload_too_large")["message"]
    assert [e["id"] for e in all_logs(small_limit)] == [fits[0]["id"]]


def test_an_acknowledged_entry_is_in_the_database(http: httpx.Client, org: Org) -> None:
    entries = [log_entry("tagger", f"durable {n}") for n in range(3)]
    result = post_logs(http, entries)
    # a connection of its own, opened after the answer: the rows are committed
    with psycopg.connect(org.service.database_url) as conn:
        rows = conn.execute(
            "SELECT client_id, seq FROM logs WHERE organization_id = %s ORDER BY seq", (org.id,)
        ).fetchall()
    assert [r[0] for r in rows] == [e["id"] for e in entries]
    assert str(rows[-1][1]) == result["cursor"]


def test_a_large_request_is_stored_in_several_transactions_in_the_order_sent(
    http: httpx.Client, org: Org
) -> None:
    count = 2500  # over the 1,000 rows a transaction holds
    entries = [
        log_entry("tagger" if n % 2 else "summary", f"n={n}", timestamp=stamp(seconds=n % 97))
        for n in range(count)
    ]
    result = post_logs(http, entries)
    assert (result["stored"], result["duplicates"], result["rejected"]) == (count, 0, [])
    listed = all_logs(http)
    assert [e["id"] for e in listed] == [e["id"] for e in entries]  # cursor order = sent
    cursors = [int(e["cursor"]) for e in listed]
    assert cursors == sorted(set(cursors))
    assert result["cursor"] == listed[-1]["cursor"]
    with psycopg.connect(org.service.database_url) as conn:
        transactions = conn.execute(
            "SELECT count(DISTINCT xmin::text) FROM logs WHERE organization_id = %s", (org.id,)
        ).fetchone()
    assert transactions is not None and transactions[0] == 3


# A batch of at most MAX_ROWS_GIVEN entries goes in as parameters, a larger one by COPY.
BATCH_SIZES = pytest.mark.parametrize("count", [MAX_ROWS_GIVEN, MAX_ROWS_GIVEN + 4])


@BATCH_SIZES
def test_cursor_order_is_the_order_sent_not_the_timestamps(http: httpx.Client, count: int) -> None:
    # newest timestamp first, features interleaved, aliases mixed in
    entries = [
        log_entry(
            ("tagger", "summary")[n % 2], f"n={n}", timestamp=stamp(seconds=n), level="WARNING"
        )
        for n in range(count)
    ]
    post_logs(http, entries, ndjson=True)
    assert [e["message"] for e in all_logs(http)] == [f"n={n}" for n in range(count)]


@BATCH_SIZES
def test_an_entry_reads_back_the_same_whatever_the_size_of_its_batch(
    http: httpx.Client, count: int
) -> None:
    awkward = "tab\there, a\\backslash, \\N, quote \" ' {braces} é 漢字 😀\r\nnext line"
    full = log_entry(
        "tagger",
        awkward,
        timestamp=stamp(seconds=3.25),
        level="error",
        request_id=awkward,
        model="m\tx",
        latency_ms=0.1 + 0.2,
        tokens_in=2**31 - 1,
        tokens_out=0,
        cost=1e-12,
        status="timeout",
        attributes={"text": awkward, "n": [1, 2.5, None, True], "nested": {"": {}}},
    )
    bare = {"timestamp": stamp(), "feature": "summary", "level": "debug", "message": ""}
    fillers = [log_entry("summary", f"filler {n}") for n in range(count - 2)]
    result = post_logs(http, [full, bare, *fillers])
    assert (result["stored"], result["rejected"]) == (count, [])
    first, second = all_logs(http)[:2]
    assert first == {
        **full,
        "latency_ms": 0.1 + 0.2,  # every bit of a double kept
        "committed_at": first["committed_at"],
        "cursor": first["cursor"],
    }
    assert second == {
        **bare,
        "id": second["id"],
        "source": "",
        **dict.fromkeys(("request_id", "model", "latency_ms", "tokens_in")),
        **dict.fromkeys(("tokens_out", "cost", "status", "attributes")),
        "committed_at": second["committed_at"],
        "cursor": second["cursor"],
    }


@BATCH_SIZES
def test_whole_and_fractional_numbers_mix_in_one_batch(http: httpx.Client, count: int) -> None:
    # JSON has one number type: a client sends 120 for one entry and 80.5 for the next
    entries = [
        log_entry("tagger", f"n={n}", latency_ms=(120, 80.5)[n % 2], cost=(0, 0.25)[n % 2])
        for n in range(count)
    ]
    result = post_logs(http, entries)
    assert (result["stored"], result["rejected"]) == (count, [])
    stored = all_logs(http)
    assert [e["latency_ms"] for e in stored] == [(120, 80.5)[n % 2] for n in range(count)]
    assert [e["cost"] for e in stored] == [(0, 0.25)[n % 2] for n in range(count)]
