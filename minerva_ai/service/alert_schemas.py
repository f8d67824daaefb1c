"""The shapes of alerts, alert rules with their state, transitions and silences
(as schemas.py for the other resources)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import Field

from minerva_ai.service.feature_settings import AlertRule, LabelName, LabelValue
from minerva_ai.service.schemas import Shape, Text

Severity = Literal["info", "warning", "critical"]
RuleStateName = Literal["ok", "pending", "firing", "no_data", "error"]


class Alert(Shape):
    id: UUID
    feature_id: UUID
    feature: str
    rule: str
    metric: str
    state: Literal["open", "resolved"]
    severity: Severity
    value: float | None = Field(description="the value that opened it (or last seen)")
    threshold: float | None
    labels: dict[str, str]
    runbook_url: str | None
    settings_version: int = Field(description="the settings version of the rule")
    opened_at: datetime
    last_notified_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    acknowledge_note: str | None
    resolved_at: datetime | None
    resolved_by: str | None = Field(description="`evaluator`, or the token that resolved it")
    resolve_note: str | None


class Transition(Shape):
    cursor: str = Field(description="resume after it: the `alerts` channel's `after`")
    id: UUID = Field(description="the transition's id")
    alert_id: UUID | None
    feature_id: UUID
    feature: str
    rule: str
    at: datetime
    event: str = Field(
        description="breach, recover, no_data, error, escalate, deescalate, acknowledge, "
        "resolve, rule_disabled, rule_deleted"
    )
    from_state: str
    to_state: str
    severity: Severity | None
    value: float | None
    threshold: float | None
    reason: str
    actor: str
    settings_version: int


class SettingsChange(Shape):
    version: int
    created_at: datetime
    author_name: str
    rollback_of: int | None
    diff: list[dict[str, Any]]


class AlertDetail(Alert):
    transitions: list[Transition]
    deliveries: list[dict[str, Any]] = Field(description="every webhook delivery attempt")
    settings_changes: list[SettingsChange] = Field(
        description="the feature's settings versions written in the hour before it opened"
    )


class RuleState(Shape):
    state: RuleStateName
    severity: Severity | None
    since: datetime | None
    value: float | None
    reason: str
    alert_id: UUID | None


class AlertRuleWithState(Shape):
    rule: AlertRule
    current: RuleState


class RuleEvaluation(Shape):
    rule: str
    state: RuleStateName = Field(description="the state it is in")
    would_be: RuleStateName = Field(description="the state this evaluation would move it to")
    value: float | None
    requests: int
    window: str
    reason: str
    events: list[str] = Field(description="the transitions it would record")


class Note(Shape):
    note: Text | None = Field(default=None, max_length=2000)


class SilenceCreate(Shape):
    feature: Text | None = Field(default=None, description="a feature (name or id); none: all")
    rule: Text | None = Field(default=None, max_length=64)
    severity: Severity | None = None
    labels: dict[LabelName, LabelValue] = Field(default_factory=dict, max_length=20)
    starts_at: datetime | None = Field(default=None, description="default: now")
    ends_at: datetime | None = None
    duration: str | None = Field(
        default=None,
        description="instead of ends_at: `30m`, `2h`, `1d`",
        pattern=r"^[1-9][0-9]{0,5}[mhd]$",
    )
    comment: Text = Field(min_length=1, max_length=2000)


class Silence(Shape):
    id: UUID
    feature_id: UUID | None
    feature: str | None
    rule: str | None
    severity: Severity | None
    labels: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    comment: str
    created_by: str
    created_at: datetime
    active: bool
