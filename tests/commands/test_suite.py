"""`minerva-ai test suite` and `test runs list|show` against the live service, on simulator
models: verdicts and exit codes, JUnit read back by a JUnit parser, the shared cache, the
rate limit waited out, candidate settings, and the stored runs."""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from junitparser import Error, Failure, JUnitXml

from tests.commands.conftest import Run
from tests.conftest import MINERVA_AI, LiveService
from tests.service.conftest import client, create_feature, put_settings

SIM = {"provider": "simulator", "latency_ms": 1, "seed": 3}
SECTIONS: dict[str, Any] = {
    "models": {
        "primary": "sim",
        "definitions": {
            "sim": {**SIM, "output": "Refund for: {{ input }}"},
            "json-sim": {**SIM, "output": '{"order_id": 1234}'},
            "broken": {**SIM, "error_rate": 1},
        },
    },
    "prompts": {"summarize": {"template": "Summarize {{ ticket }} in a {{ tone }} tone"}},
}


@pytest.fixture
def api(live_service: LiveService) -> Any:
    with client(live_service) as http:
        create_feature(http, "support")
        assert put_settings(http, "support", 1, SECTIONS).status_code == 200
        yield http


def suite_file(tmp_path: Path, body: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


PASSING = """\
    feature: support
    defaults:
      vars: {tone: neutral}
      assert:
        - {type: max-latency-ms, value: 5000}
    cases:
      - name: refund request
        input: "order 1234"
        assert:
          - {type: icontains, value: REFUND}
          - {type: not-contains, value: "as an AI"}
      - name: json answer
        input: "Return the order id as JSON"
        model: json-sim
        assert:
          - {type: is-json}
          - {type: json-schema, value: {type: object, required: [order_id]}}
      - name: prompt
        prompt: summarize
        vars: {ticket: "the printer jams"}
        assert:
          - {type: contains, value: "Summarize the printer jams"}
    """


def test_a_passing_suite_exits_0_and_is_stored(run: Run, api: httpx.Client, tmp_path: Path) -> None:
    path = suite_file(tmp_path, PASSING)
    result = run("test", "suite", str(path), "-j", "2")
    assert result.exit_code == 0, result.stderr
    assert "refund request" in result.stdout and "pass" in result.stdout
    assert "[3/3]" in result.stderr  # progress
    assert "3 cases: 3 passed, 0 failed, 0 errors" in result.stderr
    assert "pass rate 100.0%" in result.stderr
    as_json = run("test", "suite", str(path), "-o", "json")
    assert as_json.exit_code == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["schema_version"] == 1 and doc["status"] == "passed" and doc["feature"] == "support"
    assert doc["totals"] == {"cases": 3, "passed": 3, "failed": 0, "errors": 0, "cached": 3}
    assert len(doc["suite_hash"]) == 64 and len(doc["fingerprint"]) == 64
    # stored: listed, shown, and live (the models and prompts have not changed)
    stored = api.get(f"/test-runs/{doc['id']}").json()["data"]
    assert stored["live"] is True and stored["suite_hash"] == doc["suite_hash"]
    assert {c["name"] for c in stored["cases"]} == {"refund request", "json answer", "prompt"}
    listed = run(
        "test", "runs", "list", "--feature", "support", "--fingerprint", "live", "-o", "json"
    )
    assert json.loads(listed.stdout)[0]["id"] == doc["id"]
    shown = run("test", "runs", "show", doc["id"], "-o", "json")
    assert json.loads(shown.stdout)["totals"]["cases"] == 3
    # an edit of the prompts makes the stored runs no longer live
    sections = {"prompts": {"summarize": {"template": "Sum up {{ ticket }} ({{ tone }})"}}}
    assert put_settings(api, "support", 2, sections).status_code == 200
    assert api.get(f"/test-runs/{doc['id']}").json()["data"]["live"] is False
    live = run(
        "test", "runs", "list", "--feature", "support", "--fingerprint", "live", "-o", "json"
    )
    assert json.loads(live.stdout) == []


def test_failures_and_errors_exit_1_or_5_and_junit_says_why(
    run: Run, api: httpx.Client, tmp_path: Path
) -> None:
    failing = suite_file(
        tmp_path,
        """\
        feature: support
        cases:
          - name: good
            input: "a"
            assert: [{type: contains, value: Refund}]
          - name: wrong
            input: "b"
            assert: [{type: equals, value: "something else"}]
          - name: broken
            input: "c"
            model: broken
        """,
    )
    junit = tmp_path / "out.xml"
    result = run("test", "suite", str(failing), "--junit", str(junit))
    assert result.exit_code == 1, result.stderr  # 1 beats 5: a case failed
    assert 'equals: expected equals "something else", got "Refund for: b"' in result.stdout
    xml = JUnitXml.fromfile(str(junit))
    assert (xml.tests, xml.failures, xml.errors) == (3, 1, 1)
    cases = {case.name: case for suite in xml for case in suite}
    assert cases["good"].is_passed
    failure = cases["wrong"].result[0]
    assert isinstance(failure, Failure) and "something else" in (failure.message or "")
    assert isinstance(cases["broken"].result[0], Error)
    assert "simulated provider error" in (cases["broken"].result[0].message or "")
    # only errors among the cases that did not pass: 5
    errors_only = suite_file(
        tmp_path,
        """\
        feature: support
        cases:
          - {name: good, input: a}
          - {name: broken, input: c, model: broken}
        """,
        "errors.yaml",
    )
    result = run("test", "suite", str(errors_only))
    assert result.exit_code == 5, result.stderr
    # ... unless the pass rate asked for is met
    assert run("test", "suite", str(errors_only), "--pass-rate", "50").exit_code == 0


def test_the_cache_answers_a_second_run_and_errors_are_not_cached(
    run: Run, api: httpx.Client, tmp_path: Path
) -> None:
    path = suite_file(
        tmp_path,
        """\
        feature: support
        cases:
          - {name: one, input: a, repeat: 2}
          - {name: two, input: b}
          - {name: broken, input: c, model: broken}
        """,
    )
    first = json.loads(run("test", "suite", str(path), "-o", "json").stdout)
    assert first["totals"]["cached"] == 0
    logs_before = api.get("/logs", params={"limit": 1000}).json()["count"]
    second = json.loads(run("test", "suite", str(path), "-o", "json").stdout)
    # the two repeats of one (the simulator's repeat index is in the key) and two; not broken
    assert second["totals"]["cached"] == 3
    case = {c["name"]: c for c in second["cases"]}
    assert case["one"]["cached"] == 2 and case["broken"]["cached"] == 0
    # judged on the original latency; no log entry written for a hit
    assert case["two"]["latency_ms"] == {c["name"]: c for c in first["cases"]}["two"]["latency_ms"]
    logs_after = api.get("/logs", params={"limit": 1000}).json()["count"]
    assert logs_after == logs_before + 1  # the broken case's attempt only
    third = json.loads(run("test", "suite", str(path), "-o", "json", "--no-cache").stdout)
    assert third["totals"]["cached"] == 0
    shown = api.get(f"/tests/{case['two']['test_ids'][0]}").json()["data"]
    assert shown["cached"] is True


def test_a_429_past_max_wait_is_an_error_not_a_failure(
    run: Run, api: httpx.Client, tmp_path: Path
) -> None:
    sections = {"rate_limits": {"requests_per_minute": 2}}
    assert put_settings(api, "support", 2, sections).status_code == 200
    cases = "\n".join(f"  - {{name: c{i}, input: x{i}}}" for i in range(3))
    path = suite_file(tmp_path, f"feature: support\ncases:\n{cases}\n")
    # past --max-wait: the third case is an error (5), not a failure
    quick = run("test", "suite", str(path), "--no-cache", "--max-wait", "0", "-o", "json")
    assert quick.exit_code == 5, quick.stderr
    doc = json.loads(quick.stdout)
    assert doc["totals"]["errors"] >= 1 and doc["totals"]["failed"] == 0
    assert "past --max-wait" in next(c["error"] for c in doc["cases"] if c["status"] == "error")


def test_the_rate_limit_is_waited_out_within_max_wait(
    run: Run, api: httpx.Client, tmp_path: Path
) -> None:
    # a burst of the whole limit, then one call a second: the last five cases wait for their
    # Retry-After and pass
    sections = {"rate_limits": {"requests_per_minute": 60}}
    assert put_settings(api, "support", 2, sections).status_code == 200
    cases = "\n".join(f"  - {{name: c{i}, input: x{i}}}" for i in range(65))
    path = suite_file(tmp_path, f"feature: support\ncases:\n{cases}\n")
    result = run("test", "suite", str(path), "--no-cache", "-j", "8", "-o", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["totals"]["passed"] == 65
    assert "for the rate limit)" in result.stderr


def test_concurrency_is_bounded_by_j(database_url: str, servers: Any, tmp_path: Path) -> None:
    from tests.commands.conftest import invoke
    from tests.conftest import running_service

    in_flight = {"now": 0, "max": 0}

    def wrap(app: Any) -> Any:
        async def counting(scope: Any, receive: Any, send: Any) -> None:
            tested = scope["type"] == "http" and scope["path"].endswith("/test")
            if tested:
                in_flight["now"] += 1
                in_flight["max"] = max(in_flight["max"], in_flight["now"])
            try:
                await app(scope, receive, send)
            finally:
                if tested:
                    in_flight["now"] -= 1

        return counting

    with running_service(database_url, servers.redis_url, wrap) as live, client(live) as http:
        create_feature(http, "support")
        slow = {"models": {"primary": "sim", "definitions": {"sim": {**SIM, "latency_ms": 150}}}}
        assert put_settings(http, "support", 1, slow).status_code == 200
        cases = "\n".join(f"  - {{name: c{i}, input: x{i}}}" for i in range(9))
        path = suite_file(tmp_path, f"feature: support\ncases:\n{cases}\n")
        env = {"MINERVA_URL": live.url, "MINERVA_TOKEN": live.token}
        result = invoke(["test", "suite", str(path), "-j", "3"], **env)
    assert result.exit_code == 0, result.stderr
    assert 1 < in_flight["max"] <= 3


def test_candidate_settings_change_the_outcome_not_the_live_settings(
    run: Run, api: httpx.Client, tmp_path: Path
) -> None:
    path = suite_file(
        tmp_path,
        """\
        feature: support
        cases:
          - name: polite
            input: "hello"
            assert: [{type: starts-with, value: "Dear customer"}]
        """,
    )
    assert run("test", "suite", str(path)).exit_code == 1
    candidate = tmp_path / "candidate.yaml"
    models = json.loads(json.dumps(SECTIONS["models"]))
    models["definitions"]["sim"]["output"] = "Dear customer, {{ input }}"
    candidate.write_text(json.dumps({"models": models}))
    result = run("test", "suite", str(path), "--settings", str(candidate), "-o", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["fingerprint"] != _live_fingerprint(api)
    live = api.get("/features/support/settings").json()["data"]
    assert live["version"] == 2  # created, then the fixture's settings
    assert live["settings"]["models"]["definitions"]["sim"]["output"] == "Refund for: {{ input }}"


def _live_fingerprint(api: httpx.Client) -> str:
    from minerva_ai.core.fingerprint import fingerprint

    return fingerprint(api.get("/features/support/settings").json()["data"]["settings"])


def test_a_matrix_runs_every_case_per_combination(
    run: Run, api: httpx.Client, tmp_path: Path
) -> None:
    path = suite_file(
        tmp_path,
        """\
        feature: support
        matrix: {model: [sim, json-sim]}
        cases:
          - name: refund
            input: "x"
            assert: [{type: contains, value: Refund}]
        """,
    )
    junit = tmp_path / "matrix.xml"
    result = run("test", "suite", str(path), "--junit", str(junit), "-o", "json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    by_combo = {c["combination"]["model"]: c["status"] for c in doc["cases"]}
    assert by_combo == {"sim": "pass", "json-sim": "fail"}
    names = sorted(s.name for s in JUnitXml.fromfile(str(junit)))
    assert names == ["support [model=json-sim]", "support [model=sim]"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("feature: nope\ncases: [{name: a, input: x}]\n", "feature 'nope' does not exist"),
        (
            "feature: support\ncases: [{name: a, input: x, model: gone}]\n",
            "suite.yaml:2: case 'a': the feature has no model 'gone' "
            "(models: broken, json-sim, sim)",
        ),
        (
            "feature: support\nmatrix: {prompt: [summarize@9]}\n"
            "cases: [{name: a, vars: {ticket: t, tone: x}}]\n",
            "prompt 'summarize@9': the feature has no settings version 9",
        ),
        (
            "feature: support\ncases:\n  - {name: a, prompt: summarize, vars: {ticket: t}}\n",
            "suite.yaml:3: case 'a': prompt 'summarize' needs variable tone",
        ),
        (
            "feature: support\ncases: [{name: a, input: x, assert: [{type: containz}]}]\n",
            "unknown type 'containz'",
        ),
    ],
)
def test_bad_suites_exit_2_before_any_case_runs(
    run: Run, api: httpx.Client, tmp_path: Path, body: str, says: str
) -> None:
    path = suite_file(tmp_path, body)
    result = run("test", "suite", str(path))
    assert result.exit_code == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr
    assert api.get("/features/support/test/history").json()["count"] == 0


def test_bad_flags_exit_2(run: Run, api: httpx.Client, tmp_path: Path) -> None:
    path = suite_file(tmp_path, PASSING)
    assert run("test", "suite", str(path), "-j", "0").exit_code == 2
    assert run("test", "suite", str(path), "--pass-rate", "101").exit_code == 2
    result = run("test", "suite", str(path), "--filter", "nothing-like-it")
    assert result.exit_code == 2 and "no case matches --filter" in result.stderr
    other = tmp_path / "rates.yaml"
    other.write_text("rate_limits: {requests_per_minute: 5}\n")
    result = run("test", "suite", str(path), "--settings", str(other))
    assert result.exit_code == 2 and "models and prompts sections only" in result.stderr
    result = run("test", "suite", str(path), "--junit", str(tmp_path / "no" / "x.xml"))
    assert result.exit_code == 2


def test_filter_runs_the_named_and_tagged_cases(
    run: Run, api: httpx.Client, tmp_path: Path
) -> None:
    path = suite_file(
        tmp_path,
        """\
        feature: support
        cases:
          - {name: refund one, input: a, tags: [smoke]}
          - {name: refund two, input: b}
          - {name: other, input: c}
        """,
    )
    doc = json.loads(run("test", "suite", str(path), "--filter", "refund*", "-o", "json").stdout)
    assert [c["name"] for c in doc["cases"]] == ["refund one", "refund two"]
    doc = json.loads(run("test", "suite", str(path), "--filter", "smoke", "-o", "json").stdout)
    assert [c["name"] for c in doc["cases"]] == ["refund one"]


def test_an_unreachable_service_exits_4(tmp_path: Path) -> None:
    path = suite_file(tmp_path, PASSING)
    from tests.commands.conftest import invoke

    result = invoke(
        ["test", "suite", str(path)], MINERVA_URL="http://127.0.0.1:9", MINERVA_TOKEN="x"
    )
    assert result.exit_code == 4, result.stderr


@pytest.mark.slow
def test_an_interrupt_exits_130_after_a_partial_summary(
    live_service: LiveService, api: httpx.Client, tmp_path: Path
) -> None:
    slow = {"models": {**SECTIONS["models"], "definitions": {**SECTIONS["models"]["definitions"]}}}
    slow["models"]["definitions"]["slow"] = {**SIM, "latency_ms": 20000, "timeout_s": 60}
    assert put_settings(api, "support", 2, slow).status_code == 200
    path = suite_file(
        tmp_path,
        """\
        feature: support
        cases:
          - {name: quick, input: a}
          - {name: stuck, input: b, model: slow}
        """,
    )
    env = {"MINERVA_URL": live_service.url, "MINERVA_TOKEN": live_service.token}
    import os

    process = subprocess.Popen(
        [MINERVA_AI, "test", "suite", str(path), "-j", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert process.stderr is not None
    line = process.stderr.readline()  # the quick case's progress line
    deadline = time.monotonic() + 30
    while "quick" not in line and time.monotonic() < deadline:
        line = process.stderr.readline()
    assert "quick" in line
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "quick" in out and "stuck" in out and "interrupted" in out + err
