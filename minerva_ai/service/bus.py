"""Fan-out between instances through Redis pub/sub, with local delivery as the fallback.

Every instance publishes events to Redis and listens on one pub/sub connection; local
subscribers (WebSocket sessions) get bounded queues. When Redis is unreachable, a publish
is delivered to this instance's subscribers directly and the listener keeps retrying:
live updates to other instances pause, nothing else fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from minerva_ai.service import telemetry
from minerva_ai.service.responses import dumps

log = logging.getLogger("minerva_ai.service.bus")

PREFIX = "minerva:"


class Subscription:
    """A bounded queue of events for one topic.

    ``overflowed`` is set when events were lost: the queue filled up, or the bus lost
    Redis for a while (what other instances published meanwhile never arrived). The
    consumer then says so to its client, which reads the current state again; ``get()``
    returns ``None`` to wake a consumer that waits on an empty queue.
    """

    def __init__(self, bus: Bus, topic: str, maxsize: int) -> None:
        self.bus = bus
        self.topic = topic
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.overflowed = False

    def offer(self, event: Any) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            if not self.overflowed:
                telemetry.QUEUE_OVERFLOWS.labels("fanout").inc()
            self.overflowed = True

    def lost(self) -> None:
        self.overflowed = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)

    def reset(self) -> None:
        """Forget what is queued: the consumer is about to have its client read afresh."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.overflowed = False

    async def get(self) -> Any:
        return await self.queue.get()

    def close(self) -> None:
        self.bus.unsubscribe(self)


class Bus:
    def __init__(self, redis_url: str) -> None:
        self.redis = aioredis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        # The listener blocks on its socket: no read timeout, a health check instead.
        self._listen_redis = aioredis.from_url(
            redis_url, socket_connect_timeout=2, health_check_interval=10
        )
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._listener: asyncio.Task[None] | None = None
        self._first_attempt = asyncio.Event()
        self.connected = False
        self._was_connected = False

    async def start(self, timeout: float = 5.0) -> None:
        """Start listening; return once subscribed (or once Redis has refused, or timeout),
        so that an instance that says it has started misses no event published after."""
        self._listener = asyncio.create_task(self._listen(), name="bus-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_attempt.wait(), timeout)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self.redis.aclose()
        await self._listen_redis.aclose()

    async def healthy(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), 1.0))
        except (RedisError, OSError, TimeoutError):
            return False

    def subscribe(self, topic: str, maxsize: int = 1000) -> Subscription:
        sub = Subscription(self, topic, maxsize)
        self._subscribers[topic].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.topic)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.topic]

    async def publish(self, topic: str, event: Any) -> None:
        """Send ``event`` to every instance; never raises (a failed publish is local-only)."""
        payload = dumps(event)
        try:
            await self.redis.publish(PREFIX + topic, payload)
        except (RedisError, OSError) as exc:
            telemetry.REDIS_PUBLISH_FAILURES.inc()
            log.warning("publish to Redis failed, delivering locally only: %s", exc)
            self._deliver(topic, event)

    def _deliver(self, topic: str, event: Any) -> None:
        for sub in list(self._subscribers.get(topic, ())):
            sub.offer(event)

    async def _listen(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self.connected:
                    log.warning("lost Redis pub/sub, retrying: %s", exc)
                self.connected = False
                self._first_attempt.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            else:
                delay = 0.1

    async def _listen_once(self) -> None:
        async with self._listen_redis.pubsub() as pubsub:
            await pubsub.psubscribe(PREFIX + "*")
            # Once Redis confirms, every later publish reaches this instance.
            while True:
                confirmation = await pubsub.get_message(timeout=None)
                if confirmation is not None and confirmation["type"] == "psubscribe":
                    break
            self.connected = True
            self._first_attempt.set()
            if self._was_connected:  # back after a loss: what was published meanwhile is gone
                for subs in list(self._subscribers.values()):
                    for sub in list(subs):
                        sub.lost()
            self._was_connected = True
            async for message in self._messages(pubsub):
                topic = message["channel"].decode().removeprefix(PREFIX)
                if topic in self._subscribers:
                    self._deliver(topic, orjson.loads(message["data"]))

    @staticmethod
    async def _messages(pubsub: Any) -> AsyncIterator[dict[str, Any]]:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is not None:
                yield message
