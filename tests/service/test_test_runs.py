"""The shared response cache of ``POST /features/{id}/test`` and the suite runs of
``/test-runs``: what is cached and what is not, what a hit spares, and what a stored run
must agree with."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from minerva_ai.core.fingerprint import fingerprint
from tests.conftest import LiveService
from tests.service.conftest import assert_error, client, create_feature, put_settings

SIM = {"provider": "simulator", "latency_ms": 1, "seed": 2}
SECTIONS = {
    "models": {
        "primary": "sim",
        "definitions": {"sim": SIM, "broken": {**SIM, "error_rate": 1}},
    },
    "rate_limits": {"requests_per_minute": 1},
}


@pytest.fixture
def api(live_service: LiveService) -> Any:
    with client(live_service) as http:
        create_feature(http, "f")
        assert put_settings(http, "f", 1, SECTIONS).status_code == 200
        yield http


def test_a_hit_spares_the_model_the_log_and_the_rate_limit(api: httpx.Client) -> None:
    first = api.post("/features/f/test", json={"content": "hi", "cache": True}).json()["data"]
    assert first["cached"] is False
    logs = api.get("/logs").json()["count"]
    # the limit (one a minute) is used up, yet the same call answers from the cache
    hit = api.post("/features/f/test", json={"content": "hi", "cache": True}).json()["data"]
    assert hit["cached"] is True and hit["id"] != first["id"]
    assert hit["output"] == first["output"]  # the original latency and cost
    assert api.get("/logs").json()["count"] == logs
    assert api.get(f"/tests/{hit['id']}").json()["data"]["cached"] is True
    # without cache (or with another input, or another repeat index): a model call, limited
    assert_error(api.post("/features/f/test", json={"content": "hi"}), 429, "rate_limited")
    again = {"content": "hi", "cache": True, "repeat": 1}
    assert_error(api.post("/features/f/test", json=again), 429, "rate_limited")


def test_errors_are_never_cached(api: httpx.Client) -> None:
    assert put_settings(api, "f", 2, {"rate_limits": {}}).status_code == 200
    call = {"content": "hi", "cache": True, "modelId": "broken"}
    for _ in range(2):
        result = api.post("/features/f/test", json=call).json()["data"]
        assert result["status"] == "error" and result["cached"] is False


def test_the_result_has_the_fingerprint_of_its_models_and_prompts(api: httpx.Client) -> None:
    assert put_settings(api, "f", 2, {"rate_limits": {}}).status_code == 200
    result = api.post("/features/f/test", json={"content": "x"}).json()["data"]
    settings = api.get("/features/f/settings").json()["data"]["settings"]
    assert result["fingerprint"] == fingerprint(settings)
    # rate limits are not part of it
    assert fingerprint({**settings, "rate_limits": {"requests_per_minute": 5}}) == fingerprint(
        settings
    )


def run_body(**changes: Any) -> dict[str, Any]:
    case = {
        "name": "a",
        "combination": {},
        "status": "fail",
        "runs": 1,
        "repeat": 1,
        "passed_runs": 0,
        "flaky": False,
        "latency_ms": 1.0,
        "cost": 0.0,
        "model": "sim",
        "cached": 0,
        "score": 0.0,
        "failures": [{"type": "contains", "expected": 'contains "x"', "actual": '"y"'}],
        "error": None,
        "test_ids": [],
    }
    body = {
        "feature": "f",
        "suite": "suite.yaml",
        "suite_hash": "a" * 64,
        "fingerprint": "b" * 64,
        "status": "failed",
        "pass_rate": 0,
        "required_pass_rate": 100,
        "totals": {"cases": 1, "passed": 0, "failed": 1, "errors": 0, "cached": 0},
        "duration_ms": 5,
        "cases": [case],
    }
    return {**body, **changes}


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"status": "passed"}, "status: is passed; the pass rate and cases say failed"),
        ({"pass_rate": 50}, "pass_rate: is 50; the cases say 0.0000"),
        (
            {"totals": {"cases": 2, "passed": 0, "failed": 1, "errors": 0, "cached": 0}},
            "totals.cases: is 2; the cases say 1",
        ),
        ({"suite_hash": "xyz"}, "suite_hash"),
        ({"status": "unknown"}, "status"),
    ],
)
def test_a_run_that_contradicts_itself_is_422(
    api: httpx.Client, changes: dict[str, Any], says: str
) -> None:
    error = assert_error(api.post("/test-runs", json=run_body(**changes)), 422, "validation_failed")
    assert says in error["message"]


def test_runs_are_listed_filtered_and_paged(api: httpx.Client) -> None:
    ids = [api.post("/test-runs", json=run_body()).json()["data"]["id"] for _ in range(3)]
    other = run_body(suite_hash="c" * 64)
    ids.append(api.post("/test-runs", json=other).json()["data"]["id"])
    first = api.get("/test-runs", params={"limit": 2}).json()
    second = api.get("/test-runs", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [r["id"] for r in first["data"] + second["data"]] == ids[::-1]
    assert "cases" not in first["data"][0] or first["data"][0]["cases"] is None
    by_hash = api.get("/test-runs", params={"suite_hash": "c" * 64}).json()["data"]
    assert [r["id"] for r in by_hash] == [ids[3]]
    assert api.get("/test-runs", params={"status": "passed"}).json()["data"] == []
    live = fingerprint(api.get("/features/f/settings").json()["data"]["settings"])
    matching = api.post("/test-runs", json=run_body(fingerprint=live)).json()["data"]
    assert matching["live"] is True
    found = api.get("/test-runs", params={"feature_id": "f", "fingerprint": "live"}).json()
    assert [r["id"] for r in found["data"]] == [matching["id"]]
    assert_error(api.get("/test-runs", params={"fingerprint": "live"}), 400, "bad_request")
    assert_error(api.get("/test-runs", params={"fingerprint": "zz"}), 400, "bad_request")
    assert_error(api.get("/test-runs", params={"cursor": "nope"}), 400, "bad_request")
    assert_error(api.get("/test-runs", params={"feature_id": "ghost"}), 404, "not_found")
    assert_error(api.get("/test-runs/not-a-uuid"), 404, "not_found")
