"""POST /features/{id}/test, GET /features/{id}/test/history, GET /tests/{id}: the result,
prompts (NAME@N, variables), candidate settings, images, fallbacks, stored history, the
attempts as log entries, and every bad input named."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import psycopg

from tests.providers_support import PNG
from tests.service.conftest import assert_error, create_feature, fields_of, put_settings

SIM = {"provider": "simulator", "latency_ms": 1, "seed": 3}


def feature_with(api: httpx.Client, name: str, **sections: Any) -> dict[str, Any]:
    feature = create_feature(api, name)
    if sections:
        response = put_settings(api, name, 1, sections)
        assert response.status_code == 200, response.text
    return feature


def models(primary: str = "sim", fallbacks: tuple[str, ...] = (), **definitions: Any) -> Any:
    return {
        "primary": primary,
        "fallbacks": list(fallbacks),
        "definitions": definitions or {"sim": SIM},
    }


def run(api: httpx.Client, feature: str, **body: Any) -> httpx.Response:
    return api.post(f"/features/{feature}/test", json=body)


def result(api: httpx.Client, feature: str, **body: Any) -> dict[str, Any]:
    response = run(api, feature, **body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def test_a_model_test_is_the_plans_result_and_is_kept(api: httpx.Client) -> None:
    sim = {**SIM, "latency_ms": 20, "output": "tags: {{ input }}"}
    feature = feature_with(api, "tagger", models=models(sim=sim))
    data = result(api, "tagger", type="model", content="a cat on a mat")
    assert data["status"] == "success"
    assert data["output"]["response"] == "tags: a cat on a mat"
    # the simulated 20 ms, within the event loop's 1 ms timer resolution
    assert data["output"]["processingTime"] >= 19
    assert data["output"]["cost"] == 0
    assert data["tokens"] == {"input": 5, "output": 5}  # about four characters a token
    assert (data["model"], data["provider"], data["simulated"]) == ("sim", "simulator", True)
    assert data["settings_version"] == 2 and data["candidate_hash"] is None
    assert data["rendered_prompt"] == "a cat on a mat"
    assert data["feature_id"] == feature["id"] and data["error"] is None
    assert [a["status"] for a in data["attempts"]] == ["success"]
    shown = api.get(f"/tests/{data['id']}").json()["data"]
    assert shown == data
    history = api.get("/features/tagger/test/history").json()
    assert [t["id"] for t in history["data"]] == [data["id"]]
    logs = api.get("/logs", params={"feature": "tagger", "source": "test"}).json()["data"]
    assert len(logs) == 1
    entry = logs[0]
    assert (entry["request_id"], entry["model"], entry["status"]) == (
        data["request_id"],
        "sim",
        "success",
    )
    assert (entry["tokens_in"], entry["tokens_out"]) == (5, 5)
    assert entry["attributes"]["test_id"] == data["id"]


def test_fallbacks_answer_when_the_primary_fails(api: httpx.Client) -> None:
    chain = models(
        "broken",
        ("late", "backup"),
        broken={**SIM, "error_rate": 1},
        late={**SIM, "timeout_rate": 1, "timeout_s": 0.05},
        backup={**SIM, "output": "from the backup"},
    )
    feature_with(api, "fb", models=chain)
    data = result(api, "fb", content="hi")
    assert data["status"] == "success" and data["model"] == "backup"
    assert data["output"]["response"] == "from the backup"
    assert [(a["model"], a["status"]) for a in data["attempts"]] == [
        ("broken", "error"),
        ("late", "timeout"),
        ("backup", "success"),
    ]
    assert data["attempts"][0]["error"]["kind"] == "provider_error"
    assert data["attempts"][1]["error"]["kind"] == "timeout"
    logs = api.get("/logs", params={"feature": "fb", "source": "test"}).json()["data"]
    assert {e["request_id"] for e in logs} == {data["request_id"]}
    assert sorted(e["status"] for e in logs) == ["error", "success", "timeout"]
    only = result(api, "fb", content="hi", modelId="broken")
    assert only["status"] == "error" and len(only["attempts"]) == 1
    assert only["error"]["kind"] == "provider_error"


def test_a_result_and_its_attempts_log_entries_commit_together(
    api: httpx.Client, shared_service: Any
) -> None:
    # Never a stored result without its log entries, nor entries without their result.
    chain = models("broken", ("backup",), broken={**SIM, "error_rate": 1}, backup=SIM)
    feature_with(api, "together", models=chain)
    data = result(api, "together", content="hi")
    with psycopg.connect(shared_service.database_url, autocommit=True) as conn:
        transactions = conn.execute(
            "SELECT DISTINCT xmin::text FROM model_tests WHERE id = %(id)s"
            " UNION SELECT DISTINCT xmin::text FROM logs WHERE request_id = %(request_id)s",
            {"id": data["id"], "request_id": data["request_id"]},
        ).fetchall()
        entries = conn.execute(
            "SELECT count(*) FROM logs WHERE request_id = %s", (data["request_id"],)
        ).fetchone()
    assert entries == (2,)
    assert len(transactions) == 1


def test_prompts_render_variables_and_older_versions(api: httpx.Client) -> None:
    feature_with(
        api,
        "summ",
        models=models(sim={**SIM, "output": "{{ input }}"}),
        prompts={"sum": {"template": "Summarize for {{ who }}: {{ text }}"}},
    )
    put = put_settings(api, "summ", 2, {"prompts": {"sum": {"template": "TL;DR {{ text }}"}}})
    assert put.status_code == 200
    now = result(api, "summ", type="prompt", prompt="sum", variables={"text": "long"})
    assert now["rendered_prompt"] == "TL;DR long" and now["output"]["response"] == "TL;DR long"
    old = result(api, "summ", type="prompt", prompt="sum@2", variables={"text": "t", "who": "Ada"})
    assert old["rendered_prompt"] == "Summarize for Ada: t" and old["prompt"] == "sum@2"
    missing = assert_error(run(api, "summ", prompt="sum@2"), 400, "missing_variables")
    assert fields_of(missing) == ["variables.who", "variables.text"]
    assert "who, text" in missing["message"]
    adhoc = result(api, "summ", type="prompt", content="Hi {{ name }}", variables={"name": "Bo"})
    assert adhoc["rendered_prompt"] == "Hi Bo"
    assert_error(run(api, "summ", prompt="nope"), 404, "not_found")
    assert_error(run(api, "summ", prompt="sum@9"), 404, "not_found")
    assert fields_of(assert_error(run(api, "summ", prompt="sum@x"), 422, "validation_failed")) == [
        "prompt"
    ]
    history = api.get("/features/summ/test/history", params={"prompt": "sum"}).json()["data"]
    assert [t["prompt"] for t in history] == ["sum@2", "sum"]
    exact = api.get("/features/summ/test/history", params={"prompt": "sum@2"}).json()["data"]
    assert [t["id"] for t in exact] == [old["id"]]


def test_chat_prompts_are_sent_as_messages(api: httpx.Client) -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "You are {{ tone }}."},
            {"role": "user", "content": "{{ question }}"},
        ]
    }
    feature_with(api, "chat", models=models(), prompts={"ask": chat})
    data = result(
        api, "chat", type="prompt", prompt="ask", variables={"tone": "terse", "question": "why?"}
    )
    assert data["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "why?"},
    ]
    only_system = {"messages": [{"role": "system", "content": "Tag images."}]}
    put = put_settings(api, "chat", 2, {"prompts": {"ask": chat, "tagger": only_system}})
    assert put.status_code == 200, put.text
    tagged = result(
        api, "chat", prompt="tagger", image={"url": "https://example.com/a.png"}, content="go"
    )
    assert tagged["messages"] == [
        {"role": "system", "content": "Tag images."},
        {"role": "user", "content": "go"},  # the input is what the user says
    ]


def test_candidate_settings_are_tried_and_not_stored(api: httpx.Client) -> None:
    feature_with(api, "cand", models=models())
    candidate = {
        "models": models("new", new={**SIM, "output": "candidate says hi"}),
        "prompts": {"p": {"template": "Q: {{ q }}"}},
    }
    data = result(api, "cand", prompt="p", variables={"q": "x"}, settings=candidate)
    assert data["model"] == "new" and data["output"]["response"] == "candidate says hi"
    assert data["candidate_hash"].startswith("sha256:") and data["settings_version"] == 2
    again = result(api, "cand", prompt="p", variables={"q": "x"}, settings=candidate)
    assert again["candidate_hash"] == data["candidate_hash"]
    live = api.get("/features/cand/settings").json()["data"]
    assert live["version"] == 2 and "new" not in live["settings"]["models"]["definitions"]
    bad = {
        "models": {"primary": "x", "definitions": {"y": {"provider": "nope"}}},
        "rate_limits": {"requests_per_minute": 1},
    }
    error = assert_error(run(api, "cand", content="hi", settings=bad), 422, "validation_failed")
    assert sorted(fields_of(error)) == [
        "settings.models.definitions.y.provider",
        "settings.rate_limits",
    ]


def test_bad_requests_name_their_field(api: httpx.Client) -> None:
    feature_with(api, "bad", models=models())
    assert_error(run(api, "nope", content="x"), 404, "not_found")
    unknown = assert_error(run(api, "bad", content="x", modelId="gpt-9"), 404, "not_found")
    assert "'gpt-9'" in unknown["message"] and "sim" in unknown["message"]
    assert fields_of(assert_error(run(api, "bad", type="other"), 422, "validation_failed")) == [
        "type"
    ]
    assert fields_of(assert_error(run(api, "bad", content=""), 422, "validation_failed")) == [
        "content"
    ]
    extra = assert_error(run(api, "bad", content="x", colour="red"), 422, "validation_failed")
    assert fields_of(extra) == ["colour"]
    no_json = api.post(
        "/features/bad/test", content=b"{", headers={"content-type": "application/json"}
    )
    assert_error(no_json, 400, "bad_request")
    create_feature(api, "empty")
    no_model = assert_error(run(api, "empty", content="x"), 422, "validation_failed")
    assert fields_of(no_model) == ["modelId"]


def test_images_are_checked_and_never_stored(api: httpx.Client) -> None:
    feature_with(api, "img", models=models())
    data = result(api, "img", content="tag it", image={"data": PNG, "media_type": "image/png"})
    assert data["image"] == {"media_type": "image/png", "bytes": len(base64.b64decode(PNG))}
    by_url = result(api, "img", content="tag it", image={"url": "https://example.com/a.png"})
    assert by_url["image"] == {"url": "https://example.com/a.png"}
    not_png = base64.b64encode(b"GIF89a....").decode()
    error = assert_error(
        run(api, "img", content="x", image={"data": not_png, "media_type": "image/png"}),
        422,
        "validation_failed",
    )
    assert fields_of(error) == ["image.data"] and "not a image/png" in error["message"]
    huge = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"0" * (5 * 1024 * 1024)).decode()
    too_large = run(api, "img", content="x", image={"data": huge, "media_type": "image/png"})
    assert fields_of(assert_error(too_large, 413, "payload_too_large")) == ["image.data"]
    assert fields_of(
        assert_error(run(api, "img", content="x", image={"data": "!!"}), 422, "validation_failed")
    ) == ["image.media_type"]


def test_history_filters_and_pages(api: httpx.Client) -> None:
    chain = models("ok", ("other",), ok=SIM, other=SIM, broken={**SIM, "error_rate": 1})
    feature_with(api, "hist", models=chain)
    ids = [result(api, "hist", content=f"q{i}")["id"] for i in range(3)]
    failed = result(api, "hist", content="x", modelId="broken")
    page = api.get("/features/hist/test/history", params={"limit": 2}).json()
    assert [t["id"] for t in page["data"]] == [failed["id"], ids[2]]
    rest = api.get(
        "/features/hist/test/history", params={"limit": 2, "cursor": page["next_cursor"]}
    ).json()
    assert [t["id"] for t in rest["data"]] == [ids[1], ids[0]]
    errors = api.get("/features/hist/test/history", params={"status": "error"}).json()["data"]
    assert [t["id"] for t in errors] == [failed["id"]]
    by_model = api.get("/features/hist/test/history", params={"model": "ok"}).json()["data"]
    assert len(by_model) == 3
    late = api.get("/features/hist/test/history", params={"since": "2999-01-01T00:00:00Z"})
    assert late.json()["data"] == []
    assert_error(
        api.get("/features/hist/test/history", params={"since": "yesterday"}), 400, "bad_request"
    )
    assert_error(
        api.get("/features/hist/test/history", params={"cursor": "zzz"}), 400, "bad_request"
    )
    forged = base64.urlsafe_b64encode(b'{"t": ["yesterday", 3]}').decode()
    assert_error(
        api.get("/features/hist/test/history", params={"cursor": forged}), 400, "bad_request"
    )
    assert_error(api.get("/tests/not-an-id"), 404, "not_found")


def test_a_key_variable_outside_the_allow_list(api: httpx.Client) -> None:
    create_feature(api, "keys")
    leak = {"provider": "openai", "model": "m", "api_key_env": "DATABASE_URL"}
    error = assert_error(
        put_settings(api, "keys", 1, {"models": models("leak", leak=leak)}),
        422,
        "validation_failed",
    )
    assert fields_of(error) == ["models.definitions.leak.api_key_env"]
    assert "DATABASE_URL is not an allowed key variable" in error["message"]
    candidate = assert_error(
        run(api, "keys", content="x", settings={"models": models("leak", leak=leak)}),
        422,
        "validation_failed",
    )
    assert fields_of(candidate) == ["settings.models.definitions.leak.api_key_env"]


def test_a_stored_definition_naming_a_refused_key_is_not_called(
    api: httpx.Client, shared_service: Any
) -> None:
    feature = feature_with(api, "old", models=models("gw", gw={"provider": "openai", "model": "m"}))
    # An older version written when the operator allowed it (MINERVA_PROVIDER_KEYS changed).
    with psycopg.connect(shared_service.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE feature_settings SET settings = jsonb_set(settings::jsonb,"
            " '{models,definitions,gw,api_key_env}', '\"DATABASE_URL\"')::json"
            " WHERE feature_id = %s AND version = 2",
            (feature["id"],),
        )
    error = assert_error(run(api, "old", content="x"), 422, "key_not_allowed")
    assert fields_of(error) == ["models.definitions.gw.api_key_env"]
    assert api.get("/features/old/test/history").json()["data"] == []


def test_tests_need_write_and_reads_need_read(api: httpx.Client, org: Any) -> None:
    feature_with(api, "scoped", models=models())
    made = result(api, "scoped", content="x")
    with org.client(org.make_token(["read"])) as reader:
        assert_error(run(reader, "scoped", content="x"), 403, "forbidden")
        assert reader.get(f"/tests/{made['id']}").status_code == 200
        assert reader.get("/features/scoped/test/history").status_code == 200
