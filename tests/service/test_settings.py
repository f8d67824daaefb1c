"""Versioned settings: optimistic writes, ETags, history with diffs, versions, rollback."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from minerva_ai.service.feature_settings import empty_settings
from tests.service.conftest import Org, assert_error, create_feature, fields_of, put_settings

MODELS = {
    "primary": "main",
    "fallbacks": ["sim"],
    "definitions": {
        "main": {"provider": "openai", "model": "gpt-4o-mini"},
        "sim": {"provider": "simulator", "latency_ms": 10},
    },
}
PROMPTS = {"tag": {"template": "Tags for {{ description }}"}}


def current(api: httpx.Client, feature: str = "tagger") -> dict[str, Any]:
    response = api.get(f"/features/{feature}/settings")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def history(api: httpx.Client, feature: str = "tagger") -> list[dict[str, Any]]:
    response = api.get(f"/features/{feature}/settings/history")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["data"]
    return items


def written(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    assert response.headers["etag"] == f'"v{data["version"]}"'
    return data


@pytest.fixture
def tagger(api: httpx.Client) -> dict[str, Any]:
    return create_feature(api, "tagger")


def test_a_new_feature_reads_version_1_with_an_etag(
    org: Org, api: httpx.Client, tagger: dict[str, Any]
) -> None:
    response = api.get("/features/tagger/settings")
    assert response.status_code == 200
    assert response.headers["etag"] == '"v1"'
    data = response.json()["data"]
    assert set(data) == {"feature_id", "version", "settings", "created_at", "author"}
    assert data["feature_id"] == tagger["id"]
    assert data["version"] == 1
    assert data["settings"] == empty_settings()
    me = api.get("/auth/whoami").json()["data"]["token"]
    assert data["author"] == {"token_id": me["id"], "token_name": me["name"]}
    assert api.get(f"/features/{tagger['id']}/settings").json()["data"] == data


def test_put_records_a_new_version_by_its_author(
    org: Org, api: httpx.Client, tagger: dict[str, Any]
) -> None:
    writer = org.make_token(["write"])
    with org.client(writer) as http:
        me = http.get("/auth/whoami").json()["data"]["token"]
        data = written(put_settings(http, "tagger", 1, {"models": MODELS}))
    assert data["version"] == 2
    assert data["author"] == {"token_id": me["id"], "token_name": me["name"]}
    assert data["settings"]["models"]["primary"] == "main"
    assert current(api) == data
    assert api.get("/features/tagger").json()["data"]["settings_version"] == 2


def test_only_the_sections_in_the_body_are_replaced(api: httpx.Client, tagger: Any) -> None:
    written(
        put_settings(
            api,
            "tagger",
            1,
            {"prompts": PROMPTS, "rate_limits": {"requests_per_minute": 5, "cost_per_day": 2}},
        )
    )
    data = written(put_settings(api, "tagger", 2, {"rate_limits": {"tokens_per_minute": 9}}))
    settings = data["settings"]
    assert settings["prompts"] == PROMPTS  # kept: absent from the body
    assert settings["rate_limits"] == {"tokens_per_minute": 9}  # replaced whole, not merged
    assert settings["models"] == empty_settings()["models"]
    assert settings["monitoring"] == empty_settings()["monitoring"]


def test_a_write_without_a_base_version_is_428(api: httpx.Client, tagger: Any) -> None:
    response = api.put(
        "/features/tagger/settings", json={"settings": {"rate_limits": {"cost_per_day": 1}}}
    )
    error = assert_error(response, 428, "precondition_required")
    assert "If-Match" in error["message"] and "version" in error["message"]
    assert current(api)["version"] == 1
    assert len(history(api)) == 1


@pytest.mark.parametrize("header", ['"v1"', 'W/"v1"'])
def test_if_match_carries_the_base_version(api: httpx.Client, tagger: Any, header: str) -> None:
    response = api.put(
        "/features/tagger/settings",
        json={"settings": {"rate_limits": {"cost_per_day": 1}}},
        headers={"If-Match": header},
    )
    assert written(response)["version"] == 2


def test_a_stale_if_match_is_409_with_the_current_version(api: httpx.Client, tagger: Any) -> None:
    written(put_settings(api, "tagger", 1, {"rate_limits": {"cost_per_day": 1}}))
    response = api.put(
        "/features/tagger/settings",
        json={"settings": {"rate_limits": {"cost_per_day": 2}}},
        headers={"If-Match": '"v1"'},
    )
    error = assert_error(response, 409, "version_conflict")
    assert error["details"] == {"current_version": 2}
    assert current(api)["settings"]["rate_limits"] == {"cost_per_day": 1}


def test_a_stale_body_version_is_409_and_writes_nothing(api: httpx.Client, tagger: Any) -> None:
    written(put_settings(api, "tagger", 1, {"rate_limits": {"cost_per_day": 1}}))
    written(put_settings(api, "tagger", 2, {"rate_limits": {"cost_per_day": 2}}))
    for stale in (1, 2, 7):
        error = assert_error(
            put_settings(api, "tagger", stale, {"prompts": PROMPTS}), 409, "version_conflict"
        )
        assert error["details"]["current_version"] == 3
        assert "3" in error["message"]
    assert current(api)["version"] == 3
    assert len(history(api)) == 3


def test_a_malformed_if_match_is_400(api: httpx.Client, tagger: Any) -> None:
    response = api.put(
        "/features/tagger/settings", json={"settings": {}}, headers={"If-Match": "yesterday"}
    )
    assert_error(response, 400, "bad_request")
    assert current(api)["version"] == 1


@pytest.mark.parametrize("version", ["1", 0, -1, True, 1.5, [1]])
def test_a_base_version_that_is_not_a_positive_integer_is_422(
    api: httpx.Client, tagger: Any, version: Any
) -> None:
    response = api.put("/features/tagger/settings", json={"version": version, "settings": {}})
    error = assert_error(response, 422, "validation_failed")
    assert fields_of(error) == ["version"]


def test_unknown_body_fields_are_422(api: httpx.Client, tagger: Any) -> None:
    response = api.put(
        "/features/tagger/settings",
        json={"version": 1, "settings": {}, "rate_limits": {"cost_per_day": 1}},
    )
    assert fields_of(assert_error(response, 422, "validation_failed")) == ["rate_limits"]


def test_a_failed_update_writes_nothing(api: httpx.Client, tagger: Any) -> None:
    written(put_settings(api, "tagger", 1, {"prompts": PROMPTS}))
    before, before_history = current(api), history(api)
    response = put_settings(
        api,
        "tagger",
        2,
        {
            "prompts": {"tag": {"template": "changed {{ x }}"}},  # valid on its own
            "rate_limits": {"requests_per_minute": -1},  # invalid
        },
    )
    error = assert_error(response, 422, "validation_failed")
    assert fields_of(error) == ["rate_limits.requests_per_minute"]
    assert current(api) == before
    assert history(api) == before_history
    assert api.get("/features/tagger").json()["data"]["settings_version"] == 2


def test_stored_settings_are_normalised(api: httpx.Client, tagger: Any) -> None:
    data = written(put_settings(api, "tagger", 1, {"models": MODELS}))
    main = data["settings"]["models"]["definitions"]["main"]
    assert main["api_key_env"] == "OPENAI_API_KEY"
    assert main["timeout_s"] == 30
    assert current(api)["settings"] == data["settings"]


def test_if_none_match_answers_304_until_the_version_changes(
    api: httpx.Client, tagger: Any
) -> None:
    for tag in ('"v1"', 'W/"v1"', '"v0", "v1"', "*"):
        response = api.get("/features/tagger/settings", headers={"If-None-Match": tag})
        assert response.status_code == 304, tag
        assert response.content == b""
        assert response.headers["etag"] == '"v1"'
    written(put_settings(api, "tagger", 1, {"rate_limits": {"cost_per_day": 1}}))
    response = api.get("/features/tagger/settings", headers={"If-None-Match": '"v1"'})
    assert response.status_code == 200
    assert response.headers["etag"] == '"v2"'
    assert response.json()["data"]["version"] == 2
    again = api.get("/features/tagger/settings", headers={"If-None-Match": '"v2"'})
    assert again.status_code == 304


def race(org: Org, base: int, writers: int) -> list[httpx.Response]:
    """``writers`` threads PUT on the same base version at the same moment."""
    barrier = threading.Barrier(writers)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def write(n: int) -> None:
        with org.client() as http:
            http.get("/auth/whoami")  # connected before the race starts
            barrier.wait(10)
            response = put_settings(
                http, "tagger", base, {"rate_limits": {"requests_per_minute": 100 * base + n}}
            )
        with lock:
            results.append(response)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == writers
    return results


def test_concurrent_writes_on_one_base_exactly_one_wins(org: Org, tagger: Any) -> None:
    for base in (1, 2, 3):
        results = race(org, base, 2)
        assert sorted(r.status_code for r in results) == [200, 409]
        winner = next(r for r in results if r.status_code == 200).json()["data"]
        loser = next(r for r in results if r.status_code == 409).json()["error"]
        assert winner["version"] == base + 1
        assert loser["code"] == "version_conflict"
        assert loser["details"] == {"current_version": base + 1}
    with org.client() as http:
        assert [h["version"] for h in history(http)] == [4, 3, 2, 1]


def test_many_concurrent_writers_one_winner(org: Org, tagger: Any) -> None:
    results = race(org, 1, 6)
    assert sorted(r.status_code for r in results) == [200] + [409] * 5
    with org.client() as http:
        assert current(http)["version"] == 2
        assert len(history(http)) == 2


def test_history_is_newest_first_with_diffs(org: Org, api: httpx.Client, tagger: Any) -> None:
    writer = org.make_token(["write"])
    with org.client(writer) as http:
        written(put_settings(http, "tagger", 1, {"rate_limits": {"requests_per_minute": 5}}))
    written(put_settings(api, "tagger", 2, {"rate_limits": {"requests_per_minute": 6}}))
    written(put_settings(api, "tagger", 3, {"rate_limits": {"cost_per_day": 1.5}}))
    items = history(api)
    assert [h["version"] for h in items] == [4, 3, 2, 1]
    for item in items:
        assert set(item) == {"version", "created_at", "author", "diff", "rollback_of"}
        assert item["rollback_of"] is None
    assert items[3]["diff"] == []
    assert items[2]["diff"] == [
        {"path": "rate_limits.requests_per_minute", "op": "add", "old": None, "new": 5}
    ]
    assert items[1]["diff"] == [
        {"path": "rate_limits.requests_per_minute", "op": "change", "old": 5, "new": 6}
    ]
    assert items[0]["diff"] == [
        {"path": "rate_limits.cost_per_day", "op": "add", "old": None, "new": 1.5},
        {"path": "rate_limits.requests_per_minute", "op": "remove", "old": 6, "new": None},
    ]
    with org.client(writer) as http:
        writer_name = http.get("/auth/whoami").json()["data"]["token"]["name"]
    assert items[2]["author"]["token_name"] == writer_name
    assert items[1]["author"]["token_name"] == "first admin token"
    assert items[0]["created_at"] >= items[1]["created_at"] >= items[3]["created_at"]


def test_history_pages_follow_the_cursor(api: httpx.Client, tagger: Any) -> None:
    for version in range(1, 6):
        written(put_settings(api, "tagger", version, {"rate_limits": {"cost_per_day": version}}))
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        body = api.get("/features/tagger/settings/history", params=params).json()
        assert body["count"] == len(body["data"]) <= 2
        seen += [h["version"] for h in body["data"]]
        if body["next_cursor"] is None:
            break
        params = {"limit": 2, "cursor": body["next_cursor"]}
    assert seen == [6, 5, 4, 3, 2, 1]


def test_a_version_reads_as_it_was(api: httpx.Client, tagger: Any) -> None:
    v2 = written(put_settings(api, "tagger", 1, {"prompts": PROMPTS}))
    written(put_settings(api, "tagger", 2, {"prompts": {}}))
    response = api.get("/features/tagger/settings/versions/2")
    assert response.status_code == 200
    assert response.headers["etag"] == '"v2"'
    assert response.json()["data"] == v2
    first = api.get(f"/features/{tagger['id']}/settings/versions/1").json()["data"]
    assert first["settings"] == empty_settings()
    assert_error(api.get("/features/tagger/settings/versions/9"), 404, "not_found")
    assert_error(api.get("/features/tagger/settings/versions/two"), 400, "bad_request")
    assert_error(api.get("/features/tagger/settings/versions/0"), 400, "bad_request")


def test_rollback_creates_a_new_version_equal_to_the_old(api: httpx.Client, tagger: Any) -> None:
    v2 = written(put_settings(api, "tagger", 1, {"models": MODELS, "prompts": PROMPTS}))
    written(put_settings(api, "tagger", 2, {"prompts": {}, "rate_limits": {"cost_per_day": 3}}))
    response = api.post("/features/tagger/settings/rollback", json={"version": 2})
    rolled = written(response)
    assert rolled["version"] == 4
    assert rolled["settings"] == v2["settings"]
    assert current(api) == rolled
    items = history(api)
    assert [h["version"] for h in items] == [4, 3, 2, 1]
    assert items[0]["rollback_of"] == 2
    assert {d["path"] for d in items[0]["diff"]} == {"prompts.tag", "rate_limits.cost_per_day"}
    assert items[1]["rollback_of"] is None
    # the versions before stay as they were
    assert api.get("/features/tagger/settings/versions/3").json()["data"]["settings"][
        "rate_limits"
    ] == {"cost_per_day": 3}


def test_rollback_to_version_1_empties_the_settings(api: httpx.Client, tagger: Any) -> None:
    written(put_settings(api, "tagger", 1, {"models": MODELS}))
    rolled = written(api.post("/features/tagger/settings/rollback", json={"version": 1}))
    assert rolled["version"] == 3
    assert rolled["settings"] == empty_settings()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"version": 9}, 422, "validation_failed"),
        ({}, 422, "validation_failed"),
        ({"version": "1"}, 422, "validation_failed"),
        ({"version": 0}, 422, "validation_failed"),
        ({"version": 1, "base_version": 1}, 409, "version_conflict"),
        ({"version": 1, "base_version": "2"}, 422, "validation_failed"),
        ({"version": 1, "base_version": 0}, 422, "validation_failed"),
        ({"version": 1, "to": 2}, 422, "validation_failed"),  # unknown field
        ({"version": 2**31}, 422, "validation_failed"),
    ],
)
def test_a_refused_rollback_writes_nothing(
    api: httpx.Client, tagger: Any, body: dict[str, Any], status: int, code: str
) -> None:
    written(put_settings(api, "tagger", 1, {"prompts": PROMPTS}))
    before = history(api)
    assert_error(api.post("/features/tagger/settings/rollback", json=body), status, code)
    assert history(api) == before
    assert current(api)["version"] == 2


@pytest.mark.parametrize(
    "body",
    [{"version": 1, "base_version": None}, {"version": 1.0, "base_version": 2.0}],
    ids=["null base_version is no base", "integral numbers are integers"],
)
def test_a_rollback_takes_its_documented_body(api: httpx.Client, tagger: Any, body: Any) -> None:
    written(put_settings(api, "tagger", 1, {"prompts": PROMPTS}))
    rolled = written(api.post("/features/tagger/settings/rollback", json=body))
    assert (rolled["version"], rolled["settings"]) == (3, empty_settings())


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/features/ghost/settings", None),
        ("PUT", "/features/ghost/settings", {"version": 1, "settings": {}}),
        ("GET", "/features/ghost/settings/history", None),
        ("GET", "/features/ghost/settings/versions/1", None),
        ("POST", "/features/ghost/settings/rollback", {"version": 1}),
    ],
)
def test_settings_of_an_unknown_feature_are_404(
    api: httpx.Client, method: str, path: str, body: Any
) -> None:
    assert_error(api.request(method, path, json=body), 404, "not_found")


def test_a_write_that_changes_nothing_records_no_version(
    org: Org, api: httpx.Client, tagger: Any
) -> None:
    written(put_settings(api, "tagger", 1, {"rate_limits": {"cost_per_day": 100.0}}))
    same = put_settings(api, "tagger", 2, {"rate_limits": {"cost_per_day": 100}})
    assert same.status_code == 200
    assert same.json()["data"]["version"] == 2
    assert [h["version"] for h in history(api)] == [2, 1]


def test_dry_run_validates_and_diffs_without_writing(
    org: Org, api: httpx.Client, tagger: Any
) -> None:
    bad = api.put(
        "/features/tagger/settings",
        params={"dry_run": "true"},
        json={"version": 1, "settings": {"rate_limits": {"requests_per_minute": -5}}},
    )
    assert_error(bad, 422, "validation_failed")
    good = api.put(
        "/features/tagger/settings",
        params={"dry_run": "true"},
        json={"version": 1, "settings": {"rate_limits": {"requests_per_minute": 5}}},
    )
    data = good.json()["data"]
    assert data["dry_run"] is True and data["version"] == 2
    assert data["diff"] == [
        {"path": "rate_limits.requests_per_minute", "op": "add", "old": None, "new": 5}
    ]
    assert current(api)["version"] == 1
    assert [h["version"] for h in history(api)] == [1]
