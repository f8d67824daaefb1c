"""Assertions on a model's answer (promptfoo's names): parsed and checked when the suite is
loaded, judged on the response text, its latency and its cost.

Every assertion scores 0..1 and passes when its score reaches its ``threshold`` (default 1:
only ``contains-all`` scores in between, the share of its values found). ``not-`` negates
one (it passes when the plain one does not). A case's score is the weighted share of its
assertions that passed; it passes when that reaches the case's ``threshold`` (default 1).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema

TYPES = (
    "equals",
    "contains",
    "icontains",
    "contains-any",
    "contains-all",
    "starts-with",
    "regex",
    "is-json",
    "json-schema",
    "max-latency-ms",
    "max-cost",
    "min-length",
    "max-length",
)
KEYS = ("type", "value", "weight", "threshold")
SHOWN_CHARS = 120


class AssertionProblem(ValueError):
    """An assertion that cannot be judged as written (the message says why)."""


@dataclass(frozen=True)
class Answer:
    """What an assertion judges."""

    response: str
    latency_ms: float
    cost: float | None


@dataclass(frozen=True)
class Verdict:
    passed: bool
    score: float
    expected: str
    actual: str


@dataclass(frozen=True)
class Assertion:
    type: str  # as written, with its not- prefix
    value: Any
    weight: float = 1.0
    threshold: float = 1.0

    @property
    def negated(self) -> bool:
        return self.type.startswith("not-")

    @property
    def base(self) -> str:
        return self.type[4:] if self.negated else self.type

    def judge(self, answer: Answer) -> Verdict:
        score, expected, actual = _CHECKS[self.base](self.value, answer)
        passed = score >= self.threshold
        if self.negated:
            return Verdict(not passed, 0.0 if passed else 1.0, f"not {expected}", actual)
        return Verdict(passed, score, expected, actual)


def shown(text: str) -> str:
    """A response as a failure message shows it: quoted, at most SHOWN_CHARS characters."""
    cut = text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"
    return json.dumps(cut, ensure_ascii=False)


def _json(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None


def _equals(value: Any, a: Answer) -> tuple[float, str, str]:
    if isinstance(value, str):
        return float(a.response == value), f"equals {shown(value)}", shown(a.response)
    ok, parsed = _json(a.response)
    expected = f"JSON equal to {json.dumps(value, sort_keys=True)}"
    return float(ok and parsed == value), expected, shown(a.response)


def _contains(value: str, a: Answer) -> tuple[float, str, str]:
    return float(value in a.response), f"contains {shown(value)}", shown(a.response)


def _icontains(value: str, a: Answer) -> tuple[float, str, str]:
    found = value.casefold() in a.response.casefold()
    return float(found), f"contains {shown(value)} (any case)", shown(a.response)


def _any(value: list[str], a: Answer) -> tuple[float, str, str]:
    found = any(v in a.response for v in value)
    return float(found), f"contains any of {json.dumps(value)}", shown(a.response)


def _all(value: list[str], a: Answer) -> tuple[float, str, str]:
    found = [v for v in value if v in a.response]
    missing = [v for v in value if v not in a.response]
    actual = shown(a.response) + (f" (missing {json.dumps(missing)})" if missing else "")
    return len(found) / len(value), f"contains all of {json.dumps(value)}", actual


def _starts(value: str, a: Answer) -> tuple[float, str, str]:
    return float(a.response.startswith(value)), f"starts with {shown(value)}", shown(a.response)


def _regex(value: str, a: Answer) -> tuple[float, str, str]:
    found = re.search(value, a.response) is not None
    return float(found), f"matches /{value}/", shown(a.response)


def _is_json(value: Any, a: Answer) -> tuple[float, str, str]:
    ok, _ = _json(a.response)
    if ok and value is not None:
        return _schema(value, a)
    return float(ok), "valid JSON", shown(a.response)


def _schema(value: dict[str, Any], a: Answer) -> tuple[float, str, str]:
    ok, parsed = _json(a.response)
    expected = f"JSON matching the schema {json.dumps(value, sort_keys=True)}"
    if not ok:
        return 0.0, expected, f"not JSON: {shown(a.response)}"
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(value).iter_errors(parsed)
    )
    if error is None:
        return 1.0, expected, shown(a.response)
    where = "/".join(str(p) for p in error.absolute_path) or "the document"
    return 0.0, expected, f"{where}: {error.message}"


def _latency(value: float, a: Answer) -> tuple[float, str, str]:
    return float(a.latency_ms <= value), f"latency <= {value:g} ms", f"{a.latency_ms:.0f} ms"


def _cost(value: float, a: Answer) -> tuple[float, str, str]:
    if a.cost is None:
        return 0.0, f"cost <= ${value:g}", "cost unknown (the model has no price)"
    return float(a.cost <= value), f"cost <= ${value:g}", f"${a.cost:.6f}"


def _min_length(value: int, a: Answer) -> tuple[float, str, str]:
    return float(len(a.response) >= value), f"at least {value} characters", f"{len(a.response)}"


def _max_length(value: int, a: Answer) -> tuple[float, str, str]:
    return float(len(a.response) <= value), f"at most {value} characters", f"{len(a.response)}"


_CHECKS: dict[str, Callable[[Any, Answer], tuple[float, str, str]]] = {
    "equals": _equals,
    "contains": _contains,
    "icontains": _icontains,
    "contains-any": _any,
    "contains-all": _all,
    "starts-with": _starts,
    "regex": _regex,
    "is-json": _is_json,
    "json-schema": _schema,
    "max-latency-ms": _latency,
    "max-cost": _cost,
    "min-length": _min_length,
    "max-length": _max_length,
}


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise AssertionProblem("value must be non-empty text")
    return value


def _texts(value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise AssertionProblem("value must be a non-empty list of non-empty texts")
    return list(value)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise AssertionProblem("value must be a number >= 0")
    return float(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AssertionProblem("value must be a whole number >= 0")
    return value


def _regex_value(value: Any) -> str:
    text = _text(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise AssertionProblem(f"value is not a valid regular expression: {exc}") from None
    return text


def _schema_value(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AssertionProblem("value must be a JSON schema (a mapping)")
    try:
        jsonschema.Draft202012Validator.check_schema(value)
    except jsonschema.exceptions.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the schema"
        raise AssertionProblem(
            f"value is not a valid JSON schema: {where}: {exc.message}"
        ) from None
    return value


def _optional_schema(value: Any) -> dict[str, Any] | None:
    return None if value is None else _schema_value(value)


def _equals_value(value: Any) -> Any:
    if value is None:
        raise AssertionProblem("value is required")
    return value


_VALUES: dict[str, Callable[[Any], Any]] = {
    "equals": _equals_value,
    "contains": _text,
    "icontains": _text,
    "contains-any": _texts,
    "contains-all": _texts,
    "starts-with": _text,
    "regex": _regex_value,
    "is-json": _optional_schema,
    "json-schema": _schema_value,
    "max-latency-ms": _number,
    "max-cost": _number,
    "min-length": _count,
    "max-length": _count,
}


def known_types() -> str:
    return ", ".join(TYPES) + " (each may be negated with not-)"


def parse(raw: dict[str, Any]) -> Assertion:
    """An assertion from its mapping; AssertionProblem says what is wrong."""
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise AssertionProblem(f"unknown key {unknown[0]!r} (keys: {', '.join(KEYS)})")
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise AssertionProblem(f"type is required (types: {known_types()})")
    base = kind[4:] if kind.startswith("not-") else kind
    if base not in _VALUES:
        raise AssertionProblem(f"unknown type {kind!r} (types: {known_types()})")
    value = _VALUES[base](raw.get("value"))
    weight = raw.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
        raise AssertionProblem("weight must be a number >= 0")
    threshold = raw.get("threshold", 1)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise AssertionProblem("threshold must be a number from 0 to 1")
    if not 0 <= threshold <= 1:
        raise AssertionProblem("threshold must be a number from 0 to 1")
    return Assertion(kind, value, float(weight), float(threshold))


@dataclass(frozen=True)
class Judgement:
    passed: bool
    score: float
    failures: list[dict[str, Any]]


def judge(assertions: list[Assertion], answer: Answer, threshold: float) -> Judgement:
    """A case's assertions on one answer: its weighted score and the assertions that failed
    (``{type, expected, actual}``). No assertion at all: the answer passes."""
    total = sum(a.weight for a in assertions)
    earned = 0.0
    failures: list[dict[str, Any]] = []
    for assertion in assertions:
        verdict = assertion.judge(answer)
        if verdict.passed:
            earned += assertion.weight
        else:
            failures.append(
                {"type": assertion.type, "expected": verdict.expected, "actual": verdict.actual}
            )
    score = earned / total if total else 1.0
    return Judgement(score >= threshold - 1e-9, round(score, 6), failures)
