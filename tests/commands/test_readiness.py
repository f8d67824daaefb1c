"""`minerva-ai readiness-check` as CI runs it: the table and its summary line, JSON,
JUnit read back by a JUnit parser, GitHub annotations and step summary, exit codes
0/1/5/2/130, and a hanging command that does not hold up the others."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Skipped

from tests.commands.test_main import closed_port
from tests.conftest import MINERVA_AI, wait_until
from tests.readiness.support import cli, write

MIXED = """
checks:
  - {name: docs, type: files, paths: [README.md]}
  - {name: tests, type: command, run: "echo '3 failed, 10 passed'; exit 1"}
  - {name: coverage, type: coverage, file: coverage.xml, pass: 90}
  - {name: lint, type: command, run: "echo 'E501 line too long'; exit 1", severity: warn}
  - {name: load, type: files, paths: [README.md]}
"""


def project(tmp_path: Path, config: str = MIXED) -> Path:
    write(tmp_path / "README.md", "# Project\n")
    write(tmp_path / "readiness.yaml", config)
    return tmp_path


def test_the_table_ends_with_the_summary_line_and_a_verdict(tmp_path: Path) -> None:
    done = cli(project(tmp_path), "--skip", "load")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["STATUS", "CHECK", "TYPE", "RESULT", "TIME"]
    rows = {line.split()[2]: line for line in lines[1:6]}
    assert rows["docs"].startswith("✔ PASS")
    assert rows["tests"].startswith("✘ FAIL") and "exited 1" in rows["tests"]
    assert rows["coverage"].startswith("? ERROR") and "cannot read" in rows["coverage"]
    assert rows["lint"].startswith("! WARN")
    assert rows["load"].startswith("- SKIP") and "left out by --skip" in rows["load"]
    assert "  coverage: run the tests with coverage first" in done.stdout
    assert lines[-2] == "1 passed, 1 warnings, 1 failed, 1 errors, 1 skipped"
    assert lines[-1] == "Production readiness: NOT READY"
    assert "\x1b[" not in done.stdout  # no colour when piped


def test_json_on_stdout_and_every_report_file(tmp_path: Path) -> None:
    base = project(tmp_path)
    done = cli(
        base,
        "--only", "docs,tests,coverage", "--only", "lint",
        "--report", "junit=out/junit.xml",
        "--report", "json=report.json",
        "--report", "md=summary.md",
        "-o", "json",
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["schema_version"] == 1
    assert report["url"] is None  # no check needed the service
    assert report["commit"] is None  # not a git work tree
    assert report["started_at"].endswith("Z")
    assert report["summary"] == {"pass": 1, "warn": 1, "fail": 1, "skip": 1, "error": 1}
    tests = next(c for c in report["checks"] if c["name"] == "tests")
    assert set(tests) == {
        "id", "name", "type", "status", "observed", "threshold", "message", "remediation",
        "duration_ms", "details", "docs_url",
    }  # fmt: skip
    assert tests["status"] == "fail" and tests["details"]["output_tail"] == "3 failed, 10 passed"
    assert tests["docs_url"] == "docs/readiness.md#command"
    assert json.loads((base / "report.json").read_text())["checks"] == report["checks"]

    suite = next(iter(JUnitXml.fromfile(str(base / "out" / "junit.xml"))))
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (5, 1, 1, 1)
    cases = {case.name: case for case in suite}
    assert cases["docs"].is_passed and cases["lint"].is_passed  # a warning does not fail
    failure = cases["tests"].result[0]
    assert (
        isinstance(failure, Failure)
        and failure.message == "`echo '3 failed, 10 passed'; exit 1` exited 1"
    )
    assert "3 failed, 10 passed" in failure.text
    error = cases["coverage"].result[0]
    assert isinstance(error, Error) and error.message.startswith("cannot read")
    assert isinstance(cases["load"].result[0], Skipped)
    assert cases["tests"].classname == "readiness.command"

    markdown = (base / "summary.md").read_text()
    assert markdown.startswith("## Production readiness: NOT READY\n")
    assert "| ✘ FAIL | tests | command |" in markdown
    assert "- **tests**: run `echo '3 failed, 10 passed'; exit 1` and fix" in markdown


def test_github_annotations_and_the_step_summary(tmp_path: Path) -> None:
    base = project(tmp_path)
    summary = base / "step-summary.md"
    summary.write_text("## Earlier step\n")
    done = cli(base, "--report", "github", GITHUB_STEP_SUMMARY=str(summary))
    assert done.returncode == 1
    annotations = [line for line in done.stdout.splitlines() if line.startswith("::")]
    assert annotations == [
        "::error title=readiness%3A tests (fail)::`echo '3 failed, 10 passed'; exit 1` exited "
        "1%0Arun `echo '3 failed, 10 passed'; exit 1` and fix what its output says",
        "::error title=readiness%3A coverage (error)::cannot read "
        f"{base}/coverage.xml: No such file or directory%0Arun the tests with coverage first "
        "(e.g. pytest --cov --cov-report=xml)",
        "::warning title=readiness%3A lint (warn)::`echo 'E501 line too long'; exit 1` exited "
        "1%0Arun `echo 'E501 line too long'; exit 1` and fix what its output says",
    ]
    text = summary.read_text()
    assert text.startswith("## Earlier step\n## Production readiness: NOT READY")  # appended
    assert "1 failed, 1 errors" in text
    # with -o json on stdout, the annotations go to stderr (the runner reads them there too)
    as_json = cli(base, "--report", "github", "-o", "json")
    assert json.loads(as_json.stdout)["summary"]["fail"] == 1
    assert "::error title=readiness%3A tests (fail)::" in as_json.stderr


def test_exit_codes(tmp_path: Path) -> None:
    ok = project(tmp_path / "ok", "checks: [{name: docs, type: files, paths: [README.md]}]")
    assert cli(ok).returncode == 0
    warned = project(
        tmp_path / "warned",
        "checks: [{name: lint, type: command, run: 'exit 1', severity: warn}]",
    )
    done = cli(warned)
    assert done.returncode == 0
    assert done.stdout.splitlines()[-1] == "Production readiness: READY WITH WARNINGS"
    assert cli(warned, "--fail-on", "warn").returncode == 1
    errored = project(
        tmp_path / "errored",
        "checks: [{name: docs, type: files, paths: [README.md]}, "
        "{name: cov, type: coverage, file: none.xml, pass: 90}]",
    )
    done = cli(errored)
    assert done.returncode == 5
    assert done.stdout.splitlines()[-1] == (
        "Production readiness: NOT EVALUATED: a check could not be evaluated"
    )
    # unreachable service: the checks that need it are errors; never exit 4
    service = project(tmp_path / "service", "checks: [{name: svc, type: service-health}]")
    done = cli(service, before=("--url", f"http://127.0.0.1:{closed_port()}"))
    assert done.returncode == 5 and "service unreachable" in done.stdout


def test_a_bad_config_exits_2_before_any_check_runs(tmp_path: Path) -> None:
    base = project(
        tmp_path,
        """
        checks:
          - {name: build, type: command, run: "touch built"}
          - {name: wheel, type: size, paths: [dist/*.whl], max: 2 parsecs}
        """,
    )
    done = cli(base)
    assert done.returncode == 2
    assert done.stderr.startswith("error: readiness.yaml, line 4: max: invalid size '2 parsecs'")
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (base / "built").exists()
    unknown = cli(base, "-c", "readiness.yaml", "--only", "biuld")
    assert unknown.returncode == 2
    missing = cli(base, "-c", "nowhere.yaml")
    assert missing.returncode == 2 and "cannot read nowhere.yaml" in missing.stderr
    bad_report = cli(base, "--report", "junit")
    assert bad_report.returncode == 2 and "junit needs a file" in bad_report.stderr


def test_a_hanging_command_respects_its_timeout_while_the_others_finish(tmp_path: Path) -> None:
    base = project(
        tmp_path,
        """
        checks:
          - {name: hangs, type: command, run: "sleep 300 & echo $! > child.pid; wait", timeout: 2s}
          - {name: quick one, type: command, run: "echo one"}
          - {name: quick two, type: command, run: "echo two"}
          - {name: docs, type: files, paths: [README.md]}
        """,
    )
    done = cli(base, "-j", "2", "-o", "json")
    assert done.returncode == 5, done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["hangs"]["status"] == "error"
    assert checks["hangs"]["message"] == "timed out after 2 s (its process group was killed)"
    assert [checks[n]["status"] for n in ("quick one", "quick two", "docs")] == ["pass"] * 3
    child = int((base / "child.pid").read_text())
    wait_until(lambda: not Path(f"/proc/{child}").exists(), what="the hung command's child gone")


def test_ctrl_c_prints_the_partial_report_and_exits_130(tmp_path: Path) -> None:
    base = project(
        tmp_path,
        """
        checks:
          - {name: docs, type: files, paths: [README.md]}
          - {name: slow, type: command, run: "touch started; sleep 300 & echo $! > child.pid; wait"}
        """,
    )
    process = subprocess.Popen(
        [MINERVA_AI, "readiness-check", "-j", "1"],
        cwd=base,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(
        lambda: (base / "child.pid").exists() and (base / "child.pid").read_text(),
        what="the slow command to start",
    )
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    lines = stdout.splitlines()
    assert lines[-2] == "1 passed, 0 warnings, 0 failed, 1 errors"
    assert lines[-1] == "Production readiness: INTERRUPTED: partial report"
    assert any(line.startswith("? ERROR") and "interrupted while running" in line for line in lines)
    child = int((base / "child.pid").read_text())
    wait_until(lambda: not Path(f"/proc/{child}").exists(), what="the command's group killed")


def test_init_writes_a_starter_config_that_parses(tmp_path: Path) -> None:
    done = cli(tmp_path, "init")
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "readiness.yaml").read_text()
    assert text.startswith("# readiness.yaml")
    from minerva_ai.readiness.config import parse_config

    names = [spec.name for spec in parse_config(text, env={})]
    assert names == ["docs", "unit tests", "coverage", "wheel size", "service", "slo",
                     "no critical alerts"]  # fmt: skip
    again = cli(tmp_path, "init")
    assert again.returncode == 2 and "exists: give --force" in again.stderr
    assert cli(tmp_path, "init", "--force").returncode == 0
    assert cli(tmp_path, "init", "--out", "-").stdout == text


def test_no_config_is_a_usage_error_naming_init(tmp_path: Path) -> None:
    done = cli(tmp_path)
    assert done.returncode == 2
    assert "no readiness.yaml in" in done.stderr and "readiness-check init" in done.stderr
    env_unset = project(tmp_path, "checks: [{name: x, type: files, paths: ['${DOCS_DIR}/a']}]")
    done = cli(env_unset, **{k: v for k, v in os.environ.items() if k != "DOCS_DIR"})
    assert done.returncode == 2 and "${DOCS_DIR} is not set" in done.stderr
