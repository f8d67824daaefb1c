"""The settings of a feature: models, prompts, rate limits and monitoring, validated.

``validate_sections`` returns the normalised sections or a list of problems, each naming
its field by dotted path (``models.definitions.main.provider``), so that a user sees
every bad field of a file at once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from minerva_ai.core.templates import NAME
from minerva_ai.service.providers.policy import KeyPolicy
from minerva_ai.service.providers.templates import template_problem, template_variables

__all__ = ["template_problem", "template_variables", "validate_sections"]

SECTIONS = ("models", "prompts", "rate_limits", "monitoring")

Name = Annotated[str, StringConstraints(pattern=NAME.pattern)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]{0,127}$")]
Duration = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*(s|m|h|d)$")]
HttpUrl = Annotated[str, StringConstraints(pattern=r"^https?://[^\s/?#]+[^\s]*$")]


class _Strict(BaseModel):
    # strict: "100" or true where a number belongs is a wrong type, not a value to coerce.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


class Parameters(BaseModel):
    """Generation parameters; known ones are range-checked, others pass through."""

    model_config = ConfigDict(extra="allow", strict=True)

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, gt=0)
    stop: list[str] | None = None


class Price(_Strict):
    """US dollars per million tokens; overrides the default price table."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class OpenAIModel(_Strict):
    provider: Literal["openai"]
    model: Annotated[str, StringConstraints(min_length=1)]
    base_url: HttpUrl | None = Field(
        default=None, description="as the official SDK takes it, ending in /v1"
    )
    api_key_env: EnvName = "OPENAI_API_KEY"
    timeout_s: float = Field(default=30, gt=0, le=600)
    parameters: Parameters = Field(default_factory=Parameters)
    response_format: dict[str, Any] | None = None
    price: Price | None = None


class AnthropicModel(_Strict):
    provider: Literal["anthropic"]
    model: Annotated[str, StringConstraints(min_length=1)]
    base_url: HttpUrl | None = Field(
        default=None, description="as the official SDK takes it, without /v1"
    )
    api_key_env: EnvName = "ANTHROPIC_API_KEY"
    timeout_s: float = Field(default=30, gt=0, le=600)
    parameters: Parameters = Field(default_factory=Parameters)
    price: Price | None = None


class SimulatorModel(_Strict):
    """A model that answers locally: for demos, tests and load tests. Its outcome is a
    function of ``seed``, the rendered input and the repeat index."""

    provider: Literal["simulator"]
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    latency_ms: float = Field(default=100, ge=0, le=600_000)
    latency_jitter_ms: float = Field(default=0, ge=0, le=600_000)
    error_rate: float = Field(default=0, ge=0, le=1)
    timeout_rate: float = Field(default=0, ge=0, le=1)
    timeout_s: float = Field(default=30, gt=0, le=600)
    output: str | None = Field(
        default=None, description="fixed text, or a template of the input: {{ input }}"
    )
    parameters: Parameters = Field(default_factory=Parameters)
    price: Price | None = None


ModelDefinition = Annotated[
    OpenAIModel | AnthropicModel | SimulatorModel, Field(discriminator="provider")
]


class Models(_Strict):
    primary: Name | None = None
    fallbacks: list[Name] = Field(default_factory=list)
    definitions: dict[Name, ModelDefinition] = Field(default_factory=dict)


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: Annotated[str, StringConstraints(min_length=1)]


class Prompt(_Strict):
    """A plain template, or a chat: a list of role/content messages, each a template."""

    template: Annotated[str, StringConstraints(min_length=1)] | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    description: str | None = None


class RateLimits(_Strict):
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    cost_per_day: float | None = Field(default=None, gt=0)


PERCENT_METRICS = ("error_rate", "success_rate", "uptime")
LabelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")]
LabelValue = Annotated[str, StringConstraints(max_length=256)]


class AlertRule(_Strict):
    """A threshold on a metric of the feature (docs/alerts.md). Optional fields left out
    take their documented defaults when the rule is evaluated."""

    name: Name
    metric: Literal[
        "error_rate",
        "response_time",
        "success_rate",
        "uptime",
        "cost",
        "tokens",
        "p95_ms",
        "p99_ms",
        "requests_per_minute",
    ]
    operator: Literal[">", ">=", "<", "<="]
    threshold: float
    warning_threshold: float | None = None
    window: Duration = "5m"
    for_: Duration | None = Field(default=None, alias="for")
    severity: Literal["info", "warning", "critical"] = "warning"
    min_requests: int | None = Field(default=None, ge=0, le=1_000_000)  # default 1
    no_data: Literal["ok", "alerting", "no_data"] | None = None  # default no_data
    keep_firing_for: Duration | None = None  # default 0
    renotify: Annotated[str, StringConstraints(pattern=r"^(0|[1-9][0-9]*(m|h|d))$")] | None = (
        None  # default 4h; "0": never
    )
    enabled: bool | None = None  # default true
    labels: dict[LabelName, LabelValue] | None = Field(default=None, max_length=20)
    runbook_url: HttpUrl | None = None


class Slo(_Strict):
    """The service-level objective the health score and uptime measure against
    (docs/metrics.md); the defaults are the plan's normalisations."""

    success_rate: float = Field(default=99.5, ge=0, le=100)
    response_time_ms: float = Field(default=1000, gt=0, le=3_600_000)


class Monitoring(_Strict):
    alert_rules: list[AlertRule] = Field(default_factory=list)
    slo: Slo | None = None


_SECTION_TYPES: dict[str, TypeAdapter[Any]] = {
    "models": TypeAdapter(Models),
    "prompts": TypeAdapter(dict[Name, Prompt]),
    "rate_limits": TypeAdapter(RateLimits),
    "monitoring": TypeAdapter(Monitoring),
}

Problem = dict[str, str]


def _path(section: str, loc: tuple[int | str, ...]) -> str:
    parts = [section]
    for i, part in enumerate(loc):
        # A discriminated union adds the tag ("openai") to the location: drop it.
        if i > 0 and loc[i - 1] != "definitions" and part in ("openai", "anthropic", "simulator"):
            continue
        parts.append(f"[{part}]" if isinstance(part, int) else str(part))
    return ".".join(parts).replace(".[", "[")


def _prompt_checks(name: str, prompt: dict[str, Any]) -> list[Problem]:
    where = f"prompts.{name}"
    if ("template" in prompt) == ("messages" in prompt):
        return [{"field": where, "message": "give either template or messages (not both)"}]
    problems: list[Problem] = []
    if "template" in prompt:
        why = template_problem(prompt["template"])
        if why:
            problems.append({"field": f"{where}.template", "message": why})
    for i, message in enumerate(prompt.get("messages", [])):
        why = template_problem(message["content"])
        if why:
            problems.append({"field": f"{where}.messages[{i}].content", "message": why})
    return problems


def _seconds(duration: str) -> int:
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[duration[-1]]


MAX_RULE_SPAN_S = 90 * 86400  # a rule's window, for, keep_firing_for and renotify: 90 days


def _rule_checks(where: str, rule: dict[str, Any], alert_interval_s: float) -> list[Problem]:
    problems: list[Problem] = []
    for name in ("window", "for", "keep_firing_for", "renotify"):
        value = rule.get(name)
        if value and value != "0" and _seconds(value) > MAX_RULE_SPAN_S:
            problems.append({"field": f"{where}.{name}", "message": "at most 90d"})
    if problems:
        return problems
    if _seconds(rule["window"]) % 60:
        problems.append(
            {"field": f"{where}.window", "message": "must be whole minutes (e.g. 5m, 1h, 1d)"}
        )
    wait = rule.get("for")
    if wait is not None and _seconds(wait) < alert_interval_s:
        problems.append(
            {
                "field": f"{where}.for",
                "message": f"must be at least the evaluation interval ({alert_interval_s:g}s, "
                "MINERVA_ALERT_INTERVAL)",
            }
        )
    low, high = (0.0, 100.0) if rule["metric"] in PERCENT_METRICS else (0.0, None)
    for name in ("threshold", "warning_threshold"):
        value = rule.get(name)
        if value is None:
            continue
        if value < low or (high is not None and value > high):
            unit = "a percent, 0-100" if high is not None else "not negative"
            problems.append({"field": f"{where}.{name}", "message": f"{rule['metric']} is {unit}"})
    return problems


def _cross_checks(
    section: str, value: dict[str, Any], keys: KeyPolicy, alert_interval_s: float = 15.0
) -> list[Problem]:
    problems: list[Problem] = []
    if section == "models":
        names = set(value["definitions"])
        for name, definition in value["definitions"].items():
            env = definition.get("api_key_env")
            if env is not None and not keys.allows(env):
                problems.append(
                    {
                        "field": f"models.definitions.{name}.api_key_env",
                        "message": keys.refusal(env),
                    }
                )
        primary = value.get("primary")
        if primary is not None and primary not in names:
            problems.append(
                {
                    "field": "models.primary",
                    "message": f"{primary!r} is not one of models.definitions",
                }
            )
        seen: set[str] = set()
        for i, name in enumerate(value["fallbacks"]):
            where = f"models.fallbacks[{i}]"
            if name not in names:
                problems.append(
                    {"field": where, "message": f"{name!r} is not one of models.definitions"}
                )
            elif name == primary:
                problems.append({"field": where, "message": "the primary model is not a fallback"})
            elif name in seen:
                problems.append({"field": where, "message": f"{name!r} is listed twice"})
            seen.add(name)
        if value["fallbacks"] and primary is None:
            problems.append(
                {"field": "models.primary", "message": "fallbacks need a primary model"}
            )
    elif section == "prompts":
        for name, prompt in value.items():
            problems.extend(_prompt_checks(name, prompt))
    elif section == "monitoring":
        seen_rules: set[str] = set()
        for i, rule in enumerate(value["alert_rules"]):
            where = f"monitoring.alert_rules[{i}]"
            if rule["name"] in seen_rules:
                problems.append(
                    {
                        "field": f"{where}.name",
                        "message": f"rule name {rule['name']!r} is used twice",
                    }
                )
            seen_rules.add(rule["name"])
            problems.extend(_rule_checks(where, rule, alert_interval_s))
            warning = rule.get("warning_threshold")
            if warning is None:
                continue
            fires_above = rule["operator"] in (">", ">=")
            if (fires_above and warning >= rule["threshold"]) or (
                not fires_above and warning <= rule["threshold"]
            ):
                side = "below" if fires_above else "above"
                problems.append(
                    {
                        "field": f"{where}.warning_threshold",
                        "message": f"must be {side} threshold ({rule['threshold']}) "
                        f"for operator {rule['operator']!r}",
                    }
                )
    return problems


def validate_sections(
    raw: Any, keys: KeyPolicy | None = None, alert_interval_s: float = 15.0
) -> tuple[dict[str, Any], list[Problem]]:
    """Validate the sections present in ``raw``; return them normalised, and the problems.

    ``keys``: the key variables a model may name (MINERVA_PROVIDER_KEYS; from the
    environment when not given). ``alert_interval_s``: how often alert rules are evaluated
    (a rule's `for` is not shorter)."""
    keys = keys or KeyPolicy.from_env()
    if not isinstance(raw, dict):
        return {}, [{"field": "settings", "message": "must be an object of sections"}]
    clean: dict[str, Any] = {}
    problems: list[Problem] = []
    for section, value in raw.items():
        adapter = _SECTION_TYPES.get(section)
        if adapter is None:
            problems.append(
                {
                    "field": str(section),
                    "message": f"unknown section (allowed: {', '.join(SECTIONS)})",
                }
            )
            continue
        try:
            parsed = adapter.validate_python(value)
        except PydanticValidationError as exc:
            for err in exc.errors(include_url=False):
                field = _path(section, err["loc"])
                if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                    field += ".provider"
                problems.append({"field": field, "message": err["msg"]})
            continue
        dumped = adapter.dump_python(parsed, mode="json", by_alias=True, exclude_none=True)
        problems.extend(_cross_checks(section, dumped, keys, alert_interval_s))
        clean[section] = dumped
    return clean, problems


def empty_settings() -> dict[str, Any]:
    """The settings of a new feature: every section present and empty."""
    clean, _ = validate_sections({"models": {}, "prompts": {}, "rate_limits": {}, "monitoring": {}})
    return clean
