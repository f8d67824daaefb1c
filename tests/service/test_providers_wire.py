"""The loopback provider is honest: the official SDKs, pointed at it, send what our
provider code sends (bodies equal, the headers that matter equal) and parse its answers,
errors included."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from minerva_ai.service.providers.call import Providers, call_chain
from minerva_ai.service.providers.policy import AddressPolicy, KeyPolicy
from minerva_ai.service.providers.types import CallInput, Image
from tests.providers_support import PNG, FakeProvider, Recorded

KEY = "sk-wire-test-key"
# What carries meaning on the wire; the SDKs add their own telemetry (x-stainless-*),
# user agents and retry counters, which say nothing about the request.


def meaning(headers: dict[str, str]) -> dict[str, object]:
    """The headers, normalised: the key however it is carried (Anthropic takes `x-api-key`,
    which its documentation names, or a bearer token, which its SDK 2.x sends), and whether
    an Anthropic API version is named (we send the documented 2023-06-01; the SDK its own)."""
    bearer = headers.get("authorization", "").removeprefix("Bearer ")
    return {
        "content-type": headers.get("content-type"),
        "key": headers.get("x-api-key") or bearer or None,
        "versioned": "anthropic-version" in headers,
    }


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


def ours(fake: FakeProvider, definition: dict[str, Any], call: CallInput) -> Recorded:
    async def go() -> None:
        async with httpx.AsyncClient() as http:
            providers = Providers(
                http,
                KeyPolicy(),
                AddressPolicy.parse("127.0.0.1"),
                {"OPENAI_API_KEY": KEY, "ANTHROPIC_API_KEY": KEY},
            )
            result = await call_chain(providers, [("m", definition)], call)
            assert result.final.status == "success", result.final

    asyncio.run(go())
    return fake.requests[-1]


def same(sdk: Recorded, mine: Recorded) -> None:
    assert sdk.path == mine.path
    assert sdk.json() == mine.json()
    assert meaning(sdk.headers) == meaning(mine.headers)
    assert meaning(mine.headers)["key"] == KEY


CHAT = [
    {"role": "system", "content": "You tag photos."},
    {"role": "user", "content": "a dog on a beach"},
]


def test_openai_sdk_sends_what_we_send(fake: FakeProvider) -> None:
    sdk = openai.OpenAI(base_url=fake.url + "/v1", api_key=KEY, max_retries=0)
    answer = sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=CHAT,  # type: ignore[arg-type]
        temperature=0.2,
        max_tokens=64,
        response_format={"type": "json_object"},
    )
    assert answer.choices[0].message.content == "echo: a dog on a beach"
    assert answer.usage is not None and answer.usage.prompt_tokens == 8
    from_sdk = fake.requests[-1]
    definition = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "base_url": fake.url + "/v1",
        "api_key_env": "OPENAI_API_KEY",
        "parameters": {"temperature": 0.2, "max_tokens": 64},
        "response_format": {"type": "json_object"},
    }
    call = CallInput((("system", "You tag photos."), ("user", "a dog on a beach")))
    same(from_sdk, ours(fake, definition, call))


def test_openai_sdk_image_input(fake: FakeProvider) -> None:
    sdk = openai.OpenAI(base_url=fake.url + "/v1", api_key=KEY, max_retries=0)
    sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "tag it"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            }
        ],
    )
    from_sdk = fake.requests[-1]
    definition = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "base_url": fake.url + "/v1",
        "api_key_env": "OPENAI_API_KEY",
    }
    call = CallInput((("user", "tag it"),), Image(data=PNG, media_type="image/png"))
    same(from_sdk, ours(fake, definition, call))


def test_anthropic_sdk_sends_what_we_send(fake: FakeProvider) -> None:
    sdk = anthropic.Anthropic(base_url=fake.url, api_key=KEY, max_retries=0)
    answer = sdk.messages.create(
        model="claude-3-5-haiku-latest",
        max_tokens=256,
        system="You tag photos.",
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {"type": "text", "text": "a dog on a beach"},
                ],
            }
        ],
        stop_sequences=["END"],
    )
    block = answer.content[0]
    assert block.type == "text" and block.text == "echo: a dog on a beach"
    assert answer.usage.output_tokens == 6
    from_sdk = fake.requests[-1]
    definition = {
        "provider": "anthropic",
        "model": "claude-3-5-haiku-latest",
        "base_url": fake.url,
        "api_key_env": "ANTHROPIC_API_KEY",
        "parameters": {"max_tokens": 256, "stop": ["END"]},
    }
    call = CallInput(
        (("system", "You tag photos."), ("user", "a dog on a beach")),
        Image(data=PNG, media_type="image/png"),
    )
    same(from_sdk, ours(fake, definition, call))


def test_the_sdks_read_our_error_answers(fake: FakeProvider) -> None:
    oa = openai.OpenAI(base_url=fake.url + "/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="Incorrect API key provided"):
        oa.chat.completions.create(model="gpt-unauthorized", messages=CHAT)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as limited:
        oa.chat.completions.create(model="gpt-ratelimited", messages=CHAT)  # type: ignore[arg-type]
    assert limited.value.response.headers["retry-after"] == "7"
    assert limited.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        oa.chat.completions.create(model="gpt-overloaded", messages=CHAT)  # type: ignore[arg-type]
    an = anthropic.Anthropic(base_url=fake.url, api_key=KEY, max_retries=0)
    user = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.AuthenticationError, match="invalid x-api-key"):
        an.messages.create(model="c-unauthorized", max_tokens=5, messages=user)  # type: ignore[arg-type]
    with pytest.raises(anthropic.RateLimitError):
        an.messages.create(model="c-ratelimited", max_tokens=5, messages=user)  # type: ignore[arg-type]
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        an.messages.create(model="c-overloaded", max_tokens=5, messages=user)  # type: ignore[arg-type]
    assert overloaded.value.status_code == 529
