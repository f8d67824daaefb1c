"""The response cache of model tests, shared by everyone who uses the service: in Redis (the
one that keeps the rate limits), so every instance of the service sees the same entries and
they expire by themselves (``MINERVA_TEST_CACHE_TTL``, default one day).

A key is a hash of the organization, the model chain's definitions (provider, model,
parameters, ...), the rendered messages, the image's digest and, when a simulator is in
the chain, the repeat index (a real provider's answer does not depend on it). Only answers
are stored: a test that ended in an error or a timeout is never cached. A Redis that cannot
be reached is a miss, never a failed test.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any
from uuid import UUID

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from minerva_ai.service.providers.types import CallInput

PREFIX = "minerva:test-cache:"
log = logging.getLogger("minerva_ai.service.test_cache")


def key(org_id: UUID, models: list[tuple[str, dict[str, Any]]], call: CallInput) -> str:
    image = call.image
    image_digest = None
    if image is not None:
        source = image.url if image.url is not None else f"{image.media_type}:{image.data}"
        image_digest = hashlib.sha256(source.encode()).hexdigest()
    simulated = any(d.get("provider") == "simulator" for _, d in models)
    material = {
        "models": [[name, definition] for name, definition in models],
        "messages": [list(m) for m in call.messages],
        "image": image_digest,
        "repeat": call.repeat if simulated else None,
    }
    digest = hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{PREFIX}{org_id}:{digest}"


async def get(redis: Redis, cache_key: str) -> dict[str, Any] | None:
    try:
        raw = await redis.get(cache_key)
    except (RedisError, OSError) as exc:
        log.warning("test cache unavailable (a miss): %s", exc)
        return None
    if raw is None:
        return None
    entry: dict[str, Any] = orjson.loads(raw)
    return entry


async def put(redis: Redis, cache_key: str, entry: dict[str, Any], ttl_s: int) -> None:
    try:
        await redis.set(cache_key, orjson.dumps(entry), ex=ttl_s)
    except (RedisError, OSError) as exc:
        log.warning("test cache unavailable (not stored): %s", exc)
