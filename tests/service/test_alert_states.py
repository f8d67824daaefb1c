"""The rule state machine, row by row of docs/alerts.md's transition table, on an injected
clock (the evaluator's events; acknowledge, resolve by hand, silences and rule edits are
in test_alerts.py, against the database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from minerva_ai.service.alert_states import (
    ERROR,
    FIRING,
    NO_DATA,
    OK,
    PENDING,
    Change,
    Observation,
    Rule,
    RuleState,
    step,
)

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def rule(**fields: Any) -> Rule:
    base = {"name": "errors", "metric": "error_rate", "operator": ">", "threshold": 5}
    return Rule.from_settings({**base, **fields})


def run(
    r: Rule, values: list[float | None], start: RuleState | None = None, every_s: int = 15
) -> tuple[RuleState, list[list[Change]]]:
    """Evaluate ``values`` one interval apart (None: a window without requests)."""
    state = start or RuleState()
    all_changes = []
    for i, value in enumerate(values):
        seen = Observation(value, 0 if value is None else 100)
        state, changes = step(r, state, seen, T0 + timedelta(seconds=every_s * i))
        all_changes.append(changes)
    return state, all_changes


def events(changes: list[list[Change]]) -> list[list[str]]:
    return [[f"{c.event}:{c.from_state}>{c.to_state}" for c in one] for one in changes]


def test_a_breach_without_for_fires_at_once_and_opens_an_alert() -> None:
    state, changes = run(rule(), [1, 9])
    assert events(changes) == [[], ["breach:ok>firing"]]
    fired = changes[1][0]
    assert fired.opens and fired.notifies == "alert.firing" and fired.severity == "warning"
    assert fired.value == 9 and fired.threshold == 5
    assert state.state == FIRING and state.alert_open


def test_for_waits_in_pending_then_fires() -> None:
    state, changes = run(rule(**{"for": "30s"}), [9, 9, 9])
    assert events(changes) == [["breach:ok>pending"], [], ["breach:pending>firing"]]
    assert changes[2][0].opens and state.state == FIRING


def test_pending_that_recovers_goes_back_to_ok_quietly() -> None:
    state, changes = run(rule(**{"for": "1m"}), [9, 1])
    assert events(changes) == [["breach:ok>pending"], ["recover:pending>ok"]]
    assert changes[1][0].notifies is None and not changes[1][0].closes
    assert state.state == OK


def test_firing_that_recovers_resolves_its_alert() -> None:
    state, changes = run(rule(), [9, 1])
    recovered = changes[1][0]
    assert (recovered.event, recovered.closes, recovered.notifies) == (
        "recover",
        True,
        "alert.resolved",
    )
    assert state.state == OK and not state.alert_open


def test_keep_firing_for_holds_the_alert_through_a_short_recovery() -> None:
    state, changes = run(rule(keep_firing_for="30s"), [9, 1, 9, 1, 1, 1])
    # recovered at 15 s, breached again at 30 s (the hold restarts), recovered at 45 s and
    # held until 75 s
    assert events(changes) == [["breach:ok>firing"], [], [], [], [], ["recover:firing>ok"]]
    assert state.state == OK


def test_a_warning_threshold_fires_as_warning_and_escalates() -> None:
    r = rule(severity="critical", warning_threshold=2)
    state, changes = run(r, [3, 9, 3])
    assert events(changes) == [
        ["breach:ok>firing"],
        ["escalate:firing>firing"],
        ["deescalate:firing>firing"],
    ]
    assert changes[0][0].severity == "warning" and changes[0][0].threshold == 2
    assert changes[1][0].severity == "critical" and changes[1][0].notifies == "alert.escalated"
    assert changes[2][0].notifies is None  # recorded, not sent
    assert state.severity == "warning"


def test_no_requests_is_no_data_and_an_open_alert_stays_open() -> None:
    state, changes = run(rule(), [9, None, None, 1])
    assert events(changes) == [
        ["breach:ok>firing"],
        ["no_data:firing>no_data"],
        [],
        ["recover:no_data>ok"],
    ]
    assert changes[1][0].closes is False
    assert changes[3][0].closes and changes[3][0].notifies == "alert.resolved"
    assert not state.alert_open


def test_back_from_no_data_still_breaching_fires_without_a_second_alert() -> None:
    state, changes = run(rule(), [9, None, 9])
    assert events(changes)[2] == ["breach:no_data>firing"]
    assert not changes[2][0].opens and state.alert_open
    # with `for`, too: its alert fired already, so there is nothing to wait for
    state, changes = run(rule(**{"for": "30s"}), [9, 9, 9, None, 9])
    assert events(changes)[4] == ["breach:no_data>firing"] and state.alert_open


@pytest.mark.parametrize(
    ("no_data", "expected"),
    [("alerting", "breach:ok>firing"), ("ok", None), ("no_data", "no_data:ok>no_data")],
)
def test_what_a_window_without_requests_means(no_data: str, expected: str | None) -> None:
    _, changes = run(rule(no_data=no_data), [None])
    assert events(changes) == [[expected] if expected else []]


def test_fewer_requests_than_min_requests_are_not_judged_on_ratios() -> None:
    r = rule(min_requests=50)
    state, changes = step(r, RuleState(), Observation(100.0, 10), T0)
    assert state.state == NO_DATA
    assert "10 requests in the window, fewer than min_requests (50)" in changes[0].reason


def test_sums_are_judged_without_a_sample() -> None:
    r = rule(metric="requests_per_minute", operator="<", threshold=1, min_requests=50)
    state, changes = step(r, RuleState(), Observation(0.0, 0), T0)
    assert state.state == FIRING and changes[0].opens


def test_an_evaluation_error_is_the_error_state_until_it_recovers() -> None:
    state, changes = step(rule(), RuleState(), Observation(None, 0, "timeout"), T0)
    assert (state.state, changes[0].event) == (ERROR, "error")
    assert "could not be evaluated: timeout" in changes[0].reason
    state, changes = step(rule(), state, Observation(1.0, 100), T0 + timedelta(seconds=15))
    assert events([changes]) == [["recover:error>ok"]]


def test_a_resolved_by_hand_rule_fires_again_only_after_for() -> None:
    # resolving by hand puts the rule in pending with its clock restarted (alerts.resolve)
    resolved = RuleState(state=PENDING, breaching_since=T0, since=T0)
    r = rule(**{"for": "1m"})
    state, changes = step(r, resolved, Observation(9.0, 100), T0 + timedelta(seconds=30))
    assert changes == [] and state.state == PENDING
    state, changes = step(r, state, Observation(9.0, 100), T0 + timedelta(seconds=60))
    assert changes[0].opens


def test_defaults_of_the_optional_fields() -> None:
    r = rule()
    assert (r.min_requests, r.no_data, r.keep_firing_for, r.renotify, r.enabled) == (
        1,
        "no_data",
        timedelta(0),
        timedelta(hours=4),
        True,
    )
    assert rule(renotify="0").renotify is None
