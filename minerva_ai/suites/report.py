"""A suite run's results: per case and matrix combination (a case's repeats make one result,
with its flakiness), the totals, the verdict and its exit code, the JSON document and JUnit
XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from minerva_ai.suites.runner import Job, Outcome
from minerva_ai.suites.suite import Suite

SCHEMA_VERSION = 1
EXIT_PASSED, EXIT_FAILED, EXIT_ERRORS = 0, 1, 5


def combination_label(combination: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in combination.items())


@dataclass
class CaseResult:
    name: str
    combination: dict[str, str]
    outcomes: list[Outcome]
    repeat: int

    @property
    def status(self) -> str:
        """``pass`` when every repeat passed; ``fail`` when one failed; else ``error``
        (including a case an interrupt left unfinished)."""
        statuses = [o.status for o in self.outcomes]
        if len(statuses) == self.repeat and all(s == "pass" for s in statuses):
            return "pass"
        return "fail" if "fail" in statuses else "error"

    @property
    def label(self) -> str:
        combo = combination_label(self.combination)
        return f"{self.name} [{combo}]" if combo else self.name

    def _mean(self, key: str) -> float | None:
        values = [getattr(o, key) for o in self.outcomes if getattr(o, key) is not None]
        return sum(values) / len(values) if values else None

    def view(self) -> dict[str, Any]:
        first_failure = next((o for o in self.outcomes if o.status != "pass"), None)
        passed = sum(o.status == "pass" for o in self.outcomes)
        cost_values = [o.cost for o in self.outcomes]
        return {
            "name": self.name,
            "combination": self.combination,
            "status": self.status,
            "runs": len(self.outcomes),
            "repeat": self.repeat,
            "passed_runs": passed,
            "flaky": 0 < passed < self.repeat,
            "latency_ms": None if (m := self._mean("latency_ms")) is None else round(m, 3),
            "cost": None
            if not cost_values or any(c is None for c in cost_values)
            else round(sum(c or 0.0 for c in cost_values), 10),
            "model": next((o.model for o in self.outcomes if o.model), None),
            "cached": sum(o.cached for o in self.outcomes),
            "score": self._mean("score"),
            "failures": first_failure.failures if first_failure else [],
            "error": first_failure.error
            if first_failure
            else (None if len(self.outcomes) == self.repeat else "interrupted before it finished"),
            "test_ids": [o.test_id for o in self.outcomes if o.test_id],
        }


def cases(suite: Suite, jobs: Sequence[Job], outcomes: Sequence[Outcome]) -> list[CaseResult]:
    """One result per case and combination, in suite order (every planned one, finished or
    not)."""
    results: dict[tuple[str, str], CaseResult] = {}
    for job in jobs:
        key = (job.case.name, combination_label(job.combination))
        if key not in results:
            results[key] = CaseResult(job.case.name, job.combination, [], job.case.repeat)
    for outcome in outcomes:
        job = outcome.job
        results[(job.case.name, combination_label(job.combination))].outcomes.append(outcome)
    return list(results.values())


def document(
    suite: Suite,
    results: Sequence[CaseResult],
    *,
    fingerprint: str,
    required: float,
    duration_ms: int,
    interrupted: bool = False,
) -> dict[str, Any]:
    """The whole run as ``-o json`` prints it and ``POST /test-runs`` stores it."""
    views = [r.view() for r in results]
    counts = {s: sum(v["status"] == s for v in views) for s in ("pass", "fail", "error")}
    total = len(views)
    pass_rate = round(100.0 * counts["pass"] / total, 4) if total else 0.0
    if pass_rate >= required and not interrupted:
        status = "passed"
    elif counts["fail"]:
        status = "failed"
    else:
        status = "error"
    return {
        "schema_version": SCHEMA_VERSION,
        "id": None,
        "feature": suite.feature,
        "suite": str(suite.path),
        "description": suite.description,
        "suite_hash": suite.hash,
        "fingerprint": fingerprint,
        "status": status,
        "pass_rate": pass_rate,
        "required_pass_rate": required,
        "totals": {
            "cases": total,
            "passed": counts["pass"],
            "failed": counts["fail"],
            "errors": counts["error"],
            "cached": sum(v["cached"] for v in views),
        },
        "duration_ms": duration_ms,
        "interrupted": interrupted,
        "cases": views,
    }


def exit_code(run: dict[str, Any]) -> int:
    """0 the pass rate is met; 1 a case failed (it wins over 5); 5 every case that did not
    pass is an error."""
    return {"passed": EXIT_PASSED, "failed": EXIT_FAILED}.get(run["status"], EXIT_ERRORS)


def failure_text(view: dict[str, Any]) -> str:
    """What went wrong with a case, on one line: the first failed assertion with expected
    and actual, or the error."""
    if view["failures"]:
        first = view["failures"][0]
        more = len(view["failures"]) - 1
        extra = f" (+{more} more)" if more else ""
        return f"{first['type']}: expected {first['expected']}, got {first['actual']}{extra}"
    return view["error"] or ""


def junit(run: dict[str, Any]) -> bytes:
    """JUnit XML: a testsuite per matrix combination, a testcase per case (failure: an
    assertion failed; error: no answer), times in seconds."""
    root = ET.Element("testsuites", name=f"minerva-ai suite {run['suite']}")
    groups: dict[str, list[dict[str, Any]]] = {}
    for view in run["cases"]:
        groups.setdefault(combination_label(view["combination"]), []).append(view)
    totals = {"tests": 0, "failures": 0, "errors": 0}
    total_time = 0.0
    for combo, views in groups.items():
        name = run["feature"] + (f" [{combo}]" if combo else "")
        suite_el = ET.SubElement(root, "testsuite", name=name)
        counts = {"tests": len(views), "failures": 0, "errors": 0}
        suite_time = 0.0
        for view in views:
            seconds = ((view["latency_ms"] or 0.0) * max(view["runs"], 1)) / 1000
            suite_time += seconds
            case_el = ET.SubElement(
                suite_el,
                "testcase",
                classname=name,
                name=view["name"],
                time=f"{seconds:.3f}",
            )
            if view["status"] == "fail":
                counts["failures"] += 1
                text = "\n".join(
                    f"{f['type']}: expected {f['expected']}, got {f['actual']}"
                    for f in view["failures"]
                )
                failed = ET.SubElement(
                    case_el, "failure", message=failure_text(view), type="assertion"
                )
                failed.text = text
            elif view["status"] == "error":
                counts["errors"] += 1
                error_el = ET.SubElement(
                    case_el, "error", message=view["error"] or "", type="error"
                )
                error_el.text = view["error"] or ""
            out = ET.SubElement(case_el, "system-out")
            out.text = " ".join(
                f"{key}={view[key]}" for key in ("model", "cost", "cached", "passed_runs", "runs")
            )
        for key, value in counts.items():
            suite_el.set(key, str(value))
            totals[key] += value
        suite_el.set("time", f"{suite_time:.3f}")
        total_time += suite_time
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{run['duration_ms'] / 1000:.3f}")
    ET.indent(root)
    xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return xml + b"\n"
