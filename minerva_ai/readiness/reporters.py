"""The run as a terminal table, JSON, JUnit XML, Markdown, and GitHub workflow commands
(annotations, and the Markdown summary for ``$GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from minerva_ai.readiness.model import SYMBOLS, Result, Status, summary_line

if TYPE_CHECKING:
    from minerva_ai.readiness.runner import Run

REPORT_KINDS = ("json", "junit", "md", "github")
VERDICTS = {
    0: "READY",
    1: "NOT READY",
    5: "NOT EVALUATED: a check could not be evaluated",
    130: "INTERRUPTED: partial report",
}


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def label(status: Status) -> str:
    """A symbol and a word: the status never hangs on colour alone."""
    return f"{SYMBOLS[status]} {status.value.upper()}"


def verdict(run: Run, fail_on: str) -> str:
    code = run.exit_code(fail_on)
    text = VERDICTS[code]
    if code == 0 and any(r.status is Status.WARN for r in run.results):
        text = "READY WITH WARNINGS"
    if code == 1 and fail_on == "warn" and not any(r.status is Status.FAIL for r in run.results):
        text = "NOT READY (warnings count as failures: --fail-on warn)"
    return text


def table_rows(run: Run) -> list[list[str]]:
    return [
        [label(r.status), r.name, r.type, r.message, f"{r.duration_ms / 1000:.1f}s"]
        for r in run.results
    ]


def text_report(run: Run, fail_on: str, paint: Callable[[str, Status], str] | None = None) -> str:
    """The table for a terminal: one line per check, remediation under the ones that did
    not pass, then the plan's summary line and the verdict. ``paint`` colours a status."""
    from tabulate import tabulate

    rows = table_rows(run)
    if paint is not None:
        for row, result in zip(rows, run.results, strict=True):
            row[0] = paint(row[0], result.status)
    headers = ["STATUS", "CHECK", "TYPE", "RESULT", "TIME"]
    lines = [tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True)]
    hints = [
        f"  {r.name}: {r.remediation}"
        for r in run.results
        if r.status in (Status.FAIL, Status.ERROR, Status.WARN) and r.remediation
    ]
    if hints:
        lines += ["", "To do:", *hints]
    lines += ["", summary_line(run.results), f"Production readiness: {verdict(run, fail_on)}"]
    return "\n".join(lines)


def json_report(run: Run) -> str:
    return json.dumps(run.as_dict(), indent=2, default=str) + "\n"


def junit_report(run: Run) -> str:
    """One testsuite, one testcase per check: fail -> <failure>, error -> <error>,
    skip -> <skipped>; a warning passes, with its message in system-out."""
    counts = {s: sum(1 for r in run.results if r.status is s) for s in Status}
    suite = ET.Element(
        "testsuite",
        name="readiness-check",
        tests=str(len(run.results)),
        failures=str(counts[Status.FAIL]),
        errors=str(counts[Status.ERROR]),
        skipped=str(counts[Status.SKIP]),
        time=f"{run.duration_ms / 1000:.3f}",
        timestamp=run.started_at.isoformat().replace("+00:00", "Z"),
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (("url", run.url), ("commit", run.commit)):
        if value:
            ET.SubElement(properties, "property", name=name, value=value)
    for result in run.results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"readiness.{result.type}",
            name=result.name,
            time=f"{result.duration_ms / 1000:.3f}",
        )
        body = _body(result)
        if result.status is Status.FAIL:
            ET.SubElement(case, "failure", message=result.message, type="fail").text = body
        elif result.status is Status.ERROR:
            ET.SubElement(case, "error", message=result.message, type="error").text = body
        elif result.status is Status.SKIP:
            ET.SubElement(case, "skipped", message=result.message)
        else:
            ET.SubElement(case, "system-out").text = f"{result.status.value}: {result.message}"
    root = ET.Element("testsuites", name="minerva-ai readiness-check")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def _body(result: Result) -> str:
    lines = [result.message]
    if result.observed is not None or result.threshold is not None:
        lines.append(f"observed: {_value(result.observed)}  threshold: {_value(result.threshold)}")
    if result.remediation:
        lines.append(f"remediation: {result.remediation}")
    tail = result.details.get("output_tail")
    if tail:
        lines += ["", tail]
    lines.append(f"docs: {result.docs_url}")
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_report(run: Run, fail_on: str) -> str:
    lines = [
        f"## Production readiness: {verdict(run, fail_on)}",
        "",
        f"{summary_line(run.results)}"
        + (f" · commit `{run.commit[:12]}`" if run.commit else "")
        + (f" · {run.url}" if run.url else ""),
        "",
        "| Status | Check | Type | Result | Observed | Threshold |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in run.results:
        cells = [
            label(r.status),
            r.name,
            r.type,
            r.message,
            _value(r.observed),
            _value(r.threshold),
        ]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    todo = [
        r
        for r in run.results
        if r.remediation and r.status in (Status.FAIL, Status.ERROR, Status.WARN)
    ]
    if todo:
        lines += ["", "### To do", ""]
        lines += [f"- **{_md_cell(r.name)}**: {_md_cell(r.remediation or '')}" for r in todo]
    return "\n".join(lines) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(run: Run) -> str:
    """Workflow commands: ``::error`` for a failure or an error, ``::warning`` for a
    warning; one line each (newlines escaped as GitHub requires)."""
    lines = []
    for r in run.results:
        if r.status in (Status.FAIL, Status.ERROR):
            level = "error"
        elif r.status is Status.WARN:
            level = "warning"
        else:
            continue
        title = _escape_property(f"readiness: {r.name} ({r.status.value})")
        message = r.message + (f"\n{r.remediation}" if r.remediation else "")
        lines.append(f"::{level} title={title}::{_escape_data(message)}")
    return "".join(f"{line}\n" for line in lines)
