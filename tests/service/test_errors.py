"""The error envelope: body limit, malformed JSON, validation, unknown routes, bad queries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from minerva_ai.service.app import create_app
from tests.conftest import LiveService, Servers, ThreadedServer, service_config
from tests.service.conftest import Org, assert_error, create_feature, fields_of, new_org

LIMIT = 2048


@pytest.fixture(scope="module")
def errors_org(shared_service: LiveService) -> Org:
    """One organization for the module, with a feature "tagger"; tests add what they need."""
    org = new_org(shared_service)
    with org.client() as http:
        create_feature(http, "tagger")
    return org


@pytest.fixture
def api(errors_org: Org) -> Iterator[httpx.Client]:
    with errors_org.client() as http:
        yield http


@pytest.fixture(scope="module")
def small_limit(errors_org: Org, servers: Servers) -> Iterator[httpx.Client]:
    """A second instance on the same database whose body limit is 2 KiB, as the admin."""
    config = service_config(
        errors_org.service.database_url, servers.redis_url, max_body_bytes=LIMIT
    )
    with (
        ThreadedServer(create_app(config)) as url,
        httpx.Client(
            base_url=url + "/api/platform/ai-management",
            timeout=15,
            headers={
                "Authorization": f"Bearer {errors_org.token}",
                "Content-Type": "application/json",
            },
        ) as http,
    ):
        yield http


WRITES = [
    ("POST", "/features"),
    ("PUT", "/features/tagger/settings"),
    ("POST", "/features/tagger/settings/rollback"),
    ("POST", "/tokens"),
    ("PATCH", "/features/tagger"),
]


def _assert_too_large(response: httpx.Response) -> None:
    error = assert_error(response, 413, "payload_too_large")
    assert "2 KiB" in error["message"] and str(LIMIT) in error["message"]


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_413_by_content_length(small_limit: httpx.Client, method: str, path: str) -> None:
    body = b'{"name": "' + b"a" * LIMIT + b'"}'
    _assert_too_large(small_limit.request(method, path, content=body))


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_413_when_chunked(small_limit: httpx.Client, method: str, path: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"settings": {"prompts": {"p": {"template": "'
        for _ in range(8):
            yield b"x" * 512
        yield b'"}}}, "version": 1}'

    response = small_limit.request(method, path, content=chunks())
    assert "content-length" not in response.request.headers
    _assert_too_large(response)


def test_a_body_at_the_limit_is_read(small_limit: httpx.Client) -> None:
    create_feature(small_limit, "at-limit")
    body = b'{"version": 1, "settings": {"rate_limits": {"requests_per_minute": 5}}}'
    padded = body + b" " * (LIMIT - len(body))
    assert len(padded) == LIMIT
    response = small_limit.put("/features/at-limit/settings", content=padded)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["version"] == 2


def test_the_limit_holds_without_a_token(small_limit: httpx.Client) -> None:
    response = small_limit.post(
        "/features", content=b"x" * (LIMIT + 1), headers={"Authorization": ""}
    )
    _assert_too_large(response)


@pytest.mark.parametrize(("method", "path"), WRITES)
@pytest.mark.parametrize("body", [b"{bad", b'{"name": "x",}', b"\xff\xfe", b"nul"])
def test_malformed_json_is_400(api: httpx.Client, method: str, path: str, body: bytes) -> None:
    response = api.request(method, path, content=body, headers={"Content-Type": "application/json"})
    error = assert_error(response, 400, "bad_request")
    assert "JSON" in error["message"]


def test_a_settings_body_must_be_an_object(api: httpx.Client) -> None:
    error = assert_error(api.put("/features/tagger/settings", json=[1, 2]), 400, "bad_request")
    assert "object" in error["message"]


def test_validation_names_each_field(api: httpx.Client) -> None:
    error = assert_error(
        api.post("/features", json={"name": "Not A Slug", "status": "sleeping", "extra": 1}),
        422,
        "validation_failed",
    )
    assert sorted(fields_of(error)) == ["extra", "name", "status"]
    for problem in error["details"]:
        assert problem["message"]


def test_a_missing_body_names_the_body(api: httpx.Client) -> None:
    error = assert_error(api.post("/features"), 422, "validation_failed")
    assert fields_of(error) == ["body"]


def test_settings_validation_names_each_field(api: httpx.Client) -> None:
    error = assert_error(
        api.put(
            "/features/tagger/settings",
            json={
                "version": 1,
                "settings": {
                    "models": {"definitions": {"main": {"provider": "gemini"}}},
                    "rate_limits": {"requests_per_minute": -5},
                },
            },
        ),
        422,
        "validation_failed",
    )
    assert fields_of(error) == [
        "models.definitions.main.provider",
        "rate_limits.requests_per_minute",
    ]
    assert "models.definitions.main.provider" in error["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/nothing-here",
        "/api/platform/ai-management/nope",
        "/api/platform/ai-management/features/x/nope",
    ],
)
def test_unknown_route_is_404_envelope(shared_service: LiveService, path: str) -> None:
    assert_error(httpx.get(shared_service.url + path), 404, "not_found")


def test_wrong_method_is_405_envelope_with_allow(shared_service: LiveService) -> None:
    response = httpx.delete(shared_service.url + "/api/health")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/features", {"GET", "POST"}),
        ("POST", "/features/tagger", {"GET", "PATCH", "DELETE"}),
        ("OPTIONS", "/features/tagger/settings", {"GET", "PUT"}),
        ("GET", "/features/tagger/settings/rollback", {"POST"}),
        ("OPTIONS", "/features/optimized", {"GET"}),  # a path of its own, not a feature's
    ],
)
def test_allow_lists_every_method_of_the_path(
    shared_service: LiveService, method: str, path: str, allowed: set[str]
) -> None:
    # A path served by one route per method: Starlette alone names only the first route's.
    response = httpx.request(method, shared_service.api + path)
    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].split(", ")) == allowed


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "sleeping"}, "status"),
        ({"include_metrics": "perhaps"}, "include_metrics"),
    ],
)
def test_bad_query_parameter_is_400_naming_it(
    api: httpx.Client, query: dict[str, object], parameter: str
) -> None:
    error = assert_error(api.get("/features", params=query), 400, "bad_request")
    assert fields_of(error) == [f"query parameter {parameter}"]


@pytest.mark.parametrize("cursor", ["!!!", "bm90IGpzb24", "eyJ4IjogMX0", "WzFd"])
def test_malformed_cursor_is_400(api: httpx.Client, cursor: str) -> None:
    for path in ("/features", "/features/tagger/settings/history"):
        error = assert_error(api.get(path, params={"cursor": cursor}), 400, "bad_request")
        assert fields_of(error) == ["query parameter cursor"]


@pytest.mark.parametrize(
    "cursor", ["eyJuIjogNX0", "eyJ2IjogImFiYyJ9", "eyJ2IjogW119", "eyJuIjogbnVsbH0"]
)
def test_a_cursor_of_the_wrong_type_is_400(api: httpx.Client, cursor: str) -> None:
    for path in ("/features", "/features/tagger/settings/history"):
        assert_error(api.get(path, params={"cursor": cursor}), 400, "bad_request")


def test_unauthenticated_is_401_envelope(shared_service: LiveService) -> None:
    for headers in (
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer mnv_unknown"},
    ):
        response = httpx.get(shared_service.api + "/features", headers=headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("method", "path", "params", "body", "status", "field"),
    [
        ("GET", "/features/a%00b", None, None, 400, "path parameter feature"),
        ("GET", "/features", {"search": "a\x00b"}, None, 400, "query parameter search"),
        ("DELETE", "/tokens/%00", None, None, 400, "path parameter token_id"),
        ("POST", "/features", None, {"name": "n", "description": "a\x00"}, 422, "description"),
        ("PATCH", "/features/tagger", None, {"display_name": "\x00"}, 422, "display_name"),
        ("POST", "/tokens", None, {"name": "a\x00b"}, 422, "name"),
    ],
)
def test_a_nul_character_is_refused_naming_where(
    api: httpx.Client, method: str, path: str, params: Any, body: Any, status: int, field: str
) -> None:
    # PostgreSQL cannot store or compare text with NUL: found by schemathesis as 500s.
    response = api.request(method, path, params=params, json=body)
    error = assert_error(response, status, "bad_request" if status == 400 else "validation_failed")
    assert fields_of(error) == [field], error
    assert "NUL" in error["message"]
