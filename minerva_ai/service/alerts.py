"""Alerts in PostgreSQL: the evaluator's cycle, every transition recorded with the alert
change and the notifications it causes in one transaction, acknowledge and resolve.

Transitions of an organization are written under one advisory lock with their ``seq``
drawn inside it (as log entries are), so the `alerts` channel resumes from a cursor
without missing or repeating one. Only the evaluation job's leader evaluates (its writes
are fenced, ``jobs.Lease``); acknowledge and resolve take the same lock.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from minerva_ai.service import metrics
from minerva_ai.service.alert_states import (
    FIRING,
    OK,
    PENDING,
    Change,
    Observation,
    Rule,
    RuleState,
    step,
)
from minerva_ai.service.db import Row, queries
from minerva_ai.service.errors import ApiError
from minerva_ai.service.jobs import Fenced
from minerva_ai.service.locks import Lock
from minerva_ai.service.principal import Principal
from minerva_ai.service.responses import dumps

log = logging.getLogger("minerva_ai.service.alerts")
Conn = AsyncConnection[Row]
Fence = Callable[[Conn], Awaitable[None]]
EVALUATOR = "evaluator"
TOPIC = "alerts:{organization_id}"  # the bus topic that says "new transitions"
PERCENTILE_METRICS = ("p95_ms", "p99_ms")
# An evaluation's metrics reads may take this long (an interactive request: 5 s): a busy
# database makes the cycle slow, not every rule `error`.
EVALUATION_TIMEOUT_S = 60
ALERT_FIELDS = (
    "id",
    "feature_id",
    "feature",
    "rule",
    "metric",
    "state",
    "severity",
    "value",
    "threshold",
    "labels",
    "runbook_url",
    "settings_version",
    "opened_at",
    "last_notified_at",
    "acknowledged_at",
    "acknowledged_by",
    "acknowledge_note",
    "resolved_at",
    "resolved_by",
    "resolve_note",
)
TRANSITION_FIELDS = (
    "id",
    "alert_id",
    "feature_id",
    "feature",
    "rule",
    "at",
    "event",
    "from_state",
    "to_state",
    "severity",
    "value",
    "threshold",
    "reason",
    "actor",
    "settings_version",
)


def alert_view(row: Row) -> dict[str, Any]:
    return {key: row.get(key) for key in ALERT_FIELDS}


def transition_view(row: Row) -> dict[str, Any]:
    return {"cursor": str(row["seq"]), **{key: row.get(key) for key in TRANSITION_FIELDS}}


def state_of(row: Row | None) -> RuleState:
    if row is None:
        return RuleState()
    return RuleState(
        state=row["state"],
        severity=row["severity"],
        since=row["since"],
        breaching_since=row["breaching_since"],
        recovered_since=row["recovered_since"],
        value=row["value"],
        reason=row["reason"],
        alert_open=row["alert_id"] is not None,
    )


@dataclass
class Target:
    """One rule of one feature, as the evaluator sees it."""

    organization_id: uuid.UUID
    feature_id: uuid.UUID
    feature: str
    feature_status: str
    settings_version: int
    rule: Rule


async def targets(
    conn: Conn, organization_id: uuid.UUID | None = None, feature_id: uuid.UUID | None = None
) -> list[Target]:
    rows = await (
        await conn.execute(
            queries()["alert_rule_definitions"],
            {"organization_id": organization_id, "feature_id": feature_id},
        )
    ).fetchall()
    found = []
    for row in rows:
        for rule in row["rules"]:
            try:
                parsed = Rule.from_settings(rule)
            except Exception as exc:  # stored before a check existed: skip it, say so
                log.warning("alert rule of feature %s skipped: %s", row["feature_id"], exc)
                continue
            found.append(
                Target(
                    row["organization_id"],
                    row["feature_id"],
                    row["feature"],
                    row["feature_status"],
                    row["settings_version"],
                    parsed,
                )
            )
    return found


async def observe(
    conn: Conn, organization_id: uuid.UUID, found: Iterable[Target], now: datetime
) -> dict[tuple[uuid.UUID, str], Observation]:
    """Each rule's metric over its window: one metrics query per window in use, without
    the trend, and without latency percentiles unless a rule of that window needs them."""
    by_window: dict[timedelta, list[Target]] = defaultdict(list)
    for target in found:
        by_window[target.rule.window].append(target)
    seen: dict[tuple[uuid.UUID, str], Observation] = {}
    for window, group in by_window.items():
        feature_ids = sorted({t.feature_id for t in group})
        percentiles = any(t.rule.metric in PERCENTILE_METRICS for t in group)
        query = metrics.Query(organization_id, feature_ids, percentiles=percentiles)
        try:
            async with conn.transaction():
                timeout = f"{EVALUATION_TIMEOUT_S * 1000:.0f}ms"
                await conn.execute(queries()["evaluation_timeout"], {"timeout": timeout})
                figures = await metrics.current(conn, query, window, now, with_trend=False)
        except Exception as exc:  # a failed query: every rule of it is in `error`
            for target in group:
                seen[(target.feature_id, target.rule.name)] = Observation(None, 0, str(exc))
            continue
        by_feature = {item["feature_id"]: item for item in figures}
        for target in group:
            item = by_feature.get(target.feature_id)
            if item is None:
                continue
            value = item.get(target.rule.metric)
            seen[(target.feature_id, target.rule.name)] = Observation(
                float(value) if value is not None else None, item["requests"]
            )
    return seen


def _silence_for(
    silences: list[Row], alert: Row, feature_status: str | None
) -> tuple[uuid.UUID | None, str | None]:
    if feature_status == "maintenance":
        return None, "the feature is in maintenance"
    labels = alert.get("labels") or {}
    for silence in silences:
        if (
            (silence["feature_id"] is None or silence["feature_id"] == alert["feature_id"])
            and (silence["rule"] is None or silence["rule"] == alert["rule"])
            and (silence["severity"] is None or silence["severity"] == alert["severity"])
            and all(labels.get(k) == v for k, v in (silence["labels"] or {}).items())
        ):
            return silence["id"], None
    return None, None


@dataclass
class Recorder:
    """Writes transitions of one organization, inside the caller's transaction."""

    conn: Conn
    organization_id: uuid.UUID
    now: datetime
    actor: str
    silences: list[Row]
    written: int = 0

    @classmethod
    async def start(
        cls, conn: Conn, organization_id: uuid.UUID, now: datetime, actor: str
    ) -> Recorder:
        """Take the organization's commit lock (held until the transaction ends)."""
        await conn.execute(
            queries()["lock_alert_commits"],
            {"lock": Lock.ALERT_COMMITS, "organization_id": organization_id},
        )
        silences = await (
            await conn.execute(
                queries()["active_silences"], {"organization_id": organization_id, "at": now}
            )
        ).fetchall()
        return cls(conn, organization_id, now, actor, silences)

    async def record(
        self,
        target: Target,
        change: Change,
        alert_id: uuid.UUID | None,
        note: str | None = None,
    ) -> uuid.UUID | None:
        """One transition, the alert change it makes and its notification; returns the
        rule's open alert after it."""
        rule = target.rule
        base = {"organization_id": self.organization_id, "feature_id": target.feature_id}
        if change.opens:
            opened = await self.conn.execute(
                queries()["open_alert"],
                {
                    **base,
                    "rule": rule.name,
                    "metric": rule.metric,
                    "severity": change.severity or rule.severity,
                    "value": change.value,
                    "threshold": change.threshold,
                    "labels": Jsonb(rule.labels),
                    "runbook_url": rule.runbook_url,
                    "settings_version": target.settings_version,
                    "at": self.now,
                },
            )
            alert_id = (await opened.fetchone() or {})["id"]
        elif alert_id is not None and change.closes:
            await self.conn.execute(
                queries()["close_alert"],
                {
                    "alert_id": alert_id,
                    "at": self.now,
                    "actor": self.actor,
                    "note": note,
                    "value": change.value,
                },
            )
        elif alert_id is not None and change.event in ("escalate", "deescalate"):
            await self.conn.execute(
                queries()["update_open_alert"],
                {
                    "alert_id": alert_id,
                    "severity": change.severity,
                    "value": change.value,
                    "threshold": change.threshold,
                },
            )
        inserted = await self.conn.execute(
            queries()["insert_alert_transition"],
            {
                **base,
                "rule": rule.name,
                "alert_id": alert_id,
                "at": self.now,
                "event": change.event,
                "from_state": change.from_state,
                "to_state": change.to_state,
                "severity": change.severity,
                "value": change.value,
                "threshold": change.threshold,
                "reason": change.reason,
                "actor": self.actor,
                "settings_version": target.settings_version,
            },
        )
        written = await inserted.fetchone()
        assert written is not None
        self.written += 1
        if change.notifies and alert_id is not None:
            await self.notify(alert_id, change.notifies, written["seq"], target.feature_status)
        return None if change.closes else alert_id

    async def notify(
        self, alert_id: uuid.UUID, event: str, seq: int | None, feature_status: str | None
    ) -> None:
        """The outbox row: sent by the webhook deliveries unless a silence holds it."""
        alert = (await alerts_by_id(self.conn, [alert_id]))[alert_id]
        transition = None
        if seq is not None:
            found = await self.conn.execute(queries()["transition_by_seq"], {"seq": seq})
            row = await found.fetchone()
            transition = transition_view(row) if row else None
        silence, reason = _silence_for(self.silences, alert, feature_status)
        payload = {
            "type": event,
            "timestamp": self.now,
            "data": {"alert": alert_view(alert), "transition": transition},
        }
        await self.conn.execute(
            queries()["insert_alert_notification"],
            {
                "id": uuid.uuid4(),
                "organization_id": self.organization_id,
                "alert_id": alert_id,
                "transition_seq": seq,
                "event": event,
                "at": self.now,
                "severity": alert["severity"],
                "payload": Jsonb(payload, dumps=dumps),
                "silenced_by": silence,
                "silenced_reason": reason,
            },
        )
        await self.conn.execute(queries()["alert_notified"], {"alert_id": alert_id, "at": self.now})

    async def save_state(
        self, target: Target, state: RuleState, alert_id: uuid.UUID | None
    ) -> None:
        await self.conn.execute(
            queries()["upsert_alert_rule_state"],
            {
                "feature_id": target.feature_id,
                "rule": target.rule.name,
                "organization_id": self.organization_id,
                "state": state.state,
                "severity": state.severity,
                "since": state.since or self.now,
                "breaching_since": state.breaching_since,
                "recovered_since": state.recovered_since,
                "value": state.value,
                "reason": state.reason,
                "evaluated_at": self.now,
                "settings_version": target.settings_version,
                "definition": Jsonb(target.rule.definition),
                "alert_id": alert_id,
            },
        )


async def _no_fence(_: Conn) -> None:
    return None


async def evaluate(
    conn: Conn,
    now: datetime | None = None,
    fence: Fence = _no_fence,
    organization_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """One cycle: every rule judged, each change recorded; returns the organizations that
    got new transitions (to tell their followers).

    Each organization is judged at the time its turn comes (or at ``now``), its states
    read and written under its commit lock, the one that acknowledge and resolve take, so
    a rule resolved by hand meanwhile is judged from its new state, never from a stale
    copy; an organization whose evaluation fails is logged and the others go on."""
    by_org: dict[uuid.UUID, list[Target]] = defaultdict(list)
    for target in await targets(conn, organization_id):
        by_org[target.organization_id].append(target)
    for kept in await _states(conn, organization_id):
        by_org.setdefault(kept["organization_id"], [])  # all its rules gone: close what is open
    changed: list[uuid.UUID] = []
    for org_id, org_targets in by_org.items():
        try:
            if await _evaluate_organization(conn, org_id, org_targets, now, fence):
                changed.append(org_id)
        except Fenced:
            raise
        except Exception as exc:  # one organization's failure is not the others'
            log.warning("alert evaluation of organization %s failed: %s", org_id, exc)
    return changed


async def _evaluate_organization(
    conn: Conn, org_id: uuid.UUID, org_targets: list[Target], fixed: datetime | None, fence: Fence
) -> bool:
    """Judge one organization's rules (at its own time unless ``fixed``) and record the
    changes; whether any transition or notification was written."""
    now = fixed or datetime.now(UTC)
    enabled = [t for t in org_targets if t.rule.enabled]
    seen = await observe(conn, org_id, enabled, now) if enabled else {}
    async with conn.transaction():
        await fence(conn)
        recorder = await Recorder.start(conn, org_id, now, EVALUATOR)
        states = {(r["feature_id"], r["rule"]): r for r in await _states(conn, org_id)}
        for target in enabled:
            key = (target.feature_id, target.rule.name)
            row = states.pop(key, None)
            after, changes = step(
                target.rule, state_of(row), seen.get(key, Observation(None, 0)), now
            )
            alert_id = row["alert_id"] if row else None
            if changes or (row is not None and _moved(row, after, target)):
                for change in changes:
                    alert_id = await recorder.record(target, change, alert_id)
                await recorder.save_state(target, after, alert_id)
        for left in states.values():  # rules disabled or deleted
            await _retire(recorder, left, _gone_target(left, org_targets))
        renotify = await _due_renotifications(conn, org_id, org_targets, now)
        for alert, status in renotify:
            await recorder.notify(alert["id"], "alert.renotify", None, status)
    return bool(recorder.written or renotify)


async def _states(conn: Conn, organization_id: uuid.UUID | None) -> list[Row]:
    return await (
        await conn.execute(
            queries()["alert_rule_states"],
            {"organization_id": organization_id, "feature_id": None},
        )
    ).fetchall()


def _moved(row: Row, after: RuleState, target: Target) -> bool:
    """A state row to update without a transition: a pending or recovering clock, a new
    rule definition or settings version."""
    return bool(
        row["breaching_since"] != after.breaching_since
        or row["recovered_since"] != after.recovered_since
        or row["settings_version"] != target.settings_version
    )


def _gone_target(row: Row, org_targets: list[Target]) -> Target:
    """The rule a state row belongs to: disabled (still defined) or deleted."""
    for target in org_targets:
        if target.feature_id == row["feature_id"] and target.rule.name == row["rule"]:
            return target
    return Target(
        row["organization_id"],
        row["feature_id"],
        "",
        "active",
        row["settings_version"],
        Rule.from_settings(row["definition"]),
    )


async def _retire(recorder: Recorder, row: Row, target: Target) -> None:
    """A rule deleted or disabled: its open alert resolves, its state goes."""
    disabled = bool(target.feature)
    change = Change(
        "rule_disabled" if disabled else "rule_deleted",
        row["state"],
        OK,
        row["severity"],
        row["value"],
        None,
        "the rule was disabled" if disabled else "the rule was deleted",
        closes=row["alert_id"] is not None,
        notifies="alert.resolved" if row["alert_id"] is not None else None,
    )
    await recorder.record(target, change, row["alert_id"])
    await recorder.conn.execute(
        queries()["delete_alert_rule_state"], {"feature_id": row["feature_id"], "rule": row["rule"]}
    )


async def _due_renotifications(
    conn: Conn, org_id: uuid.UUID, org_targets: list[Target], now: datetime
) -> list[tuple[Row, str]]:
    rules = {(t.feature_id, t.rule.name): t for t in org_targets}
    intervals = [t.rule.renotify for t in org_targets if t.rule.renotify is not None]
    if not intervals:
        return []
    due = []
    for alert in await (
        await conn.execute(
            queries()["renotify_candidates"],
            {"organization_id": org_id, "due_before": now - min(intervals)},
        )
    ).fetchall():
        target = rules.get((alert["feature_id"], alert["rule"]))
        if target is None or target.rule.renotify is None:
            continue
        last = alert["last_notified_at"] or alert["opened_at"]
        if now - last >= target.rule.renotify:
            due.append((alert, target.feature_status))
    return due


# Acknowledge and resolve, by a person through the API.


async def _open_alert_of(conn: Conn, principal: Principal, alert_id: str, verb: str) -> Row:
    row = await get_alert(conn, principal, alert_id)
    if row["state"] != "open":
        raise ApiError(
            409,
            f"alert {alert_id} is {row['state']} (resolved at "
            f"{row['resolved_at'].strftime('%Y-%m-%dT%H:%M:%SZ')}): only an open alert can be "
            f"{verb}",
            "conflict",
            {"state": row["state"]},
        )
    return row


async def acknowledge(
    conn: Conn, principal: Principal, alert_id: str, note: str | None
) -> tuple[Row, bool]:
    """Acknowledge an open alert (again: nothing changes); ``(alert, changed)``."""
    now = datetime.now(UTC)
    async with conn.transaction():
        recorder = await Recorder.start(conn, principal.organization_id, now, _actor(principal))
        alert = await _open_alert_of(conn, principal, alert_id, "acknowledged")
        if alert["acknowledged_at"] is not None:
            return alert, False
        await conn.execute(
            queries()["acknowledge_alert"],
            {"alert_id": alert["id"], "at": now, "actor": recorder.actor, "note": note},
        )
        change = Change(
            "acknowledge",
            FIRING,
            FIRING,
            alert["severity"],
            alert["value"],
            alert["threshold"],
            note or "acknowledged",
            notifies="alert.acknowledged",
        )
        await recorder.record(await _target_of(conn, alert), change, alert["id"])
    return await get_alert(conn, principal, alert_id), True


async def resolve(conn: Conn, principal: Principal, alert_id: str, note: str | None) -> Row:
    """Close an open alert by hand; a rule still breaching opens a new one only after its
    `for` elapses again."""
    now = datetime.now(UTC)
    async with conn.transaction():
        recorder = await Recorder.start(conn, principal.organization_id, now, _actor(principal))
        alert = await _open_alert_of(conn, principal, alert_id, "resolved")
        target = await _target_of(conn, alert)
        row = (await rule_states(conn, principal.organization_id, alert["feature_id"])).get(
            alert["rule"]
        )
        before = state_of(row)
        breaching = before.state in (FIRING, PENDING)
        change = Change(
            "resolve",
            before.state,
            PENDING if breaching else before.state,
            alert["severity"],
            alert["value"],
            alert["threshold"],
            note or "resolved by hand",
            closes=True,
            notifies="alert.resolved",
        )
        await recorder.record(target, change, alert["id"], note)
        after = replace(before, alert_open=False)
        if breaching:  # its `for` counts again from now
            after = replace(after, state=PENDING, since=now, breaching_since=now)
        if row is not None:
            await recorder.save_state(target, after, None)
    return await get_alert(conn, principal, alert_id)


def _actor(principal: Principal) -> str:
    return f"token {principal.token_name} ({principal.token_id})"


async def _target_of(conn: Conn, alert: Row) -> Target:
    """The rule an alert belongs to, as defined now (or as the alert recorded it)."""
    for target in await targets(conn, alert["organization_id"], alert["feature_id"]):
        if target.rule.name == alert["rule"]:
            return target
    definition = {
        "name": alert["rule"],
        "metric": alert["metric"],
        "operator": ">",
        "threshold": alert["threshold"] or 0,
    }
    return Target(
        alert["organization_id"],
        alert["feature_id"],
        alert["feature"],
        "active",
        alert["settings_version"],
        Rule.from_settings(definition),
    )


async def get_alert(conn: Conn, principal: Principal, alert_id: str) -> Row:
    try:
        ident = uuid.UUID(alert_id)
    except ValueError:
        raise ApiError(404, f"alert {alert_id!r} not found") from None
    row = (await alerts_by_id(conn, [ident], principal.organization_id)).get(ident)
    if row is None:
        raise ApiError(404, f"alert {alert_id!r} not found")
    return row


async def alerts_by_id(
    conn: Conn, ids: Iterable[uuid.UUID], organization_id: uuid.UUID | None = None
) -> dict[uuid.UUID, Row]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = await (
        await conn.execute(
            queries()["alerts_by_id"], {"ids": wanted, "organization_id": organization_id}
        )
    ).fetchall()
    return {row["id"]: row for row in rows}


async def rule_states(
    conn: Conn, organization_id: uuid.UUID, feature_id: uuid.UUID
) -> dict[str, Row]:
    """A feature's rule states by rule name (a rule without one is `ok`)."""
    rows = await (
        await conn.execute(
            queries()["alert_rule_states"],
            {"organization_id": organization_id, "feature_id": feature_id},
        )
    ).fetchall()
    return {row["rule"]: row for row in rows}


async def transitions_after(
    conn: Conn,
    organization_id: uuid.UUID,
    after: int,
    limit: int,
    alert_id: uuid.UUID | None = None,
) -> list[Row]:
    """Transitions after a cursor, oldest first (all, or one alert's)."""
    return await (
        await conn.execute(
            queries()["list_alert_transitions"],
            {
                "organization_id": organization_id,
                "after": after,
                "alert_id": alert_id,
                "limit": limit,
            },
        )
    ).fetchall()


async def current_cursor(conn: Conn, organization_id: uuid.UUID) -> int:
    row = await (
        await conn.execute(queries()["max_alert_seq"], {"organization_id": organization_id})
    ).fetchone()
    return int(row["seq"]) if row else 0
