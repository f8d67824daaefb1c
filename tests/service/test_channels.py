"""The WebSocket channels' pumps (service/channels.py) against a real bus: a settings
subscriber that falls behind is told so (`overflow`), never left with a silent gap."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

import orjson

from minerva_ai.service.bus import Bus
from minerva_ai.service.channels import SETTINGS_QUEUED, Subscribe, subscribe_settings
from minerva_ai.service.principal import Principal
from tests.conftest import Servers
from tests.service.conftest import WAIT


class StalledSocket:
    """The channel's side of a session whose client stopped reading: ``put`` waits until
    the client reads again (``resume``); frames are kept in order."""

    def __init__(self, bus: Bus) -> None:
        self.state = SimpleNamespace(bus=bus)
        self.subscriptions: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.frames: list[dict[str, Any]] = []
        self.reading = asyncio.Event()
        self.waiting = asyncio.Event()

    def send(self, kind: str, data: dict[str, Any]) -> None:
        self.frames.append({"type": kind, "data": data})

    async def put(self, frame: bytes) -> None:
        self.waiting.set()
        await self.reading.wait()
        self.frames.append(orjson.loads(frame))

    def error(self, code: str, message: str, **extra: Any) -> None:
        self.send("error", {"code": code, "message": message, **extra})


def test_a_settings_subscriber_that_falls_behind_gets_overflow(servers: Servers) -> None:
    feature_id = str(uuid.uuid4())
    topic = f"settings:{feature_id}"

    async def scenario() -> None:
        bus = Bus(servers.redis_url)
        await bus.start()
        socket = StalledSocket(bus)
        try:
            principal = Principal(uuid.uuid4(), "acme", uuid.uuid4(), "t", ("read",))
            reply = {"channel": "settings", "feature_id": feature_id, "feature": "tagger"}
            key = ("settings", feature_id)
            await subscribe_settings(Subscribe(socket, principal, key, {}, None, reply))
            [subscription] = bus._subscribers[topic]
            async with asyncio.timeout(WAIT):
                await bus.publish(topic, {"version": 1})
                await socket.waiting.wait()  # version 1 waits for the client
                for version in range(2, SETTINGS_QUEUED + 3):  # more than the queue holds
                    await bus.publish(topic, {"version": version})
                while not subscription.overflowed:
                    await asyncio.sleep(0.01)
                socket.reading.set()  # the client reads again
                await bus.publish(topic, {"version": 500})
                while len(socket.frames) < 4:
                    await asyncio.sleep(0.01)
            kinds = [(f["type"], f["data"].get("version")) for f in socket.frames]
            assert kinds == [
                ("subscribed", None),
                ("settings_update", 1),
                ("overflow", None),
                ("settings_update", 500),
            ]
            assert socket.frames[2]["data"] == reply
        finally:
            for task in socket.subscriptions.values():
                task.cancel()
            await asyncio.gather(*socket.subscriptions.values(), return_exceptions=True)
            await bus.close()

    asyncio.run(scenario())
