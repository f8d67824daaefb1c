"""The feature registry: create, list (filters, search, pages), show, change, delete."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from minerva_ai.service.feature_settings import empty_settings
from tests.service.conftest import assert_error, create_feature, fields_of, put_settings

FEATURE_KEYS = {
    "id",
    "name",
    "display_name",
    "description",
    "status",
    "created_at",
    "updated_at",
    "settings_version",
}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [f["name"] for f in response.json()["data"]]


def test_create_answers_the_feature_with_settings_version_1(api: httpx.Client) -> None:
    response = api.post(
        "/features",
        json={
            "name": "photo-tagging",
            "display_name": "Photo tagging",
            "description": "Tags uploaded photos",
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True
    feature = body["data"]
    assert set(feature) == FEATURE_KEYS
    assert UUID.match(feature["id"])
    assert feature["name"] == "photo-tagging"
    assert feature["display_name"] == "Photo tagging"
    assert feature["description"] == "Tags uploaded photos"
    assert feature["status"] == "active"
    assert feature["settings_version"] == 1
    assert ISO_Z.match(feature["created_at"]) and feature["created_at"] == feature["updated_at"]

    settings = api.get("/features/photo-tagging/settings").json()["data"]
    assert settings["version"] == 1
    assert settings["settings"] == empty_settings()
    assert settings["feature_id"] == feature["id"]


def test_defaults_of_a_new_feature(api: httpx.Client) -> None:
    feature = create_feature(api, "summarizer", status="maintenance")
    assert feature["display_name"] == "summarizer"
    assert feature["description"] == ""
    assert feature["status"] == "maintenance"


def test_duplicate_name_is_409_and_changes_nothing(api: httpx.Client) -> None:
    first = create_feature(api, "moderation", description="first")
    error = assert_error(
        api.post("/features", json={"name": "moderation", "description": "second"}), 409, "conflict"
    )
    assert "moderation" in error["message"]
    assert api.get("/features/moderation").json()["data"] == first


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Photo Tagging"}, "name"),
        ({"name": "-leading"}, "name"),
        ({"name": "x" * 64}, "name"),
        ({"name": ""}, "name"),
        ({}, "name"),
        ({"name": "ok", "status": "paused"}, "status"),
        ({"name": "ok", "display_name": ""}, "display_name"),
        ({"name": "ok", "description": "x" * 4001}, "description"),
        ({"name": "ok", "owner": "me"}, "owner"),
        ({"name": 5}, "name"),
        ({"name": "123e4567-e89b-12d3-a456-426614174000"}, "name"),  # reads as an id
        ({"name": "123e4567e89b12d3a456426614174000"}, "name"),
    ],
)
def test_invalid_feature_is_422_naming_the_field(
    api: httpx.Client, body: dict[str, Any], field: str
) -> None:
    error = assert_error(api.post("/features", json=body), 422, "validation_failed")
    assert fields_of(error) == [field]
    assert names(api.get("/features")) == []


def test_list_is_ordered_by_name_with_count(api: httpx.Client) -> None:
    for name in ("zeta", "alpha", "mid"):
        create_feature(api, name)
    response = api.get("/features")
    body = response.json()
    assert body["success"] is True
    assert body["count"] == 3
    assert body["next_cursor"] is None
    assert [f["name"] for f in body["data"]] == ["alpha", "mid", "zeta"]
    assert all(set(f) == FEATURE_KEYS for f in body["data"])


def test_list_filters_by_status(api: httpx.Client) -> None:
    create_feature(api, "a", status="active")
    create_feature(api, "b", status="inactive")
    create_feature(api, "c", status="maintenance")
    create_feature(api, "d", status="inactive")
    assert names(api.get("/features", params={"status": "inactive"})) == ["b", "d"]
    assert names(api.get("/features", params={"status": "maintenance"})) == ["c"]
    assert names(api.get("/features")) == ["a", "b", "c", "d"]


def test_search_matches_name_display_name_and_description(api: httpx.Client) -> None:
    create_feature(api, "photo-tagging", display_name="Photo tagging")
    create_feature(api, "moderation", display_name="Content Moderation")
    create_feature(api, "summarizer", description="Summarizes support TICKETS")
    create_feature(api, "other")
    assert names(api.get("/features", params={"search": "PHOTO"})) == ["photo-tagging"]
    assert names(api.get("/features", params={"search": "content mod"})) == ["moderation"]
    assert names(api.get("/features", params={"search": "tickets"})) == ["summarizer"]
    assert names(api.get("/features", params={"search": "o"})) == [
        "moderation",
        "other",
        "photo-tagging",
        "summarizer",
    ]
    assert names(api.get("/features", params={"search": "%"})) == []
    assert names(api.get("/features", params={"search": "_"})) == []
    assert names(api.get("/features", params={"search": "o", "status": "inactive"})) == []


def test_pages_follow_the_cursor(api: httpx.Client) -> None:
    expected = [f"feature-{i:02d}" for i in range(7)]
    for name in reversed(expected):
        create_feature(api, name)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = api.get("/features", params=params).json()
        assert body["count"] == len(body["data"]) <= 3
        seen += [f["name"] for f in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    assert pages == 3


def test_show_by_id_or_name(api: httpx.Client) -> None:
    feature = create_feature(api, "tagger")
    assert api.get(f"/features/{feature['id']}").json()["data"] == feature
    assert api.get("/features/tagger").json()["data"] == feature


@pytest.mark.parametrize("ref", ["nope", "00000000-0000-0000-0000-000000000000"])
def test_unknown_feature_is_404(api: httpx.Client, ref: str) -> None:
    create_feature(api, "tagger")
    for method in ("GET", "PATCH", "DELETE"):
        body = {"status": "inactive"} if method == "PATCH" else None
        assert_error(api.request(method, f"/features/{ref}", json=body), 404, "not_found")


def test_patch_changes_only_the_given_fields(api: httpx.Client) -> None:
    feature = create_feature(api, "tagger", display_name="Tagger", description="tags")
    response = api.patch("/features/tagger", json={"status": "maintenance"})
    assert response.status_code == 200
    changed = response.json()["data"]
    assert changed["status"] == "maintenance"
    assert changed["display_name"] == "Tagger" and changed["description"] == "tags"
    assert changed["name"] == "tagger" and changed["id"] == feature["id"]
    assert changed["updated_at"] > feature["updated_at"]
    assert changed["created_at"] == feature["created_at"]

    by_id = api.patch(
        f"/features/{feature['id']}", json={"display_name": "Photo tagger", "description": ""}
    )
    assert by_id.json()["data"]["display_name"] == "Photo tagger"
    assert by_id.json()["data"]["description"] == ""
    assert api.get("/features/tagger").json()["data"] == by_id.json()["data"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "paused"}, "status"),
        ({"name": "renamed"}, "name"),
        ({"display_name": ""}, "display_name"),
    ],
)
def test_invalid_patch_is_422_and_changes_nothing(
    api: httpx.Client, body: dict[str, Any], field: str
) -> None:
    feature = create_feature(api, "tagger")
    error = assert_error(api.patch("/features/tagger", json=body), 422, "validation_failed")
    assert fields_of(error) == [field]
    assert api.get("/features/tagger").json()["data"] == feature


def test_patch_does_not_touch_settings(api: httpx.Client) -> None:
    create_feature(api, "tagger")
    assert (
        put_settings(api, "tagger", 1, {"rate_limits": {"requests_per_minute": 5}}).status_code
        == 200
    )
    changed = api.patch("/features/tagger", json={"status": "inactive"}).json()["data"]
    assert changed["settings_version"] == 2


def test_delete_removes_the_feature_and_its_settings(api: httpx.Client) -> None:
    feature = create_feature(api, "tagger")
    put_settings(api, "tagger", 1, {"rate_limits": {"requests_per_minute": 5}})
    response = api.delete("/features/tagger")
    assert response.status_code == 200
    assert response.json()["data"] == {"id": feature["id"], "name": "tagger", "deleted": True}
    assert_error(api.get("/features/tagger"), 404, "not_found")
    assert_error(api.get(f"/features/{feature['id']}/settings"), 404, "not_found")
    assert_error(api.get("/features/tagger/settings/history"), 404, "not_found")
    assert names(api.get("/features")) == []
    assert_error(api.delete("/features/tagger"), 404, "not_found")


def test_a_deleted_name_can_be_reused_from_scratch(api: httpx.Client) -> None:
    old = create_feature(api, "tagger")
    put_settings(api, "tagger", 1, {"rate_limits": {"requests_per_minute": 5}})
    api.delete(f"/features/{old['id']}")
    new = create_feature(api, "tagger")
    assert new["id"] != old["id"]
    assert new["settings_version"] == 1
    history = api.get("/features/tagger/settings/history").json()
    assert [h["version"] for h in history["data"]] == [1]
