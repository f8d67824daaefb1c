"""Reading a suite file: defaults, vars files, the matrix, repeat, --filter, the hash, and
every bad input refused with the file, the line and what is wrong."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from minerva_ai.suites import SuiteError, load

GOOD = """\
feature: support-summarizer
description: summaries keep the facts
defaults:
  prompt: summarize
  model: summarizer-sim
  vars: {tone: neutral}
  assert:
    - {type: max-latency-ms, value: 3000}
pass_rate: 95
cases:
  - name: refund request
    vars: {ticket: "Customer asks for a refund of order 1234"}
    tags: [smoke]
    assert:
      - {type: icontains, value: refund}
      - {type: not-contains, value: "as an AI"}
  - name: json answer
    input: "Return the order id as JSON"
    model: summarizer-json
    prompt: summarize@2
    repeat: 3
    threshold: 0.5
    assert:
      - {type: is-json}
  - name: many tickets
    vars_file: tickets.csv
    assert:
      - {type: contains-any, value: [refund, return]}
"""


def write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_suite_with_defaults_vars_files_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "tickets.csv").write_text("ticket,tone\nrefund please,angry\nreturn it,calm\n")
    suite = load(write(tmp_path, GOOD))
    assert suite.feature == "support-summarizer" and suite.pass_rate == 95
    names = [c.name for c in suite.cases]
    assert names == ["refund request", "json answer", "many tickets #2", "many tickets #3"]
    refund, json_case, row2, row3 = suite.cases
    assert refund.prompt == "summarize" and refund.model == "summarizer-sim"
    assert refund.variables == {"tone": "neutral", "ticket": refund.variables["ticket"]}
    assert [a.type for a in refund.assertions] == ["max-latency-ms", "icontains", "not-contains"]
    assert json_case.model == "summarizer-json" and json_case.prompt == "summarize@2"
    assert json_case.repeat == 3 and json_case.threshold == 0.5
    assert row2.variables == {"tone": "angry", "ticket": "refund please"}
    assert row3.line == row2.line == 25
    expected = hashlib.sha256(
        (tmp_path / "suite.yaml").read_bytes() + (tmp_path / "tickets.csv").read_bytes()
    ).hexdigest()
    assert suite.hash == expected
    assert [c.name for c in suite.filtered(["smoke"]).cases] == ["refund request"]
    assert [c.name for c in suite.filtered(["many*"]).cases] == names[2:]


def test_jsonl_vars_files_and_the_matrix(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"ticket": "a", "n": 3}\n\n{"input": "b"}\n')
    suite = load(
        write(
            tmp_path,
            """\
            feature: f
            matrix: {model: [a, b], prompt: [p@7, p@8]}
            cases:
              - {name: rows, vars_file: rows.jsonl}
            """,
        )
    )
    assert [(c.name, c.input, c.variables) for c in suite.cases] == [
        ("rows #1", None, {"ticket": "a", "n": "3"}),
        ("rows #3", "b", {}),
    ]
    assert suite.combinations() == [
        {"model": "a", "prompt": "p@7"},
        {"model": "a", "prompt": "p@8"},
        {"model": "b", "prompt": "p@7"},
        {"model": "b", "prompt": "p@8"},
    ]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("feature: f\ncases:\n  - {name: a, input: x, assert: [{type: containz}]}\n", ":3: "),
        (
            "feature: f\ncases:\n  - name: a\n    input: x\n    assert:\n"
            "      - type: contains\n        valeu: y\n",
            "suite.yaml:7: assertion: unknown key 'valeu' (keys: type, value, weight, threshold)",
        ),
        (
            "feature: f\ncases:\n  - name: a\n    input: x\n    assert:\n"
            "      - {type: containz}\n",
            "suite.yaml:6: assertion: unknown type 'containz' (types: equals, contains, icontains",
        ),
        (
            "feature: f\ncases:\n  - name: a\n    input: x\n    assert:\n"
            "      - {type: json-schema, value: {type: objekt}}\n",
            "not a valid JSON schema",
        ),
        (
            "feature: f\ncases:\n  - {name: a}\n",
            "suite.yaml:3: case 'a' has neither input nor vars",
        ),
        ("feature: f\ncases:\n  - {name: a, vars_file: gone.csv}\n", "vars_file gone.csv: cannot"),
        ("feature: f\ncases:\n  - {name: a, inptu: x}\n", "unknown key 'inptu' in a case (keys:"),
        ("feature: f\nkases: []\n", "suite.yaml:2: unknown key 'kases' in the suite"),
        ("cases:\n  - {name: a, input: x}\n", "feature is required"),
        ("feature: f\n", "cases is required"),
        ("feature: f\ncases: []\n", "cases must be a non-empty list"),
        ("feature: f\ncases:\n  - {input: x}\n", "a case needs a name"),
        ("feature: f\npass_rate: 120\ncases: [{name: a, input: x}]\n", "pass_rate must be"),
        ("feature: f\ncases: [{name: a, input: x, repeat: 0}]\n", "repeat must be"),
        ("feature: f\ncases: [{name: a, input: x, prompt: 'p@x'}]\n", "expected NAME or NAME@N"),
        ("feature: f\ncases: [{name: a, input: x}, {name: a, input: y}]\n", "used twice"),
        ("feature: f\nmatrix: {temperature: [1]}\ncases: [{name: a, input: x}]\n", "unknown key"),
        ("feature: f\nmatrix: {model: []}\ncases: [{name: a, input: x}]\n", "non-empty list"),
        (
            "feature: f\nmatrix: {model: [a]}\ncases: [{name: a, input: x, model: b}]\n",
            "sets model, which the matrix varies",
        ),
        ("feature: f\ncases: [{name: a, vars: {x: [1]}}]\n", "variable 'x' must be text"),
        ("feature: [f\n", "suite.yaml: line 2: not valid YAML"),
        ("feature: f\nfeature: g\ncases: [{name: a, input: x}]\n", "line 2: 'feature' is repeated"),
        ("", "the file is empty"),
    ],
)
def test_bad_suites_name_file_line_and_problem(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(SuiteError) as caught:
        load(write(tmp_path, text))
    assert says in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path / "suite.yaml"))


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("t.csv", "ticket,tone\na,b\nc\n", "vars_file t.csv: row 3: 1 columns, the header has 2"),
        ("t.csv", "ticket,ticket\na,b\n", "row 1: empty or repeated column name"),
        ("t.csv", "ticket\n", "has no rows"),
        ("t.jsonl", '{"a": 1}\n{"a": \n', "vars_file t.jsonl: row 2: not JSON"),
        ("t.jsonl", "[1]\n", "row 1: not a JSON object"),
        ("t.jsonl", '{"a": {"b": 1}}\n', "row 1: variable 'a' must be text or a number"),
        ("t.txt", "a\n", "expected a .csv or .jsonl file"),
    ],
)
def test_bad_vars_files_name_file_and_row(
    tmp_path: Path, name: str, content: str, says: str
) -> None:
    (tmp_path / name).write_text(content)
    text = f"feature: f\ncases:\n  - {{name: a, vars_file: {name}}}\n"
    with pytest.raises(SuiteError) as caught:
        load(write(tmp_path, text))
    assert says in str(caught.value) and ":3:" in str(caught.value)


def test_an_unreadable_suite(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="cannot read it"):
        load(tmp_path / "missing.yaml")
