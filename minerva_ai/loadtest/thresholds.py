"""k6-style thresholds: ``metric{tag:value}:aggregation<op>value``, evaluated on the stats."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from minerva_ai.core.errors import UsageError
from minerva_ai.loadtest.stats import Stats, has_tag, percentile_ms

GRAMMAR = """\
threshold := METRIC [ "{" TAG ":" VALUE "}" ] ":" AGG OP NUMBER
  METRIC   http_req_duration | ws_connecting | ws_msg_delay   (AGG: p(N) avg min max med count)
           http_req_failed                                     (AGG: rate count)
           http_reqs | ws_msgs_received                        (AGG: count rate)
           ws_sessions                                         (AGG: count rate = failed share)
  OP       < <= > >= == !=
  e.g.     http_req_duration:p(95)<500   http_req_failed:rate<0.01
           http_req_duration{step:list}:p(95)<300   ws_connecting:p(95)<200
  durations are in milliseconds, rates per second (http_req_failed:rate is a fraction)"""

_TREND = ("p", "avg", "min", "max", "med", "count")
METRICS: dict[str, tuple[str, ...]] = {
    "http_req_duration": _TREND,
    "ws_connecting": _TREND,
    "ws_msg_delay": _TREND,
    "http_req_failed": ("rate", "count"),
    "http_reqs": ("count", "rate"),
    "ws_msgs_received": ("count", "rate"),
    "ws_sessions": ("count", "rate"),
}
_HISTOGRAM_OF = {
    "http_req_duration": "duration",
    "ws_connecting": "ws_connecting",
    "ws_msg_delay": "ws_msg_delay",
}
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_EXPR = re.compile(
    r"^\s*(?P<metric>[a-z_]+)"
    r"(?:\{\s*(?P<tag>[A-Za-z_][\w-]*)\s*:\s*(?P<value>[^{}]+?)\s*\})?"
    r"\s*:\s*(?P<agg>p\(\s*(?P<pct>\d+(?:\.\d+)?)\s*\)|[a-z]+)"
    r"\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<number>-?\d+(?:\.\d+)?)\s*$"
)


@dataclass(frozen=True)
class Threshold:
    expr: str
    metric: str
    tag: tuple[str, str] | None
    aggregation: str
    percentile: float | None
    op: str
    limit: float

    def observe(self, stats: Stats, duration_s: float) -> float | None:
        """The observed value, or None when there is nothing to measure."""
        steps = stats.select(self.tag)
        if self.metric in _HISTOGRAM_OF:
            histogram = Stats.combined(steps, _HISTOGRAM_OF[self.metric])
            if self.aggregation == "count":
                return float(histogram.get_total_count())
            if histogram.get_total_count() == 0:
                return None
            if self.aggregation in ("p", "med"):
                return percentile_ms(histogram, self.percentile or 50.0)
            if self.aggregation == "avg":
                return round(float(histogram.get_mean_value()) / 1000, 3)
            if self.aggregation == "min":
                return float(histogram.get_min_value()) / 1000
            return float(histogram.get_max_value()) / 1000
        per_second = duration_s if duration_s > 0 else 1.0
        if self.metric == "http_req_failed":
            requests = sum(s.requests for s in steps)
            failed = sum(s.failed for s in steps)
            if self.aggregation == "count":
                return float(failed)
            return failed / requests if requests else None
        if self.metric == "ws_sessions":
            ok = sum(s.ws_ok for s in steps)
            bad = sum(s.ws_failed for s in steps)
            if self.aggregation == "count":
                return float(ok + bad)
            return bad / (ok + bad) if ok + bad else None
        count = sum(s.requests if self.metric == "http_reqs" else s.ws_msgs for s in steps)
        return float(count) if self.aggregation == "count" else count / per_second

    def check(self, stats: Stats, duration_s: float) -> dict[str, Any]:
        observed = self.observe(stats, duration_s)
        ok = observed is not None and OPERATORS[self.op](observed, self.limit)
        value = None if observed is None else round(observed, 6)
        return {"expr": self.expr, "ok": ok, "observed": value}


def parse_threshold(expr: str) -> Threshold:
    """Parse one expression; ``UsageError`` with the grammar when it does not parse."""
    match = _EXPR.match(expr)
    if not match:
        raise UsageError(f"invalid threshold {expr!r}\n{GRAMMAR}")
    metric, agg = match["metric"], match["agg"]
    if metric not in METRICS:
        raise UsageError(f"invalid threshold {expr!r}: unknown metric {metric!r}\n{GRAMMAR}")
    name = "p" if agg.startswith("p(") else agg
    if name not in METRICS[metric]:
        allowed = ", ".join("p(N)" if a == "p" else a for a in METRICS[metric])
        raise UsageError(
            f"invalid threshold {expr!r}: {metric} takes {allowed}, not {agg!r}\n{GRAMMAR}"
        )
    percentile = float(match["pct"]) if name == "p" else 50.0 if name == "med" else None
    if percentile is not None and not 0 < percentile <= 100:
        raise UsageError(f"invalid threshold {expr!r}: p(N) needs 0 < N <= 100\n{GRAMMAR}")
    tag = (match["tag"], match["value"]) if match["tag"] else None
    return Threshold(
        expr.strip(), metric, tag, name, percentile, match["op"], float(match["number"])
    )


def check_tags(thresholds: list[Threshold], steps: list[tuple[str, dict[str, str]]]) -> None:
    """``UsageError`` for a threshold whose ``{tag:value}`` no step carries (a typo that
    would otherwise fail the run with nothing measured). ``steps``: (name, tags) pairs."""
    for threshold in thresholds:
        if threshold.tag and not any(has_tag(n, t, threshold.tag) for n, t in steps):
            key, value = threshold.tag
            known = sorted({v for n, t in steps for k, v in {**t, "step": n}.items() if k == key})
            raise UsageError(
                f"threshold {threshold.expr!r}: no step has the tag {key}:{value} "
                f"({key} is one of: {', '.join(known)})"
                if known
                else f"threshold {threshold.expr!r}: no step has a {key!r} tag "
                "(every step has step:NAME; others come from the scenario's tags)"
            )
