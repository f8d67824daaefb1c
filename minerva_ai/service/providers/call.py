"""The one place that turns a request into provider calls and a result: the model chain
(primary, then fallbacks in order), each attempt within its timeout, every failure a result
with its kind and message, never an exception."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from minerva_ai.service.providers import anthropic_messages, openai_chat, pricing, simulator
from minerva_ai.service.providers.policy import AddressPolicy, KeyPolicy
from minerva_ai.service.providers.transport import PooledTransport
from minerva_ai.service.providers.types import Answer, Attempt, CallInput, ProviderError
from minerva_ai.service.providers.wire import http_error

WIRES = {"openai": openai_chat, "anthropic": anthropic_messages}
DEFAULT_TIMEOUT_S = 30.0


@dataclass
class Providers:
    """What calls need from the process: one HTTP client, the key and address rules."""

    http: httpx.AsyncClient
    keys: KeyPolicy = field(default_factory=KeyPolicy)
    addresses: AddressPolicy = field(default_factory=AddressPolicy)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    @classmethod
    def create(cls, keys: KeyPolicy, addresses: AddressPolicy) -> Providers:
        # No retries, no redirects: a redirect could carry the key to another host.
        # Keep-alive for as many providers' connections as calls in flight: httpx's default
        # keeps 20, and a new TLS connection per call costs more than the call's overhead.
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        http = httpx.AsyncClient(
            follow_redirects=False, trust_env=False, transport=PooledTransport(limits)
        )
        return cls(http, keys, addresses)

    async def close(self) -> None:
        await self.http.aclose()


@dataclass
class CallResult:
    attempts: list[Attempt]

    @property
    def final(self) -> Attempt:
        """The attempt that answered, else the last one tried."""
        return next((a for a in self.attempts if a.status == "success"), self.attempts[-1])

    @property
    def tokens_in(self) -> int:
        return sum(a.tokens_in for a in self.attempts)

    @property
    def tokens_out(self) -> int:
        return sum(a.tokens_out for a in self.attempts)

    @property
    def cost(self) -> float | None:
        costs = [a.cost for a in self.attempts]
        return None if any(c is None for c in costs) else round(sum(c or 0 for c in costs), 10)

    @property
    def simulated(self) -> bool:
        return any(a.simulated for a in self.attempts)


def chain(models: dict[str, Any], model_id: str | None) -> list[tuple[str, dict[str, Any]]]:
    """The models to try: ``model_id`` alone when given, else the primary then the fallbacks.

    KeyError names a model that is not defined."""
    definitions: dict[str, Any] = models.get("definitions", {})
    if model_id is not None:
        return [(model_id, definitions[model_id])]
    primary = models.get("primary")
    if primary is None:
        raise KeyError(None)
    return [(name, definitions[name]) for name in (primary, *models.get("fallbacks", []))]


def key_refusals(keys: KeyPolicy, models: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The models of the chain whose stored definition names a key the service will not read
    (an older settings version may name one)."""
    return [
        f"models.definitions.{name}.api_key_env: {keys.refusal(d['api_key_env'])}"
        for name, d in models
        if d.get("api_key_env") and not keys.allows(d["api_key_env"])
    ]


def estimate_tokens(models: list[tuple[str, dict[str, Any]]], call: CallInput) -> int:
    """What a call may use at most, for limits reserved before it: its input, and the
    largest ``max_tokens`` of the chain (the Anthropic default when none is set)."""
    ceiling = max(
        int((d.get("parameters") or {}).get("max_tokens") or anthropic_messages.DEFAULT_MAX_TOKENS)
        for _, d in models
    )
    return simulator.tokens(call.text) + ceiling


def estimate_cost(models: list[tuple[str, dict[str, Any]]], tokens: int) -> float | None:
    """The largest cost ``tokens`` could have on the chain; None when a price is unknown."""
    prices = [pricing.price_of(d) for _, d in models]
    if any(p is None for p in prices):
        return None
    return max(pricing.cost(p, tokens, tokens) or 0.0 for p in prices)


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "[redacted]") if secret else text


async def _http_answer(
    providers: Providers, definition: dict[str, Any], call: CallInput, key: str | None
) -> Answer:
    wire = WIRES[definition["provider"]]
    url, headers, body = wire.request(definition, call, key)
    try:
        refusal = await providers.addresses.refusal(url)
    except OSError as exc:
        raise ProviderError("unreachable", f"cannot resolve the base_url's host: {exc}") from None
    if refusal is not None:
        raise ProviderError("refused", refusal)
    try:
        response = await providers.http.post(url, headers=headers, json=body)
    except httpx.TimeoutException:
        raise TimeoutError from None
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise ProviderError("unreachable", f"{type(exc).__name__}: {reason}") from None
    if response.status_code // 100 != 2:
        raise http_error(
            response.status_code, response.headers, response.content, wire.error_message
        )
    answer: Answer = wire.parse(response.content)
    return answer


async def attempt(
    providers: Providers, name: str, definition: dict[str, Any], call: CallInput
) -> Attempt:
    """Try one model once; whatever happens is in the returned Attempt."""
    provider = definition["provider"]
    timeout_s = float(definition.get("timeout_s", DEFAULT_TIMEOUT_S))
    key_env = definition.get("api_key_env")
    key = providers.environ.get(key_env) if key_env else None
    simulated = provider == "simulator"
    started = time.perf_counter()
    try:
        if simulated:
            answer = await simulator.answer(definition, call, timeout_s)
        else:
            async with asyncio.timeout(timeout_s):
                answer = await _http_answer(providers, definition, call, key)
    except TimeoutError:
        return Attempt(
            name,
            provider,
            "timeout",
            (time.perf_counter() - started) * 1000,
            simulated,
            cost=0.0,  # no answer, no tokens billed
            error={
                "kind": "timeout",
                "message": f"no answer within {timeout_s:g} s (the model's timeout_s)",
                "http_status": None,
                "retry_after": None,
            },
            provider_model=definition.get("model"),
        )
    except ProviderError as exc:
        exc.message = _redact(exc.message, key)
        return Attempt(
            name,
            provider,
            "error",
            (time.perf_counter() - started) * 1000,
            simulated,
            cost=0.0,  # no answer, no tokens billed
            error=exc.as_dict(),
            provider_model=definition.get("model"),
        )
    latency_ms = (time.perf_counter() - started) * 1000
    return Attempt(
        name,
        provider,
        "success",
        latency_ms,
        simulated,
        tokens_in=answer.tokens_in,
        tokens_out=answer.tokens_out,
        cost=pricing.cost(pricing.price_of(definition), answer.tokens_in, answer.tokens_out),
        response=_redact(answer.text, key),
        provider_model=answer.provider_model or definition.get("model"),
    )


async def call_chain(
    providers: Providers, models: list[tuple[str, dict[str, Any]]], call: CallInput
) -> CallResult:
    """Try the models in order until one answers."""
    attempts: list[Attempt] = []
    for name, definition in models:
        result = await attempt(providers, name, definition, call)
        attempts.append(result)
        if result.status == "success":
            break
    return CallResult(attempts)
