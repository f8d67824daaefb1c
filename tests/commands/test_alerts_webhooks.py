"""`minerva-ai alerts webhooks add|list|remove|rotate|test` against a live service."""

from __future__ import annotations

import json

from tests.commands.conftest import Run
from tests.conftest import LiveService

# Never resolves (.invalid): accepted by the SSRF rule, and nothing leaves the machine.
URL = "https://hooks.example.invalid/minerva"


def test_add_prints_the_secret_once_and_list_never_shows_it(run: Run) -> None:
    added = run("alerts", "webhooks", "add", "ops", URL, "--min-severity", "warning")
    assert added.exit_code == 0, added.stderr
    secret = added.stdout.strip()
    assert secret.startswith("whsec_")
    assert "only time the secret is shown" in added.stderr

    listed = run("alerts", "webhooks", "list", "-o", "json")
    assert listed.exit_code == 0, listed.stderr
    [webhook] = json.loads(listed.stdout)
    assert (webhook["name"], webhook["url"], webhook["min_severity"]) == ("ops", URL, "warning")
    assert secret not in listed.stdout and "secret" not in webhook
    table = run("alerts", "webhooks", "list")
    [row] = table.stdout.splitlines()  # piped: tab-separated, one line per webhook
    assert row.split("\t")[:5] == [webhook["id"], "ops", URL, "json", "warning"]
    assert secret not in table.stdout


def test_filters_rotate_remove_by_name(run: Run, live_service: LiveService) -> None:
    assert run("features", "create", "search").exit_code == 0
    added = run(
        "alerts", "webhooks", "add", "chat", URL, "--slack",
        "--feature", "search", "--label", "team=a", "--label", "tier=1", "-o", "json",
    )  # fmt: skip
    assert added.exit_code == 0, added.stderr
    created = json.loads(added.stdout)
    assert created["format"] == "slack" and created["labels"] == {"team": "a", "tier": "1"}
    assert len(created["features"]) == 1

    rotated = run("alerts", "webhooks", "rotate", "chat")
    assert rotated.exit_code == 0, rotated.stderr
    assert rotated.stdout.strip().startswith("whsec_")
    assert rotated.stdout.strip() != created["secret"]
    assert "the old one signs too until" in rotated.stderr

    removed = run("alerts", "webhooks", "remove", "chat")
    assert removed.exit_code == 0, removed.stderr
    assert f"removed webhook chat ({created['id']})" in removed.stderr
    assert json.loads(run("alerts", "webhooks", "list", "-o", "json").stdout) == []


def test_refusals_exit_2_for_flags_and_3_for_the_service(run: Run) -> None:
    bad_label = run("alerts", "webhooks", "add", "x", URL, "--label", "team")
    assert bad_label.exit_code == 2 and "expected key=value" in bad_label.stderr
    bad_severity = run("alerts", "webhooks", "add", "x", URL, "--min-severity", "fatal")
    assert bad_severity.exit_code == 2
    refused = run("alerts", "webhooks", "add", "x", "http://127.0.0.1:9/hook")
    assert refused.exit_code == 3
    assert "127.0.0.1 is a loopback address" in refused.stderr
    assert "Traceback" not in refused.stderr
    missing = run("alerts", "webhooks", "remove", "ghost")
    assert missing.exit_code == 3 and "webhook 'ghost' not found" in missing.stderr


def test_test_reports_what_the_receiver_did_and_exits_1_when_not_delivered(run: Run) -> None:
    assert run("alerts", "webhooks", "add", "ops", URL).exit_code == 0
    tested = run("alerts", "webhooks", "test", "ops", "-o", "json")
    assert tested.exit_code == 1
    result = json.loads(tested.stdout)
    assert result["delivered"] is False and result["status_code"] is None
    assert "does not resolve" in result["error"]
    assert "did not accept the test event" in tested.stderr
