"""Organizations and scopes on every endpoint: another organization's feature is a 404,
an organization_id that is not the token's is a 403, and each scope allows only its own."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from minerva_ai.core.protocol import API_PREFIX
from minerva_ai.service.app import create_app
from tests.conftest import LiveService
from tests.service.conftest import (
    Org,
    assert_error,
    create_feature,
    expect,
    new_org,
    send,
    ws_open,
)

NO_TEST = "00000000-0000-0000-0000-000000000001"  # a test id no organization has


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {feature}, {version}, {token_id} and {webhook_id} are filled in per test
    scope: str  # the scope it needs
    body: Any = None
    query: tuple[tuple[str, str], ...] = ()  # query parameters, filled in like the path
    streaming: bool = False  # an answer that does not end: read only its status

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    def call(
        self,
        http: httpx.Client,
        feature: str = "tagger",
        token_id: str = "",
        params: dict[str, str] | None = None,
        webhook_id: str = "00000000-0000-0000-0000-000000000000",
        alert_id: str = "00000000-0000-0000-0000-000000000000",
        silence_id: str = "00000000-0000-0000-0000-000000000000",
        test_id: str = NO_TEST,
        run_id: str = NO_TEST,
    ) -> httpx.Response:
        fields = {
            "feature": feature,
            "token_id": token_id,
            "version": 1,
            "webhook_id": webhook_id,
            "rule": "errors",
            "alert_id": alert_id,
            "silence_id": silence_id,
            "test_id": test_id,
            "run_id": run_id,
        }

        def fill(value: Any) -> Any:  # "{feature}-copy": a name of the test's own
            if isinstance(value, str):
                return value.format(**fields)
            if isinstance(value, dict):
                return {k: fill(v) for k, v in value.items()}
            if isinstance(value, list):
                return [fill(v) for v in value]
            return value

        query = {k: fill(v) for k, v in self.query} | (params or {})
        path = self.path.format(**fields)
        if not self.streaming:
            return http.request(self.method, path, json=fill(self.body), params=query)
        with http.stream(self.method, path, params=query) as response:
            if response.status_code != 200:
                response.read()
            return response


SETTINGS = {"version": 2, "settings": {"rate_limits": {"cost_per_day": 1}}}
# A test on a candidate simulator model: runs on any feature, changes none.
SIMULATED = {"provider": "simulator", "latency_ms": 0}
TEST_CALL = {
    "content": "hi",
    "settings": {"models": {"primary": "sim", "definitions": {"sim": SIMULATED}}},
}
# A suite run of no case (0 of 0 passed, 0 required): valid for any feature.
TEST_RUN = {
    "feature": "{feature}",
    "suite_hash": "a" * 64,
    "fingerprint": "b" * 64,
    "status": "passed",
    "pass_rate": 0,
    "required_pass_rate": 0,
    "totals": {"cases": 0, "passed": 0, "failed": 0, "errors": 0, "cached": 0},
    "duration_ms": 1,
    "cases": [],
}
# Made when the module loads: minutes old when sent, well within the retention window.
LOG_ENTRY = {
    "timestamp": datetime.now(UTC).isoformat(),
    "feature": "{feature}",
    "level": "info",
    "message": "from the isolation matrix",
}
BY_FEATURE = (("feature", "{feature}"),)
SILENCE = {"feature": "{feature}", "duration": "1h", "comment": "from the isolation matrix"}
ALERT_RULE = {"name": "errors", "metric": "error_rate", "operator": ">", "threshold": 5}
# A name that never resolves (.invalid): accepted, and no delivery leaves the machine.
WEBHOOK = {"name": "{feature}-hook", "url": "https://hooks.example.invalid/{feature}"}

FEATURE_ENDPOINTS = [
    Endpoint("GET", "/features/{feature}", "read"),
    Endpoint("PATCH", "/features/{feature}", "write", {"status": "inactive"}),
    Endpoint("DELETE", "/features/{feature}", "write"),
    Endpoint("GET", "/features/{feature}/settings", "read"),
    Endpoint("PUT", "/features/{feature}/settings", "write", SETTINGS),
    Endpoint("GET", "/features/{feature}/settings/history", "read"),
    Endpoint("GET", "/features/{feature}/settings/versions/{version}", "read"),
    Endpoint("POST", "/features/{feature}/settings/rollback", "write", {"version": 1}),
    Endpoint("GET", "/features/{feature}/metrics/current", "read"),
    Endpoint("GET", "/features/{feature}/alert-rules", "read"),
    Endpoint("GET", "/features/{feature}/alert-rules/{rule}/evaluation", "read"),
    Endpoint("GET", "/alerts", "read", query=BY_FEATURE),
    Endpoint("GET", "/features/{feature}/metrics", "read"),
    Endpoint("GET", "/features/{feature}/metrics/stream", "read", streaming=True),
    Endpoint("POST", "/features/{feature}/test", "write", TEST_CALL),
    Endpoint("GET", "/features/{feature}/test/history", "read"),
    Endpoint("POST", "/test-runs", "write", TEST_RUN),
    Endpoint("GET", "/test-runs", "read", query=(("feature_id", "{feature}"),)),
    Endpoint("GET", "/logs", "read", query=BY_FEATURE),
    Endpoint("GET", "/logs/export", "read", query=BY_FEATURE),
    Endpoint("GET", "/logs/stream", "read", query=BY_FEATURE, streaming=True),
]
OTHER_ENDPOINTS = [
    Endpoint("GET", "/features", "read"),
    Endpoint("GET", "/features/optimized", "read"),
    Endpoint("GET", "/metrics/stream", "read", streaming=True),
    Endpoint("POST", "/features", "write", {"name": "{feature}-copy"}),
    Endpoint("GET", "/auth/whoami", "any"),
    Endpoint("GET", "/tokens", "admin"),
    Endpoint("POST", "/tokens", "admin", {"scopes": ["read"]}),
    Endpoint("DELETE", "/tokens/{token_id}", "admin"),
    Endpoint("POST", "/logs", "ingest", [LOG_ENTRY]),
    Endpoint("GET", "/alerts/transitions", "read"),
    Endpoint("GET", "/alerts/{alert_id}", "read"),
    Endpoint("POST", "/alerts/{alert_id}/acknowledge", "write"),
    Endpoint("POST", "/alerts/{alert_id}/resolve", "write"),
    Endpoint("POST", "/silences", "write", SILENCE),
    Endpoint("GET", "/silences", "read"),
    Endpoint("DELETE", "/silences/{silence_id}", "write"),
    Endpoint("GET", "/webhooks", "read"),
    Endpoint("POST", "/webhooks", "admin", WEBHOOK),
    Endpoint("DELETE", "/webhooks/{webhook_id}", "admin"),
    Endpoint("POST", "/webhooks/{webhook_id}/rotate-secret", "admin"),
    Endpoint("POST", "/webhooks/{webhook_id}/test", "admin"),
    Endpoint("GET", "/tests/{test_id}", "read"),
    Endpoint("GET", "/test-runs/{run_id}", "read"),
]
ENDPOINTS = FEATURE_ENDPOINTS + OTHER_ENDPOINTS


def test_the_matrix_covers_every_endpoint_of_the_service(shared_service: LiveService) -> None:
    paths = create_app(shared_service.config).openapi()["paths"]
    served = {
        f"{method.upper()} {path.removeprefix(API_PREFIX)}"
        for path, operations in paths.items()
        if path.startswith(API_PREFIX)
        for method in operations
    }
    covered = {str(e) for e in ENDPOINTS}
    assert served == covered, (
        "add new endpoints to the isolation and scope matrix in tests/service/test_isolation.py"
    )


@dataclass
class World:
    """Organizations "mine" and "theirs", each with a feature "tagger" at settings version 2,
    and "outsider" with no feature; shared by the module's tests, which change nothing of
    it (they assert so) or only what they create for themselves."""

    mine: Org
    theirs: Org
    outsider: Org
    my_feature: dict[str, Any]
    their_feature: dict[str, Any]
    my_token_id: str
    tokens: dict[str, str]  # a token of mine per scope

    def token_of(self, scope: str) -> str:
        if scope not in self.tokens:
            with self.mine.client() as http:
                response = http.post("/tokens", json={"scopes": [scope]})
            self.tokens[scope] = response.json()["data"]["token"]
        return self.tokens[scope]


def tagger_at_v2(http: httpx.Client, name: str = "tagger") -> dict[str, Any]:
    feature = create_feature(http, name)
    sections = {"prompts": {"p": {"template": name}}, "monitoring": {"alert_rules": [ALERT_RULE]}}
    settings = {"version": 1, "settings": sections}
    assert http.put(f"/features/{name}/settings", json=settings).status_code == 200
    return feature


@pytest.fixture(scope="module")
def world(shared_service: LiveService) -> World:
    mine, theirs = new_org(shared_service), new_org(shared_service)
    with mine.client() as http:
        my_feature = tagger_at_v2(http)
        create_feature(http, "mine-only", description="unique-marker")
        token_id = http.get("/auth/whoami").json()["data"]["token"]["id"]
    with theirs.client() as http:
        their_feature = tagger_at_v2(http)
    return World(mine, theirs, new_org(shared_service), my_feature, their_feature, token_id, {})


def snapshot(org: Org) -> dict[str, Any]:
    """Everything of an organization an endpoint could change."""
    with org.client() as http:
        features = http.get("/features").json()["data"]
        settings = {
            f["name"]: http.get(f"/features/{f['id']}/settings/history").json()["data"]
            for f in features
        }
        tokens = [
            (t["id"], t["name"], t["scopes"], t["revoked_at"])
            for t in http.get("/tokens").json()["data"]
        ]  # last use aside
        logs = http.get("/logs", params={"limit": 1000}).json()["data"]
        webhooks = http.get("/webhooks").json()["data"]
        runs = http.get("/test-runs").json()["data"]
    return {
        "features": features,
        "settings": settings,
        "tokens": tokens,
        "logs": logs,
        "webhooks": webhooks,
        "test_runs": runs,
    }


@pytest.mark.parametrize("endpoint", FEATURE_ENDPOINTS, ids=str)
@pytest.mark.parametrize("by", ["id", "name"])
def test_another_organizations_feature_is_404(world: World, endpoint: Endpoint, by: str) -> None:
    # By id from "theirs", which has a "tagger" of its own; by name from "outsider".
    caller = world.theirs if by == "id" else world.outsider
    ref = world.my_feature["id"] if by == "id" else "tagger"
    unknown = "00000000-0000-0000-0000-000000000000" if by == "id" else "ghost"
    before = snapshot(world.mine)
    with caller.client() as http:
        error = assert_error(endpoint.call(http, ref), 404, "not_found")
        ghost = assert_error(endpoint.call(http, unknown), 404, "not_found")
    # indistinguishable from a feature that does not exist at all
    assert error["message"].replace(ref, unknown) == ghost["message"]
    assert error["details"] == ghost["details"]
    assert snapshot(world.mine) == before


@pytest.mark.parametrize("endpoint", [e for e in FEATURE_ENDPOINTS if e.scope == "write"], ids=str)
def test_a_name_means_the_callers_own_feature(world: World, endpoint: Endpoint) -> None:
    other = new_org(world.mine.service)
    with other.client() as http:
        tagger_at_v2(http)
    before = snapshot(world.mine)
    with other.client() as http:
        response = endpoint.call(http, "tagger")
    assert response.status_code in (200, 201), response.text
    assert snapshot(world.mine) == before


def test_another_organizations_test_is_404(world: World) -> None:
    with world.mine.client() as http:
        mine = http.post("/features/tagger/test", json=TEST_CALL).json()["data"]["id"]
    with world.theirs.client() as http:
        error = assert_error(http.get(f"/tests/{mine}"), 404, "not_found")
        ghost = assert_error(http.get(f"/tests/{NO_TEST}"), 404, "not_found")
    assert error["message"].replace(mine, NO_TEST) == ghost["message"]


def test_another_organizations_test_run_is_404_and_unlisted(world: World) -> None:
    with world.mine.client() as http:
        created = http.post("/test-runs", json={**TEST_RUN, "feature": "tagger"})
        mine = created.json()["data"]["id"]
        test_id = http.post("/features/tagger/test", json=TEST_CALL).json()["data"]["id"]
    with world.theirs.client() as http:
        error = assert_error(http.get(f"/test-runs/{mine}"), 404, "not_found")
        ghost = assert_error(http.get(f"/test-runs/{NO_TEST}"), 404, "not_found")
        assert mine not in {r["id"] for r in http.get("/test-runs").json()["data"]}
        # a test of another organization cannot be referenced by a run
        case = {
            "name": "a",
            "combination": {},
            "status": "pass",
            "runs": 1,
            "repeat": 1,
            "passed_runs": 1,
            "flaky": False,
            "latency_ms": 1.0,
            "cost": 0.0,
            "model": "sim",
            "cached": 0,
            "score": 1.0,
            "failures": [],
            "error": None,
            "test_ids": [test_id],
        }
        totals = {"cases": 1, "passed": 1, "failed": 0, "errors": 0, "cached": 0}
        body = {**TEST_RUN, "feature": "tagger", "cases": [case], "totals": totals}
        refused = assert_error(
            http.post("/test-runs", json={**body, "pass_rate": 100}), 422, "validation_failed"
        )
        assert "1 of 1 test ids are not tests of feature 'tagger'" in refused["message"]
    assert error["message"].replace(mine, NO_TEST) == ghost["message"]


def test_lists_and_search_show_only_the_callers_features(world: World) -> None:
    with world.theirs.client() as http:
        listed = http.get("/features").json()
        assert [f["id"] for f in listed["data"]] == [world.their_feature["id"]]
        assert listed["count"] == 1
        assert http.get("/features", params={"search": "unique-marker"}).json()["data"] == []
    with world.mine.client() as http:
        found = http.get("/features", params={"search": "unique-marker"}).json()["data"]
        assert [f["name"] for f in found] == ["mine-only"]


def test_tokens_are_listed_and_revoked_only_in_their_organization(world: World) -> None:
    with world.theirs.client() as http:
        theirs = http.get("/tokens").json()["data"]
        assert world.my_token_id not in {t["id"] for t in theirs}
        assert_error(http.delete(f"/tokens/{world.my_token_id}"), 404, "not_found")
        me = http.get("/auth/whoami").json()["data"]
        assert me["organization"] == {"id": world.theirs.id, "name": world.theirs.name}
    with world.mine.client() as http:
        assert http.get("/auth/whoami").status_code == 200
        mine = {t["id"] for t in http.get("/tokens").json()["data"]}
    assert world.my_token_id in mine
    assert not mine & {t["id"] for t in theirs}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_an_organization_id_that_is_not_the_tokens_is_403(world: World, endpoint: Endpoint) -> None:
    before = snapshot(world.mine)
    with world.mine.client() as http:
        for claimed in (world.theirs.id, world.theirs.name, "someone-else"):
            response = endpoint.call(
                http, token_id=world.my_token_id, params={"organization_id": claimed}
            )
            assert_error(response, 403, "organization_mismatch")
    assert snapshot(world.mine) == before


@pytest.mark.parametrize("claimed", ["id", "name"])
def test_the_tokens_own_organization_id_is_accepted(world: World, claimed: str) -> None:
    value = world.mine.id if claimed == "id" else world.mine.name
    with world.mine.client() as http:
        response = http.get("/features", params={"organization_id": value})
        assert response.status_code == 200
        assert response.json()["data"] == http.get("/features").json()["data"]
        assert world.my_feature["id"] in {f["id"] for f in response.json()["data"]}
        shown = http.get("/features/tagger", params={"organization_id": value})
        assert shown.status_code == 200


# Which scopes may call an endpoint that needs a scope: write implies read, admin all.
SCOPES = ("ingest", "read", "write", "admin")
ALLOWED = {
    "read": {"read", "write", "admin"},
    "ingest": {"ingest", "write", "admin"},
    "write": {"write", "admin"},
    "admin": {"admin"},
    "any": {"read", "ingest", "write", "admin"},
}
DENIED = [(e, s) for e in ENDPOINTS for s in SCOPES if s not in ALLOWED[e.scope]]
GRANTED = [(e, s) for e in ENDPOINTS for s in SCOPES if s in ALLOWED[e.scope]]


@pytest.mark.parametrize(("endpoint", "scope"), DENIED, ids=str)
def test_a_token_without_the_scope_is_403_and_changes_nothing(
    world: World, endpoint: Endpoint, scope: str
) -> None:
    token = world.token_of(scope)
    before = snapshot(world.mine)
    with world.mine.client(token) as http:
        response = endpoint.call(http, token_id=world.my_token_id)
        error = assert_error(response, 403, "forbidden")
    assert error["details"] == {"required_scope": endpoint.scope}
    assert snapshot(world.mine) == before


@pytest.mark.parametrize(("endpoint", "scope"), GRANTED, ids=str)
def test_a_token_with_the_scope_is_let_through(
    world: World, endpoint: Endpoint, scope: str
) -> None:
    # A feature and a token of this test's own, so that writes and revokes change only them.
    name = f"t-{uuid.uuid4().hex[:8]}"
    with world.mine.client() as http:
        tagger_at_v2(http, name)
        victim = http.post("/tokens", json={"scopes": ["read"]}).json()["data"]["id"]
        hook = {"id": "00000000-0000-0000-0000-000000000000"}
        if "{webhook_id}" in endpoint.path:
            hook = http.post("/webhooks", json={**WEBHOOK, "name": f"{name}-own"}).json()["data"]
        silence = http.post("/silences", json={**SILENCE, "feature": name}).json()["data"]["id"]
        test_id = http.post(f"/features/{name}/test", json=TEST_CALL).json()["data"]["id"]
        run = http.post("/test-runs", json={**TEST_RUN, "feature": name}).json()["data"]["id"]
    alert = open_alert(world.mine, name)
    with world.mine.client(world.token_of(scope)) as http:
        response = endpoint.call(
            http,
            name,
            token_id=victim,
            webhook_id=hook["id"],
            alert_id=alert,
            silence_id=silence,
            test_id=test_id,
            run_id=run,
        )
    assert response.status_code in (200, 201), response.text


def open_alert(org: Org, feature: str) -> str:
    """An open alert of the feature's rule, as the evaluator would have opened it."""
    with psycopg.connect(org.service.database_url) as conn:
        row = conn.execute(
            "INSERT INTO alerts (organization_id, feature_id, rule, metric, state, severity,"
            " settings_version, opened_at)"
            " SELECT organization_id, id, 'errors', 'error_rate', 'open', 'warning', 2, now()"
            " FROM features WHERE organization_id = %s AND name = %s RETURNING id",
            (org.id, feature),
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_another_organizations_alerts_and_silences_are_404(world: World) -> None:
    alert = open_alert(world.mine, "tagger")
    with world.mine.client() as http:
        made = http.post("/silences", json={**SILENCE, "feature": "tagger"})
        silence = made.json()["data"]["id"]
    with world.theirs.client() as http:
        for response in (
            http.get(f"/alerts/{alert}"),
            http.post(f"/alerts/{alert}/acknowledge"),
            http.post(f"/alerts/{alert}/resolve"),
            http.delete(f"/silences/{silence}"),
        ):
            assert_error(response, 404, "not_found")
        assert alert not in {a["id"] for a in http.get("/alerts").json()["data"]}
        assert silence not in {s["id"] for s in http.get("/silences").json()["data"]}
    with world.mine.client() as http:
        assert http.get(f"/alerts/{alert}").json()["data"]["state"] == "open"
        assert http.post(f"/alerts/{alert}/resolve").status_code == 200


def test_an_ingest_token_can_neither_read_nor_change_settings(world: World) -> None:
    token = world.mine.make_token(["ingest"])
    with world.mine.client(token) as http:
        for response in (
            http.get("/features/tagger/settings"),
            http.get("/features/tagger/settings", headers={"If-None-Match": '"v2"'}),
            http.put("/features/tagger/settings", json={"version": 2, "settings": {}}),
            http.put(
                "/features/tagger/settings", json={"settings": {}}, headers={"If-Match": '"v2"'}
            ),
        ):
            assert_error(response, 403, "forbidden")
    with world.mine.client() as http:
        assert http.get("/features/tagger/settings").json()["data"]["version"] == 2


@pytest.mark.parametrize("channel", ["settings", "logs"])
def test_websocket_subscriptions_respect_organization_and_scope(world: World, channel: str) -> None:
    async def scenario() -> None:
        async with ws_open(world.mine.service, world.theirs.token) as ws:
            await expect(ws, "authenticated")
            await send(ws, "subscribe", channel=channel, feature=world.my_feature["id"])
            assert (await expect(ws, "error"))["code"] == "not_found"
            await send(ws, "subscribe", channel=channel, feature="tagger")
            subscribed = await expect(ws, "subscribed")
            assert subscribed["feature_id"] == world.their_feature["id"]
        ingest = world.mine.make_token(["ingest"])
        async with ws_open(world.mine.service, ingest) as ws:
            await expect(ws, "authenticated")
            await send(ws, "subscribe", channel=channel, feature="tagger")
            assert (await expect(ws, "error"))["code"] == "forbidden"
            if channel == "logs":  # nor the whole organization's logs
                await send(ws, "subscribe", channel="logs")
                assert (await expect(ws, "error"))["code"] == "forbidden"

    asyncio.run(scenario())


def _entry(feature: str, message: str) -> dict[str, Any]:
    return {**LOG_ENTRY, "feature": feature, "message": message}


def test_logs_are_ingested_only_into_the_callers_features(world: World) -> None:
    before = snapshot(world.mine)
    ghost = "00000000-0000-0000-0000-000000000000"
    with world.theirs.client() as http:
        mine = assert_error(
            http.post("/logs", json=[_entry(world.my_feature["id"], "x")]),
            422,
            "validation_failed",
        )
        unknown = assert_error(
            http.post("/logs", json=[_entry(ghost, "x")]), 422, "validation_failed"
        )
        # indistinguishable from a feature that does not exist at all
        assert mine["message"].replace(world.my_feature["id"], ghost) == unknown["message"]
        assert mine["details"][0]["field"] == "feature"
        # a name means the caller's own feature
        stored = http.post("/logs", json=[_entry("tagger", "theirs")]).json()["data"]
        assert stored["stored"] == 1
        assert [e["feature"] for e in http.get("/logs").json()["data"]][:1] == ["tagger"]
    with world.outsider.client() as http:
        assert_error(http.post("/logs", json=[_entry("tagger", "x")]), 422, "validation_failed")
    assert snapshot(world.mine) == before


def test_log_reads_see_only_the_callers_organization(world: World) -> None:
    mark = uuid.uuid4().hex
    with world.mine.client() as http:
        assert http.post("/logs", json=[_entry("tagger", f"mine {mark}")]).status_code == 200
    with world.theirs.client() as http:
        assert http.post("/logs", json=[_entry("tagger", f"theirs {mark}")]).status_code == 200
        for path in ("/logs", "/logs/export"):
            text = http.get(path, params={"q": mark}).text
            assert f"theirs {mark}" in text and f"mine {mark}" not in text, path

    async def stream() -> None:
        headers = {"Authorization": f"Bearer {world.theirs.token}"}
        async with (
            httpx.AsyncClient(base_url=world.theirs.service.api, headers=headers) as client,
            client.stream("GET", "/logs/stream", params={"after": "0", "q": mark}) as response,
        ):
            lines = response.aiter_lines()
            async with asyncio.timeout(10):
                while not (line := await anext(lines)).startswith("data:"):
                    pass
            assert f"theirs {mark}" in line  # mine, ingested first, would have come first

    asyncio.run(stream())
