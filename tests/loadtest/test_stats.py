"""Histograms merge exactly across processes: encode, decode, add."""

from __future__ import annotations

import pickle
import random

from minerva_ai.loadtest.stats import Stats, summarize


def test_merging_worker_stats_equals_recording_everything_in_one() -> None:
    rng = random.Random(7)
    samples = [rng.lognormvariate(2, 1.5) for _ in range(5000)]
    whole = Stats()
    parts = [Stats(), Stats(), Stats()]
    for index, ms in enumerate(samples):
        error = "timeout" if index % 97 == 0 else None
        whole.step("list", "http").http(ms, error, 100)
        parts[index % 3].step("list", "http").http(ms, error, 100)
    for stats in parts:
        stats.step("feed", "websocket").ws_ok += 2
    parts[1].steps["list"].sample("timeout", "GET /x:\r\n\tno \x1b[31manswer " + "z" * 400)
    parts[2].steps["list"].sample("timeout", "a later one")
    merged = Stats()
    for stats in parts:
        merged.merge_wire(pickle.loads(pickle.dumps(stats.to_wire())))  # noqa: S301 - as from a process
    step = merged.steps["list"]
    assert step.requests == 5000 == sum(p.steps["list"].requests for p in parts)
    assert step.failed == whole.steps["list"].failed
    assert step.errors == whole.steps["list"].errors
    assert step.bytes_received == 500_000
    assert step.duration.get_total_count() == 5000
    assert summarize(step.duration) == summarize(whole.steps["list"].duration)
    assert merged.steps["feed"].ws_ok == 6
    # The first sample of a kind wins, on one printable line of at most 300 characters.
    assert step.samples["timeout"] == ("GET /x: no ?[31manswer " + "z" * 400)[:300]


def test_empty_histogram_summarizes_to_none() -> None:
    assert set(summarize(Stats().step("x", "http").duration).values()) == {None}
