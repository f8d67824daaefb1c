"""Scenario files: parsed from YAML, every problem named by its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from minerva_ai.core.errors import UsageError
from minerva_ai.loadtest.scenario import (
    HttpStep,
    ThinkStep,
    WebSocketStep,
    default_scenario,
    load_scenario,
    parse_scenario,
    parse_think_time,
    render,
)

DEMO = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "demo.yaml"


def test_the_demo_scenario_parses() -> None:
    scenario = load_scenario(DEMO)
    assert scenario.think_time == (1.0, 3.0)
    assert [s.name for s in scenario.steps] == [
        "list",
        "feature",
        "settings",
        "ingest",
        "live-logs",
    ]
    assert scenario.data["feature"].field == "name"
    ingest = scenario.steps[3].action
    assert isinstance(ingest, HttpStep)
    assert (ingest.method, ingest.expect_status) == ("POST", (200, 201))
    feed = scenario.steps[4].action
    assert isinstance(feed, WebSocketStep)
    assert (feed.channel, feed.hold_s, feed.feature) == ("logs", 3.0, None)


def test_the_journey_scenario_is_a_sequence() -> None:
    journey = load_scenario(DEMO.with_name("journey.yaml"))
    assert journey.flow == "sequence"
    assert [s.kind for s in journey.steps] == ["http", "think", "http", "http", "http", "websocket"]
    errors = journey.steps[4].action
    assert isinstance(errors, HttpStep) and errors.query["level"] == "warn+"


def test_steps_fields_and_think_steps() -> None:
    scenario = parse_scenario(
        "steps:\n"
        "  - name: a\n"
        "    weight: 2\n"
        "    tags: {kind: read}\n"
        "    http: {method: put, path: /x, query: {q: 1}, json: {a: 1}, expect_status: 204,"
        " timeout: 2s}\n"
        "  - think: 1s-2s\n"
    )
    first, second = scenario.steps
    assert first.action == HttpStep("PUT", "/x", {"q": 1}, {"a": 1}, (204,), 2.0)
    assert (first.weight, first.tags) == (2.0, {"kind": "read"})
    assert second.action == ThinkStep(1.0, 2.0)
    assert second.name == "think-2"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("steps:\n  - name: a\n    grpc: {path: /x}\n", "s.yaml:3: unknown field 'grpc' in step 1"),
        (
            "steps:\n  - http:\n      path: /x\n      body: {}\n",
            "s.yaml:4: unknown field 'body' in http",
        ),
        ("steps:\n  - name: a\n", "s.yaml:2: step 1 needs exactly one of http, websocket, think"),
        ("stepz: []\n", "s.yaml:1: unknown field 'stepz'"),
        ("steps: []\n", "s.yaml:1: steps must be a non-empty list"),
        ("steps:\n  - http: {path: x}\n", "s.yaml:2: path must start with /"),
        ("steps:\n  - http: {path: '/f/${nope}'}\n", "s.yaml:2: step 'http-1' uses undefined"),
        ("steps:\n  - websocket: {subscribe: news}\n", "s.yaml:2: subscribe: one of"),
        ("steps:\n  - websocket: {hold: 3 parsecs}\n", "s.yaml:2: hold: invalid duration"),
        ("think_time: soon\nsteps:\n  - think: 1s\n", "s.yaml:1: invalid think time 'soon'"),
        ("steps:\n  - http: {path: /x}\n    weight: -1\n", "s.yaml:3: weight must be a number"),
        ("steps: [\n", "s.yaml:2: not valid YAML"),
        ("flow: random\nsteps:\n  - http: {path: /x}\n", "s.yaml:1: flow: one of weighted"),
        (
            "flow: sequence\nsteps:\n  - http: {path: /x}\n    weight: 2\n",
            "s.yaml:3: weight applies to flow: weighted",
        ),
        ("steps:\n  - think: 1s\n", "s.yaml:2: at least one http or websocket step needs"),
        ("flow: sequence\nsteps:\n  - think: 1s\n", "s.yaml:3: the scenario needs an http"),
        (
            'steps:\n  - http:\n      path: "/x\\r\\nX-Injected: 1"\n',
            "s.yaml:3: path '/x\\r\\nX-Injected: 1': it holds the control character U+000D, "
            "which has no place in a request line (write %0D if you mean that byte)",
        ),
        ('steps:\n  - websocket: {path: "/ws\\0"}\n', "s.yaml:2: path '/ws\\x00': it holds the "),
        (
            'data:\n  f: {get: "/f\\n"}\nsteps:\n  - http: {path: /x}\n',
            "s.yaml:2: get '/f\\n': it holds the control character U+000A",
        ),
        (
            'variables:\n  q: "a\\nb"\nsteps:\n  - {name: s, http: {path: "/s/${q}"}}\n',
            "s.yaml:2: variable 'q' is in the path of step 's': it holds the control character",
        ),
    ],
)
def test_problems_name_their_line(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_scenario(text, "s.yaml")
    assert problem in str(caught.value)


def test_flow_defaults_to_weighted_and_the_plans_default_is_a_sequence() -> None:
    assert parse_scenario("steps:\n  - http: {path: /x}\n").flow == "weighted"
    sequence = parse_scenario("flow: sequence\nsteps:\n  - http: {path: /x}\n  - think: 1s\n")
    assert sequence.flow == "sequence"
    default = default_scenario()
    assert default.flow == "sequence"
    assert [s.kind for s in default.steps] == ["http", "websocket"]
    assert default.think_time == (1.0, 3.0)


def test_think_time_and_rendering() -> None:
    assert parse_think_time("0") == (0.0, 0.0)
    assert parse_think_time("1s-3s") == (1.0, 3.0)
    assert parse_think_time("500ms") == (0.5, 0.5)
    with pytest.raises(UsageError, match="ends before it starts"):
        parse_think_time("3s-1s")
    context = {"n": 3, "name": "photo"}
    rendered = render({"path": "/f/${name}", "count": "${n}", "list": ["${name}-${n}"]}, context)
    assert rendered == {"path": "/f/photo", "count": 3, "list": ["photo-3"]}
    assert render("${now}", {}).endswith("Z")


def test_what_can_be_encoded_is_accepted_as_typed() -> None:
    """Spaces, non-ASCII and a stray % in a path are encoded when sent, not refused; a
    control character in a body or a query value is data (JSON, form-encoded)."""
    scenario = parse_scenario(
        'variables: {note: "line\\nbreak", term: photo tagging}\n'
        "steps:\n"
        "  - http: {path: '/f?search=${term}&x=50%&y=caf\u00e9', query: {q: '${note}'},"
        " json: {m: '${note}'}}\n"
    )
    action = scenario.steps[0].action
    assert isinstance(action, HttpStep)
    assert action.path == "/f?search=${term}&x=50%&y=caf\u00e9"
