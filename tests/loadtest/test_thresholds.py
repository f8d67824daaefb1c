"""Threshold expressions: the grammar, its errors, and evaluation on real histograms."""

from __future__ import annotations

import pytest

from minerva_ai.core.errors import UsageError
from minerva_ai.loadtest.stats import Stats
from minerva_ai.loadtest.thresholds import parse_threshold


def sample_stats() -> Stats:
    stats = Stats()
    listing = stats.step("list", "http", {"kind": "read"})
    for ms in range(1, 101):  # 1..100 ms
        listing.http(float(ms), None, 10)
    ingest = stats.step("ingest", "http", {"kind": "write"})
    for index in range(10):
        ingest.http(500.0, "status" if index < 2 else None, 10)
    feed = stats.step("feed", "websocket")
    feed.ws_ok, feed.ws_failed = 3, 1
    return stats


@pytest.mark.parametrize(
    ("expr", "observed", "ok"),
    [
        ("http_req_duration{step:list}:p(95)<300", 95.0, True),
        ("http_req_duration{kind:write}:avg<=400", 500.0, False),
        ("http_req_duration:max<1000", 500.0, True),
        ("http_req_duration:min>=1", 1.0, True),
        ("http_req_failed:rate<0.01", 2 / 110, False),
        ("http_req_failed{step:list}:count==0", 0.0, True),
        ("http_reqs:count>100", 110.0, True),
        ("http_reqs:rate>50", 55.0, True),
        ("ws_sessions:rate<0.5", 0.25, True),
        ("ws_connecting:p(95)<200", None, False),
    ],
)
def test_threshold_evaluation(expr: str, observed: float | None, ok: bool) -> None:
    check = parse_threshold(expr).check(sample_stats(), duration_s=2.0)
    assert check["expr"] == expr
    assert check["ok"] is ok
    if observed is None:
        assert check["observed"] is None  # nothing measured never passes
    else:
        assert check["observed"] == pytest.approx(observed, rel=1e-3)


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("http_req_duration:p95<500", "invalid threshold"),
        ("http_req_durations:p(95)<500", "unknown metric 'http_req_durations'"),
        ("http_req_failed:p(95)<1", "http_req_failed takes rate, count"),
        ("http_req_duration:p(0)<1", "0 < N <= 100"),
        ("http_req_duration:p(95)<<1", "invalid threshold"),
        ("http_req_duration{step}:p(95)<1", "invalid threshold"),
    ],
)
def test_bad_expressions_show_the_grammar(expr: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_threshold(expr)
    assert problem in str(caught.value)
    assert "threshold := METRIC" in str(caught.value)
