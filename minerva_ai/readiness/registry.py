"""Every check type: its function, its options (with kinds and defaults), whether it asks
the service, its default timeout and one line of help (``docs/readiness.md`` has more)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from minerva_ai.readiness import checks_gates, checks_local, checks_service
from minerva_ai.readiness.model import Outcome
from minerva_ai.readiness.spec import CheckSpec, Context, Opt


@dataclass(frozen=True)
class CheckType:
    name: str
    run: Callable[[CheckSpec, Context], Outcome]
    options: dict[str, Opt]
    summary: str
    timeout_s: float = 60.0


PERCENT = "number"
TYPES: dict[str, CheckType] = {
    t.name: t
    for t in (
        CheckType(
            "command",
            checks_local.check_command,
            {"run": Opt("argv", True, help="argv list, or a string run by the shell")},
            "a command exits 0 (the tail of its output is reported)",
            timeout_s=600.0,
        ),
        CheckType(
            "coverage",
            checks_local.check_coverage,
            {
                "file": Opt("str", True, help="coverage.py JSON or Cobertura XML"),
                "pass": Opt(PERCENT, True, help="percent needed to pass"),
                "warn": Opt(PERCENT, help="percent above which a miss is a warning"),
                "metric": Opt("choice:total,line,branch", default="total"),
            },
            "coverage from coverage.py JSON or Cobertura XML is at least `pass`",
        ),
        CheckType(
            "size",
            checks_local.check_size,
            {
                "paths": Opt("paths", True),
                "max": Opt("size", True, help="budget of each file, e.g. 500KB, 2MiB"),
                "warn": Opt("size", help="a size above which it is a warning"),
                "gzip": Opt("bool", default=False, help="measure each file gzipped"),
            },
            "each file matched is within a size budget",
        ),
        CheckType(
            "files",
            checks_local.check_files,
            {"paths": Opt("paths", True), "contains": Opt("regex")},
            "files exist, are not empty and optionally contain a pattern",
        ),
        CheckType(
            "openapi",
            checks_local.check_openapi,
            {
                "file": Opt("str", True),
                "command": Opt("argv", help="prints the expected document"),
                "url": Opt("url_or_bool", help="true: the service's /openapi.json; or a URL"),
            },
            "an OpenAPI file parses and equals what a command prints or the service serves",
        ),
        CheckType(
            "dependency-audit",
            checks_local.check_dependency_audit,
            {
                "report": Opt("str", help="a pip-audit JSON report (else pip-audit is run)"),
                "args": Opt("strlist", default=[], help="more pip-audit arguments"),
                "ignore": Opt("ignores", default=[], help="[{id, expires, reason}]"),
            },
            "no known vulnerability outside the `ignore` list (pip-audit)",
            timeout_s=600.0,
        ),
        CheckType(
            "http",
            checks_service.check_http,
            {
                "url": Opt("str", True, help="a path of the service, or a full URL"),
                "status": Opt("statuses", default=[200]),
                "max_ms": Opt("number", help="latency budget"),
            },
            "a URL answers the expected status within a latency budget",
        ),
        CheckType(
            "service-health",
            checks_service.check_service_health,
            {},
            "GET /api/health: ok passes, degraded Redis warns, PostgreSQL down fails",
        ),
        CheckType(
            "feature-slo",
            checks_service.check_feature_slo,
            {
                "features": Opt("features", default=["all"]),
                "window": Opt("window", default="1h"),
                "max_error_rate": Opt(PERCENT),
                "max_p95_ms": Opt("number"),
                "min_uptime": Opt(PERCENT),
                "min_health_score": Opt("number"),
                "allow_no_data": Opt("bool", default=False),
            },
            "features' error rate, p95, uptime and health score over a window",
        ),
        CheckType(
            "alerts",
            checks_service.check_alerts,
            {
                "alert_severity": Opt("choice:info,warning,critical"),
                "max_open": Opt("int", default=0),
                "include_acknowledged": Opt("bool", default=True),
                "feature": Opt("str"),
            },
            "at most `max_open` open alerts of a severity (and above)",
        ),
        CheckType(
            "settings-drift",
            checks_service.check_settings_drift,
            {"paths": Opt("paths", True)},
            "settings files in the repository equal the live settings of their feature",
        ),
        CheckType(
            "test-suite",
            checks_gates.check_test_suite,
            {"file": Opt("str", True), "stored": Opt("bool", default=False)},
            "a suite passes (run now, or a stored passed run on the live models and prompts)",
            timeout_s=600.0,
        ),
        CheckType(
            "load-test",
            checks_gates.check_load_test,
            {
                "scenario": Opt("str"),
                "users": Opt("int", default=10),
                "duration": Opt("duration", default=30.0),
                "ramp_up": Opt("duration", default=0.0),
                "thresholds": Opt("thresholds", default=["http_req_failed:rate<0.01"]),
            },
            "a load-test scenario meets its k6-style thresholds",
            timeout_s=600.0,
        ),
    )
}


SERVICE_TYPES = frozenset(
    {"service-health", "feature-slo", "alerts", "settings-drift", "test-suite", "load-test"}
)


def needs_service(spec: CheckSpec) -> bool:
    """Whether the check asks the service (so the CLI resolves its URL and token)."""
    if spec.type in SERVICE_TYPES:
        return True
    if spec.type == "http":
        return str(spec.options["url"]).startswith("/")
    return spec.type == "openapi" and bool(spec.options["url"])
