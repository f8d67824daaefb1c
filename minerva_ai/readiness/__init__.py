"""The readiness-check engine: a YAML list of checks (build, coverage, docs, the live
service's SLOs, alerts, suites, load), run in parallel, reported as a table, JSON, JUnit,
Markdown or GitHub annotations. ``minerva-ai readiness-check`` is its Click wiring.

    from minerva_ai.readiness import load_config, run_checks
"""

from __future__ import annotations

from minerva_ai.readiness.config import ReadinessConfig, load_config, parse_config
from minerva_ai.readiness.model import Result, Status, exit_code
from minerva_ai.readiness.runner import Run, run_checks
from minerva_ai.readiness.spec import CheckSpec

__all__ = [
    "CheckSpec",
    "ReadinessConfig",
    "Result",
    "Run",
    "Status",
    "exit_code",
    "load_config",
    "parse_config",
    "run_checks",
]
