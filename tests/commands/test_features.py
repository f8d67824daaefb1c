"""`minerva-ai features` and `features settings` against the live service."""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import Result

from minerva_ai.cli.settings_edit import parse_assignment, update_settings
from minerva_ai.client import Client
from minerva_ai.core.errors import ConflictError
from tests.commands.conftest import Run
from tests.conftest import MINERVA_AI, WAIT, LiveService


def create(run: Run, *names: str) -> None:
    for name in names:
        assert run("features", "create", name).exit_code == 0


def set_settings(run: Run, feature: str, *args: str, input: str | None = None) -> Result:
    """`minerva-ai features settings set FEATURE ARGS...`"""
    return run("features", "settings", "set", feature, *args, input=input)


def settings_of(run: Run, feature: str) -> dict[str, Any]:
    result = run("features", "settings", "get", feature, "-o", "json")
    assert result.exit_code == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def test_create_show_and_list_in_every_format(run: Run) -> None:
    created = run(
        "features",
        "create",
        "photo-tagging",
        "--display-name",
        "Photo tagging",
        "--description",
        "=tags for photos",
        "--status",
        "inactive",
        "-o",
        "json",
    )
    assert created.exit_code == 0
    feature = json.loads(created.stdout)
    assert (feature["name"], feature["status"], feature["settings_version"]) == (
        "photo-tagging",
        "inactive",
        1,
    )
    create(run, "moderation")

    shown = run("features", "show", "photo-tagging")
    assert "display_name\tPhoto tagging" in shown.stdout.splitlines()
    assert (
        run("features", "show", feature["id"], "-o", "json").stdout
        == run("features", "show", "photo-tagging", "-o", "json").stdout
    )

    tsv = run("features", "list").stdout.splitlines()
    assert [line.split("\t")[:2] for line in tsv] == [
        ["moderation", "active"],
        ["photo-tagging", "inactive"],
    ]
    assert tsv[1].split("\t")[4].endswith("Z")  # ISO 8601 UTC when piped

    as_json = json.loads(run("features", "list", "-o", "json").stdout)
    assert [f["name"] for f in as_json] == ["moderation", "photo-tagging"]
    lines = run("features", "list", "-o", "jsonl").stdout.splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["moderation", "photo-tagging"]
    assert [f["name"] for f in yaml.safe_load(run("features", "list", "-o", "yaml").stdout)] == [
        "moderation",
        "photo-tagging",
    ]
    rows = list(csv.DictReader(io.StringIO(run("features", "list", "-o", "csv").stdout)))
    assert [r["name"] for r in rows] == ["moderation", "photo-tagging"]

    inactive = run("features", "list", "--status", "inactive", "-o", "json").stdout
    assert [f["name"] for f in json.loads(inactive)] == ["photo-tagging"]
    found = run("features", "list", "--search", "photos", "-o", "json").stdout
    assert [f["name"] for f in json.loads(found)] == ["photo-tagging"]


def test_list_limit_cuts_and_says_so(run: Run) -> None:
    create(run, "a-one", "b-two", "c-three")
    limited = run("features", "list", "--limit", "2")
    assert [line.split("\t")[0] for line in limited.stdout.splitlines()] == ["a-one", "b-two"]
    assert "--limit 0" in limited.stderr
    everything = run("features", "list", "--limit", "0")
    assert len(everything.stdout.splitlines()) == 3
    assert everything.stderr == ""
    assert run("features", "list", "--limit", "-1").exit_code == 2


def test_an_empty_list_says_so_under_a_table_only(run: Run) -> None:
    empty = run("features", "list")
    assert empty.exit_code == 0 and empty.stdout == ""
    assert "no features yet: create one with `minerva-ai features create NAME`" in empty.stderr
    create(run, "a-one")
    unmatched = run("features", "list", "--search", "zzz")
    assert unmatched.stdout == "" and "no feature matches" in unmatched.stderr
    as_json = run("features", "list", "--search", "zzz", "-o", "json")
    assert as_json.stdout.strip() == "[]" and as_json.stderr == ""
    assert run("-q", "features", "list", "--search", "zzz").stderr == ""


@pytest.mark.parametrize(
    ("command", "status"),
    [("disable", "inactive"), ("maintenance", "maintenance"), ("enable", "active")],
)
def test_status_commands(run: Run, command: str, status: str) -> None:
    create(run, "photo-tagging")
    result = run("features", command, "photo-tagging", "-o", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["status"] == status
    assert f"is now {status}" in result.stderr
    assert (
        json.loads(run("features", "show", "photo-tagging", "-o", "json").stdout)["status"]
        == status
    )


def test_delete_needs_yes_when_not_interactive(run: Run) -> None:
    create(run, "photo-tagging")
    refused = run("features", "delete", "photo-tagging")
    assert refused.exit_code == 2
    assert "--yes" in refused.stderr
    assert run("features", "show", "photo-tagging").exit_code == 0
    deleted = run("features", "delete", "photo-tagging", "--yes", "-o", "json")
    assert deleted.exit_code == 0
    assert json.loads(deleted.stdout)["deleted"] is True
    gone = run("features", "show", "photo-tagging")
    assert gone.exit_code == 3


def test_service_refusals_exit_3_with_its_message_and_fields(run: Run) -> None:
    create(run, "photo-tagging")
    duplicate = run("features", "create", "photo-tagging")
    assert duplicate.exit_code == 3
    assert duplicate.stderr.startswith("error: ")
    bad_name = run("features", "create", "Not A Slug!")
    assert bad_name.exit_code == 3
    assert "  name: " in bad_name.stderr  # each bad field on its own line
    unknown = run("features", "enable", "nope")
    assert unknown.exit_code == 3


def test_other_organizations_features_are_not_found(run: Run, live_service: LiveService) -> None:
    create(run, "photo-tagging")
    _, other_admin = live_service.make_org("globex")
    result = run("features", "show", "photo-tagging", MINERVA_TOKEN=other_admin)
    assert result.exit_code == 3
    assert run("features", "list", MINERVA_TOKEN=other_admin).stdout == ""


def test_settings_get_prints_yaml_that_set_accepts_back(run: Run, tmp_path: Path) -> None:
    create(run, "photo-tagging")
    set_settings(run, "photo-tagging", "--set", "rate_limits.cost_per_day=5")
    got = run("features", "settings", "get", "photo-tagging")
    assert got.exit_code == 0
    sections = yaml.safe_load(got.stdout)
    assert sections["rate_limits"]["cost_per_day"] == 5
    assert "settings version 2" in got.stderr
    saved = tmp_path / "settings.yaml"
    saved.write_text(got.stdout)
    again = set_settings(run, "photo-tagging", str(saved))
    assert again.exit_code == 0
    assert "no changes" in again.stderr
    assert settings_of(run, "photo-tagging")["version"] == 2
    # the whole object, as -o yaml prints it, is accepted too
    whole = tmp_path / "whole.yaml"
    whole.write_text(run("features", "settings", "get", "photo-tagging", "-o", "yaml").stdout)
    assert "no changes" in set_settings(run, "photo-tagging", str(whole)).stderr
    old = run("features", "settings", "get", "photo-tagging", "--version", "1")
    assert yaml.safe_load(old.stdout)["rate_limits"] == {}


def test_set_fields_with_yaml_values_and_print_the_new_version(run: Run) -> None:
    create(run, "photo-tagging")
    result = set_settings(
        run,
        "photo-tagging",
        "--set",
        "rate_limits.requests_per_minute=100",
        "--set",
        "prompts.tag-photo.template=List tags for: {{ description }}",
        "-o",
        "json",
    )
    assert result.exit_code == 0, result.stderr
    new = json.loads(result.stdout)
    assert new["version"] == 2
    assert new["settings"]["rate_limits"] == {"requests_per_minute": 100}
    assert new["settings"]["prompts"]["tag-photo"]["template"] == "List tags for: {{ description }}"
    assert "version 1 -> 2" in result.stderr

    diff = set_settings(run, "photo-tagging", "--set", "rate_limits.requests_per_minute=200")
    assert diff.stdout == "~ rate_limits.requests_per_minute: 100 -> 200\n"
    assert settings_of(run, "photo-tagging")["settings"]["rate_limits"] == {
        "requests_per_minute": 200
    }


def test_a_file_replaces_only_its_sections(run: Run, tmp_path: Path) -> None:
    create(run, "photo-tagging")
    set_settings(run, "photo-tagging", "--set", "prompts.p.template=hi")
    path = tmp_path / "limits.yaml"
    path.write_text("rate_limits:\n  requests_per_minute: 600\n  tokens_per_minute: 200000\n")
    result = set_settings(run, "photo-tagging", str(path))
    assert result.exit_code == 0, result.stderr
    current = settings_of(run, "photo-tagging")
    assert current["version"] == 3
    assert current["settings"]["rate_limits"] == {
        "requests_per_minute": 600,
        "tokens_per_minute": 200000,
    }
    assert current["settings"]["prompts"] == {"p": {"template": "hi"}}
    from_stdin = set_settings(
        run, "photo-tagging", "-", input=json.dumps({"rate_limits": {"cost_per_day": 2.5}})
    )
    assert from_stdin.exit_code == 0
    assert settings_of(run, "photo-tagging")["settings"]["rate_limits"] == {"cost_per_day": 2.5}


def test_dry_run_shows_the_diff_and_writes_nothing(run: Run) -> None:
    create(run, "photo-tagging")
    result = set_settings(run, "photo-tagging", "--dry-run", "--set", "rate_limits.cost_per_day=10")
    assert result.exit_code == 0
    assert result.stdout == "+ rate_limits.cost_per_day: 10.0\n"
    assert "nothing written" in result.stderr
    as_json = json.loads(
        set_settings(
            run, "photo-tagging", "--dry-run", "--set", "rate_limits.cost_per_day=10", "-o", "json"
        ).stdout
    )
    assert as_json["diff"] == [
        {"path": "rate_limits.cost_per_day", "op": "add", "old": None, "new": 10.0}
    ]
    assert settings_of(run, "photo-tagging")["version"] == 1


def test_dry_run_is_validated_by_the_service(run: Run) -> None:
    create(run, "photo-tagging")
    result = set_settings(
        run, "photo-tagging", "--dry-run", "--set", "rate_limits.requests_per_minute=-5"
    )
    assert result.exit_code == 3
    assert "rate_limits.requests_per_minute" in result.stderr
    assert settings_of(run, "photo-tagging")["version"] == 1


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--set", "rate_limits.requests_per_minute"], "expected PATH=VALUE"),
        (["--set", "=5"], "expected PATH=VALUE"),
        (["--set", "rate_limits..x=5"], "empty part"),
        (["--set", "colours.x=5"], "unknown section 'colours'"),
        (["--set", "rate_limits=5"], "name a field"),
        (["--set", "rate_limits.x=[1"], "not valid YAML"),
        (["--set", "prompts.p.template={{ x }} and more"], "quote text"),
        (["/nonexistent/settings.yaml"], "cannot read /nonexistent/settings.yaml"),
        ([], "give a settings FILE"),
    ],
)
def test_bad_input_exits_2_with_the_reason(run: Run, args: list[str], reason: str) -> None:
    create(run, "photo-tagging")
    result = set_settings(run, "photo-tagging", *args)
    assert result.exit_code == 2
    assert reason in result.stderr
    assert settings_of(run, "photo-tagging")["version"] == 1


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("rate_limits: [\n", "not valid YAML or JSON"),
        ("- a\n", "expected a mapping"),
        ("colours: {}\n", "unknown settings section colours"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_bad_files_exit_2(run: Run, tmp_path: Path, content: str | bytes, reason: str) -> None:
    create(run, "photo-tagging")
    path = tmp_path / "bad.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = set_settings(run, "photo-tagging", str(path))
    assert result.exit_code == 2
    assert reason in result.stderr


def test_invalid_settings_exit_3_naming_each_field_and_write_nothing(run: Run) -> None:
    create(run, "photo-tagging")
    result = set_settings(
        run,
        "photo-tagging",
        "--set",
        "rate_limits.requests_per_minute=-1",
        "--set",
        "prompts.p.template=Hello {{ broken",
    )
    assert result.exit_code == 3
    assert "  rate_limits.requests_per_minute: " in result.stderr
    assert "  prompts.p.template: " in result.stderr
    assert settings_of(run, "photo-tagging")["version"] == 1


def test_unknown_feature_exits_3(run: Run) -> None:
    result = set_settings(run, "nope", "--set", "rate_limits.cost_per_day=1")
    assert result.exit_code == 3
    assert run("features", "settings", "get", "nope").exit_code == 3


def test_history_rollback_and_diff(run: Run, tmp_path: Path) -> None:
    create(run, "photo-tagging")
    set_settings(run, "photo-tagging", "--set", "rate_limits.requests_per_minute=5")
    set_settings(run, "photo-tagging", "--set", "rate_limits.requests_per_minute=7")

    history = run("features", "settings", "history", "photo-tagging").stdout.splitlines()
    assert [line.split("\t")[0] for line in history] == ["3", "2", "1"]
    assert history[0].split("\t")[-1] == "~rate_limits.requests_per_minute"
    entries = json.loads(
        run("features", "settings", "history", "photo-tagging", "-o", "json").stdout
    )
    assert entries[0]["diff"] == [
        {"path": "rate_limits.requests_per_minute", "op": "change", "old": 5, "new": 7}
    ]

    diff = run("features", "settings", "diff", "photo-tagging", "1", "3")
    assert diff.stdout == "+ rate_limits.requests_per_minute: 7\n"
    against_live = run("features", "settings", "diff", "photo-tagging", "2", "-o", "json")
    assert json.loads(against_live.stdout) == [
        {"path": "rate_limits.requests_per_minute", "op": "change", "old": 5, "new": 7}
    ]
    path = tmp_path / "f.yaml"
    path.write_text("rate_limits: {}\n")
    from_file = run("features", "settings", "diff", "photo-tagging", "--file", str(path))
    assert from_file.stdout == "- rate_limits.requests_per_minute: 7\n"
    assert run("features", "settings", "diff", "photo-tagging").exit_code == 2

    rolled = run("features", "settings", "rollback", "photo-tagging", "--to", "2", "-o", "json")
    assert rolled.exit_code == 0
    new = json.loads(rolled.stdout)
    assert (new["version"], new["settings"]["rate_limits"]) == (4, {"requests_per_minute": 5})
    assert "rolled back to version 2 as version 4" in rolled.stderr
    assert run("features", "settings", "rollback", "photo-tagging", "--to", "99").exit_code == 3
    assert run("features", "settings", "rollback", "photo-tagging").exit_code == 2


class RacingTransport(httpx.HTTPTransport):
    """After each settings read, someone else writes a new version before we do."""

    def __init__(self, live: LiveService, races: int) -> None:
        super().__init__()
        self.live = live
        self.races = races

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "GET" and request.url.path.endswith("/settings") and self.races:
            self.races -= 1
            response.read()
            version = response.json()["data"]["version"]
            headers = {"Authorization": f"Bearer {self.live.token}"}
            body = {"version": version, "settings": {"prompts": {f"p{version}": {"template": "x"}}}}
            httpx.put(
                f"{self.live.api}/features/photo-tagging/settings", json=body, headers=headers
            ).raise_for_status()
        return response


def test_set_rereads_and_retries_once_on_a_conflict(live_service: LiveService) -> None:
    assignment = parse_assignment("rate_limits.requests_per_minute=100")
    with Client(live_service.url, live_service.token) as plain:
        plain.features.create("photo-tagging")
    racing = RacingTransport(live_service, races=1)
    with Client(live_service.url, live_service.token, transport=racing) as client:
        update = update_settings(client, "photo-tagging", assignments=[assignment])
    assert update.attempts == 2
    assert update.after is not None and update.after["version"] == 3
    # both writes survive: the other writer's prompt and our limit
    assert update.after["settings"]["prompts"] == {"p1": {"template": "x"}}
    assert update.after["settings"]["rate_limits"] == {"requests_per_minute": 100}

    another = parse_assignment("rate_limits.requests_per_minute=200")
    twice = RacingTransport(live_service, races=2)
    with (
        Client(live_service.url, live_service.token, transport=twice) as client,
        pytest.raises(ConflictError),
    ):
        update_settings(client, "photo-tagging", assignments=[another])


def test_quiet_keeps_data_and_drops_progress(run: Run) -> None:
    result = run("-q", "features", "create", "photo-tagging", "-o", "json")
    assert result.exit_code == 0
    assert result.stderr == ""
    assert json.loads(result.stdout)["name"] == "photo-tagging"


def test_a_file_and_set_together(run: Run, tmp_path: Path) -> None:
    create(run, "photo-tagging")
    path = tmp_path / "s.yaml"
    path.write_text("rate_limits:\n  requests_per_minute: 600\n")
    result = set_settings(
        run, "photo-tagging", str(path), "--set", "rate_limits.tokens_per_minute=1000", "-o", "json"
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["settings"]["rate_limits"] == {
        "requests_per_minute": 600,
        "tokens_per_minute": 1000,
    }


def _lines(stream: Any) -> queue.Queue[str]:
    """A pipe's lines, read by a thread of their own (so a test can wait with a bound)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_settings_watch_prints_each_new_version_until_interrupted(
    live_service: LiveService,
) -> None:
    headers = {"Authorization": f"Bearer {live_service.token}"}
    with httpx.Client(base_url=live_service.api, headers=headers, timeout=WAIT) as http:
        assert http.post("/features", json={"name": "tagger"}).status_code == 201
        env = {**os.environ, "MINERVA_URL": live_service.url, "MINERVA_TOKEN": live_service.token}
        with subprocess.Popen(
            [MINERVA_AI, "-v", "features", "settings", "watch", "tagger", "-o", "jsonl"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            # As on a terminal: a test runner started in the background inherits SIGINT ignored.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        ) as watch:
            try:
                out, err = _lines(watch.stdout), _lines(watch.stderr)
                # -v logs each request: once it says it is watching, and has read the
                # settings again (after subscribing), what is written is an update
                while "watching for new versions" not in err.get(timeout=WAIT):
                    pass
                while "/settings ->" not in err.get(timeout=WAIT):
                    pass
                for version in range(1, 21):
                    body = {
                        "version": version,
                        "settings": {"rate_limits": {"cost_per_day": version}},
                    }
                    assert http.put("/features/tagger/settings", json=body).status_code == 200
                seen: list[int] = []
                while not seen or seen[-1] < 21:
                    update = json.loads(out.get(timeout=WAIT))
                    seen.append(update["version"])
                assert seen == sorted(set(seen))
                assert update["settings"]["rate_limits"] == {"cost_per_day": 20}
                watch.send_signal(signal.SIGINT)
                assert watch.wait(WAIT) == 130
            finally:
                watch.kill()
