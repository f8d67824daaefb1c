"""``minerva-ai alerts``: list, show, ack, resolve, rules (settings changes that re-read and
retry once on a concurrent write), rules test, silences, watch across a service restart,
and the exit codes of bad flags (2) and refusals (3). The service's evaluator runs when the
test says (``Alerting.evaluate``, on a clock of the test's own)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from click.testing import Result

from minerva_ai.core.protocol import API_PREFIX
from tests.alerts_support import RULE, Alerting, alerting_service, free_port
from tests.commands.conftest import invoke
from tests.conftest import WAIT, Servers, wait_until
from tests.logs_support import CliProcess

SLOW = {"name": "slow", "metric": "p95_ms", "operator": ">", "threshold": 2000}


@pytest.fixture
def alerting(database_url: str, servers: Servers) -> Iterator[Alerting]:
    with alerting_service(database_url, servers.redis_url) as found:
        yield found


def cli(alerting: Alerting, *args: str) -> Result:
    return invoke(["alerts", *args], **alerting.env)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def rules_of(alerting: Alerting, feature: str = "tagger") -> list[dict[str, Any]]:
    settings = alerting.http.get(f"/features/{feature}/settings").json()["data"]
    rules: list[dict[str, Any]] = settings["settings"]["monitoring"]["alert_rules"]
    return rules


def settings_version(alerting: Alerting) -> int:
    version: int = alerting.http.get("/features/tagger/settings").json()["data"]["version"]
    return version


# ------------------------------------------------------------------ list, show, ack, resolve


def test_list_show_ack_and_resolve(alerting: Alerting) -> None:
    ok(
        cli(
            alerting,
            "rules",
            "add",
            "tagger",
            "--name",
            "errors",
            "--metric",
            "error_rate",
            "--operator",
            ">",
            "--threshold",
            "5",
            "--window",
            "1h",
        )
    )
    rule_version = settings_version(alerting)
    assert ok(cli(alerting, "list")).stdout == ""
    alerting.calls("error", 5)
    alerting.calls("success", 5)
    alerting.evaluate()

    listed = ok(cli(alerting, "list")).stdout.splitlines()
    [row] = [line.split("\t") for line in listed]
    alert_id = row[0]
    assert row[1:6] == ["tagger", "errors", "warning", "open", "50"]
    opened = datetime.fromisoformat(row[6])  # piped: ISO 8601 UTC
    assert abs(opened - alerting.clock) < timedelta(milliseconds=1)
    assert row[7] == ""  # not acknowledged
    [as_json] = json.loads(ok(cli(alerting, "list", "-o", "json")).stdout)
    assert as_json["id"] == alert_id and as_json["threshold"] == 5
    assert ok(cli(alerting, "list", "--severity", "critical")).stdout == ""
    assert ok(cli(alerting, "list", "--feature", "tagger", "--label", "team=x")).stdout == ""

    shown = ok(cli(alerting, "show", alert_id[:8])).stdout  # the start of an id will do
    assert f"id\t{alert_id}" in shown
    assert "transitions:" in shown and "\tbreach\tok\tfiring\t" in shown
    assert "webhook deliveries:" in shown
    assert f"version {rule_version} at " in shown
    assert f"undo: minerva-ai features settings rollback tagger --to {rule_version - 1}" in shown
    detail = json.loads(ok(cli(alerting, "show", alert_id, "-o", "json")).stdout)
    assert [t["event"] for t in detail["transitions"]] == ["breach"]
    [change] = [c for c in detail["settings_changes"] if c["version"] == rule_version]
    assert (
        change["rollback"]
        == f"minerva-ai features settings rollback tagger --to {rule_version - 1}"
    )

    acked = ok(cli(alerting, "ack", alert_id, "--note", "looking"))
    assert "acknowledged" in acked.stderr
    assert "acknowledge_note\tlooking" in acked.stdout
    assert ok(cli(alerting, "list")).stdout.split("\t")[-1].strip() == "yes"
    resolved = ok(cli(alerting, "resolve", alert_id, "--note", "rolled back"))
    assert "state\tresolved" in resolved.stdout
    assert ok(cli(alerting, "list")).stdout == ""
    assert ok(cli(alerting, "list", "--state", "resolved")).stdout.startswith(alert_id)
    assert ok(cli(alerting, "list", "--state", "all")).stdout.startswith(alert_id)

    for verb in ("resolve", "ack"):
        refused = cli(alerting, verb, alert_id)
        assert refused.exit_code == 3, refused.stderr
        assert "is resolved" in refused.stderr and "Traceback" not in refused.stderr
    events = json.loads(ok(cli(alerting, "show", alert_id, "-o", "json")).stdout)["transitions"]
    assert [t["event"] for t in events] == ["breach", "acknowledge", "resolve"]


def test_an_unknown_alert_is_refused_with_exit_3(alerting: Alerting) -> None:
    for ref in ("00000000-0000-4000-8000-000000000000", "abcdef12", "not-an-id"):
        result = cli(alerting, "show", ref)
        assert result.exit_code == 3, (ref, result.stderr)
        assert "not found" in result.stderr or "no alert id" in result.stderr


# ------------------------------------------------------------------ rules


class ConcurrentWriter:
    """In front of the service: after the CLI has read tagger's settings, and before it
    gets the answer, another client adds a rule (once per queued write)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.url = ""
        self.token = ""
        self.writes: list[dict[str, Any]] = []
        self.writing = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        reading = (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"] == f"{API_PREFIX}/features/tagger/settings"
            and self.writes
            and not self.writing
        )
        if not reading:
            await self.app(scope, receive, send)
            return
        held: list[dict[str, Any]] = []

        async def hold(message: dict[str, Any]) -> None:
            held.append(message)

        await self.app(scope, receive, hold)
        rule = self.writes.pop(0)
        self.writing = True
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(base_url=self.url + API_PREFIX, headers=headers) as http:
            current = (await http.get("/features/tagger/settings")).json()["data"]
            monitoring = dict(current["settings"].get("monitoring") or {})
            monitoring["alert_rules"] = [*(monitoring.get("alert_rules") or []), rule]
            body = {"version": current["version"], "settings": {"monitoring": monitoring}}
            written = await http.put("/features/tagger/settings", json=body)
            assert written.status_code == 200, written.text
        self.writing = False
        for message in held:
            await send(message)


@pytest.fixture
def contended(database_url: str, servers: Servers) -> Iterator[tuple[Alerting, ConcurrentWriter]]:
    writers: list[ConcurrentWriter] = []

    def wrap(app: Any) -> ConcurrentWriter:
        writers.append(ConcurrentWriter(app))
        return writers[-1]

    with alerting_service(database_url, servers.redis_url, wrap=wrap) as found:
        writers[0].url, writers[0].token = found.service.url, found.service.token
        yield found, writers[0]


RULE_FLAGS = ("--metric", "error_rate", "--operator", ">", "--threshold", "5")


def test_rules_add_update_remove_reapply_once_on_a_concurrent_write(
    contended: tuple[Alerting, ConcurrentWriter],
) -> None:
    alerting, writer = contended
    before = settings_version(alerting)
    writer.writes.append(SLOW)
    added = ok(
        cli(
            alerting,
            "rules",
            "add",
            "tagger",
            "--name",
            "errors",
            *RULE_FLAGS,
            "--warning-threshold",
            "2",
            "--window",
            "5m",
            "--for",
            "2m",
            "--severity",
            "critical",
            "--min-requests",
            "20",
            "--no-data",
            "ok",
            "--keep-firing-for",
            "1m",
            "--renotify",
            "0",
            "--label",
            "team=search",
            "--runbook-url",
            "https://runbooks.example/errors",
        )
    )
    assert "re-applied" in added.stderr
    assert added.stdout.strip() == f"settings version {before + 2}"
    assert [r["name"] for r in rules_of(alerting)] == ["slow", "errors"]  # neither lost
    assert rules_of(alerting)[1] == {
        "name": "errors",
        "metric": "error_rate",
        "operator": ">",
        "threshold": 5.0,
        "warning_threshold": 2.0,
        "window": "5m",
        "for": "2m",
        "severity": "critical",
        "min_requests": 20,
        "no_data": "ok",
        "keep_firing_for": "1m",
        "renotify": "0",
        "labels": {"team": "search"},
        "runbook_url": "https://runbooks.example/errors",
    }

    listed = ok(cli(alerting, "rules", "list", "tagger")).stdout.splitlines()
    assert [line.split("\t")[:8] for line in listed] == [
        ["tagger", "slow", "p95_ms", "> 2000", "5m", "", "warning", "ok"],
        ["tagger", "errors", "error_rate", "> 5 (warn > 2)", "5m", "2m", "critical", "ok"],
    ]

    writer.writes.append({**SLOW, "name": "slower"})
    updated = ok(
        cli(
            alerting,
            "rules",
            "update",
            "tagger",
            "errors",
            "--threshold",
            "7",
            "--disabled",
            "-o",
            "json",
        )
    )
    assert json.loads(updated.stdout)["version"] == settings_version(alerting)
    errors = next(r for r in rules_of(alerting) if r["name"] == "errors")
    assert (errors["threshold"], errors["enabled"], errors["for"]) == (7.0, False, "2m")
    assert [r["name"] for r in rules_of(alerting)] == ["slow", "errors", "slower"]

    version = settings_version(alerting)
    dry = ok(cli(alerting, "rules", "remove", "tagger", "slow", "--dry-run"))
    assert "monitoring.alert_rules" in dry.stdout and "nothing written" in dry.stderr
    assert settings_version(alerting) == version
    removed = ok(cli(alerting, "rules", "remove", "tagger", "slow"))
    assert removed.stdout.strip() == f"settings version {version + 1}"
    assert [r["name"] for r in rules_of(alerting)] == ["errors", "slower"]


def test_a_second_concurrent_write_is_refused_with_exit_3(
    contended: tuple[Alerting, ConcurrentWriter],
) -> None:
    alerting, writer = contended
    writer.writes += [SLOW, {**SLOW, "name": "slower"}]
    result = cli(alerting, "rules", "add", "tagger", "--name", "errors", *RULE_FLAGS)
    assert result.exit_code == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert [r["name"] for r in rules_of(alerting)] == ["slow", "slower"]


def test_rules_refusals_exit_3_and_name_the_problem(alerting: Alerting) -> None:
    alerting.rules(RULE)
    duplicate = cli(alerting, "rules", "add", "tagger", "--name", "errors", *RULE_FLAGS)
    assert duplicate.exit_code == 3 and "already has an alert rule 'errors'" in duplicate.stderr
    missing = cli(alerting, "rules", "update", "tagger", "nope", "--threshold", "1")
    assert missing.exit_code == 3 and "no alert rule 'nope'" in missing.stderr
    gone = cli(alerting, "rules", "remove", "tagger", "nope")
    assert gone.exit_code == 3
    percent = cli(
        alerting,
        "rules",
        "add",
        "tagger",
        "--name",
        "high",
        "--metric",
        "error_rate",
        "--operator",
        ">",
        "--threshold",
        "150",
    )
    assert percent.exit_code == 3, percent.stderr
    assert "monitoring.alert_rules[1]" in percent.stderr
    too_soon = cli(alerting, "rules", "update", "tagger", "errors", "--for", "5s")
    assert too_soon.exit_code == 3 and "evaluation interval" in too_soon.stderr
    unknown = cli(alerting, "rules", "list", "nosuch")
    assert unknown.exit_code == 3
    assert [r["name"] for r in rules_of(alerting)] == ["errors"]


def test_rules_list_of_every_feature_and_rules_test(alerting: Alerting) -> None:
    assert alerting.http.post("/features", json={"name": "mod"}).status_code == 201
    alerting.rules(RULE)
    alerting.rules({**RULE, "name": "quiet", "threshold": 99}, feature="mod")
    alerting.calls("error", 5)
    alerting.calls("success", 10)
    tried = ok(cli(alerting, "rules", "test", "tagger", "errors")).stdout
    assert tried.strip() == (
        "errors: ok -> firing (value 33.33 over 1h, 15 requests): error_rate 33.3333 over 1h > 5"
    )
    as_json = json.loads(
        ok(cli(alerting, "rules", "test", "tagger", "errors", "-o", "json")).stdout
    )
    assert (as_json["would_be"], as_json["requests"], as_json["events"]) == (
        "firing",
        15,
        ["breach"],
    )
    assert cli(alerting, "rules", "test", "tagger", "nope").exit_code == 3
    alerting.evaluate()
    rows = [line.split("\t") for line in ok(cli(alerting, "rules", "list")).stdout.splitlines()]
    assert [(r[0], r[1], r[7]) for r in rows] == [
        ("mod", "quiet", "no_data"),
        ("tagger", "errors", "firing"),
    ]
    since = datetime.fromisoformat(rows[1][8])
    assert abs(since - alerting.clock) < timedelta(seconds=1)


# ------------------------------------------------------------------ silences


def test_silence_add_list_expire(alerting: Alerting) -> None:
    made = ok(
        cli(
            alerting,
            "silence",
            "add",
            "tagger",
            "--rule",
            "errors",
            "--label",
            "team=a",
            "--duration",
            "2h",
            "--comment",
            "deploying",
            "-o",
            "json",
        )
    )
    silence = json.loads(made.stdout)
    assert (silence["feature"], silence["rule"], silence["labels"]) == (
        "tagger",
        "errors",
        {"team": "a"},
    )
    length = datetime.fromisoformat(silence["ends_at"]) - datetime.fromisoformat(
        silence["starts_at"]
    )
    assert length == timedelta(hours=2)
    everyone = json.loads(
        ok(
            cli(
                alerting,
                "silence",
                "add",
                "--duration",
                "1h30m",
                "--starts",
                "30m",
                "--comment",
                "window",
                "-o",
                "json",
            )
        ).stdout
    )
    starts = datetime.fromisoformat(everyone["starts_at"])
    assert everyone["feature"] is None and not everyone["active"]
    assert datetime.fromisoformat(everyone["ends_at"]) - starts == timedelta(minutes=90)
    until = json.loads(
        ok(
            cli(
                alerting,
                "silence",
                "add",
                "tagger",
                "--until",
                "3h",
                "--comment",
                "later",
                "-o",
                "json",
            )
        ).stdout
    )
    assert until["active"]

    listed = [line.split("\t") for line in ok(cli(alerting, "silence", "list")).stdout.splitlines()]
    assert {row[0] for row in listed} == {silence["id"], everyone["id"], until["id"]}
    assert [row[1] for row in listed if row[0] == everyone["id"]] == [""]

    expired = ok(cli(alerting, "silence", "expire", silence["id"]))
    assert "expired" in expired.stderr
    listed = ok(cli(alerting, "silence", "list")).stdout
    assert silence["id"] not in listed
    every = json.loads(ok(cli(alerting, "silence", "list", "--all", "-o", "json")).stdout)
    [gone] = [s for s in every if s["id"] == silence["id"]]
    assert gone["active"] is False
    other = silence["id"][:-1] + ("1" if silence["id"].endswith("0") else "0")  # not this one
    assert cli(alerting, "silence", "expire", other).exit_code == 3
    refused = cli(alerting, "silence", "add", "nosuch", "--duration", "1h", "--comment", "x")
    assert refused.exit_code == 3


# ------------------------------------------------------------------ bad flags


@pytest.mark.parametrize(
    "args",
    [
        ["list", "--state", "closed"],
        ["list", "--label", "novalue"],
        ["list", "--label", "=x"],
        ["list", "--severity", "fatal"],
        [
            "rules",
            "add",
            "tagger",
            "--name",
            "x",
            "--metric",
            "latency",
            "--operator",
            ">",
            "--threshold",
            "5",
        ],
        [
            "rules",
            "add",
            "tagger",
            "--name",
            "x",
            "--metric",
            "error_rate",
            "--operator",
            "!=",
            "--threshold",
            "5",
        ],
        [
            "rules",
            "add",
            "tagger",
            "--name",
            "x",
            "--metric",
            "error_rate",
            "--operator",
            ">",
            "--threshold",
            "five",
        ],
        ["rules", "add", "tagger", "--metric", "error_rate", "--operator", ">", "--threshold", "5"],
        ["rules", "add", "tagger", "--name", "x", *RULE_FLAGS, "--window", "5x"],
        ["rules", "add", "tagger", "--name", "x", *RULE_FLAGS, "--window", "0m"],
        ["rules", "add", "tagger", "--name", "x", *RULE_FLAGS, "--for", "1.5m"],
        ["rules", "add", "tagger", "--name", "x", *RULE_FLAGS, "--renotify", "never"],
        ["rules", "add", "tagger", "--name", "x", *RULE_FLAGS, "--no-data", "maybe"],
        ["rules", "add", "tagger", "--name", "x", *RULE_FLAGS, "--min-requests", "-1"],
        ["rules", "update", "tagger", "errors"],
        ["silence", "add", "tagger", "--comment", "x"],
        ["silence", "add", "tagger", "--duration", "2h", "--until", "3h", "--comment", "x"],
        ["silence", "add", "tagger", "--duration", "soon", "--comment", "x"],
        ["silence", "add", "tagger", "--until", "tomorrow", "--comment", "x"],
        ["silence", "add", "tagger", "--duration", "2h"],
        ["watch", "--after", "abc"],
        ["watch", "-o", "csv"],
        ["watch", "--transport", "sse"],
    ],
)
def test_bad_flags_exit_2_before_any_request(args: list[str]) -> None:
    # No service at this URL: a request would exit 4, not 2.
    result = invoke(["alerts", *args], MINERVA_URL="http://127.0.0.1:9", MINERVA_TOKEN="t")
    assert result.exit_code == 2, (args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------ watch


def lines_of(process: CliProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in process.stdout]


def test_watch_prints_each_transition_once_across_a_restart(
    database_url: str, servers: Servers
) -> None:
    with alerting_service(database_url, servers.redis_url, port=free_port()) as alerting:
        alerting.rules(RULE)
        alerting.calls("error", 5)
        alerting.cycle()  # before the watch's cursor: not printed
        start = alerting.head()

        def expected() -> list[str]:
            return [t["cursor"] for t in alerting.transitions(start)]

        watch = CliProcess(["alerts", "watch", "--after", start, "-o", "jsonl"], alerting.env)
        try:
            alerting.cycle()
            wait_until(lambda: len(watch.stdout) == len(expected()), WAIT, "the first cycle")
            alerting.stop()
            wait_until(lambda: "connection lost" in watch.err(), WAIT, "the watch to notice")
            alerting.evaluate()  # committed while the service is down: a new alert opens
            assert len(expected()) > len(watch.stdout)
            alerting.start_again()
            wait_until(lambda: "reconnected" in watch.err(), WAIT, "the watch to reconnect")
            alerting.cycle()
            wait_until(lambda: len(watch.stdout) >= len(expected()), WAIT, "the watch to catch up")
            assert watch.interrupt() == 130
        finally:
            watch.kill()
    printed = lines_of(watch)
    assert [e["cursor"] for e in printed] == expected()  # each once, in commit order
    assert [e["transition"]["event"] for e in printed][:3] == ["breach", "acknowledge", "resolve"]
    assert all(e["transition"]["id"] and e["alert"]["id"] for e in printed)
    assert "Traceback" not in watch.err()


def test_a_bad_duration_names_its_flag() -> None:
    args = ["alerts", "silence", "add", "tagger", "--duration", "soon", "--comment", "x"]
    result = invoke(args, MINERVA_URL="http://127.0.0.1:9", MINERVA_TOKEN="t")
    assert result.exit_code == 2 and "Invalid value for '--duration'" in result.stderr
