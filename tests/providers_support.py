"""A loopback model provider for the tests: OpenAI chat completions and Anthropic Messages,
answered as those APIs answer (bodies, error bodies, headers), and every request recorded.

What it does is chosen by the request's model name:

- ``...-slow``: answers after ``slow_s`` seconds (a provider that is slow, for timeouts)
- ``...-unauthorized``: 401 with the provider's error body
- ``...-ratelimited``: 429 with ``Retry-After: 7``
- ``...-overloaded``: 500 (OpenAI) or 529 (Anthropic)
- ``...-malformed``: 200 with a body that is not JSON
- ``...-leaky``: 400 whose message quotes the credentials it was sent (some gateways do)
- anything else: ``echo: <the last user text>``, with usage counted in words

The official SDKs are pointed at it in tests/service/test_providers_wire.py, which proves
it speaks their wire format.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

ECHO = "echo: "
# A 1x1 PNG, base64.
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJ"
    "RU5ErkJggg=="
)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int] = ("", 0)  # the client's address and port: its connection

    def json(self) -> Any:
        return orjson.loads(self.body)


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message["content"]
        if isinstance(content, str):
            return content
        return " ".join(part.get("text", "") for part in content if part.get("type") == "text")
    return ""


def _words(messages: list[dict[str, Any]], system: str | None = None) -> int:
    count = len((system or "").split())
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            count += len(content.split())
        else:
            count += sum(len(p.get("text", "").split()) for p in content) + 85 * sum(
                1 for p in content if p.get("type") in ("image", "image_url")
            )
    return count


def openai_answer(model: str, text: str, prompt_tokens: int) -> dict[str, Any]:
    completion = len(text.split())
    return {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_b376dfbbd5",
    }


def anthropic_answer(model: str, text: str, input_tokens: int) -> dict[str, Any]:
    return {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": len(text.split()),
        },
    }


OPENAI_ERRORS = {
    "unauthorized": (
        401,
        {
            "message": "Incorrect API key provided: sk-test***. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        },
    ),
    "ratelimited": (
        429,
        {
            "message": "Rate limit reached for gpt-4o-mini in organization org-test on "
            "requests per min (RPM): Limit 3, Used 3, Requested 1.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        },
    ),
    "overloaded": (
        500,
        {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        },
    ),
}
ANTHROPIC_ERRORS = {
    "unauthorized": (401, "authentication_error", "invalid x-api-key"),
    "ratelimited": (
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your per-minute rate limit",
    ),
    "overloaded": (529, "overloaded_error", "Overloaded"),
}


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # socketserver's 5 resets a burst of new connections


class FakeProvider:
    """The loopback server; ``url`` is its base (``url + "/v1"`` is OpenAI's base_url)."""

    def __init__(self, slow_s: float = 2.0, delay_s: float = 0.0) -> None:
        self.slow_s = slow_s
        self.delay_s = delay_s  # every answer waits this long (a provider's own latency)
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                recorded = Recorded(
                    "POST",
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    self.client_address,
                )
                with provider._lock:
                    provider.requests.append(recorded)
                status, headers, payload = provider.answer(recorded)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                try:
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout): what a real provider sees too

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeProvider:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, request: Recorded) -> tuple[int, dict[str, str], bytes]:
        document = request.json()
        model = str(document.get("model", ""))
        behaviour = model.rsplit("-", 1)[-1]
        if self.delay_s:
            time.sleep(self.delay_s)
        if behaviour == "slow":
            time.sleep(self.slow_s)
        if behaviour == "leaky":
            sent = request.headers.get("authorization") or request.headers.get("x-api-key")
            error = {"message": f"credentials {sent} are not valid here", "type": "invalid"}
            return 400, {"Content-Type": "application/json"}, orjson.dumps({"error": error})
        if request.path == "/v1/chat/completions":
            return self._openai(document, model, behaviour)
        if request.path == "/v1/messages":
            return self._anthropic(document, model, behaviour)
        return 404, {"Content-Type": "application/json"}, b'{"error": "no such path"}'

    def _openai(
        self, document: dict[str, Any], model: str, behaviour: str
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json", "x-request-id": "req_7a1c0ffee"}
        if behaviour == "malformed":
            return 200, headers, b"<html>upstream gateway</html>"
        if behaviour in OPENAI_ERRORS:
            status, error = OPENAI_ERRORS[behaviour]
            if status == 429:
                headers["Retry-After"] = "7"
            return status, headers, orjson.dumps({"error": error})
        messages = document["messages"]
        text = ECHO + _last_user_text(messages)
        return 200, headers, orjson.dumps(openai_answer(model, text, _words(messages)))

    def _anthropic(
        self, document: dict[str, Any], model: str, behaviour: str
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json", "request-id": "req_011CTestAnthropic"}
        if behaviour == "malformed":
            return 200, headers, b"<html>upstream gateway</html>"
        if behaviour in ANTHROPIC_ERRORS:
            status, kind, message = ANTHROPIC_ERRORS[behaviour]
            if status == 429:
                headers["retry-after"] = "7"
            body = {
                "type": "error",
                "error": {"type": kind, "message": message},
                "request_id": "req_011CTestAnthropic",
            }
            return status, headers, orjson.dumps(body)
        messages = document["messages"]
        text = ECHO + _last_user_text(messages)
        words = _words(messages, document.get("system"))
        return 200, headers, orjson.dumps(anthropic_answer(model, text, words))
