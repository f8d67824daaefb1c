"""Scenario files: named, weighted HTTP, WebSocket and think steps; variables; per-user data.

An iteration is one step picked by weight (``flow: weighted``, the default, as locust's
tasks) or every step in order (``flow: sequence``, as a k6 iteration). Validated from YAML
nodes so that every problem names its line::

    flow: weighted             # or sequence
    think_time: 1s-3s          # between iterations; "0" for none
    variables: {feature: photo-tagging}
    data:                      # per user: one item picked at random from a list fetched at start
      feature: {get: /api/platform/ai-management/features, field: name}
    steps:
      - name: list
        weight: 3
        http: {method: GET, path: /api/platform/ai-management/features, expect_status: 200}
      - name: feed
        websocket: {subscribe: logs, feature: "${feature}", hold: 2s}
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from minerva_ai.core.errors import ConfigError, UsageError
from minerva_ai.core.protocol import API_PREFIX, CHANNELS, WEBSOCKET_PATH
from minerva_ai.core.timeparse import parse_duration
from minerva_ai.loadtest.http import target_problem

BUILTINS = ("now", "uuid", "user", "iteration")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_VARIABLE = re.compile(r"\$\{([A-Za-z_]\w*)\}")

STEP_FIELDS = ("name", "weight", "tags", "http", "websocket", "think")
HTTP_FIELDS = ("method", "path", "query", "json", "expect_status", "timeout")
WS_FIELDS = ("path", "subscribe", "feature", "hold", "timeout")
DATA_FIELDS = ("get", "field")
TOP_FIELDS = ("name", "flow", "think_time", "variables", "data", "steps")
FLOWS = ("weighted", "sequence")


@dataclass(frozen=True)
class HttpStep:
    method: str
    path: str
    query: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    expect_status: tuple[int, ...] = (200,)
    timeout_s: float = 10.0


@dataclass(frozen=True)
class WebSocketStep:
    path: str = WEBSOCKET_PATH
    channel: str = "logs"
    feature: str | None = None
    hold_s: float = 1.0
    timeout_s: float = 10.0


@dataclass(frozen=True)
class ThinkStep:
    low_s: float
    high_s: float


@dataclass(frozen=True)
class Step:
    name: str
    weight: float
    tags: dict[str, str]
    action: HttpStep | WebSocketStep | ThinkStep

    @property
    def kind(self) -> str:
        return {HttpStep: "http", WebSocketStep: "websocket", ThinkStep: "think"}[type(self.action)]


@dataclass(frozen=True)
class DataSource:
    """A list fetched once at start (its ``data`` array); each user picks one item's field."""

    path: str
    field: str | None


@dataclass
class Scenario:
    name: str
    steps: list[Step]
    flow: str = "weighted"
    think_time: tuple[float, float] = (0.0, 0.0)
    variables: dict[str, Any] = field(default_factory=dict)
    data: dict[str, DataSource] = field(default_factory=dict)


def parse_think_time(value: str) -> tuple[float, float]:
    """``0``, ``2s`` or a range ``1s-3s``, in seconds."""
    text = value.strip()
    if text in ("0", "0s"):
        return (0.0, 0.0)
    low, sep, high = text.partition("-")
    try:
        low_s = parse_duration(low).total_seconds()
        high_s = parse_duration(high).total_seconds() if sep else low_s
    except ConfigError:
        raise UsageError(
            f"invalid think time {value!r}: expected 0, a duration (2s) or a range (1s-3s)"
        ) from None
    if high_s < low_s:
        raise UsageError(f"invalid think time {value!r}: the range ends before it starts")
    return (low_s, high_s)


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Replace ``${name}`` in strings (recursively); a string that is only ``${name}``
    takes the variable's value with its type."""
    if isinstance(value, str):
        whole = _VARIABLE.fullmatch(value)
        if whole:
            return _lookup(whole[1], context)
        return _VARIABLE.sub(lambda m: str(_lookup(m[1], context)), value)
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context) for item in value]
    return value


def _lookup(name: str, context: Mapping[str, Any]) -> Any:
    if name == "now":
        return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if name == "uuid":
        return str(uuid.uuid4())
    return context[name]


def default_scenario(think_time: tuple[float, float] = (1.0, 3.0)) -> Scenario:
    """The plan's load test: each iteration a user lists features, then opens a WebSocket
    (following the organization's logs for a second), then thinks."""
    return Scenario(
        name="default",
        flow="sequence",
        think_time=think_time,
        steps=[
            Step("list-features", 1, {}, HttpStep("GET", f"{API_PREFIX}/features")),
            Step("websocket", 1, {}, WebSocketStep(channel="logs", hold_s=1.0)),
        ],
    )


def get_scenario(paths: list[str], think_time: tuple[float, float]) -> Scenario:
    """``--get PATH ...``: plain GETs, like hey or wrk."""
    steps = [Step(f"GET {path}", 1, {}, HttpStep("GET", path)) for path in paths]
    return Scenario(name="get", steps=steps, think_time=think_time)


# ------------------------------------------------------------------ loading


class _Loader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.constructor = yaml.SafeLoader("")

    def fail(self, node: yaml.Node, message: str) -> UsageError:
        return UsageError(f"{self.source}:{node.start_mark.line + 1}: {message}")

    def value(self, node: yaml.Node) -> Any:
        return self.constructor.construct_object(node, deep=True)

    def mapping(self, node: yaml.Node, what: str, allowed: tuple[str, ...]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        fields: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if key not in allowed:
                raise self.fail(
                    key_node,
                    f"unknown field {key!r} in {what} (expected one of: {', '.join(allowed)})",
                )
            fields[str(key)] = value_node
        return fields

    def string(self, node: yaml.Node, what: str) -> str:
        value = self.value(node)
        if not isinstance(value, str) or not value:
            raise self.fail(node, f"{what} must be a non-empty string")
        return value

    def number(self, node: yaml.Node, what: str, minimum: float = 0.0) -> float:
        value = self.value(node)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self.fail(node, f"{what} must be a number >= {minimum:g}")
        return float(value)

    def seconds(self, node: yaml.Node, what: str) -> float:
        value = self.value(node)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
        try:
            return parse_duration(str(value)).total_seconds()
        except ConfigError as exc:
            raise self.fail(node, f"{what}: {exc}") from None

    def path(self, node: yaml.Node, what: str) -> str:
        value = self.string(node, what)
        if not value.startswith("/"):
            raise self.fail(node, f"{what} must start with / (relative to the service root)")
        problem = target_problem(value)
        if problem:
            raise self.fail(node, f"{what} {value!r}: {problem}")
        return value


def load_scenario(path: Path) -> Scenario:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read scenario {path}: {exc.strerror}") from None
    return parse_scenario(text, str(path))


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Parse and validate; ``UsageError`` naming ``source:line`` on any problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UsageError(
            f"{source}{line}: not valid YAML: {getattr(exc, 'problem', exc)}"
        ) from None
    loader = _Loader(source)
    if root is None:
        raise UsageError(f"{source}: the scenario is empty")
    top = loader.mapping(root, "the scenario", TOP_FIELDS)
    scenario = Scenario(name=str(loader.value(top["name"])) if "name" in top else source, steps=[])
    if "flow" in top:
        flow = loader.value(top["flow"])
        if flow not in FLOWS:
            raise loader.fail(top["flow"], f"flow: one of {', '.join(FLOWS)}")
        scenario.flow = flow
    if "think_time" in top:
        try:
            scenario.think_time = parse_think_time(str(loader.value(top["think_time"])))
        except UsageError as exc:
            raise loader.fail(top["think_time"], str(exc)) from None
    variable_nodes: dict[str, yaml.Node] = {}
    if "variables" in top:
        variables = loader.value(top["variables"])
        if not isinstance(variables, dict):
            raise loader.fail(top["variables"], "variables must be a mapping of name: value")
        scenario.variables = {str(k): v for k, v in variables.items()}
        variable_nodes = {str(loader.value(k)): v for k, v in top["variables"].value}
    if "data" in top:
        scenario.data = _data(loader, top["data"])
    if "steps" not in top:
        raise loader.fail(root, "the scenario has no steps")
    steps_node = top["steps"]
    if not isinstance(steps_node, yaml.SequenceNode) or not steps_node.value:
        raise loader.fail(steps_node, "steps must be a non-empty list")
    known = {*BUILTINS, *scenario.variables, *scenario.data}
    for index, node in enumerate(steps_node.value, start=1):
        step = _step(loader, node, index)
        if scenario.flow == "sequence" and "weight" in loader.mapping(node, "", STEP_FIELDS):
            raise loader.fail(node, "weight applies to flow: weighted (a sequence runs every step)")
        if step.name in {s.name for s in scenario.steps}:
            raise loader.fail(node, f"two steps are named {step.name!r}")
        _check_variables(loader, node, step, known)
        _check_path_variables(loader, node, step, scenario.variables, variable_nodes)
        scenario.steps.append(step)
    if scenario.flow == "weighted" and not any(
        s.weight > 0 and not isinstance(s.action, ThinkStep) for s in scenario.steps
    ):
        raise loader.fail(steps_node, "at least one http or websocket step needs a weight above 0")
    if not any(not isinstance(s.action, ThinkStep) for s in scenario.steps):
        raise loader.fail(steps_node, "the scenario needs an http or websocket step")
    return scenario


def _data(loader: _Loader, node: yaml.Node) -> dict[str, DataSource]:
    if not isinstance(node, yaml.MappingNode):
        raise loader.fail(node, "data must be a mapping of name: {get, field}")
    sources = {}
    for key_node, value_node in node.value:
        fields = loader.mapping(value_node, f"data {loader.value(key_node)!r}", DATA_FIELDS)
        if "get" not in fields:
            raise loader.fail(value_node, "a data source needs get: PATH")
        pick = loader.string(fields["field"], "field") if "field" in fields else None
        sources[str(loader.value(key_node))] = DataSource(loader.path(fields["get"], "get"), pick)
    return sources


def _step(loader: _Loader, node: yaml.Node, index: int) -> Step:
    fields = loader.mapping(node, f"step {index}", STEP_FIELDS)
    actions = [name for name in ("http", "websocket", "think") if name in fields]
    if len(actions) != 1:
        raise loader.fail(node, f"step {index} needs exactly one of http, websocket, think")
    kind = actions[0]
    name = loader.string(fields["name"], "name") if "name" in fields else f"{kind}-{index}"
    weight = loader.number(fields["weight"], "weight") if "weight" in fields else 1.0
    tags: dict[str, str] = {}
    if "tags" in fields:
        raw = loader.value(fields["tags"])
        if not isinstance(raw, dict):
            raise loader.fail(fields["tags"], "tags must be a mapping of name: value")
        tags = {str(k): str(v) for k, v in raw.items()}
    action: HttpStep | WebSocketStep | ThinkStep
    if kind == "http":
        action = _http(loader, fields["http"])
    elif kind == "websocket":
        action = _websocket(loader, fields["websocket"])
    else:
        try:
            action = ThinkStep(*parse_think_time(str(loader.value(fields["think"]))))
        except UsageError as exc:
            raise loader.fail(fields["think"], str(exc)) from None
    return Step(name, weight, tags, action)


def _http(loader: _Loader, node: yaml.Node) -> HttpStep:
    fields = loader.mapping(node, "http", HTTP_FIELDS)
    method = loader.string(fields["method"], "method").upper() if "method" in fields else "GET"
    if method not in METHODS:
        raise loader.fail(fields["method"], f"unknown method {method!r}")
    if "path" not in fields:
        raise loader.fail(node, "http needs path")
    query = loader.value(fields["query"]) if "query" in fields else {}
    if not isinstance(query, dict):
        raise loader.fail(fields["query"], "query must be a mapping")
    expect: tuple[int, ...] = (200,)
    if "expect_status" in fields:
        raw = loader.value(fields["expect_status"])
        codes = raw if isinstance(raw, list) else [raw]
        if not codes or not all(isinstance(c, int) and 100 <= c <= 599 for c in codes):
            raise loader.fail(fields["expect_status"], "expect_status: a status or a list of them")
        expect = tuple(codes)
    timeout = loader.seconds(fields["timeout"], "timeout") if "timeout" in fields else 10.0
    body = loader.value(fields["json"]) if "json" in fields else None
    return HttpStep(method, loader.path(fields["path"], "path"), query, body, expect, timeout)


def _websocket(loader: _Loader, node: yaml.Node) -> WebSocketStep:
    fields = loader.mapping(node, "websocket", WS_FIELDS)
    step = WebSocketStep()
    channel = loader.string(fields["subscribe"], "subscribe") if "subscribe" in fields else "logs"
    if channel not in CHANNELS:
        raise loader.fail(fields["subscribe"], f"subscribe: one of {', '.join(CHANNELS)}")
    return WebSocketStep(
        path=loader.path(fields["path"], "path") if "path" in fields else step.path,
        channel=channel,
        feature=loader.string(fields["feature"], "feature") if "feature" in fields else None,
        hold_s=loader.seconds(fields["hold"], "hold") if "hold" in fields else step.hold_s,
        timeout_s=loader.seconds(fields["timeout"], "timeout") if "timeout" in fields else 10.0,
    )


def _check_variables(loader: _Loader, node: yaml.Node, step: Step, known: set[str]) -> None:
    action = step.action
    texts: list[Any] = []
    if isinstance(action, HttpStep):
        texts = [action.path, action.query, action.json]
    elif isinstance(action, WebSocketStep):
        texts = [action.path, action.feature]
    for name in variables_in(texts):
        if name not in known:
            raise loader.fail(node, f"step {step.name!r} uses undefined variable ${{{name}}}")


def _check_path_variables(
    loader: _Loader,
    node: yaml.Node,
    step: Step,
    variables: dict[str, Any],
    nodes: dict[str, yaml.Node],
) -> None:
    """A variable put in a path must be sendable there, as the path itself must; the
    error names the variable's line (the step's for a merged one), where the fix goes.
    (Values fetched at run time are percent-encoded whatever they hold; ``query`` values
    are form-encoded.)"""
    action = step.action
    if isinstance(action, ThinkStep):
        return
    for name in variables_in(action.path):
        problem = target_problem(str(variables[name])) if name in variables else None
        if problem:
            raise loader.fail(
                nodes.get(name, node),
                f"variable {name!r} is in the path of step {step.name!r}: {problem}",
            )


def variables_in(value: Any) -> list[str]:
    """The ``${name}`` variables used in a string, or in a JSON-like value's strings."""
    if isinstance(value, str):
        return _VARIABLE.findall(value)
    if isinstance(value, dict):
        return [n for item in value.values() for n in variables_in(item)]
    if isinstance(value, list):
        return [n for item in value for n in variables_in(item)]
    return []
