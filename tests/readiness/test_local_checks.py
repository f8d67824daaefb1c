"""The check types that need no service, on real inputs: commands, coverage.py's own
reports, files and sizes, OpenAPI documents, a pip-audit JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from minerva_ai.readiness.model import Status
from tests.conftest import REPO, wait_until
from tests.readiness.support import results, write

AUDIT = Path(__file__).parent / "fixtures" / "pip-audit.json"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


# ---------------------------------------------------------------- command


def test_command_passes_fails_warns_and_errors(tmp_path: Path) -> None:
    found = results(
        tmp_path,
        """
        checks:
          - {name: ok, type: command, run: "echo built > out.txt; echo done"}
          - name: broken
            type: command
            run: [sh, -c, "echo step 1; echo 'boom: no such module' >&2; exit 3"]
          - {name: lint, type: command, run: "exit 1", severity: warn}
          - {name: missing, type: command, run: [./no-such-program, --flag]}
          - name: script
            type: command
            run: |
              echo first
              echo second
        """,
    )
    assert found["ok"].status is Status.PASS
    assert (tmp_path / "out.txt").read_text() == "built\n"  # runs in the config's directory
    assert found["ok"].details["output_tail"] == "done"
    broken = found["broken"]
    assert broken.status is Status.FAIL and broken.observed == 3
    assert broken.details["output_tail"] == "step 1\nboom: no such module"
    assert "exited 3" in broken.message
    assert found["lint"].status is Status.WARN
    assert found["lint"].details["severity"] == "warn"
    script = found["script"]
    assert script.message == "`echo first ...` exited 0"
    assert script.details["output_tail"] == "first\nsecond"
    missing = found["missing"]
    assert missing.status is Status.ERROR
    assert "cannot start './no-such-program --flag'" in missing.message


def test_a_command_that_hangs_is_killed_with_its_process_group(tmp_path: Path) -> None:
    found = results(
        tmp_path,
        """
        checks:
          - name: hangs
            type: command
            run: "sleep 300 & echo $! > child.pid; echo waiting; wait"
            timeout: 1s
        """,
    )
    hangs = found["hangs"]
    assert hangs.status is Status.ERROR
    assert hangs.message == "timed out after 1 s (its process group was killed)"
    child = int((tmp_path / "child.pid").read_text())
    wait_until(lambda: not alive(child), what="the command's background child to be killed")


# ---------------------------------------------------------------- coverage

MODULE = """\
def used(x):
    if x > 0:
        return "positive"
    return "other"


def unused(x):
    y = x * 2
    z = y + 1
    return z
"""


@pytest.fixture(scope="module")
def coverage_reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """coverage.py's own JSON and XML reports of a module half covered."""
    where = tmp_path_factory.mktemp("coverage")
    (where / "calc.py").write_text(MODULE)
    (where / "main.py").write_text("import calc\ncalc.used(1)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV_", "COVERAGE"))}
    coverage = [sys.executable, "-m", "coverage"]
    for args in (
        ["run", "--branch", "--include=calc.py", "main.py"],
        ["json", "-o", "coverage.json"],
        ["xml", "-o", "coverage.xml"],
    ):
        subprocess.run([*coverage, *args], cwd=where, env=env, check=True, capture_output=True)
    return where


def test_coverage_from_coverage_py_json_and_xml(coverage_reports: Path) -> None:
    totals = json.loads((coverage_reports / "coverage.json").read_text())["totals"]
    found = results(
        coverage_reports,
        """
        checks:
          - {name: json total, type: coverage, file: coverage.json, pass: 50}
          - {name: xml total, type: coverage, file: coverage.xml, pass: 50}
          - {name: json line, type: coverage, file: coverage.json, pass: 60, warn: 45, metric: line}
          - {name: xml branch, type: coverage, file: coverage.xml, pass: 90, warn: 80,
             metric: branch}
          - {name: soft, type: coverage, file: coverage.json, pass: 90, severity: warn}
          - {name: missing, type: coverage, file: nowhere.json, pass: 90}
          - {name: not a report, type: coverage, file: calc.py, pass: 90}
        """,
    )
    # the figure coverage.py itself reports (lines and branches together)
    assert found["json total"].observed == round(totals["percent_covered"], 2) == 50
    assert found["json total"].status is Status.PASS
    assert found["xml total"].observed == 50 and found["xml total"].status is Status.PASS
    line = found["json line"]
    assert (line.status, line.observed, line.threshold) == (Status.WARN, 50, 60)
    assert line.message == "line coverage 50%: below 60%, at least 45%"
    branch = found["xml branch"]
    assert (branch.status, branch.observed) == (Status.FAIL, 50)
    assert "below 80%" in branch.message and "40.00 points short" in (branch.remediation or "")
    assert found["soft"].status is Status.WARN
    assert found["missing"].status is Status.ERROR
    assert "cannot read" in found["missing"].message
    assert found["not a report"].status is Status.ERROR


# ---------------------------------------------------------------- size and files


def test_size_budgets(tmp_path: Path) -> None:
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "app-1.whl").write_bytes(b"x" * 1500)
    (tmp_path / "dist" / "app-2.whl").write_bytes(os.urandom(400))
    found = results(
        tmp_path,
        """
        checks:
          - {name: fits, type: size, paths: ["dist/*.whl"], max: 2KB}
          - {name: close, type: size, paths: ["dist/*.whl"], max: 2KB, warn: 1KB}
          - {name: over, type: size, paths: ["dist/*.whl"], max: 1KiB}
          - {name: zipped, type: size, paths: ["dist/app-1.whl"], max: 100B, gzip: true}
          - {name: not built, type: size, paths: ["build/*.tar.gz"], max: 1MB}
        """,
    )
    assert found["fits"].status is Status.PASS and found["fits"].observed == 1500
    assert found["fits"].details["sizes"] == {"dist/app-1.whl": 1500, "dist/app-2.whl": 400}
    assert found["close"].status is Status.WARN
    over = found["over"]
    assert (over.status, over.observed, over.threshold) == (Status.FAIL, 1500, 1024)
    assert "dist/app-1.whl" in over.message and "1 file(s) over" in over.message
    assert found["zipped"].status is Status.PASS and found["zipped"].observed < 100
    assert found["not built"].status is Status.ERROR
    assert "nothing matches build/*.tar.gz" in found["not built"].message


def test_files_exist_are_not_empty_and_contain_a_pattern(tmp_path: Path) -> None:
    write(tmp_path / "docs" / "guide.md", "# Guide\n\n## Install\n")
    write(tmp_path / "docs" / "empty.md", "\n")
    found = results(
        tmp_path,
        """
        checks:
          - {name: present, type: files, paths: ["docs/guide.md"], contains: "^## Install"}
          - {name: gaps, type: files, paths: [docs/guide.md, docs/empty.md, docs/deploy.md]}
          - {name: topic, type: files, paths: ["docs/*.md"], contains: "Upgrade", severity: warn}
        """,
    )
    assert found["present"].status is Status.PASS
    gaps = found["gaps"]
    assert gaps.status is Status.FAIL
    assert gaps.message == "missing: docs/deploy.md; empty: docs/empty.md"
    assert (gaps.observed, gaps.threshold) == (1, 3)
    topic = found["topic"]
    assert topic.status is Status.WARN
    assert "without /Upgrade/: docs/guide.md" in topic.message


# ---------------------------------------------------------------- openapi


def test_openapi_parses_and_equals_what_a_command_prints(tmp_path: Path) -> None:
    spec = REPO / "docs" / "api" / "openapi.yaml"
    (tmp_path / "api.yaml").write_bytes(spec.read_bytes())
    stale = spec.read_text().replace("{feature}/settings/history:", "{feature}/history:")
    (tmp_path / "stale.yaml").write_text(stale)
    (tmp_path / "broken.yaml").write_text("openapi: [unclosed\n")
    found = results(
        tmp_path,
        f"""
        checks:
          - {{name: parses, type: openapi, file: api.yaml}}
          - {{name: current, type: openapi, file: api.yaml, command: "cat {spec}"}}
          - {{name: stale, type: openapi, file: stale.yaml, command: [cat, "{spec}"]}}
          - {{name: broken, type: openapi, file: broken.yaml}}
          - {{name: generator fails, type: openapi, file: api.yaml, command: "exit 4"}}
        """,
    )
    assert found["parses"].status is Status.PASS and found["parses"].observed > 30
    assert found["current"].status is Status.PASS
    stale_result = found["stale"]
    assert stale_result.status is Status.FAIL
    assert any("history" in d for d in stale_result.details["differences"])
    assert stale_result.remediation == "regenerate the committed document (make docs)"
    assert found["broken"].status is Status.ERROR
    assert found["generator fails"].status is Status.ERROR
    assert "exited 4" in found["generator fails"].message


# ---------------------------------------------------------------- dependency audit


def test_dependency_audit_of_a_pip_audit_report(tmp_path: Path) -> None:
    later = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    earlier = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    found = results(
        tmp_path,
        f"""
        checks:
          - {{name: raw, type: dependency-audit, report: "{AUDIT}"}}
          - name: triaged
            type: dependency-audit
            report: "{AUDIT}"
            ignore:
              - {{id: GHSA-h5c8-rqwp-cp95, expires: {later}, reason: xmlattr is not used}}
              - {{id: CVE-2024-35195, expires: {later}, reason: verify is never disabled}}
          - name: expired
            type: dependency-audit
            report: "{AUDIT}"
            severity: warn
            ignore:
              - {{id: GHSA-h5c8-rqwp-cp95, expires: {earlier}, reason: was waiting for 3.1.3}}
              - {{id: GHSA-9wx4-h78v-vm56, expires: {later}, reason: verify is never disabled}}
          - {{name: unreadable, type: dependency-audit, report: nowhere.json}}
        """,
    )
    raw = found["raw"]
    assert (raw.status, raw.observed) == (Status.FAIL, 2)
    assert "GHSA-h5c8-rqwp-cp95 (jinja2 3.1.2)" in raw.message
    assert "GHSA-9wx4-h78v-vm56 (requests 2.31.0)" in raw.message
    assert "2 have a fixed version" in (raw.remediation or "")
    triaged = found["triaged"]  # the second is ignored through its CVE alias
    assert triaged.status is Status.PASS
    assert triaged.message == "no known vulnerabilities (2 ignored until their expiry)"
    expired = found["expired"]
    assert (expired.status, expired.observed) == (Status.WARN, 1)
    assert expired.details["expired_ignores"] == ["GHSA-h5c8-rqwp-cp95"]
    assert found["unreadable"].status is Status.ERROR


def test_dependency_audit_without_pip_audit_is_an_error(tmp_path: Path) -> None:
    found = results(tmp_path, "checks: [{name: audit, type: dependency-audit}]")
    audit = found["audit"]
    assert audit.status is Status.ERROR  # pip-audit is not installed in the test environment
    assert audit.message.startswith("pip-audit did not run")
    assert "pip install pip-audit" in (audit.remediation or "")


def test_a_check_past_its_timeout_is_an_error_while_the_others_finish(tmp_path: Path) -> None:
    import socket

    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        found = results(
            tmp_path,
            """
            checks:
              - {name: service, type: service-health, timeout: 1s}
              - {name: quick, type: command, run: "echo done"}
            """,
            url,
        )
    service = found["service"]
    assert (service.status, service.message) == (Status.ERROR, "timed out after 1 s")
    assert service.remediation == "raise its timeout (now 1 s)"
    assert found["quick"].status is Status.PASS
