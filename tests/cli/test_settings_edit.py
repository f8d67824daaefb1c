"""Settings files and `--set PATH=VALUE` assignments."""

from __future__ import annotations

from pathlib import Path

import pytest

from minerva_ai.cli.settings_edit import apply_assignments, load_settings_file, parse_assignment
from minerva_ai.core.errors import ConfigError


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("rate_limits.requests_per_minute=100", 100),
        ("rate_limits.cost_per_day=2.5", 2.5),
        ("rate_limits.cost_per_day=null", None),
        ("rate_limits.cost_per_day=", None),
        ("models.fallbacks=[backup, sim]", ["backup", "sim"]),
        ("models.primary=main", "main"),
        ("models.primary='true'", "true"),
        ("prompts.p.template=Tags for: {{ description }}", "Tags for: {{ description }}"),
        ("prompts.p.template=a=b", "a=b"),
    ],
)
def test_values_are_read_as_yaml_scalars(expression: str, value: object) -> None:
    path, parsed = parse_assignment(expression)
    assert path[0] in ("rate_limits", "models", "prompts")
    assert parsed == value


def test_apply_touches_only_named_sections_and_copies() -> None:
    current = {
        "rate_limits": {"requests_per_minute": 1},
        "prompts": {"p": {"template": "x"}},
        "monitoring": {"alert_rules": [{"name": "r", "threshold": 5}]},
    }
    changed = apply_assignments(
        current,
        [
            parse_assignment("rate_limits.cost_per_day=3"),
            parse_assignment("models.definitions.sim.provider=simulator"),
            parse_assignment("monitoring.alert_rules.0.threshold=9"),
        ],
    )
    assert changed == {
        "rate_limits": {"requests_per_minute": 1, "cost_per_day": 3},
        "models": {"definitions": {"sim": {"provider": "simulator"}}},
        "monitoring": {"alert_rules": [{"name": "r", "threshold": 9}]},
    }
    assert current["rate_limits"] == {"requests_per_minute": 1}
    assert current["monitoring"]["alert_rules"][0]["threshold"] == 5


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("rate_limits.requests_per_minute.x=1", "rate_limits.requests_per_minute is not a mapping"),
        ("monitoring.alert_rules.3.threshold=1", "is a list of 1"),
    ],
)
def test_impossible_paths_are_refused(expression: str, reason: str) -> None:
    current = {
        "rate_limits": {"requests_per_minute": 1},
        "monitoring": {"alert_rules": [{"name": "r"}]},
    }
    with pytest.raises(ConfigError, match=reason):
        apply_assignments(current, [parse_assignment(expression)])


def test_files_hold_sections_or_a_whole_settings_object(tmp_path: Path) -> None:
    sections = tmp_path / "s.json"
    sections.write_text('{"rate_limits": {"cost_per_day": 1}}')
    assert load_settings_file(str(sections)) == {"rate_limits": {"cost_per_day": 1}}
    whole = tmp_path / "w.yaml"
    whole.write_text("feature_id: f\nversion: 3\nsettings:\n  prompts: {}\n")
    assert load_settings_file(str(whole)) == {"prompts": {}}


def test_a_yaml_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("rate_limits:\n  a: 1\n b: [\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+"):
        load_settings_file(str(path))
