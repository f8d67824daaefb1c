"""Every suite of examples/suites passes against the demo organization's simulator models."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID

import pytest

from minerva_ai.service.demo import load_demo_features
from tests.commands.conftest import Run
from tests.conftest import LiveService

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SUITES = sorted((EXAMPLES / "suites").glob("*.yaml"))


def test_every_demo_feature_has_a_suite() -> None:
    import yaml

    demo = yaml.safe_load((EXAMPLES / "demo-organization.yaml").read_text())
    features = {f["name"] for f in demo["features"]}
    covered = {yaml.safe_load(p.read_text())["feature"] for p in SUITES}
    assert covered == features


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.stem)
def test_the_example_suite_passes_on_the_simulator(
    run: Run, live_service: LiveService, path: Path
) -> None:
    load_demo_features(live_service.database_url, UUID(live_service.org_id), EXAMPLES)
    result = run("test", "suite", str(path), "-j", "8", "-o", "json")
    assert result.exit_code == 0, result.stdout + result.stderr
    run_doc = json.loads(result.stdout)
    assert run_doc["status"] == "passed" and run_doc["totals"]["failed"] == 0
