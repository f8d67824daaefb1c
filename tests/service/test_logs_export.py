"""GET /logs/export: JSON, JSONL and CSV hold exactly what GET /logs returns for the same
filters; CSV neutralises formula cells as documented; multi-line messages survive."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from tests.service.conftest import (
    LOG_ENTRY_FIELDS,
    Org,
    all_logs,
    create_feature,
    log_entry,
    new_org,
    post_logs,
    stamp,
)

HEADER = list(LOG_ENTRY_FIELDS)
TEXT_COLUMNS = ("id", "message", "source", "feature", "request_id", "model")
FORMULA = ("=", "+", "-", "@", "\t", "\r")
WHOLE_SECOND = datetime.now(UTC).replace(microsecond=0)


def export(http: httpx.Client, fmt: str, **params: Any) -> httpx.Response:
    response = http.get("/logs/export", params={"format": fmt, **params})
    assert response.status_code == 200, response.text
    return response


def from_csv(text: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Rows of a CSV export, un-escaped as docs/api/README.md says, with their types."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    entries = []
    for cells in reader:
        entry: dict[str, Any] = dict(zip(header, cells, strict=True))
        for name in TEXT_COLUMNS:
            value = entry[name]
            if value[:1] == "'" and value.lstrip("'")[:1] in FORMULA and value.lstrip("'"):
                entry[name] = value[1:]
        for name in ("request_id", "model", "status"):
            entry[name] = entry[name] or None
        for name, kind in (("latency_ms", float), ("tokens_in", int), ("tokens_out", int)):
            entry[name] = kind(entry[name]) if entry[name] else None
        entry["cost"] = float(entry["cost"]) if entry["cost"] else None
        entry["attributes"] = json.loads(entry["attributes"]) if entry["attributes"] else None
        entries.append(entry)
    return header, entries


def rich_entries() -> list[dict[str, Any]]:
    """Entries that exercise every column and every escaping path of the three formats."""
    return [
        log_entry(
            "tagger",
            "first line\nsecond line, with a comma\r\nthird \"quoted\" 'line'",
            level="error",
            request_id="req,1",
            model="gpt-4o",
            latency_ms=12.5,
            tokens_in=100,
            tokens_out=7,
            cost=0.0031,
            status="error",
            attributes={"retry": True, "path": ["a", "b"], "ratio": 0.25, "n": None},
            timestamp=stamp(WHOLE_SECOND, minutes=3),  # no fraction of a second
        ),
        log_entry("summary", "=SUM(A1:A9)", source="+cmd", request_id="-1", model="@model"),
        log_entry("tagger", "\tindented", source="\rreturn", level="warn", latency_ms=0),
        log_entry("tagger", "-5 degrees", level="critical", tokens_in=0, cost=0),
        log_entry("summary", "plain = not a formula", source="", status="timeout"),
        log_entry("tagger", "Ünïcödé ✓ \\ back\\slash", attributes={"é": "ü"}),
        log_entry("tagger", ""),
        log_entry("summary", "timeout after 30s", level="warn", latency_ms=30000.25),
        log_entry("tagger", "ends with a newline\n", id="=id-formula"),
    ]


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
@pytest.mark.parametrize(
    "params",
    [{}, {"level": "warn+"}, {"feature": "tagger", "q": "line|^$"}, {"source": "+cmd"}],
    ids=str,
)
def test_an_export_holds_exactly_what_the_query_returns(
    http: httpx.Client, fmt: str, params: dict[str, str]
) -> None:
    post_logs(http, rich_entries())
    expected = all_logs(http, **params)
    assert expected, "the filter should select something"
    response = export(http, fmt, **params)
    if fmt == "json":
        exported = orjson.loads(response.content)
    elif fmt == "jsonl":
        lines = response.text.splitlines()
        assert len(lines) == len(expected)  # a message's newline never splits an entry
        exported = [orjson.loads(line) for line in lines]
    else:
        header, exported = from_csv(response.text)
        assert header == HEADER
    assert exported == expected


def test_content_types_and_a_file_name(http: httpx.Client) -> None:
    post_logs(http, [log_entry("tagger", "x")])
    for fmt, media in (
        ("json", "application/json"),
        ("jsonl", "application/x-ndjson"),
        ("csv", "text/csv; charset=utf-8"),
    ):
        response = export(http, fmt)
        assert response.headers["content-type"] == media
        disposition = response.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="logs-')
        assert disposition.endswith(f'.{fmt}"')
    assert export(http, "jsonl").text.count("\n") == 1  # jsonl is the default


def test_an_empty_export_is_valid_in_every_format(http: httpx.Client) -> None:
    post_logs(http, [log_entry("tagger", "x")])
    assert orjson.loads(export(http, "json", level="debug").content) == []
    assert export(http, "jsonl", level="debug").content == b""
    assert export(http, "csv", level="debug").text.splitlines() == [",".join(HEADER)]


def test_a_large_json_export_is_one_valid_array(http: httpx.Client) -> None:
    entries = [log_entry("tagger", f"n={n}\nsecond line") for n in range(2500)]
    post_logs(http, entries)
    exported = orjson.loads(export(http, "json").content)
    assert [e["id"] for e in exported] == [e["id"] for e in entries]
    assert exported == all_logs(http)


def csv_cells(http: httpx.Client, **params: Any) -> list[dict[str, str]]:
    text = export(http, "csv", **params).text
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.mark.parametrize("prefix", FORMULA)
def test_csv_neutralises_text_cells_a_spreadsheet_would_run(
    http: httpx.Client, prefix: str
) -> None:
    entry = log_entry(
        "tagger",
        f'{prefix}HYPERLINK("http://evil")',
        source=f"{prefix}src",
        request_id=f"{prefix}req",
        model=f"{prefix}model",
        id=f"{prefix}id-{prefix!r}",
    )
    harmless = log_entry("tagger", f"a{prefix}b", source="s", request_id="r", model="m")
    post_logs(http, [entry, harmless])
    neutral, plain = csv_cells(http)
    for name in ("message", "source", "request_id", "model", "id"):
        assert neutral[name] == "'" + entry[name], name
        assert plain[name] == harmless[name], name
    raw, _ = csv_cells(http, csv_raw="true")
    for name in ("message", "source", "request_id", "model", "id"):
        assert raw[name] == entry[name], name


def test_csv_leaves_numeric_columns_alone(http: httpx.Client, org: Org) -> None:
    post_logs(http, [log_entry("tagger", "from the API", latency_ms=1.5)])
    # Negative numbers cannot be ingested; a row written another way must still export as-is.
    with psycopg.connect(org.service.database_url) as conn:
        conn.execute(
            "INSERT INTO logs (organization_id, feature_id, seq, client_id, timestamp, "
            "committed_at, level, message, source, latency_ms, tokens_in, tokens_out, cost) "
            "SELECT %s, id, nextval('log_seq'), 'direct', now(), now(), 'info', '-5', '-s', "
            "-5, -3, -2, -0.5 FROM features WHERE organization_id = %s AND name = 'tagger'",
            (org.id, org.id),
        )
    _, direct = csv_cells(http)
    assert (direct["latency_ms"], direct["tokens_in"], direct["tokens_out"], direct["cost"]) == (
        "-5",
        "-3",
        "-2",
        "-0.5",
    )
    assert (direct["message"], direct["source"]) == ("'-5", "'-s")  # text is neutralised


def test_multi_line_messages_keep_their_lines_in_csv_and_jsonl(http: httpx.Client) -> None:
    messages = ["one\ntwo\nthree", "crlf\r\nline", "trailing\n", "\nleading", 'q"u,o\nte']
    post_logs(http, [log_entry("tagger", m) for m in messages])
    assert [c["message"] for c in csv_cells(http, csv_raw="true")] == messages
    lines = export(http, "jsonl").content.split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(messages) + 1
    assert [orjson.loads(line)["message"] for line in lines[:-1]] == messages


def test_an_export_sees_only_its_own_organization(http: httpx.Client, org: Org) -> None:
    post_logs(http, [log_entry("tagger", "mine")])
    other = new_org(org.service)
    with other.client() as theirs:
        create_feature(theirs, "tagger")
        post_logs(theirs, [log_entry("tagger", "theirs")])
        assert [e["message"] for e in orjson.loads(export(theirs, "json").content)] == ["theirs"]
    assert [e["message"] for e in orjson.loads(export(http, "json").content)] == ["mine"]


def test_a_cell_that_already_starts_with_a_quote_round_trips(api: httpx.Client) -> None:
    create_feature(api, "quoted")
    messages = ["'=x", "''+y", "'plain", "=z"]
    post_logs(api, [log_entry("quoted", m) for m in messages])
    _, rows = from_csv(export(api, "csv", feature="quoted").text)
    assert [r["message"] for r in rows] == messages
