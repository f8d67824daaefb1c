"""Demo traffic: realistic log entries for the demo organization's features.

    python examples/traffic.py [--duration 1h] [--rate 10] [--backfill 10m] [--seed N]

Metrics move: for the first minute after it starts and one minute in six after that,
support-summarizer's primary model fails half of its calls with a 503 and the caller
retries on its fallback (a second entry with the same ``request_id``), so its error rate,
health score and status drop and recover, and the demo's alert rule fires and resolves.

Bounded by design: about 5-20 entries a second (``--rate`` on average, with the odd
burst), sent once a second through ``minerva_ai.client.Client``; it stops after
``--duration`` (default one hour), or at once on SIGTERM or Ctrl-C after sending what it
has. It connects like the CLI (``--url``/``MINERVA_URL``, ``MINERVA_TOKEN``, else the
current profile). On start, when the last ``--backfill`` minutes hold no entries, it
writes them first, so ``logs tail`` and ``logs export --since`` have something to show.
``make demo`` runs it beside the demo service; ``make demo-stop`` stops it.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from minerva_ai.cli.config import resolve
from minerva_ai.client import Client
from minerva_ai.core.errors import AuthError, MinervaError
from minerva_ai.core.timeparse import parse_duration

Entry = dict[str, Any]


@dataclass(frozen=True)
class Feature:
    """How one demo feature behaves: its share of traffic, models, latency and cost."""

    name: str
    weight: float
    models: tuple[str, ...]
    sources: tuple[str, ...]
    latency_ms: tuple[float, float]  # median, spread (log-normal)
    tokens: tuple[int, int]  # typical in, out
    cost_per_1k_tokens: float
    error_rate: float
    messages: tuple[str, ...]


FEATURES = (
    Feature(
        "photo-tagging",
        4,
        ("gpt-4o-mini", "claude-3-5-haiku-latest"),
        ("upload-api", "tagging-worker"),
        (420, 0.45),
        (310, 35),
        0.0006,
        0.02,
        (
            "tagged photo {ref}: {n} tags (beach, sunset, people)",
            "tagged photo {ref}: {n} tags from caption and EXIF",
        ),
    ),
    Feature(
        "content-moderation",
        5,
        ("gpt-4o-mini",),
        ("posts-api", "comments-api"),
        (95, 0.35),
        (180, 12),
        0.0004,
        0.005,
        (
            "post {ref} classified: allowed",
            "post {ref} classified: allowed",
            "post {ref} flagged: harassment (score 0.{n}1)",
        ),
    ),
    Feature(
        "support-summarizer",
        2,
        ("claude-sonnet-4-5", "gpt-4o"),
        ("helpdesk", "agent-ui"),
        (2300, 0.4),
        (4200, 380),
        0.009,
        0.03,
        (
            "summarized ticket #{ref} ({n} messages)",
            "summarized ticket #{ref} ({n} messages, 2 attachments)",
        ),
    ),
    Feature(
        "product-search-rerank",
        1,
        ("rerank-v3",),
        ("search-api",),
        (140, 0.5),
        (900, 0),
        0.0002,
        0.01,
        ("in maintenance: served cached ranking for query {ref}",),
    ),
    Feature(
        "invoice-extraction",
        0.2,
        ("gpt-4o-mini",),
        ("billing-worker",),
        (30, 0.2),
        (0, 0),
        0.0,
        0.0,
        ("feature is inactive: refused extraction of invoice {ref}",),
    ),
    Feature(
        "reply-suggestions",
        3,
        ("gpt-4o-mini", "local-sim"),
        ("chat-ui",),
        (650, 0.4),
        (520, 90),
        0.0007,
        0.015,
        ("{n} replies suggested for thread {ref}",),
    ),
)

INCIDENT_FEATURE = "support-summarizer"
INCIDENT_EVERY_MIN = 6  # the first minute after the start, then one in every six


FAILURES = (
    ("error", "error", "upstream 503 from the provider; retries exhausted"),
    ("error", "timeout", "request timed out after 30000 ms"),
    ("error", "error", "provider rejected the request: context length exceeded"),
    ("critical", "error", "circuit breaker open: 5 consecutive provider failures"),
    (
        "error",
        "error",
        "unhandled exception in worker\nTraceback (most recent call last):\n"
        '  File "worker.py", line 88, in handle\n    result = call_model(prompt)\n'
        "TimeoutError: read timed out",
    ),
)


class Traffic:
    """Makes entries; the same seed makes the same traffic."""

    def __init__(self, seed: int | None, start: datetime | None = None) -> None:
        self.random = random.Random(seed)
        self.start = (start or datetime.now(UTC)).replace(second=0, microsecond=0)
        self.weights = [f.weight for f in FEATURES]
        self.burst_until = 0.0

    def per_second(self, rate: float, now: float) -> int:
        """5-20 a second: around ``rate``, three times as many during a burst."""
        if now >= self.burst_until and self.random.random() < 1 / 90:
            self.burst_until = now + self.random.uniform(3, 6)
        mean = rate * (3 if now < self.burst_until else 1)
        return max(5, min(20, round(self.random.gauss(mean, mean / 4))))

    def entry(self, at: datetime) -> Entry:
        pick = self.random
        feature = pick.choices(FEATURES, self.weights)[0]
        latency = pick.lognormvariate(0, feature.latency_ms[1]) * feature.latency_ms[0]
        tokens_in = max(0, round(pick.gauss(feature.tokens[0], feature.tokens[0] / 5)))
        tokens_out = max(0, round(pick.gauss(feature.tokens[1], feature.tokens[1] / 4 + 1)))
        ref = pick.randrange(10_000, 99_999)
        entry: Entry = {
            "id": str(uuid.UUID(int=pick.getrandbits(128), version=4)),
            "timestamp": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "feature": feature.name,
            "level": "info",
            "message": pick.choice(feature.messages).format(ref=ref, n=pick.randint(2, 9)),
            "source": pick.choice(feature.sources),
            "request_id": f"req_{pick.getrandbits(48):012x}",
            "model": pick.choice(feature.models),
            "latency_ms": round(latency, 1),
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "cost": round((tokens_in + tokens_out) / 1000 * feature.cost_per_1k_tokens, 6),
            "status": "success",
        }
        roll = pick.random()
        if roll < feature.error_rate:
            level, status, message = pick.choice(FAILURES)
            entry.update(level=level, status=status, message=message, tokens_out=0, cost=0.0)
            if status == "timeout":
                entry["latency_ms"] = 30000.0
        elif feature.name == "invoice-extraction":
            entry.update(level="warn", status="error", tokens_in=0, tokens_out=0, cost=0.0)
        elif feature.name == "product-search-rerank":
            entry["level"] = "warn"
        elif latency > feature.latency_ms[0] * 2.5:
            entry.update(
                level="warn", message=f"slow response ({latency:.0f} ms): " + entry["message"]
            )
        elif roll > 0.97:
            entry.update(level="debug", message=f"cache hit for request {entry['request_id']}")
        return entry

    def in_incident(self, at: datetime) -> bool:
        return (at - self.start) // timedelta(minutes=1) % INCIDENT_EVERY_MIN == 0

    def attempts(self, at: datetime) -> list[Entry]:
        """A call: one entry, or during an incident a failed primary and its fallback."""
        entry = self.entry(at)
        if entry["feature"] != INCIDENT_FEATURE or not self.in_incident(at):
            return [entry]
        if self.random.random() < 0.5:
            return [entry]
        failed = {
            **entry,
            "id": str(uuid.UUID(int=self.random.getrandbits(128), version=4)),
            "level": "error",
            "status": "error",
            "model": "claude-sonnet-4-5",
            "message": "upstream 503 from the provider: overloaded; retrying on gpt-4o",
            "latency_ms": round(self.random.uniform(800, 1500), 1),
            "tokens_out": 0,
            "cost": 0.0,
        }
        fallback = {**entry, "model": "gpt-4o", "message": "fallback: " + entry["message"]}
        return [failed, fallback]

    def second(self, rate: float, end: datetime) -> list[Entry]:
        count = self.per_second(rate, end.timestamp())
        offsets = sorted(self.random.random() for _ in range(count))
        return [e for o in offsets for e in self.attempts(end - timedelta(seconds=1 - o))]

    def history(self, rate: float, span: timedelta, end: datetime) -> Iterator[Entry]:
        second = end - span
        while second < end:
            second += timedelta(seconds=1)
            yield from self.second(rate, second)


def connect(url: str | None) -> Client:
    resolved = resolve(url, None, None)
    return Client(resolved.url, resolved.token)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="service URL (default: as the CLI resolves it)")
    parser.add_argument("--duration", default="1h", help="stop after this long (default 1h)")
    parser.add_argument("--rate", type=float, default=10, help="entries a second (5-20)")
    parser.add_argument("--backfill", default="10m", help="history to write first (0s: none)")
    parser.add_argument("--seed", type=int, default=None, help="make the same traffic again")
    args = parser.parse_args(argv)
    duration = parse_duration(args.duration).total_seconds()
    backfill = parse_duration(args.backfill)
    traffic = Traffic(args.seed)

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    client = connect(args.url)
    print(f"traffic: sending to {client.url} for {args.duration}", flush=True)
    sent = failed = 0
    now = datetime.now(UTC)
    try:
        if backfill and not client.logs.list({"since": now - backfill}, limit=1):
            totals = client.logs.ingest(traffic.history(args.rate, backfill, now))
            sent += totals["stored"]
            print(
                f"traffic: backfilled {totals['stored']} entries over {args.backfill}", flush=True
            )
    except MinervaError as exc:
        print(f"traffic: backfill failed: {exc}", file=sys.stderr, flush=True)

    started = last_report = time.monotonic()
    while not stop.is_set() and time.monotonic() - started < duration:
        tick = time.monotonic()
        try:
            totals = client.logs.ingest(traffic.second(args.rate, datetime.now(UTC)))
            sent += totals["stored"] + totals["duplicates"]
        except AuthError:
            client.close()
            client = connect(args.url)  # a restarted demo service may have a new token
            failed += 1
        except MinervaError as exc:
            failed += 1
            print(f"traffic: could not send: {exc}", file=sys.stderr, flush=True)
        if tick - last_report >= 60:
            last_report = tick
            print(f"traffic: {sent} entries sent, {failed} seconds failed", flush=True)
        stop.wait(max(0.0, 1.0 - (time.monotonic() - tick)))
    client.close()
    print(f"traffic: stopped after {sent} entries", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
