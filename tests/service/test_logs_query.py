"""GET /logs: both directions of the cursor, stable pages, every filter, bad parameters,
and the same answer from history, the WebSocket and SSE for the same filters."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import psycopg
import pytest

from minerva_ai.core import logregex
from minerva_ai.service.app import create_app
from tests.conftest import LiveService, Servers, service_config
from tests.service.conftest import (
    WAIT,
    Org,
    all_logs,
    assert_error,
    create_feature,
    expect,
    log_entry,
    new_org,
    post_logs,
    serving,
    sse_events,
    sse_log_entries,
    stamp,
    subscribe_logs,
    ws_log_entries,
    ws_open,
)

NOW = datetime.now(UTC).replace(microsecond=0)

# (feature, level, source, request_id, hours ago, message): the fixed set every filter
# test reads. Entry n is ingested n-th; its timestamp is hours ago, so time order differs.
ROWS = [
    ("tagger", "error", "api", "req-1", 3, "connection refused"),
    ("tagger", "warn", "worker", "req-1", 11, "upstream timeout after 30s"),
    ("summary", "info", "api", "req-2", 1, "ok"),
    ("summary", "debug", "cron", None, 9, "line one\nline two"),
    ("tagger", "critical", "api", "req-3", 5, "ends with newline\n"),
    ("summary", "info", "worker", "req-2", 7, "price: 12.50 EUR"),
    ("tagger", "debug", "api", None, 2, "Ünïcödé 42 café"),
    ("summary", "warn", "cron", "req-4", 10, "tab\tseparated"),
    ("tagger", "info", "worker", "req-4", 4, "]bracket"),
    ("summary", "error", "api", None, 8, ""),
    ("tagger", "error", "worker", "req-5", 6, "timeout: retrying in 2.00s"),
    ("summary", "info", "api", "req-5", 12, "OK then"),
]


# query parameters -> the entries (by position in ROWS) they select
def far_offset(moment: str) -> str:
    """The same instant written with the offset +22:51."""
    far = timezone(timedelta(hours=22, minutes=51))
    return datetime.fromisoformat(moment).astimezone(far).isoformat()


FILTERS: list[tuple[dict[str, str], list[int]]] = [
    ({}, list(range(12))),
    ({"feature": "tagger"}, [0, 1, 4, 6, 8, 10]),
    ({"feature": "summary", "level": "info"}, [2, 5, 11]),
    ({"level": "error"}, [0, 9, 10]),
    ({"level": "error,warn"}, [0, 1, 7, 9, 10]),
    ({"level": "warn+"}, [0, 1, 4, 7, 9, 10]),
    ({"level": "WARNING"}, [1, 7]),
    ({"level": "err+"}, [0, 4, 9, 10]),
    ({"level": "debug, critical"}, [3, 4, 6]),
    ({"source": "cron"}, [3, 7]),
    ({"source": "api", "level": "info"}, [2, 11]),
    ({"request_id": "req-1"}, [0, 1]),
    ({"request_id": "req-4", "feature": "summary"}, [7]),
    ({"q": "timeout|refused"}, [0, 1, 10]),
    ({"q": "^ok$"}, [2]),  # case-sensitive: not "OK then"
    ({"q": "two$"}, [3]),
    ({"q": "newline$"}, []),  # $ is the end of the message, not before a final newline
    ({"q": "newline\\n$"}, [4]),
    ({"q": "one.line"}, [3]),  # . matches a newline
    ({"q": "\\d+\\.\\d{2}"}, [5, 10]),
    ({"q": "caf\\w"}, []),  # \w is ASCII: é is not a word character
    ({"q": "\\W4"}, [6]),
    ({"q": "[]x]bracket"}, [8]),
    ({"q": "b\\tsep"}, [7]),
    ({"q": "^$"}, [9]),
    ({"q": "[^a-z ]", "level": "info"}, [5, 8, 11]),
    ({"q": "(ab|cd)*e?"}, list(range(12))),
    ({"q": "timeout", "level": "error"}, [10]),
    ({"since": stamp(NOW, hours=5)}, [0, 2, 4, 6, 8]),
    ({"until": stamp(NOW, hours=10)}, [1, 11]),  # until is exclusive
    ({"since": stamp(NOW, hours=9), "until": stamp(NOW, hours=6), "level": "warn+"}, [9]),
    # An offset that Python reads and PostgreSQL would refuse (found by schemathesis)
    ({"since": far_offset(stamp(NOW, hours=5))}, [0, 2, 4, 6, 8]),
]


def row_entry(n: int) -> dict[str, Any]:
    feature, level, source, request_id, hours, message = ROWS[n]
    return log_entry(
        feature,
        message,
        level=level,
        source=source,
        request_id=request_id,
        timestamp=stamp(NOW, hours=hours),
    )


@dataclass
class Fixed:
    org: Org
    entries: list[dict[str, Any]]  # as listed, in ROWS order


@pytest.fixture(scope="module")
def fixed(shared_service: LiveService) -> Fixed:
    """An organization holding exactly ROWS, shared (read-only) by the filter tests."""
    org = new_org(shared_service)
    with org.client() as http:
        create_feature(http, "tagger")
        create_feature(http, "summary")
        post_logs(http, [row_entry(n) for n in range(len(ROWS))])
        entries = all_logs(http)
    assert [e["message"] for e in entries] == [r[5] for r in ROWS]
    return Fixed(org, entries)


@pytest.mark.parametrize(("params", "expected"), FILTERS, ids=str)
def test_each_filter_selects_exactly_its_entries_in_both_directions(
    fixed: Fixed, params: dict[str, str], expected: list[int]
) -> None:
    with fixed.org.client() as http:
        oldest_first = all_logs(http, **params)
        newest_first = http.get("/logs", params={**params, "limit": 1000}).json()
    assert [e["message"] for e in oldest_first] == [ROWS[n][5] for n in expected]
    assert oldest_first == [fixed.entries[n] for n in expected]
    assert newest_first["data"] == oldest_first[::-1]
    assert newest_first["count"] == len(expected) and newest_first["next_cursor"] is None


def test_a_feature_filter_takes_the_id_as_well(fixed: Fixed) -> None:
    with fixed.org.client() as http:
        tagger = http.get("/features/tagger").json()["data"]["id"]
        assert all_logs(http, feature=tagger) == all_logs(http, feature="tagger")


@pytest.fixture
def http(org: Org) -> Iterator[httpx.Client]:
    with org.client() as client:
        create_feature(client, "tagger")
        yield client


def ingest_numbered(http: httpx.Client, start: int, count: int) -> None:
    post_logs(http, [log_entry("tagger", f"n={n}") for n in range(start, start + count)])


def numbers(entries: list[dict[str, Any]]) -> list[int]:
    return [int(e["message"].removeprefix("n=")) for e in entries]


def test_newest_first_pages_are_stable_while_entries_arrive(http: httpx.Client) -> None:
    ingest_numbered(http, 0, 25)
    first = http.get("/logs", params={"limit": 10}).json()
    assert numbers(first["data"]) == list(range(24, 14, -1))
    assert first["count"] == 10 and first["next_cursor"] == first["data"][-1]["cursor"]
    ingest_numbered(http, 25, 7)  # newer entries arrive between pages
    second = http.get("/logs", params={"limit": 10, "cursor": first["next_cursor"]}).json()
    assert numbers(second["data"]) == list(range(14, 4, -1))
    third = http.get("/logs", params={"limit": 10, "cursor": second["next_cursor"]}).json()
    assert numbers(third["data"]) == [4, 3, 2, 1, 0]
    assert third["next_cursor"] is None
    assert numbers(http.get("/logs", params={"limit": 3}).json()["data"]) == [31, 30, 29]


def test_after_lists_oldest_first_and_next_cursor_is_where_to_poll(http: httpx.Client) -> None:
    ingest_numbered(http, 0, 15)
    page = http.get("/logs", params={"after": "0", "limit": 10}).json()
    assert numbers(page["data"]) == list(range(10))
    rest = http.get("/logs", params={"after": page["next_cursor"], "limit": 10}).json()
    assert numbers(rest["data"]) == list(range(10, 15))
    assert rest["next_cursor"] == rest["data"][-1]["cursor"]
    idle = http.get("/logs", params={"after": rest["next_cursor"]}).json()
    assert idle["data"] == [] and idle["count"] == 0
    assert idle["next_cursor"] == rest["next_cursor"]  # always present: poll again from it
    assert "gap" not in idle
    ingest_numbered(http, 15, 2)
    polled = http.get("/logs", params={"after": idle["next_cursor"]}).json()
    assert numbers(polled["data"]) == [15, 16]


def test_polling_with_a_filter_moves_on_only_over_what_it_returned(http: httpx.Client) -> None:
    post_logs(http, [log_entry("tagger", "a", level="error"), log_entry("tagger", "b")])
    page = http.get("/logs", params={"after": "0", "level": "info"}).json()
    assert [e["message"] for e in page["data"]] == ["b"]
    post_logs(http, [log_entry("tagger", "c"), log_entry("tagger", "d", level="error")])
    page = http.get("/logs", params={"after": page["next_cursor"], "level": "info"}).json()
    assert [e["message"] for e in page["data"]] == ["c"]


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("\\bword", "\\b"),
        ("\\y", "\\y"),
        ("\\Aabc", "\\A"),
        ("(a)\\1", "\\1"),
        ("(?i)abc", "(?"),
        ("a(?=b)", "(?"),
        ("[[:alpha:]]+", "[:"),
        ("[\\W]", "\\W inside [ ]"),
        ("abc\\", "lone backslash"),
        ("[abc", "unterminated"),
        ("a**", "invalid regular expression"),
        ("(unclosed", "invalid regular expression"),
    ],
)
def test_a_refused_or_invalid_regex_is_400_naming_the_problem(
    http: httpx.Client, pattern: str, words: str
) -> None:
    for path in ("/logs", "/logs/export", "/logs/stream"):
        error = assert_error(http.get(path, params={"q": pattern}), 400, "bad_request")
        assert words in error["message"], error
        assert error["details"][0]["field"] == "query parameter q"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"level": "verbose"}, "query parameter level"),
        ({"level": ","}, "query parameter level"),
        ({"cursor": "abc"}, "query parameter cursor"),
        ({"cursor": "-1"}, "query parameter cursor"),
        ({"cursor": "1.5"}, "query parameter cursor"),
        ({"after": "²"}, "query parameter after"),  # a digit to str.isdigit, not to int()
        ({"after": ""}, "query parameter after"),
        ({"since": "yesterday"}, "query parameter since"),
        ({"until": "2026-01-01T00:00:00"}, "query parameter until"),  # no offset
        ({"since": "0001-01-01T00:00:00+01:00"}, "query parameter since"),  # before year 1 in UTC
        ({"source": "a\x00b"}, "query parameter source"),
        ({"request_id": "\x00"}, "query parameter request_id"),
        ({"q": "a\x00"}, "query parameter q"),
    ],
)
def test_a_bad_parameter_is_400_naming_it(
    http: httpx.Client, params: dict[str, str], field: str
) -> None:
    error = assert_error(http.get("/logs", params=params), 400, "bad_request")
    assert [d["field"] for d in error["details"]] == [field], error


def test_an_unknown_feature_filter_is_404(http: httpx.Client) -> None:
    for path in ("/logs", "/logs/export", "/logs/stream"):
        error = assert_error(http.get(path, params={"feature": "ghost"}), 404, "not_found")
        assert "ghost" in error["message"]


def test_limit_is_bounded(http: httpx.Client) -> None:
    for limit in ("0", "1001", "many"):
        response = http.get("/logs", params={"limit": limit})
        assert response.status_code in (400, 422), response.text
    ingest_numbered(http, 0, 3)
    assert http.get("/logs", params={"limit": "1000"}).json()["count"] == 3


# History and live: the same filters give the same entries.

LIVE_FILTERS: list[dict[str, str]] = [
    {},
    {"level": "error,warn"},
    {"level": "warn+"},
    {"level": "WARNING"},
    {"source": "api"},
    {"request_id": "req-4"},
    {"q": "timeout|refused"},
    {"q": "^ok$"},
    {"q": "newline$|EUR$"},  # not "ends with newline\n"
    {"q": "one.line|two$"},
    {"q": "\\d+\\.\\d{2}"},
    {"q": "caf\\w|\\s\\S"},
    {"q": "[^a-z ]", "level": "info"},
    {"q": "^$|\\W"},
    {"q": "\\w+\\s\\d"},  # not "Ünïcödé 42": é is not \w
]
LIVE_EXTRA = ["naïve café", "a\u00a0b", "élan ok", "ok", "résumé 12.00"]  # non-ASCII classes


def _utf8_collation(database_url: str) -> str | None:
    """A collation that classifies characters by Unicode, as a UTF-8 database does."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT collname FROM pg_collation WHERE collname = ANY(%s) "
            "ORDER BY array_position(%s, collname::text) LIMIT 1",
            (["pg_c_utf8", "C.utf8", "C.UTF-8", "en_US.utf8"],) * 2,
        ).fetchone()
    return row[0] if row else None


@pytest.fixture
def utf8_service(database_url: str, servers: Servers) -> Iterator[LiveService]:
    """A service whose log messages are classified as on a UTF-8 production database, where
    PostgreSQL's own \\w matches é: the history path must still mean ASCII."""
    collation = _utf8_collation(database_url)
    if collation is None:
        pytest.skip("the PostgreSQL server has no UTF-8 collation")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'ALTER TABLE logs ALTER COLUMN message TYPE text COLLATE "{collation}"')
        probe = conn.execute(f"SELECT 'é' COLLATE \"{collation}\" ~ '\\w'").fetchone()
        assert probe == (True,)  # PostgreSQL's own \w is not ASCII here
    config = service_config(database_url, servers.redis_url)
    with serving(create_app(config)) as url:
        org = new_org(LiveService(url, database_url, servers.redis_url, "", "", config))
        yield LiveService(url, database_url, servers.redis_url, org.id, org.token, config)


def test_the_same_filters_give_the_same_entries_on_history_websocket_and_sse(
    utf8_service: LiveService,
) -> None:
    """Each filter i gets a feature of its own holding every message of the fixed set; its
    followers (WS and SSE, both live) must receive exactly what GET /logs returns."""
    service = utf8_service
    http = httpx.Client(
        base_url=service.api, headers={"Authorization": f"Bearer {service.token}"}, timeout=15
    )
    messages = [*(r[5] for r in ROWS), *LIVE_EXTRA]

    def variants(feature: str) -> list[dict[str, Any]]:
        return [
            log_entry(
                feature,
                message,
                level=ROWS[n % len(ROWS)][1],
                source=ROWS[n % len(ROWS)][2],
                request_id=ROWS[n % len(ROWS)][3],
            )
            for n, message in enumerate(messages)
        ]

    with http:
        # The fixed set in a probe feature: what history says each filter selects.
        create_feature(http, "probe")
        post_logs(http, variants("probe"))
        chosen = []
        for i, params in enumerate(LIVE_FILTERS):
            create_feature(http, f"f{i}")
            chosen.append(all_logs(http, feature="probe", **params))
            assert chosen[-1], f"filter {params} selects nothing: it would test nothing"

        def copy(entry: dict[str, Any], feature: str) -> dict[str, Any]:
            keep = ("timestamp", "level", "message", "source", "request_id")
            return {"id": uuid.uuid4().hex, "feature": feature, **{k: entry[k] for k in keep}}

        async def scenario() -> None:
            async with contextlib.AsyncExitStack() as stack:
                sockets, streams = [], []
                client = await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=service.api,
                        headers={"Authorization": f"Bearer {service.token}"},
                        timeout=WAIT,
                    )
                )
                for i, params in enumerate(LIVE_FILTERS):
                    ws = await stack.enter_async_context(ws_open(service, service.token))
                    await expect(ws, "authenticated")
                    await subscribe_logs(ws, feature=f"f{i}", filters=params)
                    sockets.append(ws)
                    response = await stack.enter_async_context(
                        client.stream("GET", "/logs/stream", params={"feature": f"f{i}", **params})
                    )
                    assert response.status_code == 200
                    streams.append(sse_events(response))
                # A warm-up entry per follower, so that each is past its backfill...
                warm = [copy(chosen[i][0], f"f{i}") for i in range(len(LIVE_FILTERS))]
                await asyncio.to_thread(post_logs, http, warm)
                for i in range(len(LIVE_FILTERS)):
                    assert (await ws_log_entries(sockets[i], 1))[0]["id"] == warm[i]["id"]
                    assert (await sse_log_entries(streams[i], 1))[0]["id"] == warm[i]["id"]
                # ...then every message in every feature, and last a known match per feature
                batch = [e for i in range(len(LIVE_FILTERS)) for e in variants(f"f{i}")]
                last = [copy(chosen[i][-1], f"f{i}") for i in range(len(LIVE_FILTERS))]
                await asyncio.to_thread(post_logs, http, batch + last)
                for i, params in enumerate(LIVE_FILTERS):
                    history = all_logs(http, feature=f"f{i}", **params)[1:]
                    assert history[-1]["id"] == last[i]["id"]
                    assert len(history) == len(chosen[i]) + 1
                    assert await ws_log_entries(sockets[i], len(history)) == history, params
                    assert await sse_log_entries(streams[i], len(history)) == history, params

        asyncio.run(scenario())


@pytest.mark.parametrize(
    "pattern", ["caf\\w", "\\w+", "\\W", "a\\sb", "a\\Sb", "\\d", "\\D{3}", "[\\w.]+$", "[^\\s]"]
)
def test_class_escapes_mean_ascii_in_postgresql_whatever_its_locale(
    servers: Servers, pattern: str
) -> None:
    collation = _utf8_collation(servers.database_url)
    if collation is None:
        pytest.skip("the PostgreSQL server has no UTF-8 collation")
    compiled = logregex.check(pattern)
    with psycopg.connect(servers.database_url) as conn:
        for message in ("café", "a\u00a0b", "٣٤", "x\u2003y", "naïve_1.x", "plain ascii"):
            matched = conn.execute(
                f'SELECT %s COLLATE "{collation}" ~ %s', (message, logregex.postgres(pattern))
            ).fetchone()
            assert matched == (compiled.search(message) is not None,), (pattern, message)


def test_a_filtered_poll_moves_past_entries_that_do_not_match(api: httpx.Client) -> None:
    create_feature(api, "quiet")
    create_feature(api, "busy")
    post_logs(api, [log_entry("busy", f"noise {i}") for i in range(5)])
    page = api.get("/logs", params={"after": "0", "feature": "quiet"}).json()
    assert page["data"] == []
    newest = api.get("/logs", params={"limit": 1}).json()["data"][0]["cursor"]
    assert page["next_cursor"] == newest  # not "0": the next poll does not rescan the noise
    post_logs(api, [log_entry("quiet", "hello")])
    following = api.get("/logs", params={"after": page["next_cursor"], "feature": "quiet"})
    assert [e["message"] for e in following.json()["data"]] == ["hello"]
