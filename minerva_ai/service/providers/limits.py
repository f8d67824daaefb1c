"""A feature's rate limits, held across instances in Redis, one atomic step per decision.

- requests per minute: GCRA (a burst of the whole limit, then one request every
  60/limit seconds), exact across instances because the decision is one Lua script;
- tokens per minute and cost per day (the day starts at 00:00 UTC): an estimate is reserved
  before the call, in the same step, and settled to the real usage after it.

The time is passed in (``clock``) so tests can drive it, in whole microseconds, so the
state never gathers rounding errors (a burst lets exactly the limit through up to about
7,700 requests per minute; above that, at most one more). A counter missing from Redis
(after a restart) is rebuilt from the usage PostgreSQL recorded before the decision: the
script says which counters are missing and the caller runs it again with their values.
While Redis is unreachable, a feature with limits gets ``LimitsUnavailable``; the limits
are never skipped.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

PREFIX = "minerva:limits:"
NANO = 1_000_000_000  # costs are counted in nano-dollars: integers, exact in Lua
MINUTE_US = 60_000_000
DAY_US = 86_400_000_000

_DECIDE = """
local now = tonumber(ARGV[1])
local rpm, tpm, cpd = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tokens, cost = tonumber(ARGV[5]), tonumber(ARGV[6])
local had_rpm, had_tpm, had_cost = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local minute_end, day_end = tonumber(ARGV[10]), tonumber(ARGV[11])
local missing = {}
if rpm > 0 and had_rpm < 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  table.insert(missing, 'requests_per_minute') end
if tpm > 0 and had_tpm < 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  table.insert(missing, 'tokens_per_minute') end
if cpd > 0 and had_cost < 0 and redis.call('EXISTS', KEYS[3]) == 0 then
  table.insert(missing, 'cost_per_day') end
if #missing > 0 then
  table.insert(missing, 1, 'rebuild')
  return missing
end
-- Counters rebuilt from PostgreSQL are kept whatever the decision, so the next one
-- starts from them too.
if rpm > 0 and had_rpm >= 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  local rebuilt = now + had_rpm * math.floor(60000000 / rpm)
  redis.call('SET', KEYS[1], string.format('%d', rebuilt), 'PX',
             math.ceil((rebuilt - now) / 1000) + 1000)
end
if tpm > 0 and had_tpm >= 0 then
  redis.call('SET', KEYS[2], string.format('%d', had_tpm), 'NX', 'PX',
             math.ceil((minute_end - now) / 1000) + 60000)
end
if cpd > 0 and had_cost >= 0 then
  redis.call('SET', KEYS[3], string.format('%d', had_cost), 'NX', 'PX',
             math.ceil((day_end - now) / 1000) + 3600000)
end
local new_tat = 0
if rpm > 0 then
  local interval = math.floor(60000000 / rpm)
  local tat = tonumber(redis.call('GET', KEYS[1]) or now)
  if tat < now then tat = now end
  local allowed_at = tat - (60000000 - interval)
  if now < allowed_at then
    return {'limited', 'requests_per_minute', string.format('%d', allowed_at - now)}
  end
  new_tat = tat + interval
end
local used_tokens = tonumber(redis.call('GET', KEYS[2]) or 0)
if tpm > 0 and used_tokens + tokens > tpm then
  return {'limited', 'tokens_per_minute', string.format('%d', minute_end - now)}
end
local used_cost = tonumber(redis.call('GET', KEYS[3]) or 0)
if cpd > 0 and used_cost + cost > cpd then
  return {'limited', 'cost_per_day', string.format('%d', day_end - now)}
end
if rpm > 0 then
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX',
             math.ceil((new_tat - now) / 1000) + 1000)
end
if tpm > 0 then
  redis.call('SET', KEYS[2], string.format('%d', used_tokens + tokens), 'PX',
             math.ceil((minute_end - now) / 1000) + 60000)
end
if cpd > 0 then
  redis.call('SET', KEYS[3], string.format('%d', used_cost + cost), 'PX',
             math.ceil((day_end - now) / 1000) + 3600000)
end
return {'ok'}
"""

# Settling moves a reservation to the real usage; a counter that is gone (Redis restarted)
# is left to be rebuilt from PostgreSQL, which has the real usage by then.
_SETTLE = """
for i, key in ipairs(KEYS) do
  local delta = tonumber(ARGV[i])
  if delta ~= 0 and redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, delta) end
end
return 1
"""


@dataclass(frozen=True)
class Limits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    cost_per_day: float | None = None

    @classmethod
    def of(cls, rate_limits: dict[str, Any]) -> Limits:
        return cls(
            rate_limits.get("requests_per_minute"),
            rate_limits.get("tokens_per_minute"),
            rate_limits.get("cost_per_day"),
        )

    def __bool__(self) -> bool:
        return any(
            v is not None
            for v in (self.requests_per_minute, self.tokens_per_minute, self.cost_per_day)
        )


@dataclass(frozen=True)
class Windows:
    """The windows a decision at ``now`` counts in (UTC)."""

    now: datetime
    minute_ago: datetime
    minute_start: datetime
    day_start: datetime

    @classmethod
    def at(cls, now_s: float) -> Windows:
        now = datetime.fromtimestamp(now_s, UTC)
        return cls(
            now,
            now - timedelta(minutes=1),
            now.replace(second=0, microsecond=0),
            now.replace(hour=0, minute=0, second=0, microsecond=0),
        )


@dataclass(frozen=True)
class Usage:
    """What PostgreSQL recorded: calls in the last minute, tokens this minute, cost today."""

    requests: int
    tokens: int
    cost: float


@dataclass(frozen=True)
class Reservation:
    keys: tuple[str, str]
    tokens: int
    cost_nano: int


class RateLimited(Exception):
    def __init__(self, limit: str, retry_after_s: float) -> None:
        super().__init__(limit)
        self.limit = limit
        self.retry_after_s = retry_after_s

    @property
    def retry_after(self) -> int:
        """Whole seconds, as the Retry-After header carries them (never 0)."""
        return max(1, math.ceil(self.retry_after_s))


class LimitsUnavailable(Exception):
    """Redis cannot be reached: a limited call cannot be decided, so it is refused."""


UsageReader = Callable[[Windows], Awaitable[Usage]]
# Connections of one instance's limiter: callers beyond them wait for one (redis-py's own
# pool refuses the 101st concurrent command instead, which would refuse calls).
MAX_CONNECTIONS = 50


class Limiter:
    def __init__(self, redis: Redis, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.clock = clock
        self._decide = redis.register_script(_DECIDE)
        self._settle = redis.register_script(_SETTLE)

    @classmethod
    def connect(cls, redis_url: str, clock: Callable[[], float] = time.time) -> Limiter:
        """A limiter with a Redis pool of its own, nothing connected yet."""
        pool = BlockingConnectionPool.from_url(
            redis_url,
            max_connections=MAX_CONNECTIONS,
            timeout=5,
            socket_timeout=2,
            socket_connect_timeout=2,
        )
        return cls(Redis(connection_pool=pool), clock)

    async def close(self) -> None:
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()  # a pool given is not closed by aclose

    async def reserve(
        self,
        feature_id: str,
        limits: Limits,
        tokens: int,
        cost: float | None,
        usage: UsageReader,
    ) -> Reservation | None:
        """Count one call and reserve its estimate, or raise RateLimited / LimitsUnavailable.

        None when the feature has no limits (Redis is not asked)."""
        if not limits:
            return None
        now_s = self.clock()
        windows = Windows.at(now_s)
        now_us = int(now_s * 1_000_000)
        minute = now_us // MINUTE_US
        day = now_us // DAY_US
        keys = [
            f"{PREFIX}{feature_id}:rpm",
            f"{PREFIX}{feature_id}:tpm:{minute}",
            f"{PREFIX}{feature_id}:cost:{day}",
        ]
        cost_nano = math.ceil((cost or 0) * NANO)
        rebuilt = [-1, -1, -1]
        for _ in range(2):
            args: list[str | int | float] = [
                now_us,
                limits.requests_per_minute or 0,
                limits.tokens_per_minute or 0,
                round((limits.cost_per_day or 0) * NANO),
                tokens if limits.tokens_per_minute else 0,
                cost_nano if limits.cost_per_day else 0,
                *rebuilt,
                (minute + 1) * MINUTE_US,
                (day + 1) * DAY_US,
            ]
            try:
                answer = await self._decide(keys=keys, args=args)
            except (RedisError, OSError) as exc:
                raise LimitsUnavailable(
                    f"rate limits are kept in Redis, unreachable: {exc}"
                ) from None
            verdict = [part.decode() if isinstance(part, bytes) else str(part) for part in answer]
            if verdict[0] == "ok":
                return Reservation(
                    (keys[1], keys[2]),
                    tokens if limits.tokens_per_minute else 0,
                    cost_nano if limits.cost_per_day else 0,
                )
            if verdict[0] == "limited":
                raise RateLimited(verdict[1], float(verdict[2]) / 1_000_000)
            recorded = await usage(windows)
            rebuilt = [
                recorded.requests if "requests_per_minute" in verdict else 0,
                recorded.tokens if "tokens_per_minute" in verdict else 0,
                math.ceil(recorded.cost * NANO) if "cost_per_day" in verdict else 0,
            ]
        raise LimitsUnavailable("rate-limit counters could not be rebuilt")  # pragma: no cover

    async def settle(
        self, reservation: Reservation | None, tokens: int, cost: float | None
    ) -> None:
        """Replace the reserved estimate by the real usage (best effort: PostgreSQL has it)."""
        if reservation is None:
            return
        deltas = [
            tokens - reservation.tokens if reservation.tokens else 0,
            math.ceil((cost or 0) * NANO) - reservation.cost_nano if reservation.cost_nano else 0,
        ]
        if not any(deltas):
            return  # the estimate was right, or nothing was reserved (requests only)
        with contextlib.suppress(RedisError, OSError):
            await self._settle(keys=list(reservation.keys), args=deltas)
