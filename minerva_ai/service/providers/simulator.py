"""The built-in simulator: a model that answers locally, for demos, tests and load tests.

Its outcome (latency, error, timeout, output) is a function of its ``seed``, the rendered
input and the repeat index only, so a run is reproducible whatever the concurrency. It is
never used in place of a real provider: only a definition that says ``simulator`` is one.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from dataclasses import dataclass
from typing import Any

from minerva_ai.service.providers.templates import PLACEHOLDER
from minerva_ai.service.providers.types import Answer, CallInput, ProviderError

DEFAULT_OUTPUT = "Simulated answer to: {{ input }}"
CHARS_PER_TOKEN = 4


def tokens(text: str) -> int:
    """A token count in the way of real tokenizers (about four characters a token)."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN)) if text else 0


@dataclass(frozen=True)
class Outcome:
    latency_s: float
    fails: bool
    times_out: bool


def outcome(definition: dict[str, Any], call: CallInput) -> Outcome:
    digest = hashlib.sha256(
        f"{definition.get('seed', 0)}\x00{call.repeat}\x00{call.text}".encode()
    ).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    fails = rng.random() < float(definition.get("error_rate", 0))
    times_out = rng.random() < float(definition.get("timeout_rate", 0))
    mean = float(definition.get("latency_ms", 100))
    jitter = float(definition.get("latency_jitter_ms", 0))
    latency_ms = max(0.0, rng.gauss(mean, jitter) if jitter else mean)
    return Outcome(latency_ms / 1000, fails, times_out)


def output(definition: dict[str, Any], call: CallInput) -> str:
    """The answer text: the definition's ``output``, where ``{{ input }}`` is the last user
    message (other placeholders are left as written)."""
    template = definition.get("output") or DEFAULT_OUTPUT
    text = PLACEHOLDER.sub(
        lambda m: call.last_user() if m.group(1) == "input" else m.group(0), template
    )
    limit = (definition.get("parameters") or {}).get("max_tokens")
    if limit:
        text = text[: int(limit) * CHARS_PER_TOKEN]
    return text


async def answer(definition: dict[str, Any], call: CallInput, timeout_s: float) -> Answer:
    """Wait the simulated latency, then answer or fail; TimeoutError past ``timeout_s``."""
    result = outcome(definition, call)
    if result.times_out or result.latency_s > timeout_s:
        await asyncio.sleep(timeout_s)
        raise TimeoutError
    await asyncio.sleep(result.latency_s)
    if result.fails:
        raise ProviderError(
            "provider_error",
            f"simulated provider error (error_rate {definition.get('error_rate', 0)})",
            500,
        )
    text = output(definition, call)
    return Answer(text, tokens(call.text), tokens(text), "simulator")
