"""Counters and HDR histograms per step, merged exactly across worker processes."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

# Microseconds, from 1 us to one hour, three significant digits.
LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT = 3
PERCENTILES = (50, 90, 95, 99)
ERROR_KINDS = ("status", "timeout", "connection")
SAMPLE_CHARS = 300
HISTOGRAMS = ("duration", "ws_connecting", "ws_msg_delay")


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT)


def record_ms(histogram: HdrHistogram, milliseconds: float) -> None:
    """Record a duration given in ms (clamped into the histogram's range)."""
    micros = min(max(round(milliseconds * 1000), LOWEST_US), HIGHEST_US)
    histogram.record_value(micros)


def summarize(histogram: HdrHistogram) -> dict[str, float | None]:
    """min, avg, p50, p90, p95, p99, max in milliseconds (None when nothing was recorded)."""
    keys = ("min", "avg", *(f"p{p}" for p in PERCENTILES), "max")
    if histogram.get_total_count() == 0:
        return dict.fromkeys(keys)
    values: dict[str, float | None] = {"min": histogram.get_min_value() / 1000}
    values["avg"] = round(histogram.get_mean_value() / 1000, 3)
    for p in PERCENTILES:
        values[f"p{p}"] = histogram.get_value_at_percentile(p) / 1000
    values["max"] = histogram.get_max_value() / 1000
    return values


def has_tag(name: str, tags: dict[str, str], tag: tuple[str, str]) -> bool:
    """Whether a step carries ``tag``; ``step`` is every step's implicit tag (its name)."""
    key, value = tag
    return {**tags, "step": name}.get(key) == value


def percentile_ms(histogram: HdrHistogram, percentile: float) -> float | None:
    if histogram.get_total_count() == 0:
        return None
    return float(histogram.get_value_at_percentile(percentile)) / 1000


@dataclass
class StepStats:
    """What one step did: HTTP requests or WebSocket sessions."""

    name: str
    kind: str
    tags: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    bytes_received: int = 0
    ws_ok: int = 0
    ws_failed: int = 0
    ws_msgs: int = 0
    samples: dict[str, str] = field(default_factory=dict)  # the first error of each kind
    duration: HdrHistogram = field(default_factory=new_histogram)
    ws_connecting: HdrHistogram = field(default_factory=new_histogram)
    ws_msg_delay: HdrHistogram = field(default_factory=new_histogram)

    def http(self, milliseconds: float, error: str | None, received: int) -> None:
        self.requests += 1
        self.bytes_received += received
        record_ms(self.duration, milliseconds)
        if error is not None:
            self.failed += 1
            self.errors[error] += 1

    def sample(self, kind: str, detail: str) -> None:
        """Keep the first error of ``kind`` (what a user needs to see to fix the cause) on
        one printable line of at most ``SAMPLE_CHARS`` characters."""
        if detail and kind not in self.samples:
            line = "".join(c if c.isprintable() else "?" for c in " ".join(detail.split()))
            self.samples[kind] = line[:SAMPLE_CHARS]

    def to_wire(self) -> dict[str, Any]:
        """A picklable, exact form: counters plus base64 HDR encodings."""
        wire: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "tags": dict(self.tags),
            "requests": self.requests,
            "failed": self.failed,
            "errors": dict(self.errors),
            "bytes_received": self.bytes_received,
            "ws_ok": self.ws_ok,
            "ws_failed": self.ws_failed,
            "ws_msgs": self.ws_msgs,
            "samples": dict(self.samples),
        }
        for name in HISTOGRAMS:
            histogram: HdrHistogram = getattr(self, name)
            wire[name] = base64.b64encode(histogram.encode()).decode("ascii")
        return wire

    def merge_wire(self, wire: dict[str, Any]) -> None:
        for name in ("requests", "failed", "bytes_received", "ws_ok", "ws_failed", "ws_msgs"):
            setattr(self, name, getattr(self, name) + int(wire[name]))
        for kind, count in wire["errors"].items():
            self.errors[kind] = self.errors.get(kind, 0) + int(count)
        for kind, detail in wire["samples"].items():
            self.sample(kind, detail)
        for name in HISTOGRAMS:
            other = HdrHistogram.decode(base64.b64decode(wire[name]))
            if other.get_total_count():  # adding an empty one would make min 0
                getattr(self, name).add(other)


class Stats:
    """All steps of one run, by step name."""

    def __init__(self) -> None:
        self.steps: dict[str, StepStats] = {}

    def step(self, name: str, kind: str, tags: dict[str, str] | None = None) -> StepStats:
        if name not in self.steps:
            self.steps[name] = StepStats(name, kind, dict(tags or {}))
        return self.steps[name]

    def select(self, tag: tuple[str, str] | None = None) -> list[StepStats]:
        """Steps matching ``tag`` (``step`` is every step's implicit tag); all when None."""
        if tag is None:
            return list(self.steps.values())
        return [s for s in self.steps.values() if has_tag(s.name, s.tags, tag)]

    @staticmethod
    def combined(steps: list[StepStats], name: str) -> HdrHistogram:
        merged = new_histogram()
        for s in steps:
            histogram = getattr(s, name)
            if histogram.get_total_count():  # adding an empty one would make min 0
                merged.add(histogram)
        return merged

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.steps.values())

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.steps.values())

    def to_wire(self) -> list[dict[str, Any]]:
        return [s.to_wire() for s in self.steps.values()]

    def merge_wire(self, wire: list[dict[str, Any]]) -> None:
        for item in wire:
            self.step(item["name"], item["kind"], item["tags"]).merge_wire(item)
