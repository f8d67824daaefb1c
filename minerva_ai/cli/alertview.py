"""``minerva-ai alerts`` without Click: flag parsers, columns, an alert's story as text, a
transition as one line, and the edits ``alerts rules add|update|remove`` make to settings.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from minerva_ai.cli.diff import summarize_diff
from minerva_ai.cli.logview import entry_time, one_line
from minerva_ai.cli.output import (
    Column,
    Output,
    color_enabled,
    format_time,
    is_tty,
    parse_timestamp,
    style,
)
from minerva_ai.core.errors import ConfigError, ConflictError, NotFoundError, UsageError
from minerva_ai.core.timeparse import parse_duration, parse_time

if TYPE_CHECKING:
    from minerva_ai.client import Client

JSON = dict[str, Any]
STATES = ("open", "resolved", "all")
SEVERITIES = ("info", "warning", "critical")
METRICS = (
    "error_rate",
    "success_rate",
    "uptime",
    "response_time",
    "p95_ms",
    "p99_ms",
    "requests_per_minute",
    "cost",
    "tokens",
)
OPERATORS = (">", ">=", "<", "<=")
NO_DATA = ("ok", "alerting", "no_data")
SEVERITY_STYLES = {"critical": "red", "warning": "yellow", "info": "cyan"}
STATE_STYLES = {
    "open": "red",
    "resolved": "green",
    "firing": "red",
    "pending": "yellow",
    "ok": "green",
    "no_data": "dim",
    "error": "red",
}
SHORT_ID = 8

_RULE_DURATION = re.compile(r"^[1-9][0-9]*(s|m|h|d)$")
_RENOTIFY = re.compile(r"^(0|[1-9][0-9]*(m|h|d))$")
_SILENCE_DURATION = re.compile(r"^[1-9][0-9]{0,5}[mhd]$")
_LABEL_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
_HEX_PREFIX = re.compile(r"^[0-9a-fA-F-]{4,35}$")


# ------------------------------------------------------------------ flag parsers (exit 2)


def parse_label(text: str) -> tuple[str, str]:
    """``--label team=search`` -> ``("team", "search")``."""
    key, sep, value = text.partition("=")
    if not sep or not _LABEL_KEY.match(key):
        raise ConfigError(
            f"invalid label {text!r}: expected key=value, the key a letter or _ then "
            "letters, digits, _ . - (at most 64)"
        )
    return key, value


def labels_of(pairs: Iterable[tuple[str, str]] | None) -> dict[str, str]:
    return dict(pairs or ())


def parse_rule_duration(text: str) -> str:
    """A rule's ``--window``, ``--for`` or ``--keep-firing-for``: a whole number of seconds,
    minutes, hours or days (``30s``, ``5m``, ``1h``), as the settings store it."""
    value = text.strip()
    if not _RULE_DURATION.match(value):
        raise ConfigError(
            f"invalid duration {text!r}: expected a whole number and a unit (s, m, h, d), "
            "e.g. 30s, 5m, 1h"
        )
    return value


def parse_renotify(text: str) -> str:
    """``--renotify``: ``0`` (never) or a whole number of minutes, hours or days."""
    value = text.strip()
    if not _RENOTIFY.match(value):
        raise ConfigError(f"invalid --renotify {text!r}: expected 0 (never), or e.g. 30m, 4h, 1d")
    return value


def parse_future_time(text: str, *, now: datetime | None = None) -> datetime:
    """``--until`` / ``--starts``: ISO 8601 (no offset = local time), ``now``, or a duration
    from now (``2h`` = in two hours)."""
    reference = now or datetime.now(UTC)
    try:
        return reference + parse_duration(text)
    except ConfigError:
        pass
    try:
        return parse_time(text, now=reference)
    except ConfigError:
        raise ConfigError(
            f"invalid time {text!r}: expected a duration from now (30m, 2h, 1d) or ISO 8601 "
            "(2026-12-03T18:00:00Z; no offset means local time)"
        ) from None


@dataclass(frozen=True)
class SilenceWindow:
    """When a silence starts and ends, in the fields ``POST /silences`` takes."""

    starts_at: datetime | None
    ends_at: datetime | None
    duration: str | None


def silence_window(
    duration: str | None, until: str | None, starts: str | None, *, now: datetime | None = None
) -> SilenceWindow:
    """``--duration`` or ``--until`` (one of them), from ``--starts`` (default now)."""
    if (duration is None) == (until is None):
        raise UsageError("give --duration (e.g. 2h) or --until TIME: one of them")
    reference = now or datetime.now(UTC)
    starts_at = parse_future_time(starts, now=reference) if starts is not None else None
    if until is not None:
        return SilenceWindow(starts_at, parse_future_time(until, now=reference), None)
    assert duration is not None
    length = parse_duration(duration)
    if length <= timedelta(0):
        raise ConfigError(f"invalid duration {duration!r}: it must be longer than 0")
    if _SILENCE_DURATION.match(duration.strip()):
        return SilenceWindow(starts_at, None, duration.strip())
    return SilenceWindow(starts_at, (starts_at or reference) + length, None)


# ------------------------------------------------------------------ how things read


def number(value: Any) -> str:
    """``33.33``, ``5``, ``0.0021``: a figure without noise."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "" if value is None else str(value)
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}" if abs(value) < 1 else f"{value:,.2f}".rstrip("0").rstrip(".")


def relative(value: Any, *, now: datetime | None = None) -> str:
    """``5m ago``, ``2h ago``, ``in 3d``: how long from ``now``."""
    moment = parse_timestamp(value)
    if moment is None:
        return "" if value is None else str(value)
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    span = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if span >= size:
            text = f"{int(span // size)}{unit}"
            break
    else:
        text = f"{int(span)}s"
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def short_id(value: Any) -> str:
    return str(value)[:SHORT_ID] if value else ""


def condition(rule: Mapping[str, Any]) -> str:
    """``> 5 (warn > 2)``."""
    text = f"{rule.get('operator', '?')} {number(rule.get('threshold'))}"
    warning = rule.get("warning_threshold")
    if warning is not None:
        text += f" (warn {rule.get('operator', '?')} {number(warning)})"
    return text


def _labels_text(value: Any) -> str:
    if not isinstance(value, Mapping):
        return ""
    return ",".join(f"{k}={v}" for k, v in value.items())


def _when(tty: bool, key: str, header: str) -> Column:
    """A time: relative on a terminal, ISO 8601 UTC when piped."""
    if tty:
        return Column(key, header, render=relative)
    return Column(key, header, kind="time")


def alert_columns(tty: bool) -> list[Column]:
    return [
        Column("id", "ID", render=short_id) if tty else Column("id", "ID"),
        Column("feature", "FEATURE"),
        Column("rule", "RULE"),
        Column("severity", "SEVERITY", styles=SEVERITY_STYLES),
        Column("state", "STATE", styles=STATE_STYLES),
        Column("value", "VALUE", render=number),
        _when(tty, "opened_at", "OPENED"),
        Column("acknowledged_at", "ACK", render=lambda _: "yes"),
    ]


ALERT_FIELDS = [
    Column("id", "ID"),
    Column("feature", "FEATURE"),
    Column("rule", "RULE"),
    Column("metric", "METRIC"),
    Column("state", "STATE", styles=STATE_STYLES),
    Column("severity", "SEVERITY", styles=SEVERITY_STYLES),
    Column("value", "VALUE", render=number),
    Column("threshold", "THRESHOLD", render=number),
    Column("labels", "LABELS", render=_labels_text),
    Column("runbook_url", "RUNBOOK"),
    Column("settings_version", "SETTINGS VERSION"),
    Column("opened_at", "OPENED", kind="time"),
    Column("last_notified_at", "LAST NOTIFIED", kind="time"),
    Column("acknowledged_at", "ACKNOWLEDGED", kind="time"),
    Column("acknowledged_by", "ACKNOWLEDGED BY"),
    Column("acknowledge_note", "ACK NOTE"),
    Column("resolved_at", "RESOLVED", kind="time"),
    Column("resolved_by", "RESOLVED BY"),
    Column("resolve_note", "RESOLVE NOTE"),
]
TRANSITION_COLUMNS = [
    Column("at", "AT", kind="time"),
    Column("event", "EVENT"),
    Column("from_state", "FROM"),
    Column("to_state", "TO", styles=STATE_STYLES),
    Column("severity", "SEVERITY", styles=SEVERITY_STYLES),
    Column("value", "VALUE", render=number),
    Column("threshold", "THRESHOLD", render=number),
    Column("actor", "ACTOR"),
    Column("reason", "REASON"),
]
DELIVERY_COLUMNS = [
    Column("at", "AT", kind="time"),
    Column("webhook", "WEBHOOK"),
    Column("event", "EVENT"),
    Column("attempt", "ATTEMPT"),
    Column("status_code", "STATUS"),
    Column("error", "ERROR"),
    Column("delivery_state", "DELIVERY"),
    Column("next_retry_at", "NEXT RETRY", kind="time"),
]
EVALUATION_FIELDS = [
    Column("rule", "RULE"),
    Column("state", "STATE", styles=STATE_STYLES),
    Column("would_be", "WOULD BE", styles=STATE_STYLES),
    Column("value", "VALUE", render=number),
    Column("requests", "REQUESTS"),
    Column("window", "WINDOW"),
    Column("reason", "REASON"),
    Column("events", "EVENTS", kind="list"),
]


def rule_columns(tty: bool) -> list[Column]:
    return [
        Column("feature", "FEATURE"),
        Column("rule.name", "RULE"),
        Column("rule.metric", "METRIC"),
        Column("rule", "CONDITION", render=condition),
        Column("rule.window", "WINDOW"),
        Column("rule.for", "FOR"),
        Column("rule.severity", "SEVERITY", styles=SEVERITY_STYLES),
        Column("current.state", "STATE", styles=STATE_STYLES),
        _when(tty, "current.since", "SINCE"),
    ]


def silence_columns(tty: bool) -> list[Column]:
    return [
        Column("id", "ID"),
        Column("feature", "FEATURE"),
        Column("rule", "RULE"),
        Column("severity", "SEVERITY"),
        Column("labels", "LABELS", render=_labels_text),
        _when(tty, "starts_at", "STARTS"),
        _when(tty, "ends_at", "ENDS"),
        Column("active", "ACTIVE"),
        Column("comment", "COMMENT"),
    ]


def rule_rows(feature: str, items: Sequence[Mapping[str, Any]]) -> list[JSON]:
    """``GET .../alert-rules`` items with the feature's name: ``{feature, rule, current}``."""
    return [{"feature": feature, **item} for item in items]


def rollback_command(feature: str, version: int) -> str:
    """What undoes settings version ``version``: back to the one before it."""
    return f"minerva-ai features settings rollback {feature} --to {version - 1}"


def with_rollbacks(detail: Mapping[str, Any]) -> JSON:
    """The alert of ``GET /alerts/{id}``, each settings change with its ``rollback``."""
    changes = [
        {**change, "rollback": rollback_command(str(detail["feature"]), int(change["version"]))}
        for change in detail.get("settings_changes") or []
    ]
    return {**detail, "settings_changes": changes}


def print_alert(output: Output, detail: Mapping[str, Any]) -> None:
    """``alerts show``: the alert's fields, then its transitions, webhook deliveries and the
    settings changes of the hour before it opened, each with the command that undoes it.
    json, jsonl and yaml: the whole object (each settings change with its ``rollback``)."""
    shown = with_rollbacks(detail)
    if output.format != "table":
        output.item(shown, ALERT_FIELDS)
        return
    output.item(shown, ALERT_FIELDS)
    output.write("\ntransitions:")
    output.items(shown.get("transitions") or [], TRANSITION_COLUMNS)
    deliveries = shown.get("deliveries") or []
    output.write("\nwebhook deliveries:")
    if deliveries:
        output.items(deliveries, DELIVERY_COLUMNS)
    else:
        output.write("  none")
    changes = shown["settings_changes"]
    output.write("\nsettings changes in the hour before it opened:")
    if not changes:
        output.write("  none")
    for change in changes:
        author = change.get("author_name") or "?"
        at = format_time(change.get("created_at"), local=output.tty and not output.utc)
        summary = summarize_diff(change.get("diff") or [])
        output.write(f"  version {change['version']} at {at} by {author}: {summary}")
        output.write(f"    undo: {change['rollback']}")


def evaluation_text(result: Mapping[str, Any]) -> str:
    """``errors: firing -> ok (value 0.5 over 5m, 120 requests): below the threshold``."""
    value = number(result.get("value")) or "no value"
    return (
        f"{result.get('rule')}: {result.get('state')} -> {result.get('would_be')} "
        f"(value {value} over {result.get('window')}, {result.get('requests')} requests)"
        f": {result.get('reason') or '-'}"
    )


# ------------------------------------------------------------------ `alerts watch`


def transition_line(event: Mapping[str, Any], *, color: bool, local: bool) -> str:
    """One transition on one line: time, feature, rule, event, from -> to, severity, value,
    threshold, actor, reason, alert id and cursor."""
    transition = event.get("transition") or {}
    to_state = str(transition.get("to_state") or "-")
    severity = transition.get("severity")
    cells = [
        style(entry_time(transition.get("at"), local=local), "dim", enabled=color),
        style(one_line(str(transition.get("feature") or "-")), "cyan", enabled=color),
        one_line(str(transition.get("rule") or "-")),
        one_line(str(transition.get("event") or "-")),
        f"{transition.get('from_state') or '-'} -> "
        + style(to_state, STATE_STYLES.get(to_state, ""), enabled=color),
    ]
    if severity:
        cells.append(style(str(severity), SEVERITY_STYLES.get(str(severity), ""), enabled=color))
    fields = []
    if transition.get("value") is not None:
        fields.append(f"value={number(transition['value'])}")
    if transition.get("threshold") is not None:
        fields.append(f"threshold={number(transition['threshold'])}")
    fields.append(f"actor={one_line(str(transition.get('actor') or '-'))}")
    if transition.get("alert_id"):
        fields.append(f"alert={short_id(transition['alert_id'])}")
    fields.append(f"cursor={event.get('cursor')}")
    reason = one_line(str(transition.get("reason") or ""))
    line = "  ".join(cells) + "  " + style(" ".join(fields), "dim", enabled=color)
    return line + (f"  {reason}" if reason else "")


class TransitionPrinter:
    """``alerts watch``'s output: a line per transition, or its JSON (one per line)."""

    def __init__(self, stream: TextIO, *, json: bool, no_color: bool, utc: bool) -> None:
        self.stream = stream
        self.json = json
        self.color = color_enabled(stream, no_color=no_color)
        self.local = is_tty(stream) and not utc

    def event(self, event: Mapping[str, Any]) -> None:
        if self.json:
            import orjson

            line = orjson.dumps(dict(event), option=orjson.OPT_UTC_Z, default=str).decode()
        else:
            line = transition_line(event, color=self.color, local=self.local)
        self.stream.write(line + "\n")
        self.stream.flush()


# ------------------------------------------------------------------ alert ids


def resolve_alert_id(client: Client, ref: str) -> str:
    """A full alert id, or the one alert whose id starts with ``ref`` (as tables show them)."""
    text = ref.strip()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        pass
    if not _HEX_PREFIX.match(text):
        return text  # the service says it is not an alert of yours
    found = [a["id"] for a in client.alerts.list(limit=0) if str(a["id"]).startswith(text.lower())]
    if not found:
        raise NotFoundError(404, "not_found", f"no alert id starts with {text!r}")
    if len(found) > 1:
        raise UsageError(f"{len(found)} alert ids start with {text!r}; give more of it")
    return str(found[0])


# ------------------------------------------------------------------ rules as settings edits

# option name -> the rule field it sets
RULE_FIELDS = {
    "metric": "metric",
    "operator": "operator",
    "threshold": "threshold",
    "warning_threshold": "warning_threshold",
    "window": "window",
    "for_": "for",
    "severity": "severity",
    "min_requests": "min_requests",
    "no_data": "no_data",
    "keep_firing_for": "keep_firing_for",
    "renotify": "renotify",
    "labels": "labels",
    "runbook_url": "runbook_url",
}
SettingsEdit = Callable[[Mapping[str, Any]], dict[str, Any]]


def rule_fields(options: Mapping[str, Any], disabled: bool | None) -> JSON:
    """The rule fields the options give (None: not given)."""
    fields = {RULE_FIELDS[k]: v for k, v in options.items() if k in RULE_FIELDS and v is not None}
    if disabled is not None:
        fields["enabled"] = not disabled
    return fields


def _monitoring(settings: Mapping[str, Any]) -> tuple[JSON, list[JSON]]:
    monitoring = copy.deepcopy(dict(settings.get("monitoring") or {}))
    rules = list(monitoring.get("alert_rules") or [])
    return monitoring, rules


def _find(rules: list[JSON], name: str, feature: str) -> int:
    for index, rule in enumerate(rules):
        if rule.get("name") == name:
            return index
    raise NotFoundError(404, "not_found", f"feature {feature!r} has no alert rule {name!r}")


def add_rule(feature: str, rule: Mapping[str, Any]) -> SettingsEdit:
    """The edit that appends ``rule`` (refused when a rule of that name exists)."""

    def edit(settings: Mapping[str, Any]) -> dict[str, Any]:
        monitoring, rules = _monitoring(settings)
        if any(r.get("name") == rule["name"] for r in rules):
            raise ConflictError(
                409,
                "conflict",
                f"feature {feature!r} already has an alert rule {rule['name']!r} "
                "(change it with `alerts rules update`)",
            )
        monitoring["alert_rules"] = [*rules, dict(rule)]
        return {"monitoring": monitoring}

    return edit


def update_rule(feature: str, name: str, changes: Mapping[str, Any]) -> SettingsEdit:
    """The edit that sets ``changes`` on rule ``name`` (``enabled: True`` drops the field)."""

    def edit(settings: Mapping[str, Any]) -> dict[str, Any]:
        monitoring, rules = _monitoring(settings)
        index = _find(rules, name, feature)
        rule = {**rules[index], **changes}
        if rule.get("enabled") is True:
            del rule["enabled"]  # the default
        rules[index] = rule
        monitoring["alert_rules"] = rules
        return {"monitoring": monitoring}

    return edit


def remove_rule(feature: str, name: str) -> SettingsEdit:
    """The edit that removes rule ``name``."""

    def edit(settings: Mapping[str, Any]) -> dict[str, Any]:
        monitoring, rules = _monitoring(settings)
        del rules[_find(rules, name, feature)]
        monitoring["alert_rules"] = rules
        return {"monitoring": monitoring}

    return edit
