"""Metrics for people and scripts: windows, columns, sparklines and the sort orders of
``features metrics``, ``features list --with-metrics`` and ``features top``.

Without rich: only ``features top``'s live view (``cli/top.py``) imports it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from minerva_ai.cli.output import Column, format_time, style
from minerva_ai.core.errors import ConfigError

JSON = dict[str, Any]
_SPAN = re.compile(r"^([1-9]\d*)([mhd])$")
SPARKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 60
# `features top --sort` and its keys; every order puts what needs attention first.
SORT_KEYS = ("status", "name", "rpm", "errors", "p95", "cost")
# The worst first: an open alert's status (from the alerts issue on) sorts with `error`.
STATUS_RANK = {"error": 0, "warning": 1, "healthy": 2, "no_data": 3}
STATUS_STYLES = {"healthy": "green", "warning": "yellow", "error": "red", "no_data": "dim"}
TREND_ARROWS = {"up": "↑ up", "down": "↓ down", "flat": "→ flat"}


def parse_span(value: str) -> str:
    """``--window`` and ``--step``: a whole number of minutes, hours or days (``5m``, ``1h``,
    ``7d``), returned as given; anything else is a ``ConfigError`` (exit 2)."""
    text = value.strip()
    if not _SPAN.match(text):
        raise ConfigError(
            f"invalid span {value!r}: expected a whole number of minutes, hours or days "
            "(e.g. 5m, 1h, 7d)"
        )
    return text


def span_minutes(span: str) -> int:
    number, unit = _SPAN.match(span).groups()  # type: ignore[union-attr]
    return int(number) * {"m": 1, "h": 60, "d": 1440}[unit]


def _fixed(digits: int, suffix: str = "") -> Callable[[Any], str]:
    def render(value: Any) -> str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return f"{value:,.{digits}f}{suffix}"
        return str(value)

    return render


PERCENT = _fixed(1)
MS = _fixed(0)
COST = _fixed(4)
CURRENT_FIELDS = [
    Column("feature", "FEATURE"),
    Column("window", "WINDOW"),
    Column("as_of", "AS OF", kind="time"),
    Column("status", "STATUS", styles=STATUS_STYLES),
    Column("health_score", "HEALTH", render=PERCENT),
    Column("trend", "TREND"),
    Column("requests", "REQUESTS"),
    Column("successes", "SUCCESSES"),
    Column("errors", "ERRORS"),
    Column("timeouts", "TIMEOUTS"),
    Column("requests_per_minute", "REQ/MIN", render=_fixed(2)),
    Column("success_rate", "SUCCESS %", render=PERCENT),
    Column("error_rate", "ERROR %", render=PERCENT),
    Column("uptime", "UPTIME %", render=PERCENT),
    Column("response_time", "AVG MS", render=MS),
    Column("p50_ms", "P50 MS", render=MS),
    Column("p95_ms", "P95 MS", render=MS),
    Column("p99_ms", "P99 MS", render=MS),
    Column("cost", "COST", render=COST),
    Column("tokens", "TOKENS"),
]
# The short form: a model's row in `features metrics --by model`, a `--watch` line.
SUMMARY_COLUMNS = [
    Column("status", "STATUS", styles=STATUS_STYLES),
    Column("health_score", "HEALTH", render=PERCENT),
    Column("trend", "TREND"),
    Column("requests", "REQUESTS"),
    Column("requests_per_minute", "REQ/MIN", render=_fixed(2)),
    Column("error_rate", "ERROR %", render=PERCENT),
    Column("p95_ms", "P95 MS", render=MS),
    Column("cost", "COST", render=COST),
]
MODEL_COLUMNS = [Column("model", "MODEL"), *SUMMARY_COLUMNS]
WATCH_COLUMNS = [Column("as_of", "AS OF", kind="time"), *SUMMARY_COLUMNS]
# One row per step (and model): -o csv and jsonl of `features metrics`; raw numbers.
SERIES_COLUMNS = [
    Column("time", "TIME", kind="time"),
    *(
        Column(key, key.upper())
        for key in (
            "requests",
            "successes",
            "errors",
            "timeouts",
            "requests_per_minute",
            "success_rate",
            "error_rate",
            "uptime",
            "response_time",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "cost",
            "tokens",
            "tokens_in",
            "tokens_out",
            "health_score",
            "trend",
            "status",
        )
    ),
]
MODEL_SERIES_COLUMNS = [Column("model", "MODEL"), *SERIES_COLUMNS]
# `features list --with-metrics`: a word for the status, whatever the colour says.
LIST_METRICS_COLUMNS = [
    Column("metrics.health_score", "HEALTH", render=PERCENT),
    Column("metrics.trend", "TREND"),
    Column("metrics.status", "HEALTH STATUS", styles=STATUS_STYLES),
    Column("metrics.open_alerts", "ALERTS"),
]
# `features top`: a row per feature; ALERTS counts its open alerts.
TOP_COLUMNS = [
    Column("feature", "FEATURE"),
    Column("status", "STATUS", styles=STATUS_STYLES),
    Column("requests_per_minute", "REQ/MIN", render=_fixed(1)),
    Column("error_rate", "ERROR %", render=PERCENT),
    Column("p95_ms", "P95 MS", render=MS),
    Column("cost", "COST", render=COST),
    Column("health_score", "HEALTH", render=PERCENT),
    Column("trend", "TREND"),
    Column("open_alerts", "ALERTS"),
]


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else -1.0


def sort_features(
    metrics: Iterable[Mapping[str, Any]], key: str, reverse: bool = False
) -> list[Any]:
    """Features in ``key`` order (``SORT_KEYS``): the worst status, the busiest, the most
    errors, the slowest or the dearest first; by name A-Z. ``reverse`` flips it. Ties and
    missing figures go by name."""
    if key not in SORT_KEYS:
        raise ConfigError(f"unknown sort key {key!r} (use: {', '.join(SORT_KEYS)})")
    figure = {"rpm": "requests_per_minute", "errors": "error_rate", "p95": "p95_ms", "cost": "cost"}
    by_name = sorted(metrics, key=lambda m: str(m.get("feature") or ""))
    if key == "name":
        ordered = by_name
    elif key == "status":
        ordered = sorted(by_name, key=lambda m: STATUS_RANK.get(str(m.get("status")), 4))
    else:
        ordered = sorted(by_name, key=lambda m: -_number(m.get(figure[key])))
    return list(reversed(ordered)) if reverse else ordered


def series_rows(series: Mapping[str, Any]) -> list[JSON]:
    """The points of a series answer as rows; with ``models``, each point with its model."""
    models = series.get("models")
    if isinstance(models, list):
        return [
            {"model": model.get("model"), **point}
            for model in models
            for point in model.get("points") or []
        ]
    return list(series.get("points") or [])


def _resample(
    values: Sequence[float | None], width: int, merge: Callable[..., float]
) -> list[float | None]:
    if len(values) <= width:
        return list(values)
    chunks = [
        values[i * len(values) // width : (i + 1) * len(values) // width] for i in range(width)
    ]
    return [
        merge(known) if (known := [v for v in chunk if v is not None]) else None for chunk in chunks
    ]


def sparkline(
    values: Sequence[float | None], width: int = SPARK_WIDTH, merge: Callable[..., float] = sum
) -> str:
    """``▁▂▃▅▇█`` from 0 to the largest value, at most ``width`` characters (neighbouring
    steps merged: summed, or ``max`` for latencies); a step without a figure is a space."""
    points = _resample(values, width, merge)
    top = max((v for v in points if v is not None), default=0.0)
    last = len(SPARKS) - 1
    return "".join(
        " " if v is None else SPARKS[round(v / top * last) if top > 0 else 0] for v in points
    )


@dataclass(frozen=True)
class Spark:
    """A sparkline of one figure of a series."""

    label: str
    key: str
    merge: Callable[..., float]


SPARKS_SHOWN = [
    Spark("requests", "requests", sum),
    Spark("errors", "errors", sum),
    Spark("p95 ms", "p95_ms", max),
]


def _figure(point: Mapping[str, Any], key: str) -> float | None:
    value = point.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def sparkline_table(points: Sequence[Mapping[str, Any]], width: int = SPARK_WIDTH) -> str:
    """A line per series (requests, errors, p95): its label, its sparkline over ``points``
    (a step without a figure stays blank, in place) and the largest value it reached."""
    label_width = max(len(spark.label) for spark in SPARKS_SHOWN)
    lines = []
    for spark in SPARKS_SHOWN:
        values = [_figure(p, spark.key) for p in points]
        top = max((v for v in values if v is not None), default=0.0)
        line = sparkline(values, width, spark.merge)
        lines.append(f"{spark.label.ljust(label_width)}  {line}  max {MS(top)}")
    return "\n".join(lines)


class WatchPrinter:
    """``features metrics --watch``: a line per update (a header first, on a terminal
    only), TSV when piped, or one JSON object per line."""

    def __init__(self, stream: TextIO, *, tty: bool, color: bool, utc: bool, json: bool) -> None:
        self.stream = stream
        self.tty = tty
        self.color = color
        self.local = tty and not utc
        self.json = json
        self._header_shown = False

    def _cell(self, column: Column, value: Any) -> str:
        if value is None:
            return "-" if self.tty else ""
        if column.kind == "time":
            return format_time(value, local=self.local)
        return column.render(value) if column.render else str(value)

    def update(self, metrics: Mapping[str, Any]) -> None:
        if self.json:
            import orjson

            self.stream.write(orjson.dumps(metrics).decode() + "\n")
        elif self.tty:
            widths = [max(len(c.header), 19 if c.kind == "time" else 8) for c in WATCH_COLUMNS]
            if not self._header_shown:
                headers = [c.header.ljust(w) for c, w in zip(WATCH_COLUMNS, widths, strict=True)]
                self.stream.write(style("  ".join(headers).rstrip(), "bold", enabled=self.color))
                self.stream.write("\n")
                self._header_shown = True
            cells = []
            for column, width in zip(WATCH_COLUMNS, widths, strict=True):
                text = self._cell(column, metrics.get(column.key))
                padded = text.ljust(width)
                cells.append(style(padded, column.styles.get(text, ""), enabled=self.color))
            self.stream.write("  ".join(cells).rstrip() + "\n")
        else:
            cells = [self._cell(c, metrics.get(c.key)) for c in WATCH_COLUMNS]
            self.stream.write("\t".join(cells) + "\n")
        self.stream.flush()
