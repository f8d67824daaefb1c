"""examples/deploy/prometheus.yml and alerts.rules.yml: they scrape the address of
`--metrics-bind`, and each alerting rule names metrics (and labels) the service exports.
promtool, where installed (Debian's `prometheus` package), also checks both files and runs
tests/deploy/alerts.test.yml, which makes each rule fire on the series it is about."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, Metric

from minerva_ai.service import telemetry
from minerva_ai.service.metrics_server import DEFAULT_PORT
from tests.deploy.service_contract import DEPLOY

RULES = DEPLOY / "alerts.rules.yml"
SCRAPE = DEPLOY / "prometheus.yml"
RULE_TESTS = Path(__file__).with_name("alerts.test.yml")
_SELECTOR = re.compile(r"\b(minerva_[a-z0-9_]+)(?:\{([^}]*)\})?")
_MATCHER = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")


def exported() -> dict[str, Metric]:
    """The service's metric families (telemetry.py), by the name of each of their samples."""
    assert telemetry.HTTP_REQUESTS  # defined at import, in the default registry
    families: dict[str, Metric] = {}
    for family in REGISTRY.collect():
        if family.name.startswith("minerva_"):
            suffixes = {
                "counter": ("_total",),
                "histogram": ("_bucket", "_count", "_sum"),
                "gauge": ("",),
            }[family.type]
            for suffix in suffixes:
                families[family.name + suffix] = family
    return families


def label_names(family: Metric) -> set[str]:
    names = {"instance", "job"}  # Prometheus adds them to every scraped series
    for sample in family.samples:
        names.update(sample.labels)
    for metric in (m for m in vars(telemetry).values() if getattr(m, "_name", None) == family.name):
        names.update(metric._labelnames)
    return names | {"le"}


def alerting_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_three_alerting_rules_about_the_service_itself() -> None:
    rules = alerting_rules()
    assert len(rules) == 3
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["alert"].startswith("Minerva")
        assert rule["labels"]["severity"] in ("page", "warn")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert re.fullmatch(r"\d+[smh]", rule["for"])


def test_each_rule_names_metrics_and_labels_the_service_exports() -> None:
    families = exported()
    for rule in alerting_rules():
        selectors = _SELECTOR.findall(rule["expr"])
        assert selectors, rule["alert"]
        for name, matchers in selectors:
            assert name in families, f"{rule['alert']}: {name} is not exported"
            unknown = set(_MATCHER.findall(matchers)) - label_names(families[name])
            assert not unknown, f"{rule['alert']}: {name} has no label {unknown}"
        for grouping in re.findall(r"by \(([^)]*)\)", rule["expr"]):
            for label in (part.strip() for part in grouping.split(",")):
                assert any(label in label_names(families[n]) for n, _ in selectors), label


def test_the_service_metrics_follow_prometheus_naming() -> None:
    families = {family.name: family for family in exported().values()}
    assert len(families) >= 15
    for name, family in families.items():
        assert re.fullmatch(r"minerva_[a-z0-9_]+", name)
        assert family.documentation
        if family.type == "histogram":  # every histogram of ours is a duration
            assert name.endswith("_seconds"), name
        if family.type == "gauge":
            assert not name.endswith("_total"), name
        if "seconds" in name:  # the unit is the last word (before _total for a counter)
            assert name.endswith("_seconds"), name
    assert "minerva_http_requests_total" in exported()


def test_the_scrape_config_reads_the_metrics_address_and_the_rules() -> None:
    document = yaml.safe_load(SCRAPE.read_text())
    assert [(DEPLOY / path).resolve() for path in document["rule_files"]] == [RULES]
    (job,) = document["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    targets = [t for config in job["static_configs"] for t in config["targets"]]
    assert targets and all(t.endswith(f":{DEFAULT_PORT}") for t in targets)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_files_and_each_rule_fires_on_its_series() -> None:
    checked = subprocess.run(
        ["promtool", "check", "config", str(SCRAPE)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 3 rules found" in checked.stdout + checked.stderr
    tested = subprocess.run(
        ["promtool", "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_operations_guide_lists_every_metric() -> None:
    guide = (DEPLOY.parents[1] / "docs" / "deployment.md").read_text()
    for family in {family.name for family in exported().values()}:
        shown = family + "_total" if family + "_total" in exported() else family
        assert f"`{shown}`" in guide, f"docs/deployment.md does not describe {shown}"
