"""Alerts: list, show (with transitions, deliveries and the settings changes before it),
acknowledge, resolve; a feature's alert rules with their state, and a rule tried now."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query

from minerva_ai.service import alerts, store, webhooks
from minerva_ai.service.alert_schemas import Alert as AlertShape
from minerva_ai.service.alert_schemas import (
    AlertDetail,
    AlertRuleWithState,
    Note,
    RuleEvaluation,
    Transition,
)
from minerva_ai.service.alert_states import Observation, step
from minerva_ai.service.apidoc import answers
from minerva_ai.service.db import queries
from minerva_ai.service.deps import AppState, Reader, StateDep, Writer
from minerva_ai.service.errors import ApiError, bad_query
from minerva_ai.service.metrics import span_text
from minerva_ai.service.responses import JSONResponse, ok, page
from minerva_ai.service.schemas import Envelope, PageOf

router = APIRouter(tags=["alerts"])
Limit = Annotated[int, Query(ge=1, le=1000, description="items per page")]
Severity = Literal["info", "warning", "critical"]


def _labels(label: list[str] | None) -> dict[str, str] | None:
    if not label:
        return None
    found: dict[str, str] = {}
    for item in label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise bad_query("label", f"label {item!r} must be key=value", "key=value")
        found[key] = value
    return found


@router.get(
    "/alerts", response_model=PageOf[AlertShape], responses=answers(400, 401, 403, 404, 503)
)
async def alerts_list(
    state: StateDep,
    principal: Reader,
    status: Annotated[Literal["open", "resolved"] | None, Query(alias="state")] = None,
    severity: Severity | None = None,
    feature: str | None = None,
    label: Annotated[list[str] | None, Query(description="key=value; repeat for more")] = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> JSONResponse:
    """The organization's alerts, newest first."""
    position = store.decode_cursor(cursor, "o", str)
    before_id = store.decode_cursor(cursor, "i", str) if position else None
    try:
        before_opened = datetime.fromisoformat(position) if position else None
        before_uuid = uuid.UUID(before_id) if before_id else None
    except ValueError:
        raise bad_query("cursor", f"cursor {cursor!r} is not a page cursor", "malformed") from None
    labels = _labels(label)
    async with state.pool.connection() as conn:
        feature_id = None
        if feature is not None:
            feature_id = (await store.get_feature(conn, principal.organization_id, feature))["id"]
        rows = await (
            await conn.execute(
                queries()["list_alerts"],
                {
                    "organization_id": principal.organization_id,
                    "state": status,
                    "severity": severity,
                    "feature_id": feature_id,
                    "labels": orjson.dumps(labels).decode() if labels else None,
                    "before_opened": before_opened,
                    "before_id": before_uuid,
                    "limit": limit + 1,
                },
            )
        ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = store.encode_cursor(
            {"o": last["opened_at"].isoformat(), "i": str(last["id"])}
        )
    return page([alerts.alert_view(r) for r in rows], next_cursor)


@router.get(
    "/alerts/transitions",
    response_model=PageOf[Transition],
    responses=answers(400, 401, 403, 503),
)
async def alerts_transitions(
    state: StateDep,
    principal: Reader,
    after: Annotated[
        str | None,
        Query(description="a transition's cursor", json_schema_extra={"pattern": "^[0-9]{1,18}$"}),
    ] = None,
    limit: Limit = 100,
) -> JSONResponse:
    """Every transition after a cursor, oldest first (what `alerts watch` polls without a
    WebSocket); `next_cursor` is the last one's."""
    start = 0
    if after is not None:
        if not (after.isascii() and after.isdigit()) or len(after) > 18:
            raise bad_query(
                "after", f"after {after!r} is not a transition cursor", "not a transition cursor"
            )
        start = int(after)
    async with state.pool.connection() as conn:
        rows = await alerts.transitions_after(conn, principal.organization_id, start, limit)
    views = [alerts.transition_view(r) for r in rows]
    return page(views, views[-1]["cursor"] if views else after)


@router.get(
    "/alerts/{alert_id}",
    response_model=Envelope[AlertDetail],
    responses=answers(400, 401, 403, 404, 503),
)
async def alerts_show(state: StateDep, principal: Reader, alert_id: str) -> JSONResponse:
    """An alert with its transitions, every webhook delivery attempt, and the feature's
    settings changes in the hour before it opened."""
    async with state.pool.connection() as conn:
        row = await alerts.get_alert(conn, principal, alert_id)
        steps = await alerts.transitions_after(conn, principal.organization_id, 0, 1000, row["id"])
        changes = await (
            await conn.execute(
                queries()["settings_changes_before"],
                {
                    "feature_id": row["feature_id"],
                    "since": row["opened_at"] - timedelta(hours=1),
                    "until": row["opened_at"],
                },
            )
        ).fetchall()
        deliveries = await webhooks.deliveries_of(conn, principal.organization_id, row["id"])
    return ok(
        {
            **alerts.alert_view(row),
            "transitions": [alerts.transition_view(t) for t in steps],
            "deliveries": deliveries,
            "settings_changes": changes,
        }
    )


async def _tell_followers(state: AppState, organization_id: uuid.UUID) -> None:
    await state.bus.publish(alerts.TOPIC.format(organization_id=organization_id), {})


@router.post(
    "/alerts/{alert_id}/acknowledge",
    response_model=Envelope[AlertShape],
    responses=answers(400, 401, 403, 404, 409, 422, 503),
)
async def alerts_acknowledge(
    state: StateDep, principal: Writer, alert_id: str, body: Note | None = None
) -> JSONResponse:
    """Acknowledge an open alert: no more renotifications. Again: 200, nothing changes;
    a resolved alert: 409."""
    async with state.pool.connection() as conn:
        row, changed = await alerts.acknowledge(
            conn, principal, alert_id, body.note if body else None
        )
    if changed:
        await _tell_followers(state, principal.organization_id)
    return ok(alerts.alert_view(row))


@router.post(
    "/alerts/{alert_id}/resolve",
    response_model=Envelope[AlertShape],
    responses=answers(400, 401, 403, 404, 409, 422, 503),
)
async def alerts_resolve(
    state: StateDep, principal: Writer, alert_id: str, body: Note | None = None
) -> JSONResponse:
    """Resolve an open alert by hand; a resolved one: 409. A rule that still breaches
    opens a new alert only after its `for` elapses again."""
    async with state.pool.connection() as conn:
        row = await alerts.resolve(conn, principal, alert_id, body.note if body else None)
    await _tell_followers(state, principal.organization_id)
    return ok(alerts.alert_view(row))


@router.get(
    "/features/{feature}/alert-rules",
    response_model=Envelope[list[AlertRuleWithState]],
    responses=answers(400, 401, 403, 404, 503),
)
async def alert_rules_list(state: StateDep, principal: Reader, feature: str) -> JSONResponse:
    """The feature's alert rules (its settings' monitoring.alert_rules), each with its state."""
    async with state.pool.connection() as conn:
        row = await store.get_feature(conn, principal.organization_id, feature)
        found = await alerts.targets(conn, principal.organization_id, row["id"])
        states = await alerts.rule_states(conn, principal.organization_id, row["id"])
    items = []
    for target in found:
        current = states.get(target.rule.name) or {}
        items.append(
            {
                "rule": target.rule.definition,
                "current": {
                    "state": current.get("state", "ok"),
                    "severity": current.get("severity"),
                    "since": current.get("since"),
                    "value": current.get("value"),
                    "reason": current.get("reason", ""),
                    "alert_id": current.get("alert_id"),
                },
            }
        )
    return ok(items)


@router.get(
    "/features/{feature}/alert-rules/{rule}/evaluation",
    response_model=Envelope[RuleEvaluation],
    responses=answers(400, 401, 403, 404, 503),
)
async def alert_rules_evaluate(
    state: StateDep, principal: Reader, feature: str, rule: str
) -> JSONResponse:
    """Evaluate the rule now, changing nothing: the state it would move to, the value
    observed, and why."""
    now = datetime.now(UTC)
    async with state.pool.connection() as conn:
        row = await store.get_feature(conn, principal.organization_id, feature)
        found = [
            t
            for t in await alerts.targets(conn, principal.organization_id, row["id"])
            if t.rule.name == rule
        ]
        if not found:
            raise ApiError(404, f"alert rule {rule!r} of feature {row['name']!r} not found")
        target = found[0]
        states = await alerts.rule_states(conn, principal.organization_id, row["id"])
        seen = await alerts.observe(conn, principal.organization_id, [target], now)
    observation = seen.get((target.feature_id, rule), Observation(None, 0))
    before = alerts.state_of(states.get(rule))
    after, changes = step(target.rule, before, observation, now)
    return ok(
        {
            "rule": rule,
            "state": before.state,
            "would_be": after.state,
            "value": observation.value,
            "requests": observation.requests,
            "window": span_text(target.rule.window),
            "reason": after.reason,
            "events": [c.event for c in changes],
        }
    )
