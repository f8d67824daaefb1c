"""Renderers: table on a TTY, TSV when piped, json, jsonl, csv, yaml; colour and time rules."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator

import pytest
import yaml

from minerva_ai.cli.output import (
    FORMATS,
    Column,
    Output,
    color_enabled,
    counted,
    format_time,
    neutralize_formula,
)
from minerva_ai.commands.options import FORMATS as CLI_FORMATS

ITEMS = [
    {
        "name": "photo-tagging",
        "status": "active",
        "description": "Tags\tphotos\nfor search " + "x" * 80,
        "scopes": ["read", "write"],
        "created_at": "2026-11-26T01:02:03.456Z",
        "author": {"token_name": "ci"},
        "version": 3,
    },
    {
        "name": "moderation",
        "status": "maintenance",
        "description": None,
        "scopes": [],
        "created_at": "2026-11-25T23:00:00Z",
        "author": None,
        "version": 1,
    },
]
COLUMNS = [
    Column("name", "NAME"),
    Column("status", "STATUS", styles={"active": "green"}),
    Column("description", "DESCRIPTION"),
    Column("scopes", "SCOPES"),
    Column("created_at", "CREATED", kind="time"),
    Column("author.token_name", "AUTHOR"),
    Column("version", "VERSION"),
]


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def render(fmt: str, stream: io.StringIO, **kwargs: object) -> str:
    Output.create(fmt, stream, env={}, **kwargs).items(ITEMS, COLUMNS)  # type: ignore[arg-type]
    return stream.getvalue()


def test_the_cli_offers_exactly_the_renderers_formats() -> None:
    assert CLI_FORMATS == FORMATS


def test_piped_table_is_tsv_without_truncation_in_utc() -> None:
    lines = render("table", io.StringIO()).splitlines()
    assert len(lines) == 2
    first = lines[0].split("\t")
    assert first[0] == "photo-tagging"
    assert first[2] == "Tags\\tphotos\\nfor search " + "x" * 80  # escaped, never cut
    assert first[3] == "read,write"
    assert first[4] == "2026-11-26T01:02:03.456Z"
    assert first[5:] == ["ci", "3"]
    assert lines[1].split("\t") == [
        "moderation",
        "maintenance",
        "",
        "",
        "2026-11-25T23:00:00Z",
        "",
        "1",
    ]
    assert "\x1b[" not in "\n".join(lines)


def test_tty_table_has_headers_local_times_and_truncates(tokyo: None) -> None:
    text = render("table", FakeTTY(), no_color=True)
    header, first, second = text.splitlines()
    assert header.split() == [
        "NAME",
        "STATUS",
        "DESCRIPTION",
        "SCOPES",
        "CREATED",
        "AUTHOR",
        "VERSION",
    ]
    assert "2026-11-26 10:02:03" in first  # 01:02 UTC is 10:02 in Tokyo
    assert "Tags photos for search" in first  # control characters do not break the row
    assert "…" in first and "x" * 80 not in first
    assert "-" in second.split()  # missing values are shown as "-"
    assert "\x1b[" not in text


def test_utc_forces_utc_on_a_tty(tokyo: None) -> None:
    assert "2026-11-26T01:02:03.456Z" in render("table", FakeTTY(), utc=True)


def test_colour_only_on_a_tty_without_no_color_or_dumb_term() -> None:
    assert color_enabled(FakeTTY(), env={})
    assert not color_enabled(io.StringIO(), env={})
    assert not color_enabled(FakeTTY(), env={"NO_COLOR": "1"})
    assert not color_enabled(FakeTTY(), env={"TERM": "dumb"})
    assert not color_enabled(FakeTTY(), no_color=True, env={})
    coloured = render("table", FakeTTY())
    assert "\x1b[32mactive\x1b[0m" in coloured
    assert "\x1b[1mNAME\x1b[0m" in coloured


def test_json_is_the_items_unchanged() -> None:
    assert json.loads(render("json", io.StringIO())) == ITEMS
    pretty = render("json", FakeTTY())
    assert pretty.startswith("[\n  {") and json.loads(pretty) == ITEMS


def test_jsonl_is_one_item_per_line() -> None:
    lines = render("jsonl", io.StringIO()).splitlines()
    assert [json.loads(line) for line in lines] == ITEMS


def test_yaml_is_the_items() -> None:
    assert yaml.safe_load(render("yaml", io.StringIO())) == ITEMS


def test_csv_has_a_header_utc_times_and_neutralised_formulas() -> None:
    items = [
        {"name": "=cmd|' /C calc'!A0", "n": -5, "f": 1.5, "t": "2026-11-26T01:02:03Z"},
        {"name": "+1+1", "n": 0, "f": -0.5, "t": None},
        {"name": "@SUM(A1)", "n": 1, "f": 2.0, "t": None},
        {"name": "-2", "n": 1, "f": 2.0, "t": None},
        {"name": "plain", "n": 1, "f": 2.0, "t": None},
    ]
    columns = [
        Column("name", "NAME"),
        Column("n", "N"),
        Column("f", "F"),
        Column("t", "T", kind="time"),
    ]
    stream = io.StringIO()
    Output.create("csv", stream, env={}).items(items, columns)
    rows = list(csv.reader(io.StringIO(stream.getvalue())))
    assert rows[0] == ["name", "n", "f", "t"]
    assert rows[1] == ["'=cmd|' /C calc'!A0", "-5", "1.5", "2026-11-26T01:02:03Z"]
    assert rows[2][:3] == ["'+1+1", "0", "-0.5"]
    assert rows[3][0] == "'@SUM(A1)"
    assert rows[4][0] == "-2"  # a number written as text stays a number
    assert rows[5][0] == "plain"


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_every_formula_start_is_neutralised(start: str) -> None:
    assert neutralize_formula(f"{start}x") == f"'{start}x"
    assert neutralize_formula(-3) == -3


def test_one_object_as_field_value_lines() -> None:
    item = ITEMS[0]
    columns = [Column("name", "NAME"), Column("created_at", "CREATED", kind="time")]
    piped = io.StringIO()
    Output.create("table", piped, env={}).item(item, columns)
    assert piped.getvalue() == "name\tphoto-tagging\ncreated_at\t2026-11-26T01:02:03.456Z\n"
    as_json = io.StringIO()
    Output.create("json", as_json, env={}).item(item, columns)
    assert json.loads(as_json.getvalue()) == item


def test_text_replaces_the_table_but_not_machine_formats() -> None:
    table = io.StringIO()
    Output.create("table", table, env={}).item({"a": 1}, [Column("a", "A")], text=lambda: "prose")
    assert table.getvalue() == "prose\n"
    as_json = io.StringIO()
    Output.create("json", as_json, env={}).item({"a": 1}, [Column("a", "A")], text=lambda: "prose")
    assert json.loads(as_json.getvalue()) == {"a": 1}


def test_render_function_of_a_column() -> None:
    stream = io.StringIO()
    column = Column("version", "V", render=lambda v: f"v{v}")
    Output.create("csv", stream, env={}).items([{"version": "3"}], [column])
    assert stream.getvalue() == "version\nv3\n"


def test_format_time() -> None:
    assert format_time("2026-11-26T01:02:03+02:00", local=False) == "2026-11-25T23:02:03Z"
    assert format_time(None, local=False) == ""
    assert format_time("not a time", local=False) == "not a time"


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="xml"):
        Output.create("xml", io.StringIO())


def test_counts_read_as_english() -> None:
    assert counted(1, "entry", "entries") == "1 entry"
    assert counted(0, "entry", "entries") == "0 entries"
    assert counted(1200, "entry", "entries") == "1,200 entries"
