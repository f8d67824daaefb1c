"""A webhook receiver for the demo: prints each alert notification it gets, and whether its
Standard Webhooks signature is valid.

    python examples/webhook_receiver.py [--port 8766] [--secret-file F] [--duration 3600]

It listens on 127.0.0.1 only and stops after ``--duration`` seconds (or on SIGTERM or
Ctrl-C). The signing secret (``whsec_...``, shown once by ``minerva-ai alerts webhooks
add``) is read from ``--secret-file`` at each request, so the demo can write it after
starting us. The check is the specification's, with the standard library only: base64
HMAC-SHA256 of ``id.timestamp.body`` under the secret's decoded bytes, compared with each
``v1,`` signature of the header, the timestamp within five minutes. In your own receiver,
use the ``standardwebhooks`` package (docs/webhooks.md).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

TOLERANCE_S = 300


def signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Whether one of the header's signatures is the secret's for this id, time and body."""
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        stamp = int(headers.get("webhook-timestamp", ""))
    except ValueError:
        return False
    if abs(time.time() - stamp) > TOLERANCE_S:
        return False
    signed = f"{headers.get('webhook-id', '')}.{stamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [s.split(",", 1)[1] for s in headers.get("webhook-signature", "").split() if "," in s]
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)


def describe(body: bytes) -> str:
    try:
        event = json.loads(body)
        alert = event["data"].get("alert") or {}
    except (ValueError, KeyError, AttributeError):
        return f"{len(body)} bytes, not an alert event"
    where = f"{alert.get('feature')}/{alert.get('rule')}" if alert else "-"
    value = alert.get("value")
    shown = f" value {value:.4g}" if isinstance(value, int | float) else ""
    severity, state = alert.get("severity", ""), alert.get("state", "")
    return f"{event.get('type')} {where} {severity} {state}{shown}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--secret-file", type=Path, default=None)
    parser.add_argument("--duration", type=float, default=3600, help="seconds (default 1h)")
    args = parser.parse_args(argv)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            secret = None
            if args.secret_file is not None and args.secret_file.is_file():
                secret = args.secret_file.read_text().strip()
            verdict = "unverified"
            if secret:
                verdict = "signature ok" if signature_ok(secret, headers, body) else "BAD signature"
            event_id = headers.get("webhook-id", "?")
            print(f"webhook {event_id}: {describe(body)} ({verdict})", flush=True)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *values: object) -> None:
            return  # one line per event is printed above

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"webhook receiver: listening on http://127.0.0.1:{args.port}", flush=True)
    stop.wait(args.duration)
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
