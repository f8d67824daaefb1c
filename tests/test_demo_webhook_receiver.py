"""The demo's webhook receiver checks signatures as the Standard Webhooks libraries do."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

from standardwebhooks import Webhook

from examples.webhook_receiver import describe, signature_ok

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
ALERT = {"feature": "f", "rule": "r", "severity": "critical", "state": "open", "value": 33.3}
BODY = json.dumps({"type": "alert.firing", "data": {"alert": ALERT}}).encode()


def signed(msg_id: str, body: bytes, secret: str = SECRET) -> dict[str, str]:
    now = datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, now, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


def test_a_signature_made_by_the_library_is_accepted() -> None:
    assert signature_ok(SECRET, signed("msg_1", BODY), BODY)


def test_a_changed_body_another_secret_or_an_old_timestamp_is_refused() -> None:
    headers = signed("msg_1", BODY)
    assert not signature_ok(SECRET, headers, BODY + b" ")
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    assert not signature_ok(other, headers, BODY)
    stale = {**headers, "webhook-timestamp": str(int(time.time()) - 3600)}
    assert not signature_ok(SECRET, stale, BODY)
    # one valid signature among several (a secret being rotated) is enough
    both = {**headers, "webhook-signature": "v1,bm9wZQ== " + headers["webhook-signature"]}
    assert signature_ok(SECRET, both, BODY)


def test_the_printed_line_names_the_alert() -> None:
    assert describe(BODY) == "alert.firing f/r critical open value 33.3"
