"""An alert rule's state machine, without a database or a clock of its own.

``step(rule, state, observation, now)`` judges one evaluation and returns the next state
and the changes it makes (each one a recorded transition; some open or close an alert,
some notify). docs/alerts.md holds the same table in words; tests/service/test_alert_states.py
walks every row of it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from minerva_ai.core.timeparse import parse_duration
from minerva_ai.service.feature_settings import PERCENT_METRICS

OK, PENDING, FIRING, NO_DATA, ERROR = "ok", "pending", "firing", "no_data", "error"
STATES = (OK, PENDING, FIRING, NO_DATA, ERROR)
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
# Metrics that are judged only on a sample of at least `min_requests` calls.
SAMPLED_METRICS = (*PERCENT_METRICS, "response_time", "p95_ms", "p99_ms")
DEFAULT_RENOTIFY = timedelta(hours=4)
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@dataclass(frozen=True)
class Rule:
    """A rule as settings define it, with the documented defaults filled in."""

    name: str
    metric: str
    operator: str
    threshold: float
    warning_threshold: float | None
    window: timedelta
    for_: timedelta
    severity: str
    min_requests: int
    no_data: str
    keep_firing_for: timedelta
    renotify: timedelta | None  # None: never
    enabled: bool
    labels: dict[str, str]
    runbook_url: str | None
    definition: dict[str, Any]

    @classmethod
    def from_settings(cls, rule: dict[str, Any]) -> Rule:
        def span(name: str) -> timedelta:
            value = rule.get(name)
            return parse_duration(value) if value else timedelta(0)

        renotify = rule.get("renotify")
        return cls(
            name=rule["name"],
            metric=rule["metric"],
            operator=rule["operator"],
            threshold=float(rule["threshold"]),
            warning_threshold=(
                float(rule["warning_threshold"])
                if rule.get("warning_threshold") is not None
                else None
            ),
            window=parse_duration(rule.get("window") or "5m"),
            for_=span("for"),
            severity=rule.get("severity") or "warning",
            min_requests=rule["min_requests"] if rule.get("min_requests") is not None else 1,
            no_data=rule.get("no_data") or NO_DATA,
            keep_firing_for=span("keep_firing_for"),
            renotify=(
                DEFAULT_RENOTIFY
                if renotify is None
                else (None if renotify == "0" else parse_duration(renotify))
            ),
            enabled=rule.get("enabled") is not False,
            labels=dict(rule.get("labels") or {}),
            runbook_url=rule.get("runbook_url"),
            definition=rule,
        )


@dataclass(frozen=True)
class Observation:
    """What an evaluation saw: the metric's value over the window, and its sample."""

    value: float | None
    requests: int
    error: str | None = None


@dataclass(frozen=True)
class RuleState:
    state: str = OK
    severity: str | None = None
    since: datetime | None = None
    breaching_since: datetime | None = None
    recovered_since: datetime | None = None
    value: float | None = None
    reason: str = ""
    alert_open: bool = False


@dataclass(frozen=True)
class Change:
    """One transition. ``opens``/``closes``: an alert; ``notifies``: the event type sent."""

    event: str
    from_state: str
    to_state: str
    severity: str | None
    value: float | None
    threshold: float | None
    reason: str
    opens: bool = False
    closes: bool = False
    notifies: str | None = None


def judge(rule: Rule, seen: Observation) -> tuple[str, str | None, float | None, str]:
    """``(outcome, severity, threshold, reason)``: outcome breach, ok, no_data or error."""
    if seen.error is not None:
        return ERROR, None, None, f"could not be evaluated: {seen.error}"
    sampled = rule.metric in SAMPLED_METRICS
    if seen.value is None or (sampled and seen.requests < rule.min_requests):
        reason = (
            "no requests in the window"
            if seen.requests == 0
            else f"{seen.requests} requests in the window, fewer than min_requests "
            f"({rule.min_requests})"
        )
        if rule.no_data == "alerting":
            return "breach", rule.severity, None, reason + " (no_data: alerting)"
        if rule.no_data == OK:
            return OK, None, None, reason + " (no_data: ok)"
        return NO_DATA, None, None, reason
    value, compare = seen.value, _COMPARE[rule.operator]
    shown = f"{rule.metric} {value:g} over {_span(rule.window)}"
    if compare(value, rule.threshold):
        reason = f"{shown} {rule.operator} {rule.threshold:g}"
        return "breach", rule.severity, rule.threshold, reason
    warning = rule.warning_threshold
    if warning is not None and compare(value, warning):
        reason = f"{shown} {rule.operator} {warning:g} (the warning threshold)"
        return "breach", "warning", warning, reason
    return OK, None, rule.threshold, f"{shown}, not {rule.operator} {rule.threshold:g}"


def step(
    rule: Rule, before: RuleState, seen: Observation, now: datetime
) -> tuple[RuleState, list[Change]]:
    """The state after one evaluation, and the transitions that lead to it."""
    outcome, severity, threshold, reason = judge(rule, seen)
    changes: list[Change] = []
    state = replace(before, value=seen.value, reason=reason)

    def move(to: str, event: str, **effects: Any) -> None:
        nonlocal state
        changes.append(
            Change(
                event,
                state.state,
                to,
                severity or state.severity,
                seen.value,
                threshold,
                reason,
                **effects,
            )
        )
        state = replace(state, state=to, since=now)

    if outcome == "breach":
        state = replace(state, recovered_since=None)
        if before.state == FIRING:
            if severity != before.severity:
                up = SEVERITY_RANK[severity or "info"] > SEVERITY_RANK[before.severity or "info"]
                notifies = "alert.escalated" if up else None
                move(FIRING, "escalate" if up else "deescalate", notifies=notifies)
                state = replace(state, severity=severity)
            return state, changes
        started = before.breaching_since if before.state == PENDING else None
        started = started or now
        state = replace(state, breaching_since=started, severity=severity)
        if before.alert_open:  # back from no data or an error, its alert still open
            move(FIRING, "breach")
        elif now - started >= rule.for_:
            move(FIRING, "breach", opens=True, notifies="alert.firing")
            state = replace(state, alert_open=True)
        elif before.state != PENDING:
            move(PENDING, "breach")
        return state, changes
    state = replace(state, breaching_since=None)
    if outcome == OK:
        if before.alert_open and before.state == FIRING and rule.keep_firing_for:
            recovered = before.recovered_since or now
            if now - recovered < rule.keep_firing_for:
                return replace(state, recovered_since=recovered), changes
        if before.alert_open:
            move(OK, "recover", closes=True, notifies="alert.resolved")
            state = replace(state, alert_open=False, severity=None, recovered_since=None)
        elif before.state != OK:
            move(OK, "recover")
            state = replace(state, severity=None)
        return state, changes
    if before.state != outcome:  # no_data or error: an open alert stays open
        move(outcome, outcome)
    return state, changes


def _span(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
