"""Validation of feature settings: every rule names the exact field it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from minerva_ai.service.feature_settings import (
    empty_settings,
    template_problem,
    template_variables,
    validate_sections,
)


def problems_of(raw: Any) -> list[str]:
    clean, problems = validate_sections(raw)
    assert problems, f"expected problems, got none (clean: {clean})"
    return [p["field"] for p in problems]


def openai(**fields: Any) -> dict[str, Any]:
    return {"provider": "openai", "model": "gpt-4o-mini", **fields}


def rule(**fields: Any) -> dict[str, Any]:
    return {"name": "errors", "metric": "error_rate", "operator": ">", "threshold": 5, **fields}


FULL = {
    "models": {
        "primary": "main",
        "fallbacks": ["backup", "sim"],
        "definitions": {
            "main": openai(
                base_url="https://api.openai.com/v1",
                api_key_env="OPENAI_API_KEY",
                parameters={"temperature": 0.2, "max_tokens": 512, "seed": 7},
            ),
            "backup": {"provider": "anthropic", "model": "claude-3-5-haiku"},
            "sim": {
                "provider": "simulator",
                "latency_ms": 120,
                "error_rate": 0.01,
                "output": "tags: beach",
            },
        },
    },
    "prompts": {
        "tag-photo": {"template": "List tags for: {{ description }}", "description": "tags"}
    },
    "rate_limits": {"requests_per_minute": 600, "tokens_per_minute": 200000, "cost_per_day": 50.0},
    "monitoring": {
        "alert_rules": [
            rule(warning_threshold=2, window="5m", **{"for": "2m"}, severity="critical")
        ]
    },
}


def test_a_complete_valid_document_passes_and_is_normalised() -> None:
    clean, problems = validate_sections(FULL)
    assert problems == []
    assert set(clean) == {"models", "prompts", "rate_limits", "monitoring"}
    main = clean["models"]["definitions"]["main"]
    assert main["parameters"] == {"temperature": 0.2, "max_tokens": 512, "seed": 7}
    assert main["timeout_s"] == 30  # defaults are filled in
    assert clean["models"]["definitions"]["backup"]["api_key_env"] == "ANTHROPIC_API_KEY"
    assert clean["monitoring"]["alert_rules"][0]["for"] == "2m"  # alias kept on output


def test_only_the_sections_given_are_returned() -> None:
    clean, problems = validate_sections({"rate_limits": {"requests_per_minute": 5}})
    assert problems == []
    assert clean == {"rate_limits": {"requests_per_minute": 5}}


def test_empty_settings_has_every_section_and_is_valid() -> None:
    empty = empty_settings()
    assert set(empty) == {"models", "prompts", "rate_limits", "monitoring"}
    assert validate_sections(empty) == (empty, [])


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"rate_limits": {"requests_per_minute": "many"}}, "rate_limits.requests_per_minute"),
        ({"rate_limits": {"requests_per_minute": "100"}}, "rate_limits.requests_per_minute"),
        ({"rate_limits": {"tokens_per_minute": True}}, "rate_limits.tokens_per_minute"),
        ({"rate_limits": {"cost_per_day": [1]}}, "rate_limits.cost_per_day"),
        ({"rate_limits": []}, "rate_limits"),
        ({"models": "gpt-4o"}, "models"),
        ({"models": {"definitions": {"main": "gpt-4o"}}}, "models.definitions.main"),
        ({"models": {"definitions": {"main": openai(model=4)}}}, "models.definitions.main.model"),
        (
            {"models": {"definitions": {"main": openai(parameters={"temperature": "hot"})}}},
            "models.definitions.main.parameters.temperature",
        ),
        ({"models": {"fallbacks": "sim"}}, "models.fallbacks"),
        ({"prompts": {"p": "just a string"}}, "prompts.p"),
        ({"prompts": {"p": {"template": 42}}}, "prompts.p.template"),
        (
            {"monitoring": {"alert_rules": [rule(threshold="five")]}},
            "monitoring.alert_rules[0].threshold",
        ),
    ],
)
def test_wrong_types_name_the_field(raw: dict[str, Any], field: str) -> None:
    assert problems_of(raw) == [field]


def test_settings_that_are_not_an_object() -> None:
    assert problems_of(["models"]) == ["settings"]


@pytest.mark.parametrize("provider", ["gemini", "", None, 3])
def test_unknown_provider(provider: Any) -> None:
    raw = {"models": {"definitions": {"main": {"provider": provider, "model": "x"}}}}
    assert problems_of(raw) == ["models.definitions.main.provider"]


def test_missing_provider() -> None:
    raw = {"models": {"definitions": {"main": {"model": "x"}}}}
    assert problems_of(raw) == ["models.definitions.main.provider"]


def test_a_definition_named_like_a_provider_keeps_its_name_in_the_path() -> None:
    raw = {"models": {"definitions": {"openai": openai(timeout_s=0)}}}
    assert problems_of(raw) == ["models.definitions.openai.timeout_s"]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_hosted_providers_need_a_model_name(provider: str) -> None:
    raw = {"models": {"definitions": {"main": {"provider": provider}}}}
    assert problems_of(raw) == ["models.definitions.main.model"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("requests_per_minute", -1),
        ("requests_per_minute", 0),
        ("tokens_per_minute", -100),
        ("cost_per_day", -0.5),
        ("cost_per_day", 0),
    ],
)
def test_negative_or_zero_limits(field: str, value: float) -> None:
    assert problems_of({"rate_limits": {field: value}}) == [f"rate_limits.{field}"]


def test_null_limits_mean_no_limit() -> None:
    clean, problems = validate_sections({"rate_limits": {"requests_per_minute": None}})
    assert problems == []
    assert clean == {"rate_limits": {}}


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"latency_ms": -1}, "latency_ms"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"error_rate": -0.1}, "error_rate"),
    ],
)
def test_simulator_ranges(fields: dict[str, Any], bad: str) -> None:
    raw = {"models": {"definitions": {"sim": {"provider": "simulator", **fields}}}}
    assert problems_of(raw) == [f"models.definitions.sim.{bad}"]


@pytest.mark.parametrize(
    ("parameters", "bad"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": "END"}, "stop"),
    ],
)
def test_known_parameters_are_range_checked(parameters: dict[str, Any], bad: str) -> None:
    raw = {"models": {"definitions": {"main": openai(parameters=parameters)}}}
    assert problems_of(raw) == [f"models.definitions.main.parameters.{bad}"]


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"base_url": "ftp://example.com"}, "base_url"),
        ({"base_url": "not a url"}, "base_url"),
        ({"api_key_env": "openai key"}, "api_key_env"),
        ({"api_key_env": "sk-live-1234"}, "api_key_env"),
    ],
)
def test_hosted_provider_fields(fields: dict[str, Any], bad: str) -> None:
    raw = {"models": {"definitions": {"main": openai(**fields)}}}
    assert problems_of(raw) == [f"models.definitions.main.{bad}"]


@pytest.mark.parametrize("field", ["api_key", "apiKey", "key"])
def test_the_api_key_itself_is_refused(field: str) -> None:
    raw = {"models": {"definitions": {"main": openai(**{field: "sk-secret"})}}}
    clean, problems = validate_sections(raw)
    assert [p["field"] for p in problems] == [f"models.definitions.main.{field}"]
    assert "sk-secret" not in repr(clean)


@pytest.mark.parametrize(
    "template",
    [
        "Tags for {{ description }",
        "Tags for { description }}",
        "Tags for {{ description",
        "Tags for description }}",
        "Tags for {{ }}",
        "Tags for {{ 1st }}",
        "Tags for {{ a b }}",
    ],
)
def test_unbalanced_or_malformed_templates(template: str) -> None:
    assert problems_of({"prompts": {"tag-photo": {"template": template}}}) == [
        "prompts.tag-photo.template"
    ]


def test_template_rules() -> None:
    assert template_problem("Hi {{ name }}, about {{topic}}") is None
    assert template_problem('JSON like {"a": 1} is fine') is None
    assert template_variables("{{ a }} {{b}} {{ a }}") == ["a", "b"]


def test_empty_template_is_refused() -> None:
    assert problems_of({"prompts": {"p": {"template": ""}}}) == ["prompts.p.template"]


@pytest.mark.parametrize(
    ("models", "fields"),
    [
        ({"primary": "ghost", "definitions": {"main": openai()}}, ["models.primary"]),
        (
            {"primary": "main", "fallbacks": ["ghost"], "definitions": {"main": openai()}},
            ["models.fallbacks[0]"],
        ),
        (
            {
                "primary": "main",
                "fallbacks": ["sim", "ghost"],
                "definitions": {"main": openai(), "sim": {"provider": "simulator"}},
            },
            ["models.fallbacks[1]"],
        ),
        (
            {"primary": "main", "fallbacks": ["main"], "definitions": {"main": openai()}},
            ["models.fallbacks[0]"],
        ),
        (
            {
                "primary": "main",
                "fallbacks": ["sim", "sim"],
                "definitions": {"main": openai(), "sim": {"provider": "simulator"}},
            },
            ["models.fallbacks[1]"],
        ),
        ({"fallbacks": ["main"], "definitions": {"main": openai()}}, ["models.primary"]),
    ],
)
def test_primary_and_fallbacks_must_be_definitions(
    models: dict[str, Any], fields: list[str]
) -> None:
    assert problems_of({"models": models}) == fields


@pytest.mark.parametrize(
    ("operator", "warning"),
    [
        (">", 5),
        (">", 7),
        (">=", 5),
        ("<", 5),
        ("<", 3),
        ("<=", 5),
    ],
)
def test_warning_threshold_on_the_firing_side(operator: str, warning: float) -> None:
    raw = {
        "monitoring": {
            "alert_rules": [rule(operator=operator, threshold=5, warning_threshold=warning)]
        }
    }
    assert problems_of(raw) == ["monitoring.alert_rules[0].warning_threshold"]


@pytest.mark.parametrize(("operator", "warning"), [(">", 3), (">=", 4.9), ("<", 7), ("<=", 6)])
def test_warning_threshold_on_the_quiet_side(operator: str, warning: float) -> None:
    raw = {
        "monitoring": {
            "alert_rules": [rule(operator=operator, threshold=5, warning_threshold=warning)]
        }
    }
    assert validate_sections(raw)[1] == []


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"metric": "happiness"}, "metric"),
        ({"operator": "=="}, "operator"),
        ({"severity": "apocalyptic"}, "severity"),
        ({"window": "5 minutes"}, "window"),
        ({"window": "0m"}, "window"),
        ({"for": "2w"}, "for"),
        ({"name": "has spaces"}, "name"),
        ({"threshold": None}, "threshold"),
    ],
)
def test_alert_rule_fields(fields: dict[str, Any], bad: str) -> None:
    raw = {"monitoring": {"alert_rules": [rule(), rule(**{"name": "second", **fields})]}}
    assert problems_of(raw) == [f"monitoring.alert_rules[1].{bad}"]


def test_alert_rule_missing_fields_are_each_named() -> None:
    raw = {"monitoring": {"alert_rules": [{"name": "x"}]}}
    assert sorted(problems_of(raw)) == [
        "monitoring.alert_rules[0].metric",
        "monitoring.alert_rules[0].operator",
        "monitoring.alert_rules[0].threshold",
    ]


def test_alert_rule_names_are_unique() -> None:
    raw = {"monitoring": {"alert_rules": [rule(), rule()]}}
    assert problems_of(raw) == ["monitoring.alert_rules[1].name"]


@pytest.mark.parametrize("section", ["model", "limits", "secrets"])
def test_unknown_section(section: str) -> None:
    assert problems_of({section: {}}) == [section]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"models": {"default": "main"}}, "models.default"),
        ({"rate_limits": {"requests_per_hour": 5}}, "rate_limits.requests_per_hour"),
        (
            {"monitoring": {"alert_rules": [rule(email="x@example.com")]}},
            "monitoring.alert_rules[0].email",
        ),
        ({"prompts": {"p": {"template": "x", "variables": ["a"]}}}, "prompts.p.variables"),
    ],
)
def test_unknown_fields_are_refused(raw: dict[str, Any], field: str) -> None:
    assert problems_of(raw) == [field]


def test_every_bad_field_of_a_document_is_reported_at_once() -> None:
    raw = {
        "models": {"definitions": {"main": {"provider": "gemini"}}},
        "prompts": {"p": {"template": "{{ x"}},
        "rate_limits": {"requests_per_minute": -1, "cost_per_day": -2},
        "bogus": 1,
    }
    assert sorted(problems_of(raw)) == sorted(
        [
            "models.definitions.main.provider",
            "prompts.p.template",
            "rate_limits.requests_per_minute",
            "rate_limits.cost_per_day",
            "bogus",
        ]
    )


def test_bad_names_of_definitions_and_prompts() -> None:
    fields = problems_of(
        {
            "models": {"definitions": {"bad name": {"provider": "simulator"}}},
            "prompts": {"-leading-dash": {"template": "x"}},
        }
    )
    assert len(fields) == 2
    assert fields[0].startswith("models.definitions.bad name")
    assert fields[1].startswith("prompts.-leading-dash")


def test_a_key_variable_outside_the_allow_list_is_refused() -> None:
    from minerva_ai.service.providers.policy import KeyPolicy

    raw = {
        "models": {
            "definitions": {
                "leak": {"provider": "openai", "model": "m", "api_key_env": "DATABASE_URL"},
                "gateway": {
                    "provider": "openai",
                    "model": "m",
                    "api_key_env": "MINERVA_PROVIDER_KEY_GATEWAY",
                },
            }
        }
    }
    _, problems = validate_sections(raw, KeyPolicy())
    assert [p["field"] for p in problems] == ["models.definitions.leak.api_key_env"]
    assert "DATABASE_URL is not an allowed key variable" in problems[0]["message"]
    _, problems = validate_sections(raw, KeyPolicy.parse("DATABASE_URL"))
    assert problems == []  # the operator's MINERVA_PROVIDER_KEYS decides


def test_a_prompt_is_a_template_or_chat_messages() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "Be {{ tone }}"},
            {"role": "user", "content": "{{ q }}"},
        ]
    }
    clean, problems = validate_sections({"prompts": {"chat": chat}})
    assert problems == [] and clean["prompts"]["chat"]["messages"][0]["role"] == "system"
    _, problems = validate_sections({"prompts": {"both": {**chat, "template": "x"}, "none": {}}})
    assert sorted(p["field"] for p in problems) == ["prompts.both", "prompts.none"]
    _, problems = validate_sections(
        {"prompts": {"bad": {"messages": [{"role": "user", "content": "{{ x }"}]}}}
    )
    assert [p["field"] for p in problems] == ["prompts.bad.messages[0].content"]


def test_every_demo_feature_has_a_seeded_simulator_that_never_fails() -> None:
    from minerva_ai.service.demo import read_demo
    from tests.conftest import REPO

    for feature in read_demo(REPO / "examples"):
        definitions = feature["settings"]["models"]["definitions"]
        offline = [
            d
            for d in definitions.values()
            if d["provider"] == "simulator" and "seed" in d and d.get("error_rate", 0) == 0
        ]
        assert offline, f"{feature['name']} has no seeded simulator with a zero error rate"
