"""API tokens: who am I, create (secret shown once), list, revoke, last use, hashing."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from tests.service.conftest import Org, assert_error, fields_of

TOKEN = re.compile(r"^mnv_[A-Za-z0-9_-]{43}$")
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def _time(value: str) -> datetime:
    assert ISO_Z.match(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_whoami_names_the_organization_and_the_token(org: Org, api: httpx.Client) -> None:
    response = api.get("/auth/whoami")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["organization"] == {"id": org.id, "name": org.name}
    token = data["token"]
    assert set(token) >= {"id", "name", "scopes", "created_at", "last_used_at"}
    assert token["scopes"] == ["admin"]
    assert token["name"] == "first admin token"
    assert token["revoked_at"] is None
    assert abs(_time(token["last_used_at"]) - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.mark.parametrize("scope", ["read", "ingest", "write", "admin"])
def test_whoami_works_with_every_scope(org: Org, scope: str) -> None:
    with org.client(org.make_token([scope])) as http:
        response = http.get("/auth/whoami")
    assert response.status_code == 200
    assert response.json()["data"]["token"]["scopes"] == [scope]


def test_create_shows_the_secret_once_and_it_works(org: Org, api: httpx.Client) -> None:
    response = api.post("/tokens", json={"name": "ci", "scopes": ["read", "write"]})
    assert response.status_code == 201
    created = response.json()["data"]
    assert TOKEN.match(created["token"]), created["token"]
    assert created["name"] == "ci" and created["scopes"] == ["read", "write"]
    assert created["last_used_at"] is None

    listed = api.get("/tokens").json()
    mine = next(t for t in listed["data"] if t["id"] == created["id"])
    assert "token" not in mine and "token_hash" not in mine
    assert created["token"] not in str(listed)

    with org.client(created["token"]) as http:
        who = http.get("/auth/whoami").json()["data"]
    assert who["token"]["id"] == created["id"]
    assert who["organization"]["id"] == org.id


def test_only_the_hash_of_a_secret_is_stored(org: Org, api: httpx.Client) -> None:
    created = api.post("/tokens", json={"scopes": ["read"]}).json()["data"]
    with psycopg.connect(org.service.database_url) as conn:
        row = conn.execute("SELECT * FROM api_tokens WHERE id = %s", (created["id"],)).fetchone()
        assert row is not None
        assert hashlib.sha256(created["token"].encode()).digest() in row
        assert not any(isinstance(v, str) and created["token"] in v for v in row)


def test_defaults_and_duplicate_scopes(api: httpx.Client) -> None:
    plain = api.post("/tokens", json={}).json()["data"]
    assert plain["scopes"] == ["read"]
    assert plain["name"] == "read token"
    doubled = api.post("/tokens", json={"scopes": ["write", "write", "read"]}).json()["data"]
    assert doubled["scopes"] == ["write", "read"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["superuser"]}, "scopes.0"),
        ({"scopes": ["read", "root"]}, "scopes.1"),
        ({"scopes": []}, "scopes"),
        ({"scopes": "read"}, "scopes"),
        ({"name": ""}, "name"),
        ({"name": "x", "expires": "never"}, "expires"),
    ],
)
def test_invalid_token_requests_are_422(
    api: httpx.Client, body: dict[str, object], field: str
) -> None:
    before = len(api.get("/tokens").json()["data"])
    error = assert_error(api.post("/tokens", json=body), 422, "validation_failed")
    assert field in fields_of(error)
    assert len(api.get("/tokens").json()["data"]) == before


def test_list_shows_every_token_of_the_organization(org: Org, api: httpx.Client) -> None:
    org.make_token(["ingest"])
    api.post("/tokens", json={"name": "ci", "scopes": ["read"]})
    response = api.get("/tokens")
    body = response.json()
    assert body["success"] is True and body["count"] == 3 == len(body["data"])
    assert [t["scopes"] for t in body["data"]] == [["admin"], ["ingest"], ["read"]]
    for token in body["data"]:
        assert set(token) == {"id", "name", "scopes", "created_at", "last_used_at", "revoked_at"}
        _time(token["created_at"])


def test_revoke_stops_the_token_at_once(org: Org, api: httpx.Client) -> None:
    created = api.post("/tokens", json={"scopes": ["write"]}).json()["data"]
    with org.client(created["token"]) as http:
        assert http.get("/features").status_code == 200
        response = api.delete(f"/tokens/{created['id']}")
        assert response.status_code == 200
        revoked = response.json()["data"]
        assert revoked["id"] == created["id"] and revoked["revoked"] is True
        _time(revoked["revoked_at"])
        assert_error(http.get("/features"), 401, "unauthorized")
        assert_error(http.get("/auth/whoami"), 401, "unauthorized")
    listed = next(t for t in api.get("/tokens").json()["data"] if t["id"] == created["id"])
    assert listed["revoked_at"] == revoked["revoked_at"]


def test_revoking_twice_keeps_the_first_time(api: httpx.Client) -> None:
    created = api.post("/tokens", json={"scopes": ["read"]}).json()["data"]
    first = api.delete(f"/tokens/{created['id']}").json()["data"]
    second = api.delete(f"/tokens/{created['id']}")
    assert second.status_code == 200
    assert second.json()["data"]["revoked_at"] == first["revoked_at"]


@pytest.mark.parametrize("ident", ["00000000-0000-0000-0000-000000000000", "not-a-uuid"])
def test_revoking_an_unknown_token_is_404(api: httpx.Client, ident: str) -> None:
    assert_error(api.delete(f"/tokens/{ident}"), 404, "not_found")


def test_an_admin_can_revoke_its_own_token(org: Org, api: httpx.Client) -> None:
    me = api.get("/auth/whoami").json()["data"]["token"]["id"]
    assert api.delete(f"/tokens/{me}").status_code == 200
    assert_error(api.get("/auth/whoami"), 401, "unauthorized")


def test_last_used_at_is_recorded_on_use(org: Org, api: httpx.Client) -> None:
    secret = org.make_token(["read"])
    with org.client(secret) as http:
        token_id = http.get("/auth/whoami").json()["data"]["token"]["id"]

    def last_used() -> str | None:
        tokens = api.get("/tokens").json()["data"]
        value: str | None = next(t for t in tokens if t["id"] == token_id)["last_used_at"]
        return value

    # Age the recorded use past the write throttle, then use the token again.
    with psycopg.connect(org.service.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE api_tokens SET last_used_at = now() - interval '2 hours' WHERE id = %s",
            (token_id,),
        )
    aged = last_used()
    assert aged is not None
    assert datetime.now(UTC) - _time(aged) > timedelta(hours=1)
    with org.client(secret) as http:
        assert http.get("/features").status_code == 200
    fresh = last_used()
    assert fresh is not None
    assert datetime.now(UTC) - _time(fresh) < timedelta(minutes=1)


def test_last_used_at_is_written_at_most_once_a_minute(org: Org, api: httpx.Client) -> None:
    secret = org.make_token(["read"])
    with org.client(secret) as http:
        token_id = http.get("/auth/whoami").json()["data"]["token"]["id"]
    # A use 30 s ago is recent enough: using the token again does not write it.
    with psycopg.connect(org.service.database_url, autocommit=True) as conn:
        recent = conn.execute(
            "UPDATE api_tokens SET last_used_at = now() - interval '30 seconds' WHERE id = %s "
            "RETURNING last_used_at",
            (token_id,),
        ).fetchone()
    assert recent is not None
    with org.client(secret) as http:
        for _ in range(3):
            assert http.get("/features").status_code == 200
    listed = next(t for t in api.get("/tokens").json()["data"] if t["id"] == token_id)
    assert _time(listed["last_used_at"]) == recent[0]


def test_an_unused_token_has_no_last_use(org: Org, api: httpx.Client) -> None:
    created = api.post("/tokens", json={"scopes": ["read"]}).json()["data"]
    listed = next(t for t in api.get("/tokens").json()["data"] if t["id"] == created["id"])
    assert listed["last_used_at"] is None


def test_a_failed_request_with_a_revoked_token_is_not_a_use(org: Org, api: httpx.Client) -> None:
    created = api.post("/tokens", json={"scopes": ["read"]}).json()["data"]
    api.delete(f"/tokens/{created['id']}")
    with org.client(created["token"]) as http:
        assert http.get("/features").status_code == 401
    listed = next(t for t in api.get("/tokens").json()["data"] if t["id"] == created["id"])
    assert listed["last_used_at"] is None
