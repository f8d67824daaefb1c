"""Every assertion type passing and failing, negated, weighted and with thresholds."""

from __future__ import annotations

from typing import Any

import pytest

from minerva_ai.suites.assertions import Answer, AssertionProblem, judge, parse

ANSWER = Answer('{"order_id": 1234, "status": "refund"}', latency_ms=120.0, cost=0.002)
TEXT = Answer("Refund approved for order 1234", latency_ms=80.0, cost=None)

# (assertion, the answer, passes)
CASES: list[tuple[dict[str, Any], Answer, bool]] = [
    ({"type": "equals", "value": "Refund approved for order 1234"}, TEXT, True),
    ({"type": "equals", "value": "refund approved for order 1234"}, TEXT, False),
    ({"type": "equals", "value": {"status": "refund", "order_id": 1234}}, ANSWER, True),
    ({"type": "equals", "value": {"order_id": 1}}, ANSWER, False),
    ({"type": "contains", "value": "order 1234"}, TEXT, True),
    ({"type": "contains", "value": "refund"}, TEXT, False),
    ({"type": "icontains", "value": "REFUND"}, TEXT, True),
    ({"type": "icontains", "value": "return"}, TEXT, False),
    ({"type": "contains-any", "value": ["return", "Refund"]}, TEXT, True),
    ({"type": "contains-any", "value": ["return", "exchange"]}, TEXT, False),
    ({"type": "contains-all", "value": ["Refund", "1234"]}, TEXT, True),
    ({"type": "contains-all", "value": ["Refund", "exchange"]}, TEXT, False),
    ({"type": "contains-all", "value": ["Refund", "exchange"], "threshold": 0.5}, TEXT, True),
    ({"type": "starts-with", "value": "Refund"}, TEXT, True),
    ({"type": "starts-with", "value": "order"}, TEXT, False),
    ({"type": "regex", "value": r"order \d{4}$"}, TEXT, True),
    ({"type": "regex", "value": r"^\d+"}, TEXT, False),
    ({"type": "is-json"}, ANSWER, True),
    ({"type": "is-json"}, TEXT, False),
    ({"type": "is-json", "value": {"type": "object", "required": ["order_id"]}}, ANSWER, True),
    ({"type": "is-json", "value": {"type": "array"}}, ANSWER, False),
    ({"type": "json-schema", "value": {"type": "object", "required": ["order_id"]}}, ANSWER, True),
    (
        {"type": "json-schema", "value": {"properties": {"order_id": {"type": "string"}}}},
        ANSWER,
        False,
    ),
    ({"type": "json-schema", "value": {"type": "object"}}, TEXT, False),
    ({"type": "max-latency-ms", "value": 100}, TEXT, True),
    ({"type": "max-latency-ms", "value": 100}, ANSWER, False),
    ({"type": "max-cost", "value": 0.01}, ANSWER, True),
    ({"type": "max-cost", "value": 0.001}, ANSWER, False),
    ({"type": "max-cost", "value": 1}, TEXT, False),  # an unknown cost never passes
    ({"type": "min-length", "value": 10}, TEXT, True),
    ({"type": "min-length", "value": 100}, TEXT, False),
    ({"type": "max-length", "value": 100}, TEXT, True),
    ({"type": "max-length", "value": 10}, TEXT, False),
]


@pytest.mark.parametrize(("raw", "answer", "passes"), CASES)
def test_each_assertion_passes_and_fails(raw: dict[str, Any], answer: Answer, passes: bool) -> None:
    assertion = parse(raw)
    verdict = assertion.judge(answer)
    assert verdict.passed is passes
    negated = parse({**raw, "type": f"not-{raw['type']}"}).judge(answer)
    assert negated.passed is not passes
    assert negated.expected == f"not {verdict.expected}"


def test_every_type_is_covered_both_ways() -> None:
    from minerva_ai.suites.assertions import TYPES

    outcomes = {(raw["type"], passes) for raw, _, passes in CASES}
    assert outcomes == {(t, p) for t in TYPES for p in (True, False)}


def test_failure_says_expected_and_actual() -> None:
    result = judge([parse({"type": "contains", "value": "refund"})], TEXT, 1.0)
    assert not result.passed
    assert result.failures == [
        {
            "type": "contains",
            "expected": 'contains "refund"',
            "actual": '"Refund approved for order 1234"',
        }
    ]
    long = Answer("x" * 500, 1, 0)
    failure = judge([parse({"type": "equals", "value": "y"})], long, 1.0).failures[0]
    assert len(failure["actual"]) < 130 and failure["actual"].endswith('…"')


def test_weights_and_the_case_threshold() -> None:
    heavy = parse({"type": "contains", "value": "Refund", "weight": 3})
    light = parse({"type": "contains", "value": "nope"})
    assert judge([heavy, light], TEXT, 1.0).passed is False  # default: all must pass
    scored = judge([heavy, light], TEXT, 0.75)
    assert scored.passed is True and scored.score == 0.75
    assert judge([heavy, light], TEXT, 0.8).passed is False
    informational = parse({"type": "contains", "value": "nope", "weight": 0})
    assert judge([heavy, informational], TEXT, 1.0).passed is True
    assert judge([], TEXT, 1.0).passed is True  # an answer and nothing to check


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"type": "containz", "value": "x"}, "unknown type 'containz' (types: equals, contains"),
        ({"type": "contains", "valeu": "x"}, "unknown key 'valeu' (keys: type, value"),
        ({"value": "x"}, "type is required"),
        ({"type": "contains"}, "value must be non-empty text"),
        ({"type": "contains-any", "value": "x"}, "non-empty list"),
        ({"type": "regex", "value": "(unclosed"}, "not a valid regular expression"),
        ({"type": "json-schema", "value": {"type": "objekt"}}, "not a valid JSON schema"),
        ({"type": "json-schema", "value": "object"}, "must be a JSON schema"),
        ({"type": "max-latency-ms", "value": "fast"}, "number >= 0"),
        ({"type": "min-length", "value": 1.5}, "whole number"),
        ({"type": "contains", "value": "x", "weight": -1}, "weight must be"),
        ({"type": "contains", "value": "x", "threshold": 2}, "threshold must be"),
        ({"type": "equals"}, "value is required"),
    ],
)
def test_bad_assertions_say_what_is_wrong(raw: dict[str, Any], says: str) -> None:
    with pytest.raises(AssertionProblem, match=None) as caught:
        parse(raw)
    assert says in str(caught.value)
