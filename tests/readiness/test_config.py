"""The readiness file: every mistake named with its line and the valid names, before any
check runs; ${ENV} interpolation."""

from __future__ import annotations

import textwrap

import pytest

from minerva_ai.core.errors import ConfigError
from minerva_ai.readiness.config import parse_config


def refused(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text), "ci/readiness.yaml", env=env or {})
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "checks:\n  - {name: a, type: files, paths: [x]}\n  - {name: b, type: coverge}\n",
            "ci/readiness.yaml, line 3: unknown check type 'coverge' (valid: alerts, command, "
            "coverage, dependency-audit, feature-slo, files, http, load-test, openapi, "
            "service-health, settings-drift, size, test-suite)",
        ),
        (
            "checks:\n  - name: cov\n    type: coverage\n    file: c.xml\n    pass: 90\n"
            "    pas: 80\n",
            "ci/readiness.yaml, line 6: unknown option 'pas' for a coverage check (valid: name, "
            "type, severity, timeout, file, pass, warn, metric)",
        ),
        (
            "checks:\n  - {name: wheel, type: size, paths: [dist/*.whl], max: 2 parsecs}\n",
            "ci/readiness.yaml, line 2: max: invalid size '2 parsecs': expected a number and a "
            "unit, e.g. 500KB, 10MiB, 2048",
        ),
        (
            "checks:\n  - {name: t, type: command, run: make, timeout: 20 minutes}\n",
            "ci/readiness.yaml, line 2: timeout: invalid duration '20 minutes'",
        ),
        (
            "checks:\n  - {name: docs, type: files, paths: [a]}\n"
            "  - {name: Docs, type: files, paths: [b]}\n",
            "ci/readiness.yaml, line 3: duplicate check name 'Docs' (first on line 2)",
        ),
        (
            "checks:\n  - {name: svc, type: http, url: '${SERVICE}/health'}\n",
            "ci/readiness.yaml, line 2: ${SERVICE} is not set (give a default: ${SERVICE:-...})",
        ),
        (
            "checks:\n  - {name: load, type: load-test, thresholds: ['http_req_duration<5']}\n",
            "ci/readiness.yaml, line 2: thresholds: invalid threshold 'http_req_duration<5'",
        ),
        (
            "checks:\n  - {name: slo, type: feature-slo, window: 1h}\n",
            "ci/readiness.yaml, line 2: feature-slo needs a limit: max_error_rate, max_p95_ms, "
            "min_uptime or min_health_score",
        ),
        (
            "checks:\n  - {name: a, type: alerts, severity: fatal}\n",
            "ci/readiness.yaml, line 2: severity 'fatal' (valid: fail, warn; or, for alerts, "
            "info, warning, critical)",
        ),
        (
            "checks:\n  - name: audit\n    type: dependency-audit\n    ignore:\n"
            "      - {id: GHSA-1, reason: later}\n",
            "ci/readiness.yaml, line 5: ignore: an entry lacks expires",
        ),
        ("checks:\n  - {type: files, paths: [a]}\n", "line 2: a check needs `name`"),
        ("checks:\n  - {name: f, type: files}\n", "line 2: a files check needs `paths`"),
        ("checks: []\n", "line 1: `checks:` is empty"),
        ("check:\n  - {name: f, type: files}\n", "line 1: unknown key 'check' (valid: checks)"),
        ("checks: [unclosed\n", "ci/readiness.yaml: not valid YAML"),
    ],
)
def test_bad_files_are_refused_naming_the_line(text: str, message: str) -> None:
    assert message in refused(text)


def test_environment_variables_are_interpolated_with_defaults() -> None:
    specs = parse_config(
        textwrap.dedent(
            """
            checks:
              - name: coverage on ${BRANCH}
                type: coverage
                file: ${COV:-coverage.xml}
                pass: ${FLOOR}
              # in a flow mapping, quote it: { and } are YAML's there
              - {name: load, type: load-test, users: "${USERS:-3}", duration: "${FOR:-2s}"}
            """
        ),
        env={"BRANCH": "main", "FLOOR": "92.5"},
    )
    coverage, load = specs
    assert coverage.name == "coverage on main" and coverage.id == "coverage-on-main"
    assert coverage["file"] == "coverage.xml"
    assert coverage["pass"] == 92.5  # a plain scalar keeps its type after interpolation
    assert (load["users"], load["duration"]) == (3, 2.0)
    assert [t.expr for t in load["thresholds"]] == ["http_req_failed:rate<0.01"]


def test_severity_timeout_and_the_alerts_severity() -> None:
    command, alerts, soft = parse_config(
        textwrap.dedent(
            """
            checks:
              - {name: build, type: command, run: [make, build], timeout: 20m}
              - {name: no critical alerts, type: alerts, severity: critical}
              - {name: alerts soft, type: alerts, severity: warn, max_open: 2}
            """
        ),
        env={},
    )
    assert (command.severity, command.timeout_s, command["run"]) == (
        "fail",
        1200,
        ["make", "build"],
    )
    assert (alerts.severity, alerts["alert_severity"]) == ("fail", "critical")
    assert (soft.severity, soft["alert_severity"], soft["max_open"]) == ("warn", None, 2)


def test_the_shipped_configs_parse() -> None:
    from tests.conftest import REPO

    for path, names in (
        (REPO / "readiness.yaml", ["coverage", "docs", "openapi", "wheel size"]),
        (
            REPO / "examples" / "readiness.yaml",
            ["build", "test coverage", "bundle size", "security audit", "performance",
             "summaries", "documentation", "service", "api document", "health page",
             "feature slo", "no critical alerts", "settings in git match live"],
        ),
    ):  # fmt: skip
        assert [s.name for s in parse_config(path.read_text(), str(path), env={})] == names
