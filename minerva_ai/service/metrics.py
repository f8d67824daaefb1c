"""Metrics: the figures of a feature's calls over a window or in steps, from minute rollups.

A call is a log entry with a ``status``; the ingest adds each new one to its minute's row
of ``metric_minutes`` (sql/queries/logs.sql), so nothing here reads the logs table.
Definitions, units and a worked example: docs/metrics.md.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from minerva_ai.service.db import Row, queries
from minerva_ai.service.errors import bad_query

Conn = AsyncConnection[Row]

# Latency histogram bounds in ms: the R10 preferred numbers (ten a decade, each about 26%
# above the one before) from 1 ms to 1,000 s. Bucket 0 holds [0, 1), bucket i holds
# [LATENCY_BOUNDS[i-1], LATENCY_BOUNDS[i]), the last [1,000,000, inf). Fixed for good:
# stored histograms are counts per bucket index.
_R10 = (1.0, 1.25, 1.6, 2.0, 2.5, 3.15, 4.0, 5.0, 6.3, 8.0)
LATENCY_BOUNDS: tuple[float, ...] = (
    *(round(step * 10**decade, 4) for decade in range(6) for step in _R10),
    1_000_000.0,
)

DEFAULT_SLO = {"success_rate": 99.5, "response_time_ms": 1000.0}
HEALTHY, WARNING = 90.0, 70.0  # health score thresholds of `healthy` and `warning`
TREND_FLAT = 2.0  # points of health score either way that are still `flat`
MAX_POINTS = 10_000
STEP_MIN, STEP_MAX = timedelta(minutes=1), timedelta(days=1)
_SPAN = re.compile(r"^([1-9][0-9]{0,5})([mhd])$")
_UNIT = {"m": 1, "h": 60, "d": 1440}


def parse_span(value: str, name: str, maximum: timedelta) -> timedelta:
    """A window or step (``5m``, ``1h``, ``7d``): whole minutes, at least one; 400 else."""
    found = _SPAN.match(value.strip())
    minutes = int(found[1]) * _UNIT[found[2]] if found else 0
    if not minutes:
        problem = "a number of minutes, hours or days, e.g. 5m, 1h, 7d"
    elif timedelta(minutes=minutes) > maximum:
        problem = f"at most {span_text(maximum)}"
    else:
        return timedelta(minutes=minutes)
    raise bad_query(name, f"{name} {value!r} must be {problem}", problem)


def span_text(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    for unit, size in (("d", 1440), ("h", 60)):
        if minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"


def minute_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


@dataclass
class Totals:
    """The sums of some minutes of calls: what every figure is computed from."""

    requests: int = 0
    successes: int = 0
    errors: int = 0
    timeouts: int = 0
    latency_count: int = 0
    latency_sum: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    minutes: int = 0  # minutes that had calls
    minutes_met: int = 0  # ... and met the SLO's success rate
    histogram: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Row) -> Totals:
        return cls(
            requests=row["requests"],
            successes=row["successes"],
            errors=row["errors"],
            timeouts=row["timeouts"],
            latency_count=row["latency_count"],
            latency_sum=row["latency_sum"],
            tokens_in=row["tokens_in"],
            tokens_out=row["tokens_out"],
            cost=row["cost"],
            minutes=row["minutes"],
            minutes_met=row["minutes_met"],
            histogram={int(k): int(v) for k, v in row["latency_hist"].items()},
        )


def percentile(histogram: dict[int, int], q: float) -> float | None:
    """The q-th quantile (0-1) of a latency histogram, interpolated within its bucket:
    always in the bucket that holds the exact value (nearest rank)."""
    total = sum(histogram.values())
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index in sorted(histogram):
        count = histogram[index]
        if seen + count >= rank:
            low = LATENCY_BOUNDS[index - 1] if index > 0 else 0.0
            if index >= len(LATENCY_BOUNDS):
                return low
            high = LATENCY_BOUNDS[index]
            return low + (high - low) * (rank - seen - 0.5) / count
        seen += count
    return None  # unreachable: the ranks add up to total


def health_score(
    uptime: float | None,
    success_rate: float,
    response_time: float | None,
    error_rate: float,
    slo: dict[str, float],
) -> float:
    """The plan's formula (docs/metrics.md), 0-100. Without latency reported the
    response-time term counts as met."""
    uptime_term = min((uptime if uptime is not None else 100.0) / 99.9, 1.0)
    target = slo["success_rate"]
    success_term = min(success_rate / target, 1.0) if target > 0 else 1.0
    latency_term = (
        max(0.0, 1 - response_time / slo["response_time_ms"]) if response_time is not None else 1.0
    )
    error_term = max(0.0, 1 - error_rate / 5)
    score = 0.3 * uptime_term + 0.3 * success_term + 0.2 * latency_term + 0.2 * error_term
    return round(100 * score, 1)


def trend(score: float | None, previous: float | None) -> str | None:
    if score is None or previous is None:
        return None
    if score - previous > TREND_FLAT:
        return "up"
    if previous - score > TREND_FLAT:
        return "down"
    return "flat"


def status(score: float | None, alert_severity: str | None = None) -> str:
    """``no_data``, ``error``, ``warning`` or ``healthy``; an open alert's severity
    (``critical`` or ``warning``) can only make it worse."""
    if score is None:
        return "no_data"
    if alert_severity == "critical" or score < WARNING:
        return "error"
    if alert_severity == "warning" or score < HEALTHY:
        return "warning"
    return "healthy"


def figures(totals: Totals | None, minutes: float, slo: dict[str, float]) -> dict[str, Any]:
    """Every figure of one window or step (``minutes`` long, for the per-minute rate)."""
    t = totals or Totals()
    out: dict[str, Any] = {
        "requests": t.requests,
        "successes": t.successes,
        "errors": t.errors,
        "timeouts": t.timeouts,
        "requests_per_minute": round(t.requests / minutes, 3) if minutes > 0 else 0.0,
        "success_rate": None,
        "error_rate": None,
        "uptime": None,
        "response_time": None,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "cost": t.cost,
        "tokens": t.tokens_in + t.tokens_out,
        "tokens_in": t.tokens_in,
        "tokens_out": t.tokens_out,
        "health_score": None,
    }
    if not t.requests:
        return out
    success_rate = 100.0 * t.successes / t.requests
    error_rate = 100.0 * (t.errors + t.timeouts) / t.requests
    uptime = 100.0 * t.minutes_met / t.minutes if t.minutes else None
    response_time = t.latency_sum / t.latency_count if t.latency_count else None
    out.update(
        success_rate=success_rate,
        error_rate=error_rate,
        uptime=uptime,
        response_time=response_time,
        p50_ms=_rounded(percentile(t.histogram, 0.50)),
        p95_ms=_rounded(percentile(t.histogram, 0.95)),
        p99_ms=_rounded(percentile(t.histogram, 0.99)),
        health_score=health_score(uptime, success_rate, response_time, error_rate, slo),
    )
    return out


def _rounded(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


@dataclass(frozen=True)
class Query:
    """Which calls: some features (all when None), tests or not, split by model or not."""

    organization_id: uuid.UUID
    feature_ids: Sequence[uuid.UUID] | None = None
    include_tests: bool = False
    by_model: bool = False
    # Off: no latency percentiles (the histograms are the costly part of a rollup).
    percentiles: bool = True

    def scope(self) -> dict[str, Any]:
        """The query parameters that say whose calls."""
        ids = list(self.feature_ids) if self.feature_ids is not None else None
        return {"organization_id": self.organization_id, "feature_ids": ids}


Key = tuple[uuid.UUID, str | None, datetime]  # (feature, model, step start)


async def _rollup(
    conn: Conn, query: Query, since: datetime, until: datetime, step: timedelta
) -> dict[Key, Totals]:
    rows = await (
        await conn.execute(
            queries()["metric_rollup"],
            {
                **query.scope(),
                "histograms": query.percentiles,
                "since": since,
                "until": until,
                "step": step,
                "include_tests": query.include_tests,
                "by_model": query.by_model,
            },
        )
    ).fetchall()
    return {(r["feature_id"], r["model"], r["start"]): Totals.from_row(r) for r in rows}


async def feature_slos(conn: Conn, query: Query) -> list[Row]:
    """The features asked for (by name), each with its SLO."""
    return await (await conn.execute(queries()["feature_slos"], query.scope())).fetchall()


def _slo(feature: Row) -> dict[str, float]:
    return {
        "success_rate": feature["success_rate"],
        "response_time_ms": feature["response_time_ms"],
    }


def _models(rollup: dict[Key, Totals], feature_id: uuid.UUID) -> list[str | None]:
    return sorted({k[1] for k in rollup if k[0] == feature_id}, key=lambda m: (m is None, m or ""))


async def current(
    conn: Conn,
    query: Query,
    window: timedelta,
    now: datetime | None = None,
    with_trend: bool = True,
) -> list[dict[str, Any]]:
    """Each feature's figures over the window (its whole minutes before the current one,
    and the current one so far), with its trend against the same span just before
    (``with_trend=False``: not read, ``trend`` null)."""
    now = now or datetime.now(UTC)
    minute = minute_floor(now)
    start = minute - window
    span = window + STEP_MIN  # the window's minute slots, the current one included
    elapsed = window.total_seconds() / 60 + (now - minute).total_seconds() / 60
    totals_query = replace(query, by_model=False)
    # Two steps: the previous span (for the trend) and this window.
    since = start - span if with_trend else start
    rollup = await _rollup(conn, totals_query, since, minute + STEP_MIN, span)
    by_model = await _rollup(conn, query, start, minute + STEP_MIN, span) if query.by_model else {}
    alerts = await _open_alerts(conn, query)
    out = []
    for feature in await feature_slos(conn, query):
        fid, slo = feature["id"], _slo(feature)
        this = figures(rollup.get((fid, None, start)), elapsed, slo)
        before = figures(rollup.get((fid, None, start - span)), span.total_seconds() / 60, slo)
        item = {
            "feature_id": fid,
            "feature": feature["name"],
            "window": span_text(window),
            "as_of": now,
            **this,
            "trend": trend(this["health_score"], before["health_score"]),
            "status": status(this["health_score"], alerts.get(fid, (0, None))[1]),
            "open_alerts": alerts.get(fid, (0, None))[0],
            "slo": slo,
        }
        if query.by_model:
            item["models"] = [
                _model_figures(model, figures(by_model.get((fid, model, start)), elapsed, slo))
                for model in _models(by_model, fid)
            ]
        out.append(item)
    return out


_SEVERITY = {2: "critical", 1: "warning", 0: None}


async def _open_alerts(conn: Conn, query: Query) -> dict[uuid.UUID, tuple[int, str | None]]:
    """Per feature: how many alerts are open, and the worst severity among them."""
    rows = await (await conn.execute(queries()["open_alerts_by_feature"], query.scope())).fetchall()
    return {r["feature_id"]: (r["open_alerts"], _SEVERITY[r["rank"]]) for r in rows}


def _model_figures(model: str | None, numbers: dict[str, Any]) -> dict[str, Any]:
    return {"model": model or None, **numbers, "status": status(numbers["health_score"])}


def _points(
    rollup: dict[Key, Totals],
    feature_id: uuid.UUID,
    model: str | None,
    starts: Iterable[datetime],
    step: timedelta,
    now: datetime,
    slo: dict[str, float],
    until: datetime,
) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    previous: float | None = None
    for i, start in enumerate(starts):
        covered = min(start + step, until, now) - start
        numbers = figures(rollup.get((feature_id, model, start)), covered.total_seconds() / 60, slo)
        if i > 0:  # the first step is read only for the second's trend
            points.append(
                {
                    "time": start,
                    **numbers,
                    "trend": trend(numbers["health_score"], previous),
                    "status": status(numbers["health_score"]),
                }
            )
        previous = numbers["health_score"]
    return points


def series_bounds(
    since: datetime | None, until: datetime | None, step: timedelta, now: datetime
) -> tuple[datetime, datetime]:
    """The series' first step start and its end, checked: 400 naming the parameter."""
    end = minute_floor(until) if until is not None else now
    start = minute_floor(since) if since is not None else minute_floor(end) - timedelta(hours=1)
    if start >= end:
        raise bad_query("since", "since must be before until", "must be before until")
    points = math.ceil((end - start) / step)
    if points > MAX_POINTS:
        message = (
            f"the series would have {points} points (at most {MAX_POINTS}): "
            "use a larger step or a shorter range"
        )
        raise bad_query("step", message, f"at most {MAX_POINTS} points")
    return start, end


async def series(
    conn: Conn, query: Query, since: datetime, until: datetime, step: timedelta
) -> dict[str, Any]:
    """One feature's figures per step from ``since`` to ``until``, every step present."""
    assert query.feature_ids is not None and len(query.feature_ids) == 1
    now = datetime.now(UTC)
    first = since - step  # read to give the first point its trend
    starts = [first + step * i for i in range(math.ceil((until - first) / step))]
    rollup = await _rollup(conn, replace(query, by_model=False), first, until, step)
    (feature,) = await feature_slos(conn, query)
    fid, slo = feature["id"], _slo(feature)
    out: dict[str, Any] = {
        "feature_id": fid,
        "feature": feature["name"],
        "step": span_text(step),
        "since": since,
        "until": until,
        "points": _points(rollup, fid, None, starts, step, now, slo, until),
    }
    if query.by_model:
        by_model = await _rollup(conn, query, first, until, step)
        out["models"] = [
            {
                "model": model or None,
                "points": _points(by_model, fid, model, starts, step, now, slo, until),
            }
            for model in _models(by_model, fid)
        ]
    return out


EXPIRE_BATCH = 10_000


async def expire(conn: Conn, retention: timedelta, fence: Callable[[Conn], Awaitable[None]]) -> int:
    """Remove the minute rollups older than retention, a batch per transaction, each
    fenced (``jobs.Lease.fence``): only the job's leader deletes. Returns how many."""
    before = minute_floor(datetime.now(UTC)) - retention
    removed = 0
    for org in await (await conn.execute(queries()["organization_ids"])).fetchall():
        while True:
            async with conn.transaction():
                await fence(conn)
                done = await conn.execute(
                    queries()["expire_metric_minutes"],
                    {"organization_id": org["id"], "before": before, "batch": EXPIRE_BATCH},
                )
            removed += done.rowcount
            if done.rowcount < EXPIRE_BATCH:
                break
    return removed
