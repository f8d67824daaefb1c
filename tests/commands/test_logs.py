"""``minerva-ai logs ingest|tail|export`` against live services, in-process and as processes.

The slow test at the end is the promise of DESIGN.md's "Real time, without gaps" kept
through the CLI: two real service processes, two writers, a transaction held open, a
`logs tail -f` whose instance is killed with SIGKILL and restarted.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.commands.conftest import invoke
from tests.conftest import LiveService, Servers, wait_until
from tests.logs_support import (
    CliProcess,
    Gatekeeper,
    Org,
    entry,
    module_service,
    new_org,
    service_fixture,
    stamp,
)

service = service_fixture()


@pytest.fixture
def org(service: LiveService) -> Org:
    return new_org(service)


def cli(org: Org, *args: str, input: str | None = None) -> Any:
    return invoke(args, input=input, **org.env())


def ndjson(entries: list[Any]) -> str:
    return "".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in entries)


def stored_messages(org: Org, **filters: Any) -> list[str]:
    with org.client() as client:
        return [e["message"] for e in reversed(client.logs.list(filters, limit=0))]


def write(org: Org, entries: list[dict[str, Any]]) -> None:
    with org.client() as client:
        assert client.logs.ingest(entries)["rejected"] == []


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


# ------------------------------------------------------------------ ingest


def test_ingest_a_file_exits_0_when_everything_was_stored_or_a_duplicate(
    org: Org, tmp_path: Path
) -> None:
    path = tmp_path / "app.ndjson"
    twice = entry("tagger", "same id twice", id="fixed-id")
    path.write_text(ndjson([entry("tagger", f"m{i}") for i in range(3)] + [twice, twice]))

    result = cli(org, "logs", "ingest", str(path))

    assert result.exit_code == 0, result.stderr
    assert "stored 4, duplicates 1, rejected 0 (of 5 entries)" in result.stderr
    assert result.stdout == ""
    assert stored_messages(org) == ["m0", "m1", "m2", "same id twice"]


def test_ingest_exits_3_listing_rejected_lines_and_keeps_their_neighbours(org: Org) -> None:
    lines = [
        entry("tagger", "first"),
        '{"timestamp": broken',
        "",
        entry("tagger", "bad level", level="loud"),
        entry("tagger", "last"),
        "[1, 2]",
    ]

    result = cli(org, "logs", "ingest", "-", input=ndjson(lines))

    assert result.exit_code == 3
    assert "stored 2, duplicates 0, rejected 3 (of 5 entries)" in result.stderr
    assert "line 2: not valid JSON" in result.stderr
    assert "line 4: level: unknown level 'loud'" in result.stderr
    assert "line 6: not a JSON object" in result.stderr
    assert "error: 3 of 5 entries were rejected" in result.stderr
    assert stored_messages(org) == ["first", "last"]


def test_ingest_o_json_prints_the_summary_on_stdout(org: Org) -> None:
    lines = [entry("tagger", "ok"), entry("nope", "unknown feature")]

    result = cli(org, "logs", "ingest", "-", "-o", "json", input=ndjson(lines))

    assert result.exit_code == 3
    assert "stored" not in result.stderr  # the summary is the JSON, not repeated
    summary = json.loads(result.stdout)
    assert (summary["entries"], summary["stored"], summary["duplicates"]) == (2, 1, 0)
    assert summary["rejected"] == [
        {"line": 2, "field": "feature", "error": "unknown feature 'nope'"}
    ]
    with org.client() as client:
        assert summary["cursor"] == client.logs.list(limit=1)[0]["cursor"]


def test_ingest_sends_a_big_file_in_batches(org: Org, tmp_path: Path) -> None:
    path = tmp_path / "big.ndjson"
    path.write_text(ndjson([entry("mod", f"m{i}") for i in range(2500)]))
    result = cli(org, "logs", "ingest", str(path))
    assert result.exit_code == 0, result.stderr
    assert "stored 2,500, duplicates 0, rejected 0" in result.stderr
    assert len(stored_messages(org)) == 2500


def test_ingest_delivers_a_trickle_before_its_input_ends(org: Org) -> None:
    process = CliProcess(["logs", "ingest", "-"], org.env(), stdin=True)
    try:
        process.write(json.dumps(entry("tagger", "early bird")) + "\n")
        wait_until(lambda: stored_messages(org), what="the first line to be stored")
        assert process.running(), "the entry must be sent while stdin is still open"
        process.write(json.dumps(entry("tagger", "late")) + "\n")
        process.close_stdin()
        assert process.wait() == 0, process.err()
    finally:
        process.kill()
    assert stored_messages(org) == ["early bird", "late"]
    assert "stored 2, duplicates 0, rejected 0" in process.err()


def test_ingest_of_a_missing_file_is_a_usage_error() -> None:
    result = invoke(["logs", "ingest", "/nonexistent/app.ndjson"])
    assert result.exit_code == 2


# ------------------------------------------------------------------ tail


@pytest.fixture
def varied(org: Org) -> Org:
    write(
        org,
        [
            entry("tagger", "debug detail", "debug", source="worker"),
            entry("tagger", "all good", "info", source="api", latency_ms=120.4, tokens_in=35),
            entry("mod", "slow answer", "warn", source="api", cost=0.0021, status="success"),
            entry("tagger", "boom\nTraceback: x", "error", source="worker", status="error"),
            entry("mod", "meltdown \x1b[31mred", "critical", source="api"),
        ],
    )
    return org


def test_tail_prints_the_last_n_oldest_first_one_line_each(varied: Org) -> None:
    result = cli(varied, "logs", "tail", "-n", "3")

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert "slow answer" in lines[0] and "WARN " in lines[0] and "mod" in lines[0]
    assert "cost=0.0021 status=success" in lines[0]
    assert "boom⏎Traceback: x" in lines[1] and "status=error" in lines[1]
    assert "meltdown \\x1b[31mred" in lines[2] and "CRITICAL" in lines[2]
    assert lines[0].startswith(stamp()[:4]) and "Z  " in lines[0]  # UTC when piped
    assert "\x1b" not in result.stdout  # no colour when piped


def test_tail_filters_like_the_api(varied: Org) -> None:
    def messages(*args: str) -> list[str]:
        result = cli(varied, "logs", "tail", "-o", "jsonl", *args)
        assert result.exit_code == 0, result.stderr
        return [json.loads(line)["message"] for line in result.stdout.splitlines()]

    assert messages("--level", "warn+") == [
        "slow answer",
        "boom\nTraceback: x",
        "meltdown \x1b[31mred",
    ]
    assert messages("--level", "ERROR,debug") == ["debug detail", "boom\nTraceback: x"]
    assert messages("--grep", "^(all|slow) ") == ["all good", "slow answer"]
    assert messages("--source", "worker", "tagger") == ["debug detail", "boom\nTraceback: x"]
    assert messages("-n", "0") == []


def test_tail_o_json_is_one_array_of_the_entries(varied: Org) -> None:
    result = cli(varied, "logs", "tail", "-n", "2", "-o", "json")
    entries = json.loads(result.stdout)
    assert [e["level"] for e in entries] == ["error", "critical"]
    assert {"id", "timestamp", "message", "source", "cursor", "committed_at"} <= set(entries[0])
    assert json.loads(invoke(["-o", "json", "logs", "tail", "-n", "1"], **varied.env()).stdout)


def test_tail_since_without_n_prints_everything_since(org: Org) -> None:
    old = [entry("tagger", f"old{i}") for i in range(3)]
    for e in old:
        e["timestamp"] = stamp(seconds_ago=3600)
    write(org, old + [entry("tagger", f"new{i}") for i in range(150)])

    result = cli(org, "logs", "tail", "--since", "10m")

    lines = result.stdout.splitlines()
    assert len(lines) == 150
    assert "new0" in lines[0] and "new149" in lines[-1]


@pytest.mark.parametrize(
    "args",
    [
        ["--since", "yesterday-ish"],
        ["--level", "loud"],
        ["--level", ""],
        ["--grep", r"\bword"],
        ["--grep", "(?i)x"],
        ["-n", "-1"],
        ["--transport", "carrier-pigeon"],
    ],
)
def test_bad_flags_exit_2_before_any_request(args: list[str]) -> None:
    result = invoke(["logs", "tail", *args], MINERVA_URL=closed_port_url())
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.stderr


def test_tail_refuses_a_format_it_cannot_print() -> None:
    result = invoke(["-o", "csv", "logs", "tail"], MINERVA_URL=closed_port_url())
    assert result.exit_code == 2


def test_tail_of_an_unknown_feature_exits_3(org: Org) -> None:
    result = cli(org, "logs", "tail", "missing")
    assert result.exit_code == 3
    assert "feature 'missing' not found" in result.stderr


def test_tail_f_prints_each_entry_as_it_commits_and_ctrl_c_exits_130(org: Org) -> None:
    write(org, [entry("tagger", "history")])
    tail = CliProcess(["logs", "tail", "-f", "-n", "1"], org.env())
    try:
        wait_until(lambda: tail.stdout, what="the history line")
        write(org, [entry("tagger", "live one")])
        wait_until(lambda: len(tail.stdout) == 2, what="the live line, flushed though piped")
        assert tail.interrupt() == 130
    finally:
        tail.kill()
    assert "history" in tail.stdout[0] and "live one" in tail.stdout[1]
    assert "Traceback" not in tail.err() and "interrupted" not in tail.err()


def test_tail_f_shows_a_gap_when_retention_dropped_what_it_would_follow(org: Org) -> None:
    write(org, [entry("tagger", "shown")])
    write(org, [entry("tagger", "dropped before it was shown")])
    with org.client() as client, psycopg.connect(org.database_url, autocommit=True) as conn:
        conn.execute(  # what the retention job records when it drops a partition
            "INSERT INTO log_expired (organization_id, max_seq, before) "
            "VALUES (%s, %s, '2026-01-02T00:00:00Z')",
            (org.id, int(client.logs.list(limit=1)[0]["cursor"])),
        )
    args = ["logs", "tail", "-f", "-n", "1", "--grep", "^shown", "--transport", "poll"]
    tail = CliProcess(args, org.env())
    try:
        wait_until(lambda: len(tail.stdout) >= 2, what="the gap notice")
        assert tail.interrupt() == 130
    finally:
        tail.kill()
    assert tail.stdout[1].startswith("--- gap: entries committed before 2026-01-02")


no_websocket = service_fixture(websocket_status=403)
no_push = service_fixture(websocket_status=404, sse_status=404)


@pytest.mark.parametrize(("where", "fallbacks"), [("no_websocket", 1), ("no_push", 2)])
def test_tail_f_falls_back_and_still_prints_everything(
    where: str, fallbacks: int, request: pytest.FixtureRequest
) -> None:
    org = new_org(request.getfixturevalue(where))
    tail = CliProcess(["logs", "tail", "-f", "-n", "0", "-o", "jsonl"], org.env())
    try:
        wait_until(lambda: tail.err().count("trying") == fallbacks, what="the fallbacks")
        write(org, [entry("tagger", f"m{i}") for i in range(5)])
        wait_until(lambda: len(tail.stdout) == 5, what="every entry")
        assert tail.interrupt() == 130
    finally:
        tail.kill()
    assert [json.loads(line)["message"] for line in tail.stdout] == [f"m{i}" for i in range(5)]
    assert "trying SSE" in tail.err()
    if fallbacks == 2:
        assert "trying polling" in tail.err()


# ------------------------------------------------------------------ export


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_export_to_a_file_appears_complete_and_counts_entries(
    org: Org, tmp_path: Path, fmt: str
) -> None:
    tricky = 'multi\nline, "quoted"'
    write(org, [entry("tagger", f"m{i}") for i in range(5)] + [entry("tagger", tricky)])
    write(org, [entry("mod", '=HYPERLINK("x")', "error")])
    out = tmp_path / f"logs.{fmt}"

    result = cli(org, "logs", "export", "tagger", "-o", fmt, "--out", str(out))

    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert f"exported 6 entries to {out}" in result.stderr
    text = out.read_text()
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    elif fmt == "json":
        rows = json.loads(text)
    else:
        rows = [json.loads(line) for line in text.splitlines()]
    assert [r["message"] for r in rows] == [f"m{i}" for i in range(5)] + [tricky]
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_export_to_stdout_neutralises_formulas_unless_csv_raw(org: Org) -> None:
    write(org, [entry("mod", '=HYPERLINK("x")', "error"), entry("mod", "-5", "info")])

    safe = cli(org, "logs", "export", "-o", "csv", "--level", "error")
    raw = cli(org, "logs", "export", "-o", "csv", "--level", "error", "--csv-raw")

    assert [r["message"] for r in csv.DictReader(io.StringIO(safe.stdout))] == ['\'=HYPERLINK("x")']
    assert [r["message"] for r in csv.DictReader(io.StringIO(raw.stdout))] == ['=HYPERLINK("x")']
    assert "exported 1 entry" in safe.stderr


def test_export_format_follows_the_out_suffix(org: Org, tmp_path: Path) -> None:
    write(org, [entry("tagger", "one")])
    out = tmp_path / "logs.csv"
    assert cli(org, "logs", "export", "--out", str(out)).exit_code == 0
    assert out.read_text().startswith("id,timestamp,level,message")


cutting = service_fixture(cut_exports=True)


def test_an_export_cut_short_exits_4_and_leaves_no_file(
    cutting: LiveService, tmp_path: Path
) -> None:
    org = new_org(cutting)
    write(org, [entry("tagger", f"m{i}") for i in range(10)])
    result = cli(org, "logs", "export", "--out", str(tmp_path / "logs.jsonl"))
    assert result.exit_code == 4
    assert "broke off" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def export_stall() -> threading.Event:
    return threading.Event()


@pytest.fixture(scope="module")
def stalling(servers: Servers, export_stall: threading.Event) -> Iterator[LiveService]:
    with module_service(servers, lambda app: Gatekeeper(app, stall_exports=export_stall)) as live:
        yield live


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_export_leaves_no_file(
    stalling: LiveService, export_stall: threading.Event, tmp_path: Path, sig: int
) -> None:
    org = new_org(stalling)
    write(org, [entry("tagger", f"m{i}") for i in range(10)])
    out = tmp_path / "logs.jsonl"
    export_stall.set()
    process = CliProcess(["logs", "export", "--out", str(out)], org.env())
    try:
        wait_until(lambda: list(tmp_path.iterdir()), what="the temporary file")
        process.process.send_signal(sig)
        code = process.wait()
    finally:
        export_stall.clear()
        process.kill()
    assert code == (130 if sig == signal.SIGINT else 128 + signal.SIGTERM)
    assert list(tmp_path.iterdir()) == []
