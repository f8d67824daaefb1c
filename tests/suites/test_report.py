"""A run's verdict from its cases: repeats and flakiness, 1 beating 5, an interrupted run,
and the JUnit XML as a JUnit parser reads it."""

from __future__ import annotations

from pathlib import Path

from junitparser import Error, Failure, JUnitXml

from minerva_ai.suites import report
from minerva_ai.suites.runner import Job, Outcome
from minerva_ai.suites.suite import Case, Suite


def case(name: str, repeat: int = 1) -> Case:
    return Case(name, 1, "x", {}, None, None, [], repeat=repeat)


def outcome(job: Job, status: str) -> Outcome:
    failures = [{"type": "contains", "expected": 'contains "a"', "actual": '"b"'}]
    return Outcome(
        job,
        status,
        latency_ms=10.0,
        cost=0.0,
        model="sim",
        failures=failures if status == "fail" else [],
        error="timeout: no answer within 1 s" if status == "error" else None,
    )


def run_of(statuses: dict[str, list[str]], required: float = 100, interrupted: bool = False):
    cases = {name: case(name, len(s)) for name, s in statuses.items()}
    suite = Suite(Path("s.yaml"), "f", None, required, list(cases.values()), {}, "h" * 64)
    jobs = [Job(cases[n], {}, i, None, None) for n, s in statuses.items() for i in range(len(s))]
    outcomes = [
        outcome(job, statuses[job.case.name][job.repeat])
        for job in jobs
        if job.repeat < len(statuses[job.case.name]) and statuses[job.case.name][job.repeat]
    ]
    results = report.cases(suite, jobs, outcomes)
    return report.document(
        suite,
        results,
        fingerprint="f" * 64,
        required=required,
        duration_ms=5,
        interrupted=interrupted,
    )


def test_repeats_make_one_case_and_report_flakiness() -> None:
    doc = run_of({"a": ["pass", "fail", "pass"], "b": ["pass", "pass"]})
    a, b = doc["cases"]
    assert (a["status"], a["passed_runs"], a["flaky"]) == ("fail", 2, True)
    assert (b["status"], b["flaky"]) == ("pass", False)
    assert doc["totals"] == {"cases": 2, "passed": 1, "failed": 1, "errors": 0, "cached": 0}
    assert doc["pass_rate"] == 50.0


def test_one_beats_five_and_the_pass_rate_decides() -> None:
    both = run_of({"a": ["fail"], "b": ["error"], "c": ["pass"]})
    assert both["status"] == "failed" and report.exit_code(both) == 1
    errors = run_of({"b": ["error"], "c": ["pass"]})
    assert errors["status"] == "error" and report.exit_code(errors) == 5
    met = run_of({"b": ["error"], "c": ["pass"]}, required=50)
    assert met["status"] == "passed" and report.exit_code(met) == 0


def test_an_interrupted_case_is_an_error_and_the_run_never_passes() -> None:
    doc = run_of({"a": ["pass"], "b": [""]}, required=0, interrupted=True)
    assert doc["cases"][1]["status"] == "error"
    assert doc["cases"][1]["error"] == "interrupted before it finished"
    assert doc["status"] != "passed"


def test_junit_reads_back(tmp_path: Path) -> None:
    doc = run_of({"good": ["pass"], "bad": ["fail"], "gone": ["error"]})
    path = tmp_path / "junit.xml"
    path.write_bytes(report.junit(doc))
    xml = JUnitXml.fromfile(str(path))
    assert (xml.tests, xml.failures, xml.errors) == (3, 1, 1)
    cases = {c.name: c for s in xml for c in s}
    assert cases["good"].is_passed and cases["good"].time == 0.01
    failure = cases["bad"].result[0]
    assert isinstance(failure, Failure)
    assert failure.message == 'contains: expected contains "a", got "b"'
    assert isinstance(cases["gone"].result[0], Error)
