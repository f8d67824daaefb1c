"""`minerva-ai features metrics` and `features list --with-metrics` against the live service:
TSV when piped, the series as json and csv, --watch, and the exit codes of bad input."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import pytest

from minerva_ai.cli.metricsview import parse_span, sort_features, sparkline, sparkline_table
from minerva_ai.core.errors import ConfigError
from tests.commands.conftest import Run
from tests.conftest import MINERVA_AI, WAIT, LiveService, wait_until
from tests.logs_support import CliProcess, Org, entry, stamp


def report(
    live: LiveService,
    feature: str,
    statuses: list[str],
    model: str = "gpt-a",
    seconds_ago: float = 0,
) -> None:
    """Calls as an application reports them (log entries with a status)."""
    entries = [
        entry(
            feature,
            f"call {i}",
            source="app",
            status=status,
            model=model,
            latency_ms=200,
            tokens_in=10,
            tokens_out=5,
            cost=0.01,
            timestamp=stamp(seconds_ago),
        )
        for i, status in enumerate(statuses)
    ]
    org = Org(live.url, live.token, live.org_id, live.database_url)
    with org.client() as client:
        assert client.logs.ingest(entries)["stored"] == len(entries)


@pytest.fixture
def traffic(run: Run, live_service: LiveService) -> LiveService:
    """Features tagger (3 calls by two models, one an error) and idle (none)."""
    for name in ("tagger", "idle"):
        assert run("features", "create", name).exit_code == 0
    report(live_service, "tagger", ["success", "error"], model="primary")
    report(live_service, "tagger", ["success"], model="fallback")
    return live_service


def fields(tsv: str) -> dict[str, str]:
    return dict(line.split("\t", 1) for line in tsv.splitlines())


def test_piped_it_prints_the_current_figures_as_field_value_lines(run: Run, traffic: Any) -> None:
    result = run("features", "metrics", "tagger", "--window", "1h")

    assert result.exit_code == 0, result.stderr
    got = fields(result.stdout)
    assert (got["feature"], got["window"], got["requests"], got["errors"]) == (
        "tagger",
        "1h",
        "3",
        "1",
    )
    assert got["error_rate"] == "33.3"
    assert got["status"] in ("healthy", "warning", "error")
    assert got["as_of"].endswith("Z")
    assert "▁" not in result.stdout  # sparklines only on a terminal


def test_by_model_piped_is_a_row_per_model_without_header(run: Run, traffic: Any) -> None:
    result = run("features", "metrics", "tagger", "--by", "model")

    assert result.exit_code == 0, result.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in result.stdout.splitlines()}
    assert set(rows) == {"primary", "fallback"}
    assert rows["primary"][4] == "2"  # REQUESTS
    assert rows["fallback"][6] == "0.0"  # ERROR %


def test_json_is_the_series_and_csv_a_row_per_step(run: Run, traffic: Any) -> None:
    result = run("features", "metrics", "tagger", "--window", "2h", "--step", "5m", "-o", "json")
    assert result.exit_code == 0, result.stderr
    series = json.loads(result.stdout)
    assert (series["feature"], series["step"]) == ("tagger", "5m")
    assert sum(p["requests"] for p in series["points"]) == 3
    assert 24 <= len(series["points"]) <= 25

    table = run("features", "metrics", "tagger", "-o", "csv")
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert table.exit_code == 0
    assert sum(int(r["requests"]) for r in rows) == 3
    assert sum(int(r["errors"]) for r in rows) == 1
    assert all(r["time"].endswith("Z") for r in rows)

    split = run("features", "metrics", "tagger", "--by", "model", "-o", "csv")
    by_model: dict[str, int] = {}
    for row in csv.DictReader(io.StringIO(split.stdout)):
        by_model[row["model"]] = by_model.get(row["model"], 0) + int(row["requests"])
    assert by_model == {"primary": 2, "fallback": 1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--window", "0m"], "--window"),
        (["--window", "5"], "--window"),
        (["--step", "30s"], "--step"),
        (["--by", "region"], "--by"),
    ],
)
def test_a_malformed_flag_exits_2_before_any_request(
    args: list[str], message: str, run: Run
) -> None:
    result = run("features", "metrics", "tagger", *args)
    assert result.exit_code == 2
    assert message in result.stderr and result.stdout == ""


def test_what_the_service_refuses_exits_3_with_its_message(run: Run, traffic: Any) -> None:
    missing = run("features", "metrics", "nope")
    assert missing.exit_code == 3
    assert "error:" in missing.stderr and "nope" in missing.stderr

    too_many = run("features", "metrics", "tagger", "--window", "30d", "-o", "json")
    assert too_many.exit_code == 3
    assert "step" in too_many.stderr or "points" in too_many.stderr


def test_list_with_metrics_adds_health_trend_and_status_words(
    run: Run, traffic: LiveService
) -> None:
    report(traffic, "tagger", ["error"] * 4, seconds_ago=90 * 60)  # the hour before: worse
    plain = run("features", "list")
    result = run("features", "list", "--with-metrics", "--window", "1h")

    assert result.exit_code == 0, result.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in result.stdout.splitlines()}
    assert len(rows["tagger"]) == len(plain.stdout.splitlines()[0].split("\t")) + 4
    health, trend, status, open_alerts = rows["tagger"][-4:]
    assert float(health) > 0 and status in ("healthy", "warning", "error")
    assert trend == "up" and open_alerts == "0"
    assert (rows["idle"][-4], rows["idle"][-2]) == ("", "no_data")

    as_json = json.loads(run("features", "list", "--with-metrics", "-o", "json").stdout)
    metrics = {f["name"]: f["metrics"] for f in as_json}
    assert (metrics["tagger"]["requests"], metrics["tagger"]["window"]) == (3, "5m")
    assert "metrics" not in json.loads(run("features", "list", "-o", "json").stdout)[0]


def test_watch_prints_a_line_per_live_update_until_ctrl_c(traffic: LiveService) -> None:
    env = {"MINERVA_URL": traffic.url, "MINERVA_TOKEN": traffic.token}
    watch = CliProcess(["features", "metrics", "idle", "--watch", "-o", "jsonl"], env)
    try:
        wait_until(lambda: watch.stdout or not watch.running(), what="the first update")
        assert json.loads(watch.stdout[0])["requests"] == 0
        report(traffic, "idle", ["timeout", "success"])

        def counted() -> bool:
            return any(json.loads(line)["requests"] == 2 for line in list(watch.stdout))

        wait_until(counted, what="an update with the new calls")
        assert watch.interrupt() == 130
    finally:
        watch.kill()
    last = json.loads(watch.stdout[-1])
    assert (last["feature"], last["timeouts"]) == ("idle", 1)
    assert "live (Ctrl-C to stop)" in watch.err()


def test_watch_piped_table_is_tsv_without_header(traffic: LiveService) -> None:
    env = {"MINERVA_URL": traffic.url, "MINERVA_TOKEN": traffic.token}
    watch = CliProcess(["features", "metrics", "tagger", "--watch"], env)
    try:
        wait_until(lambda: len(watch.stdout) >= 2 or not watch.running(), what="two updates")
        assert watch.interrupt() == 130
    finally:
        watch.kill()
    cells = watch.stdout[0].rstrip("\n").split("\t")
    assert cells[0].endswith("Z") and cells[4] == "3"  # AS OF, REQUESTS
    assert not any("AS OF" in line for line in watch.stdout)


# ------------------------------------------------------------------ without a service


def test_spans_are_whole_minutes_hours_or_days() -> None:
    assert [parse_span(s) for s in ("1m", "90m", "24h", "7d")] == ["1m", "90m", "24h", "7d"]
    for bad in ("0m", "1.5h", "30s", "1w", "-5m", "m", ""):
        with pytest.raises(ConfigError):
            parse_span(bad)


def test_sparklines_scale_to_the_largest_value_and_merge_to_their_width() -> None:
    assert sparkline([0, 2, 8, None]) == "▁▃█ "
    assert sparkline([0, 0, 0]) == "▁▁▁"
    assert sparkline([1, 1, 0, 0], width=2) == "█▁"  # neighbours summed
    assert sparkline([5, 1, 0, 2], width=2, merge=max) == "█▄"
    assert len(sparkline(list(range(1440)), width=60)) == 60
    lines = sparkline_table([{"requests": 0, "p95_ms": None}, {"requests": 2, "p95_ms": 80.0}])
    assert lines.splitlines()[2] == "p95 ms     █  max 80"  # the blank step keeps its place


def test_sort_orders_put_what_needs_attention_first() -> None:
    rows = [
        {"feature": "b", "status": "healthy", "requests_per_minute": 9.0, "p95_ms": None},
        {"feature": "a", "status": "no_data", "requests_per_minute": 0.0, "p95_ms": None},
        {"feature": "c", "status": "error", "requests_per_minute": 1.0, "p95_ms": 900.0},
    ]
    assert [r["feature"] for r in sort_features(rows, "status")] == ["c", "b", "a"]
    assert [r["feature"] for r in sort_features(rows, "name")] == ["a", "b", "c"]
    assert [r["feature"] for r in sort_features(rows, "rpm")] == ["b", "c", "a"]
    assert [r["feature"] for r in sort_features(rows, "p95")] == ["c", "a", "b"]
    assert [r["feature"] for r in sort_features(rows, "rpm", reverse=True)] == ["a", "c", "b"]


def test_on_a_terminal_the_figures_come_with_sparklines(traffic: LiveService) -> None:
    import os

    import pexpect

    env = {**os.environ, "MINERVA_URL": traffic.url, "MINERVA_TOKEN": traffic.token}
    env.update(NO_COLOR="1", TERM="xterm")
    child = pexpect.spawn(
        MINERVA_AI,
        ["features", "metrics", "tagger", "--by", "model"],
        env=env,
        dimensions=(60, 120),
        encoding="utf-8",
        timeout=WAIT,
    )
    child.expect(pexpect.EOF)
    child.close()
    screen = child.before
    assert child.exitstatus == 0, screen
    assert re.search(r"requests +3\r?\n", screen)
    assert "over the last 1h, per 1m:" in screen
    sparks = {
        label: line[10 : line.rindex("  max")]
        for line in screen.splitlines()
        for label in ("requests", "errors", "p95 ms")
        if line.startswith(label + " ") and "  max " in line
    }
    assert set(sparks) == {"requests", "errors", "p95 ms"}
    assert sparks["requests"].startswith("▁") and "█" in sparks["requests"]
    assert "█" in sparks["errors"]
    assert sparks["p95 ms"].startswith(" ") and "█" in sparks["p95 ms"]  # no calls: blank
    assert re.search(r"MODEL +STATUS", screen) and re.search(r"primary +\w+", screen)


def test_watch_on_a_terminal_shows_its_header_once(traffic: LiveService) -> None:
    import os
    import signal

    import pexpect

    env = {**os.environ, "MINERVA_URL": traffic.url, "MINERVA_TOKEN": traffic.token}
    child = pexpect.spawn(
        MINERVA_AI,
        ["features", "metrics", "tagger", "--watch"],
        env={**env, "NO_COLOR": "1", "TERM": "xterm"},
        encoding="utf-8",
        timeout=WAIT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        child.expect(r"AS OF +STATUS +HEALTH +TREND +REQUESTS")
        for _ in range(2):  # two updates, each a line of its own
            child.expect(r"\r\n\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +\w+ +[\d.]+ +\S+ +3 ")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130
    assert "AS OF" not in child.before  # the header came once
