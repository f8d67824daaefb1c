"""Tests through real provider wire formats, end to end: the service calls a loopback
OpenAI-compatible and Anthropic server (allowed by MINERVA_PROVIDER_ALLOW), and the key it
sends is never stored, returned, exported or logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from minerva_ai.service import admin
from minerva_ai.service.app import create_app
from minerva_ai.service.providers.policy import AddressPolicy
from tests.conftest import Servers, ThreadedServer, scratch_database, service_config
from tests.providers_support import FakeProvider
from tests.service.conftest import create_feature, put_settings
from tests.service.test_model_tests import result

SECRET = "sk-live-SECRET-4f9a1c2e7b"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(slow_s=1.0) as provider:
        yield provider


@pytest.fixture(scope="module")
def allowed(servers: Servers) -> Iterator[tuple[str, str, str]]:
    """A service that may call loopback providers: (API URL, admin token, database URL)."""
    with scratch_database(servers, "minerva_prov") as database_url:
        config = service_config(
            database_url, servers.redis_url, provider_allow=AddressPolicy.parse("127.0.0.1")
        )
        issued = admin.create_organization(database_url, "prov")
        with ThreadedServer(create_app(config)) as url:
            yield url + "/api/platform/ai-management", issued.token, database_url


@pytest.fixture
def http(allowed: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    api, token, _ = allowed
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        yield c


def openai(fake: FakeProvider, model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"provider": "openai", "model": model, "base_url": fake.url + "/v1", **extra}


def anthropic(fake: FakeProvider, model: str = "claude-3-5-haiku-latest") -> dict[str, Any]:
    return {"provider": "anthropic", "model": model, "base_url": fake.url}


def with_models(http: httpx.Client, name: str, primary: str, *fallbacks: str, **defs: Any) -> None:
    create_feature(http, name)
    sections = {"models": {"primary": primary, "fallbacks": list(fallbacks), "definitions": defs}}
    assert put_settings(http, name, 1, sections).status_code == 200


def test_openai_and_anthropic_through_the_service(http: httpx.Client, fake: FakeProvider) -> None:
    with_models(
        http,
        "real",
        "gpt",
        "claude",
        gpt=openai(fake, "gpt-4o-unauthorized"),
        claude=anthropic(fake),
    )
    data = result(http, "real", content="a red bicycle")
    assert data["status"] == "success" and data["simulated"] is False
    assert (data["model"], data["provider"]) == ("claude", "anthropic")
    assert data["output"]["response"] == "echo: a red bicycle"
    first = data["attempts"][0]
    assert first["status"] == "error" and first["error"]["http_status"] == 401
    assert "Incorrect API key provided" in first["error"]["message"]
    assert data["tokens"] == {"input": 3, "output": 4}
    assert data["output"]["cost"] == pytest.approx((3 * 0.80 + 4 * 4.00) / 1e6)
    sent = [r for r in fake.requests if r.path == "/v1/messages"][-1]
    assert sent.headers["x-api-key"] == SECRET


def test_a_slow_provider_is_a_timeout_result(http: httpx.Client, fake: FakeProvider) -> None:
    with_models(http, "slow", "s", s=openai(fake, "gpt-slow", timeout_s=0.2))
    data = result(http, "slow", content="x")
    assert data["status"] == "timeout" and data["error"]["kind"] == "timeout"


def test_loopback_is_refused_without_the_allow_list(api: httpx.Client, fake: FakeProvider) -> None:
    # `api` is the shared service: no MINERVA_PROVIDER_ALLOW.
    with_models(api, "local", "vllm", vllm=openai(fake))
    before = len(fake.requests)
    data = result(api, "local", content="x")
    assert data["status"] == "error" and data["error"]["kind"] == "refused"
    assert "MINERVA_PROVIDER_ALLOW" in data["error"]["message"]
    assert len(fake.requests) == before


def test_the_key_is_never_stored_returned_exported_or_logged(
    http: httpx.Client,
    fake: FakeProvider,
    allowed: tuple[str, str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with_models(
        http,
        "secret",
        "leak",
        "ok",
        leak=openai(fake, "gpt-leaky"),
        ok=openai(fake),
    )
    answers = [http.post("/features/secret/test", json={"content": "hi"}) for _ in range(2)]
    assert all(a.status_code == 200 for a in answers)
    assert "[redacted]" in answers[0].json()["data"]["attempts"][0]["error"]["message"]
    assert any(SECRET in r.headers.get("authorization", "") for r in fake.requests)
    seen = [a.text for a in answers]
    seen.append(http.get("/features/secret/test/history").text)
    seen.append(http.get(f"/tests/{answers[0].json()['data']['id']}").text)
    seen.append(http.get("/logs", params={"feature": "secret"}).text)
    for fmt in ("json", "jsonl", "csv"):
        seen.append(http.get("/logs/export", params={"feature": "secret", "format": fmt}).text)
    seen.append(http.get("/features/secret/settings").text)
    assert all(SECRET not in text for text in seen)
    with psycopg.connect(allowed[2]) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        ]
        dump = "".join(
            str(conn.execute(f'SELECT array_agg(t::text) FROM "{table}" t').fetchone())
            for table in tables
        )
    assert "gpt-leaky" in dump  # the dump has the tests
    assert SECRET not in dump
    assert SECRET not in caplog.text
