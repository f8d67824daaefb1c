"""The providers (service/providers/): real HTTP to a loopback server that answers as
OpenAI and Anthropic do; every failure a result, fallbacks in order, the simulator
reproducible, and the key and address rules."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from minerva_ai.service.providers.call import CallResult, Providers, call_chain, chain
from minerva_ai.service.providers.policy import AddressPolicy, KeyPolicy, PolicyError
from minerva_ai.service.providers.templates import MissingVariables, render
from minerva_ai.service.providers.transport import POOLS
from minerva_ai.service.providers.types import CallInput, Image
from tests.providers_support import PNG, FakeProvider

KEY = "sk-test-0123456789abcdef"
LOOPBACK = AddressPolicy.parse("127.0.0.0/8")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(slow_s=1.0) as provider:
        yield provider


def run(
    models: list[tuple[str, dict[str, Any]]],
    call: CallInput,
    addresses: AddressPolicy = LOOPBACK,
    environ: dict[str, str] | None = None,
) -> CallResult:
    async def go() -> CallResult:
        async with httpx.AsyncClient() as http:
            providers = Providers(
                http,
                KeyPolicy(),
                addresses,
                {"OPENAI_API_KEY": KEY, "ANTHROPIC_API_KEY": KEY} if environ is None else environ,
            )
            return await call_chain(providers, models, call)

    return asyncio.run(go())


def openai(fake: FakeProvider, model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "model": model,
        "base_url": fake.url + "/v1",
        "api_key_env": "OPENAI_API_KEY",
        "timeout_s": 5,
        "parameters": {"temperature": 0.2, "max_tokens": 50},
        **extra,
    }


def anthropic(
    fake: FakeProvider, model: str = "claude-3-5-haiku-latest", **extra: Any
) -> dict[str, Any]:
    return {
        "provider": "anthropic",
        "model": model,
        "base_url": fake.url,
        "api_key_env": "ANTHROPIC_API_KEY",
        "timeout_s": 5,
        "parameters": {},
        **extra,
    }


def hello(*extra: tuple[str, str], image: Image | None = None) -> CallInput:
    return CallInput((*extra, ("user", "hello there")), image)


def last_request(fake: FakeProvider, path: str) -> Any:
    return next(r for r in reversed(fake.requests) if r.path == path)


def test_openai_chat_completion(fake: FakeProvider) -> None:
    result = run([("main", openai(fake))], hello(("system", "be brief")))
    final = result.final
    assert final.status == "success", final
    assert final.response == "echo: hello there"
    assert (final.tokens_in, final.tokens_out) == (4, 3)
    assert final.cost == pytest.approx((4 * 0.15 + 3 * 0.60) / 1e6)  # the default price table
    assert final.simulated is False
    sent = last_request(fake, "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json() == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ],
        "temperature": 0.2,
        "max_tokens": 50,
    }


def test_the_services_client_keeps_connections_alive_in_a_few_pools(fake: FakeProvider) -> None:
    models = [("gpt", openai(fake))]

    async def go() -> list[CallResult]:
        providers = Providers.create(KeyPolicy(), LOOPBACK)
        providers.environ = {"OPENAI_API_KEY": KEY}
        try:
            one_by_one = [await call_chain(providers, models, hello()) for _ in range(3 * POOLS)]
            at_once = await asyncio.gather(
                *(call_chain(providers, models, hello()) for _ in range(40))
            )
        finally:
            await providers.close()
        return [*one_by_one, *at_once]

    before = len(fake.requests)
    results = asyncio.run(go())
    assert [r.final.status for r in results] == ["success"] * (3 * POOLS + 40)
    # One call after another: each pool's connection is kept and used again.
    sequential = fake.requests[before : before + 3 * POOLS]
    assert len({r.peer for r in sequential}) == POOLS


def test_anthropic_messages(fake: FakeProvider) -> None:
    price = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
    result = run([("claude", anthropic(fake, price=price))], hello(("system", "be brief")))
    final = result.final
    assert final.status == "success", final
    assert final.response == "echo: hello there"
    assert final.cost == pytest.approx((4 * 1.0 + 3 * 2.0) / 1e6)  # the definition's own price
    sent = last_request(fake, "/v1/messages")
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.json() == {
        "model": "claude-3-5-haiku-latest",
        "max_tokens": 1024,  # required by the API: the default when the model sets none
        "messages": [{"role": "user", "content": "hello there"}],
        "system": "be brief",
    }


def test_images_are_sent_as_each_api_takes_them(fake: FakeProvider) -> None:
    data = Image(data=PNG, media_type="image/png")
    assert run([("m", openai(fake))], hello(image=data)).final.status == "success"
    content = last_request(fake, "/v1/chat/completions").json()["messages"][-1]["content"]
    assert content == [
        {"type": "text", "text": "hello there"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    url = Image(url="https://example.com/cat.png")
    assert run([("c", anthropic(fake))], hello(image=url)).final.status == "success"
    content = last_request(fake, "/v1/messages").json()["messages"][-1]["content"]
    assert content == [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "text", "text": "hello there"},
    ]
    run([("c", anthropic(fake))], hello(image=data))
    content = last_request(fake, "/v1/messages").json()["messages"][-1]["content"]
    assert content[0]["source"] == {"type": "base64", "media_type": "image/png", "data": PNG}


@pytest.mark.parametrize(
    ("suffix", "kind", "status", "says"),
    [
        ("unauthorized", "provider_error", 401, "Incorrect API key provided"),
        ("ratelimited", "rate_limited", 429, "Rate limit reached"),
        ("overloaded", "provider_error", 500, "The server had an error"),
        ("malformed", "provider_error", None, "malformed: not JSON"),
    ],
)
def test_openai_errors_are_results(
    fake: FakeProvider, suffix: str, kind: str, status: int | None, says: str
) -> None:
    final = run([("m", openai(fake, f"gpt-4o-{suffix}"))], hello()).final
    assert final.status == "error"
    assert final.error is not None
    assert final.error["kind"] == kind
    assert final.error["http_status"] == status
    assert says in final.error["message"]
    if suffix == "ratelimited":
        assert final.error["retry_after"] == 7


@pytest.mark.parametrize(
    ("suffix", "kind", "status", "says"),
    [
        ("unauthorized", "provider_error", 401, "authentication_error: invalid x-api-key"),
        ("ratelimited", "rate_limited", 429, "rate_limit_error"),
        ("overloaded", "provider_error", 529, "overloaded_error: Overloaded"),
    ],
)
def test_anthropic_errors_are_results(
    fake: FakeProvider, suffix: str, kind: str, status: int, says: str
) -> None:
    final = run([("c", anthropic(fake, f"claude-{suffix}"))], hello()).final
    assert final.status == "error"
    assert final.error is not None
    assert (final.error["kind"], final.error["http_status"]) == (kind, status)
    assert says in final.error["message"]


def test_a_slow_provider_is_a_timeout(fake: FakeProvider) -> None:
    final = run([("m", openai(fake, "gpt-4o-slow", timeout_s=0.2))], hello()).final
    assert final.status == "timeout"
    assert final.error is not None and final.error["kind"] == "timeout"
    assert "0.2 s" in final.error["message"]
    assert final.latency_ms < 900  # the provider answers after 1 s: we did not wait for it


def test_an_unreachable_provider() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    definition = {"provider": "openai", "model": "m", "base_url": f"http://127.0.0.1:{port}/v1"}
    final = run([("m", definition)], hello()).final
    assert final.status == "error"
    assert final.error is not None and final.error["kind"] == "unreachable"


def test_fallbacks_are_tried_in_order(fake: FakeProvider) -> None:
    models = [
        ("first", openai(fake, "gpt-4o-unauthorized")),
        ("second", anthropic(fake, "claude-slow", timeout_s=0.2)),
        ("third", anthropic(fake)),
        ("never", openai(fake)),
    ]
    result = run(models, hello())
    assert [a.model for a in result.attempts] == ["first", "second", "third"]
    assert [a.status for a in result.attempts] == ["error", "timeout", "success"]
    assert result.final.model == "third"


def test_internal_addresses_are_refused_unless_allowed(fake: FakeProvider) -> None:
    before = len(fake.requests)
    final = run([("m", openai(fake))], hello(), addresses=AddressPolicy()).final
    assert final.status == "error"
    assert final.error is not None and final.error["kind"] == "refused"
    assert "127.0.0.1, a loopback address" in final.error["message"]
    assert "MINERVA_PROVIDER_ALLOW" in final.error["message"]
    assert len(fake.requests) == before  # nothing was sent
    by_name = AddressPolicy.parse("localhost")
    local = openai(fake, base_url=fake.url.replace("127.0.0.1", "localhost") + "/v1")
    assert run([("m", local)], hello(), addresses=by_name).final.status == "success"


def test_policies_parse_and_refuse() -> None:
    keys = KeyPolicy.parse(None)
    assert keys.allows("OPENAI_API_KEY") and keys.allows("ANTHROPIC_API_KEY")
    assert keys.allows("MINERVA_PROVIDER_KEY_GATEWAY")
    assert not keys.allows("DATABASE_URL") and not keys.allows("MINERVA_PROVIDER_KEY_")
    assert "DATABASE_URL is not an allowed key variable" in keys.refusal("DATABASE_URL")
    custom = KeyPolicy.parse("MY_KEY, OTHER")
    assert custom.allows("MY_KEY") and not custom.allows("OPENAI_API_KEY")
    allow = AddressPolicy.parse("10.0.0.0/8, vllm.internal, ::1")
    assert allow.hosts == {"vllm.internal"} and len(allow.networks) == 2
    with pytest.raises(PolicyError, match="neither a host name nor a CIDR"):
        AddressPolicy.parse("10.0.0.0/99")


def simulator(**fields: Any) -> dict[str, Any]:
    return {"provider": "simulator", "latency_ms": 1, **fields}


def test_the_simulator_is_a_function_of_seed_input_and_repeat() -> None:
    sim = simulator(seed=7, error_rate=0.5, latency_ms=5, latency_jitter_ms=3)

    def outcomes(seed: int) -> list[tuple[str, float]]:
        results = [
            run([("s", {**sim, "seed": seed})], CallInput((("user", f"q{i % 4}"),), repeat=i // 4))
            for i in range(24)
        ]
        return [(r.final.status, r.final.tokens_out) for r in results]

    first = outcomes(7)
    assert outcomes(7) == first  # reproducible
    assert {status for status, _ in first} == {"success", "error"}  # error_rate does something
    assert outcomes(8) != first  # the seed matters
    ok = run([("s", simulator(output="tags for {{ input }}"))], hello()).final
    assert (ok.status, ok.response, ok.simulated) == ("success", "tags for hello there", True)
    assert (ok.tokens_in, ok.tokens_out) == (5, 5)  # about four characters a token
    failing = run([("s", simulator(error_rate=1))], hello()).final
    assert failing.status == "error" and failing.simulated
    assert failing.error is not None and "simulated provider error" in failing.error["message"]
    late = run([("s", simulator(timeout_rate=1, timeout_s=0.05))], hello()).final
    assert late.status == "timeout"


def test_chain_picks_the_model_or_primary_and_fallbacks() -> None:
    models = {
        "primary": "a",
        "fallbacks": ["b"],
        "definitions": {"a": simulator(), "b": simulator(), "c": simulator()},
    }
    assert [name for name, _ in chain(models, None)] == ["a", "b"]
    assert [name for name, _ in chain(models, "c")] == ["c"]
    with pytest.raises(KeyError):
        chain(models, "nope")


def test_templates_substitute_and_never_run_code() -> None:
    assert render("Hi {{ name }}, {{name}}!", {"name": "Ada"}) == "Hi Ada, Ada!"
    assert render("{{ a }}", {"a": "{{ b }}"}) == "{{ b }}"  # a value is not expanded again
    with pytest.raises(MissingVariables) as missing:
        render("{{ a }} {{ __class__ }} {{ b }}", {"b": "x"})
    assert missing.value.names == ["a", "__class__"]


def test_an_image_alone_is_sent_without_an_empty_text_part(fake: FakeProvider) -> None:
    image = Image(url="https://example.com/cat.png")
    call = CallInput((("user", ""),), image)
    assert run([("m", openai(fake))], call).final.status == "success"
    content = last_request(fake, "/v1/chat/completions").json()["messages"][-1]["content"]
    assert content == [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    assert run([("c", anthropic(fake))], call).final.status == "success"
    content = last_request(fake, "/v1/messages").json()["messages"][-1]["content"]
    assert content == [{"type": "image", "source": {"type": "url", "url": image.url}}]
