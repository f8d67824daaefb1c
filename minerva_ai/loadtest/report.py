"""The load-test report: JSON (names follow k6), JUnit XML and the human summary.

JSON: {duration_s, http_reqs: {count, rate}, http_req_failed: {count, rate},
http_req_duration: {min, avg, p50, p90, p95, p99, max}, errors: {status, timeout, connection},
error_samples: {kind: first error},
data_received_bytes, ws_sessions: {ok, failed}, ws_connecting: {...}, ws_msgs_received,
ws_msg_delay: {...}, thresholds: [{expr, ok, observed}], steps: {name: {...}},
generator: {cpu_percent, limited, workers, worker_requests, arrivals_waited,
arrivals_dropped}, model,
interrupted, lost}.
Durations are in milliseconds, ``rate`` per second (``http_req_failed.rate``: a fraction).
"""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

from minerva_ai.loadtest.engine import RunResult
from minerva_ai.loadtest.stats import ERROR_KINDS, Stats, StepStats, summarize
from minerva_ai.loadtest.thresholds import Threshold


def _block(steps: list[StepStats], duration_s: float) -> dict[str, Any]:
    requests = sum(s.requests for s in steps)
    failed = sum(s.failed for s in steps)
    per_second = duration_s if duration_s > 0 else 1.0
    return {
        "http_reqs": {"count": requests, "rate": round(requests / per_second, 3)},
        "http_req_failed": {
            "count": failed,
            "rate": round(failed / requests, 6) if requests else 0.0,
        },
        "http_req_duration": summarize(Stats.combined(steps, "duration")),
        "errors": {kind: sum(s.errors.get(kind, 0) for s in steps) for kind in ERROR_KINDS},
        "error_samples": _samples(steps),
        "data_received_bytes": sum(s.bytes_received for s in steps),
        "ws_sessions": {
            "ok": sum(s.ws_ok for s in steps),
            "failed": sum(s.ws_failed for s in steps),
        },
        "ws_connecting": summarize(Stats.combined(steps, "ws_connecting")),
        "ws_msgs_received": sum(s.ws_msgs for s in steps),
        "ws_msg_delay": summarize(Stats.combined(steps, "ws_msg_delay")),
    }


def _samples(steps: list[StepStats]) -> dict[str, str]:
    """The first error of each kind (status, timeout, connection, websocket) seen in these
    steps: what to read first when something failed."""
    samples: dict[str, str] = {}
    for step in steps:
        for kind, detail in step.samples.items():
            samples.setdefault(kind, detail)
    return samples


def build_report(
    result: RunResult, thresholds: list[Threshold], model: dict[str, Any]
) -> dict[str, Any]:
    steps = list(result.stats.steps.values())
    report: dict[str, Any] = {"duration_s": result.duration_s, **_block(steps, result.duration_s)}
    report["thresholds"] = [t.check(result.stats, result.duration_s) for t in thresholds]
    report["steps"] = {
        s.name: {"type": s.kind, "tags": s.tags, **_block([s], result.duration_s)} for s in steps
    }
    report["generator"] = {
        "cpu_percent": result.cpu_percent,
        "limited": result.limited,
        "workers": result.workers,
        "worker_requests": result.worker_requests or [result.stats.requests],
        "arrivals_waited": result.arrivals_waited,
        "arrivals_dropped": result.arrivals_dropped,
    }
    report["model"] = model
    report["interrupted"] = result.interrupted
    report["lost"] = result.lost
    return report


def junit_xml(report: dict[str, Any]) -> str:
    """One testcase per threshold; a failed threshold is a <failure>."""
    checks = report["thresholds"]
    suite = ET.Element(
        "testsuite",
        name="minerva-ai load-test",
        tests=str(len(checks)),
        failures=str(sum(not c["ok"] for c in checks)),
        errors="0",
        time=f"{report['duration_s']:.3f}",
    )
    for check in checks:
        case = ET.SubElement(
            suite, "testcase", classname="load-test.thresholds", name=check["expr"]
        )
        if not check["ok"]:
            failure = ET.SubElement(case, "failure", message=f"observed {check['observed']}")
            failure.text = f"{check['expr']}: observed {check['observed']}"
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def summary_text(report: dict[str, Any]) -> str:
    """The human summary, k6-like."""
    reqs, failed = report["http_reqs"], report["http_req_failed"]
    d = report["http_req_duration"]
    model = report["model"]
    load = (
        f"open, {model['rate']:g} arrivals/s, at most {model['max_in_flight']} in flight"
        if model["type"] == "open"
        else f"closed, {model['users']} users"
    )
    lines = [
        f"model .............. {load}; scenario {model['scenario']} ({model['flow']})",
        f"duration ........... {report['duration_s']:.1f} s",
        f"http_reqs .......... {reqs['count']:,}  ({reqs['rate']:,.1f}/s)",
        f"http_req_failed .... {failed['count']:,}  ({failed['rate'] * 100:.2f}%)"
        + "  ["
        + ", ".join(f"{k} {v}" for k, v in report["errors"].items())
        + "]",
        f"http_req_duration .. avg {_ms(d['avg'])}  p50 {_ms(d['p50'])}  p90 {_ms(d['p90'])}  "
        f"p95 {_ms(d['p95'])}  p99 {_ms(d['p99'])}  max {_ms(d['max'])}",
    ]
    for kind, detail in report["error_samples"].items():
        lines.append(f"  first {kind} error: {detail}")
    ws = report["ws_sessions"]
    if ws["ok"] or ws["failed"]:
        lines += [
            f"ws_sessions ........ ok {ws['ok']:,}  failed {ws['failed']:,}",
            f"ws_connecting ...... p95 {_ms(report['ws_connecting']['p95'])}",
            f"ws_msgs_received ... {report['ws_msgs_received']:,}",
            f"ws_msg_delay ....... p95 {_ms(report['ws_msg_delay']['p95'])}",
        ]
    lines.append("steps:")
    for name, step in report["steps"].items():
        if step["type"] == "http":
            sd = step["http_req_duration"]
            lines.append(
                f"  {name}: {step['http_reqs']['count']:,} reqs, "
                f"{step['http_req_failed']['count']:,} failed, p95 {_ms(sd['p95'])}"
            )
        else:
            sw = step["ws_sessions"]
            lines.append(f"  {name}: {sw['ok']:,} sessions ok, {sw['failed']:,} failed")
    if report["thresholds"]:
        lines.append("thresholds:")
        for check in report["thresholds"]:
            mark = "pass" if check["ok"] else "FAIL"
            lines.append(f"  {mark}  {check['expr']}  (observed {check['observed']})")
    generator = report["generator"]
    lines.append(
        f"generator: cpu {generator['cpu_percent']:.0f}% of a core"
        + (
            " (LIMITED: the generator, not the target, may have been the bottleneck)"
            if generator["limited"]
            else ""
        )
        + (
            f"; {generator['arrivals_waited']:,} arrivals waited for an in-flight slot"
            if generator["arrivals_waited"]
            else ""
        )
        + (
            f"; {generator['arrivals_dropped']:,} due arrivals dropped at the end"
            if generator["arrivals_dropped"]
            else ""
        )
    )
    if report["lost"]:
        lines.append(f"target lost mid-run: {report['lost']}")
    if report["interrupted"]:
        lines.append("interrupted: partial results")
    return "\n".join(lines) + "\n"
