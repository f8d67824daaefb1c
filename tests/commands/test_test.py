"""`minerva-ai test run|history|show|compare|export` against the live service."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.commands.conftest import Run
from tests.conftest import LiveService
from tests.providers_support import PNG
from tests.service.conftest import client, create_feature, put_settings

SIM = {"provider": "simulator", "latency_ms": 1, "seed": 5}


@pytest.fixture
def api(live_service: LiveService) -> Any:
    with client(live_service) as http:
        create_feature(http, "tagger")
        sections = {
            "models": {
                "primary": "sim",
                "fallbacks": ["backup"],
                "definitions": {
                    "sim": {**SIM, "output": "tags for {{ input }}"},
                    "backup": SIM,
                    "broken": {**SIM, "error_rate": 1},
                },
            },
            "prompts": {"tag": {"template": "Tag {{ caption }} in {{ lang }}"}},
        }
        assert put_settings(http, "tagger", 1, sections).status_code == 200
        yield http


def test_run_prints_the_response_and_a_summary(run: Run, api: httpx.Client) -> None:
    result = run("test", "run", "tagger", "--input", "a dog")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "tags for a dog\n"
    assert "success · model sim (simulator) · " in result.stderr
    assert "tokens 3/4 · cost $0.000000 · simulated" in result.stderr
    as_json = run("test", "run", "tagger", "--input", "a dog", "-o", "json")
    data = json.loads(as_json.stdout)
    assert data["output"]["response"] == "tags for a dog" and data["simulated"] is True
    assert data["created_at"].endswith("Z")
    as_csv = list(
        csv.DictReader(
            io.StringIO(run("test", "run", "tagger", "--input", "x", "-o", "csv").stdout)
        )
    )
    assert as_csv[0]["output.response"] == "tags for x" and as_csv[0]["status"] == "success"


def test_a_failed_test_exits_1_and_a_refused_one_3(run: Run, api: httpx.Client) -> None:
    failed = run("test", "run", "tagger", "--input", "x", "--model", "broken")
    assert failed.exit_code == 1, failed.stderr
    assert "error · model broken" in failed.stderr
    assert "simulated provider error" in failed.stderr
    unknown = run("test", "run", "tagger", "--input", "x", "--model", "nope")
    assert unknown.exit_code == 3 and "model 'nope'" in unknown.stderr
    missing = run("test", "run", "tagger", "--prompt", "tag")
    assert missing.exit_code == 3
    assert "missing variables: caption, lang" in missing.stderr
    assert "Traceback" not in missing.stderr + unknown.stderr


def test_prompts_with_variables_and_files(run: Run, api: httpx.Client, tmp_path: Path) -> None:
    variables = tmp_path / "vars.yaml"
    variables.write_text("caption: a cat\nlang: French\n")
    result = run(
        "test", "run", "tagger", "--prompt", "tag@2", "--vars-file", str(variables),
        "--var", "lang=German", "-o", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["rendered_prompt"] == "Tag a cat in German" and data["prompt"] == "tag@2"
    text = tmp_path / "in.txt"
    text.write_text("from a file")
    from_file = run("test", "run", "tagger", "--input-file", str(text))
    assert from_file.stdout == "tags for from a file\n"
    image = tmp_path / "one.png"
    image.write_bytes(base64.b64decode(PNG))
    with_image = run("test", "run", "tagger", "--image", str(image), "--input", "x", "-o", "json")
    assert json.loads(with_image.stdout)["image"]["media_type"] == "image/png"
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(
        "models:\n  primary: new\n  definitions:\n"
        "    new: {provider: simulator, latency_ms: 0, output: candidate}\n"
    )
    tried = run("test", "run", "tagger", "--input", "x", "--settings", str(candidate))
    assert tried.exit_code == 0 and tried.stdout == "candidate\n"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--input", "x", "--var", "novalue"], "--var"),
        (["--input", "x", "--input-file", "f"], "not both"),
        ([], "say what to test"),
        (["--input-file", "/nonexistent/in.txt"], "cannot read /nonexistent/in.txt"),
        (["--image", "NOT_AN_IMAGE"], "is not a PNG, JPEG, GIF or WebP image"),
        (["--input", "x", "--vars-file", "LIST"], "expected a mapping"),
        (["--input", "x", "--settings", "LIST"], "expected a mapping of settings sections"),
    ],
)
def test_bad_flags_and_files_exit_2(run: Run, tmp_path: Path, args: list[str], says: str) -> None:
    (tmp_path / "not.png").write_text("hello")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    args = [
        str(tmp_path / "not.png")
        if a == "NOT_AN_IMAGE"
        else str(tmp_path / "list.yaml")
        if a == "LIST"
        else a
        for a in args
    ]
    result = run("test", "run", "tagger", *args)
    assert result.exit_code == 2, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_history_show_compare_export(run: Run, api: httpx.Client, tmp_path: Path) -> None:
    first = json.loads(run("test", "run", "tagger", "--input", "=SUM(A1)", "-o", "json").stdout)
    second = json.loads(
        run("test", "run", "tagger", "--input", "b", "--model", "backup", "-o", "json").stdout
    )
    history = run("test", "history", "tagger")
    rows = [line.split("\t") for line in history.stdout.splitlines()]
    assert [r[0] for r in rows] == [second["id"], first["id"]]  # piped: no header row
    only = run("test", "history", "tagger", "--model", "backup", "-o", "json")
    assert [t["id"] for t in json.loads(only.stdout)] == [second["id"]]
    shown = json.loads(run("test", "show", first["id"], "-o", "json").stdout)
    assert shown["id"] == first["id"] and shown["input"] == "=SUM(A1)"
    compared = run("test", "compare", first["id"], second["id"])
    assert compared.exit_code == 0
    assert "model\tsim\tbackup" in compared.stdout
    as_json = json.loads(run("test", "compare", first["id"], second["id"], "-o", "json").stdout)
    assert "-tags for =SUM(A1)" in as_json["diff"]
    assert {r["field"] for r in as_json["fields"]} >= {"latency_ms", "tokens_in", "cost", "model"}
    out = tmp_path / "tests.csv"
    exported = run("test", "export", "tagger", "--out", str(out))
    assert exported.exit_code == 0 and "exported 2 tests" in exported.stderr
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["id"] for r in table] == [second["id"], first["id"]]
    assert table[1]["input"] == "'=SUM(A1)"  # a spreadsheet would run it: neutralised
    assert [p.name for p in tmp_path.iterdir()] == ["tests.csv"]  # no temporary left
    lines = run("test", "export", "tagger", "-o", "jsonl").stdout.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [second["id"], first["id"]]
    missing = run("test", "show", "00000000-0000-0000-0000-000000000009")
    assert missing.exit_code == 3
