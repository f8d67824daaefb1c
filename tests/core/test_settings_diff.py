"""The settings diff shared by the service (history) and the CLI (set, diff, rollback)."""

from __future__ import annotations

from minerva_ai.core.settings_diff import diff_settings

OLD = {
    "models": {
        "primary": "main",
        "fallbacks": ["backup", "sim"],
        "definitions": {"main": {"provider": "openai", "model": "gpt-4o-mini"}},
    },
    "rate_limits": {"requests_per_minute": 600, "cost_per_day": None},
    "prompts": {"a.b": {"template": "x"}},
    "monitoring": {"alert_rules": [{"name": "r1", "threshold": 5}]},
}
NEW = {
    "models": {
        "primary": "main",
        "fallbacks": ["sim"],
        "definitions": {"main": {"provider": "openai", "model": "gpt-4o"}},
    },
    "rate_limits": {"requests_per_minute": 600, "tokens_per_minute": 1000},
    "prompts": {"a.b": {"template": "x"}},
    "monitoring": {"alert_rules": [{"name": "r1", "threshold": 7}, {"name": "r2"}]},
}


def test_diff_walks_mappings_by_key_and_lists_by_index() -> None:
    assert diff_settings(OLD, NEW) == [
        {
            "path": "models.definitions.main.model",
            "op": "change",
            "old": "gpt-4o-mini",
            "new": "gpt-4o",
        },
        {"path": "models.fallbacks[0]", "op": "change", "old": "backup", "new": "sim"},
        {"path": "models.fallbacks[1]", "op": "remove", "old": "sim", "new": None},
        {"path": "monitoring.alert_rules[0].threshold", "op": "change", "old": 5, "new": 7},
        {"path": "monitoring.alert_rules[1]", "op": "add", "old": None, "new": {"name": "r2"}},
        {"path": "rate_limits.cost_per_day", "op": "remove", "old": None, "new": None},
        {"path": "rate_limits.tokens_per_minute", "op": "add", "old": None, "new": 1000},
    ]


def test_no_difference_is_an_empty_list_and_types_count() -> None:
    assert diff_settings(OLD, OLD) == []
    assert diff_settings({"a": 1}, {"a": "1"}) == [
        {"path": "a", "op": "change", "old": 1, "new": "1"}
    ]
    assert diff_settings({"a": {"x": 1}}, {"a": [1]}) == [
        {"path": "a", "op": "change", "old": {"x": 1}, "new": [1]}
    ]


def test_keys_that_are_not_plain_words_are_quoted() -> None:
    changes = diff_settings({"prompts": {}}, {"prompts": {"a.b": 1}})
    assert changes[0]["path"] == 'prompts["a.b"]'
