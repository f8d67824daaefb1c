"""Real time through nginx: followers see what either instance ingested, once, in cursor
order; a settings change reaches a subscriber held by the other instance."""

from __future__ import annotations

import json

import httpx
from websockets.sync.client import connect

from minerva_ai.core.protocol import API_PREFIX
from tests.conftest import WAIT
from tests.production.harness import Stack
from tests.production.support import (
    assert_exactly_once_in_cursor_order,
    ingest,
    new_feature,
    started_tails,
)
from tests.service.conftest import log_entry


def test_websocket_and_sse_tails_see_every_entry_of_both_instances_once_in_order(
    stack: Stack,
) -> None:
    feature = new_feature(stack)
    tails = started_tails(stack, feature, "ws", "sse")
    try:
        expected: set[str] = set()
        for batch in range(20):
            entries = [log_entry(feature, f"b{batch} e{i}") for i in range(10)]
            instance = stack.instances[batch % len(stack.instances)]
            assert ingest(instance.url, stack.token, entries).status_code == 200
            expected |= {e["id"] for e in entries}
        for tail in tails:
            assert_exactly_once_in_cursor_order(tail.wait_for(expected), expected)
    finally:
        for tail in tails:
            tail.stop()


def _frame(kind: str, **data: object) -> str:
    return json.dumps({"type": kind, "data": data})


def test_a_settings_update_reaches_a_subscriber_held_by_the_other_instance(stack: Stack) -> None:
    feature = new_feature(stack)
    url = stack.url.replace("https://", "wss://") + API_PREFIX + "/websocket"
    headers = {"Authorization": f"Bearer {stack.token}"}
    with connect(url, additional_headers=headers, ssl=stack.ssl_context(), open_timeout=WAIT) as ws:
        assert ws.response is not None
        holder = ws.response.headers["X-Minerva-Instance"]
        assert json.loads(ws.recv(timeout=WAIT))["type"] == "authenticated"
        ws.send(_frame("subscribe", channel="settings", feature=feature))
        while (message := json.loads(ws.recv(timeout=WAIT)))["type"] == "heartbeat":
            pass
        assert message["type"] == "subscribed", message
        [other] = [i for i in stack.instances if i.name != holder]
        written = httpx.put(
            f"{other.url}{API_PREFIX}/features/{feature}/settings",
            json={"version": 1, "settings": {"rate_limits": {"requests_per_minute": 7}}},
            headers=headers,
            timeout=WAIT,
        )
        assert written.status_code == 200, written.text
        assert written.headers["X-Minerva-Instance"] == other.name != holder
        while (message := json.loads(ws.recv(timeout=WAIT)))["type"] == "heartbeat":
            pass
    assert message["type"] == "settings_update", message
    assert message["data"]["version"] == 2
    assert message["data"]["settings"]["rate_limits"]["requests_per_minute"] == 7
