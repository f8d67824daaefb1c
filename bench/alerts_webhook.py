"""Breach to webhook received: from the commit of the breaching entries (the answer to their
``POST /logs``) to the `alert.firing` delivery at a loopback receiver (goal: max < the
evaluation interval + 2 s), over ``--cycles`` breach/recover cycles.

The real service (``serve.py minerva``, one uvicorn worker, pinned to CPU 0) on embedded
PostgreSQL and Redis in a temp home, with MINERVA_ALERT_INTERVAL=1,
MINERVA_WEBHOOK_ALLOW=127.0.0.1, a MINERVA_SECRET_KEY, and MINERVA_WEBHOOK_INTERVAL left at
the service's default unless ``--webhook-interval`` sets it. One webhook (``POST
/webhooks``, format json) points at an asyncio HTTP receiver in this process (pinned to
CPU 1 with PostgreSQL) that timestamps each request on arrival and checks its Standard
Webhooks signature. Each cycle uses its own active feature, whose one rule is
``error_rate > 50`` over 1m, no `for`, ``min_requests: 5``, ``no_data: ok``: 10 failed
calls breach it (then wait for `alert.firing`), 40 successful ones bring it to 20%
(then wait for `alert.resolved`, timed the same way); a random pause of 0-1 s before
each breach spreads the commits over the evaluation tick. The transition's ``at`` (the
evaluation cycle's clock, read when the cycle starts) splits each latency into
commit -> cycle start and cycle start -> received.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from benchlib import (
    Databases,
    HttpPool,
    Service,
    add_run_options,
    bench_parser,
    busy_share,
    command_line,
    embedded_databases,
    finish,
    pinned,
    quiet_machine,
)
from logslib import LOGS_PATH, environment, fmt_ms, make_entry, summary_ms
from psycopg.types.json import Jsonb

from minerva_ai.core.protocol import API_PREFIX
from minerva_ai.service.config import new_secret_key
from minerva_ai.service.feature_settings import AlertRule, empty_settings
from minerva_ai.service.webhook_delivery import signature

ALERT_INTERVAL_S = 1.0
DEFAULT_WEBHOOK_INTERVAL_S = 1.0  # ServiceConfig.webhook_interval_s
WAIT_S = 20.0  # at most this for one delivery
RULE = {
    "name": "error-burst",
    "metric": "error_rate",
    "operator": ">",
    "threshold": 50,
    "window": "1m",
    "severity": "critical",
    "min_requests": 5,
    "no_data": "ok",
}
BREACH_ERRORS, RECOVER_SUCCESSES = 10, 40


def give_rules(dbs: Databases, count: int) -> list[tuple[str, str]]:
    """The rule on ``count`` active features (settings version 2): their (name, id)."""
    AlertRule.model_validate(RULE)
    settings = empty_settings()
    settings["monitoring"]["alert_rules"] = [RULE]
    with psycopg.connect(dbs.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, id::text FROM features WHERE organization_id = %s "
            "AND status = 'active' ORDER BY name LIMIT %s",
            (dbs.organization_id, count),
        ).fetchall()
        if len(rows) < count:
            raise SystemExit(f"only {len(rows)} active features: raise --features")
        ids = [r[1] for r in rows]
        conn.execute(
            "INSERT INTO feature_settings (feature_id, version, settings, author_name) "
            "SELECT id, 2, %s, 'bench' FROM features WHERE id = ANY(%s::uuid[])",
            (Jsonb(settings), ids),
        )
        conn.execute("UPDATE features SET settings_version = 2 WHERE id = ANY(%s::uuid[])", (ids,))
    return [(r[0], r[1]) for r in rows]


class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 that answers 204 to every POST and records it."""

    def __init__(self) -> None:
        self.secret = ""
        self.received: list[dict[str, Any]] = []
        self.arrived: dict[tuple[str, str], asyncio.Event] = {}
        self.bad_signatures = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def event(self, feature: str, kind: str) -> asyncio.Event:
        return self.arrived.setdefault((feature, kind), asyncio.Event())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self._record(time.monotonic(), time.time(), headers, body)
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _record(self, monotonic: float, wall: float, headers: dict[str, str], body: bytes) -> None:
        event_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "0")
        expected = signature(self.secret, event_id, int(stamp), body)
        if expected not in headers.get("webhook-signature", "").split(" "):
            self.bad_signatures += 1
        payload = orjson.loads(body)
        alert = (payload.get("data") or {}).get("alert") or {}
        transition = (payload.get("data") or {}).get("transition") or {}
        item = {
            "monotonic": monotonic,
            "wall": wall,
            "id": event_id,
            "type": payload.get("type"),
            "feature": alert.get("feature"),
            "evaluated_at": transition.get("at"),
        }
        self.received.append(item)
        self.event(str(item["feature"]), str(item["type"])).set()


def entries(feature: str, rng: random.Random, failed: bool, count: int) -> bytes:
    now = datetime.now(UTC)
    batch = []
    for _ in range(count):
        entry = make_entry(rng, feature, now)
        outcome = ("error", "error") if failed else ("success", "info")
        entry.update(status=outcome[0], level=outcome[1])
        batch.append(entry)
    return orjson.dumps(batch)


async def post_and_wait(
    http: HttpPool, receiver: Receiver, feature: str, body: bytes, kind: str
) -> dict[str, float]:
    """POST the entries; the times from its answer to the cycle and to the delivery."""
    status, answer = await http.request("POST", LOGS_PATH, body)
    committed, committed_wall = time.monotonic(), time.time()
    if status not in (200, 201, 202):
        raise RuntimeError(f"POST /logs answered {status}: {answer[:300]!r}")
    await asyncio.wait_for(receiver.event(feature, kind).wait(), WAIT_S)
    got = next(r for r in receiver.received if r["feature"] == feature and r["type"] == kind)
    evaluated = datetime.fromisoformat(got["evaluated_at"]).timestamp()
    return {
        "received_s": got["monotonic"] - committed,
        "evaluated_s": evaluated - committed_wall,
        "delivered_s": got["wall"] - evaluated,
    }


async def run_cycles(service: Service, dbs: Databases, features: list[str]) -> dict[str, Any]:
    rng = random.Random(7)
    receiver = Receiver()
    port = await receiver.start()
    http = HttpPool(service.port, dbs.token)
    cycles: list[dict[str, Any]] = []
    try:
        status, answer = await http.request(
            "POST",
            f"{API_PREFIX}/webhooks",
            orjson.dumps({"name": "bench", "url": f"http://127.0.0.1:{port}/", "format": "json"}),
        )
        if status != 201:
            raise RuntimeError(f"POST /webhooks answered {status}: {answer[:300]!r}")
        receiver.secret = orjson.loads(answer)["data"]["secret"]
        for i, feature in enumerate(features):
            await asyncio.sleep(rng.random())
            breach = await post_and_wait(
                http, receiver, feature, entries(feature, rng, True, BREACH_ERRORS), "alert.firing"
            )
            recover = await post_and_wait(
                http,
                receiver,
                feature,
                entries(feature, rng, False, RECOVER_SUCCESSES),
                "alert.resolved",
            )
            cycles.append({"feature": feature, "breach": breach, "recover": recover})
            print(
                f"  cycle {i + 1:>3}: breach -> received {breach['received_s'] * 1000:6.0f} ms "
                f"(cycle started {breach['evaluated_s'] * 1000:5.0f} ms after the commit), "
                f"recover -> received {recover['received_s'] * 1000:6.0f} ms",
                flush=True,
            )
        await asyncio.sleep(2 * ALERT_INTERVAL_S + 1)  # anything sent twice arrives by now
    finally:
        http.close()
        await receiver.close()
    ids = [r["id"] for r in receiver.received]
    return {
        "cycles": cycles,
        "deliveries": len(ids),
        "distinct_webhook_ids": len(set(ids)),
        "bad_signatures": receiver.bad_signatures,
    }


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--cycles", type=int, default=40)
    parser.add_argument("--features", type=int, default=80)
    parser.add_argument(
        "--webhook-interval",
        type=float,
        help=f"MINERVA_WEBHOOK_INTERVAL (default: the service's, {DEFAULT_WEBHOOK_INTERVAL_S:g} s)",
    )
    add_run_options(parser)
    args = parser.parse_args()
    busy = quiet_machine(args.wait_quiet)
    webhook_interval = args.webhook_interval or DEFAULT_WEBHOOK_INTERVAL_S
    env = {
        "MINERVA_ALERT_INTERVAL": str(ALERT_INTERVAL_S),
        "MINERVA_WEBHOOK_ALLOW": "127.0.0.1",
        "MINERVA_SECRET_KEY": new_secret_key(),
    }
    if args.webhook_interval:
        env["MINERVA_WEBHOOK_INTERVAL"] = str(args.webhook_interval)
    results: dict[str, Any] = {
        "command": command_line(),
        "busy_before": busy,
        "alert_interval_s": ALERT_INTERVAL_S,
        "webhook_interval_s": webhook_interval,
        "webhook_interval_set": bool(args.webhook_interval),
    }
    goal_s = ALERT_INTERVAL_S + 2
    with (
        embedded_databases(args.features, postgres_cpu=1) as dbs,
        environment(**env),
        Service("minerva", dbs, cpu=0) as service,
        pinned(1),
    ):
        features = [name for name, _ in give_rules(dbs, args.cycles)]
        print(
            f"{args.cycles} cycles; MINERVA_ALERT_INTERVAL={ALERT_INTERVAL_S:g}, "
            f"MINERVA_WEBHOOK_INTERVAL={webhook_interval:g}"
            f"{'' if args.webhook_interval else ' (the default)'}"
        )
        results.update(asyncio.run(run_cycles(service, dbs, features)))
    share = busy_share()
    results["busy_after"] = f"{share:.0%}" if share is not None else "unknown"
    for kind in ("breach", "recover"):
        for part in ("received_s", "evaluated_s", "delivered_s"):
            results[f"{kind}_{part.removesuffix('_s')}"] = summary_ms(
                c[kind][part] for c in results["cycles"]
            )
    breach = results["breach_received"]
    results["goal_met"] = breach["max_ms"] < goal_s * 1000
    print(f"  busy after   {results['busy_after']}")
    print("\ncommit of the breaching entries -> alert.firing received:")
    print(f"  {fmt_ms(breach)}")
    print(f"    commit -> cycle start   {fmt_ms(results['breach_evaluated'])}")
    print(f"    cycle start -> received {fmt_ms(results['breach_delivered'])}")
    print("commit of the recovering entries -> alert.resolved received:")
    print(f"  {fmt_ms(results['recover_received'])}")
    print(
        f"deliveries {results['deliveries']} (expected {2 * args.cycles}), distinct webhook-ids "
        f"{results['distinct_webhook_ids']}, bad signatures {results['bad_signatures']}"
    )
    verdict = "met" if results["goal_met"] else "MISSED"
    print(f"goal: max < {goal_s:g} s (interval + 2 s): {verdict}")
    return finish(results, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
