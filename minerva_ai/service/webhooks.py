"""Webhooks: an organization's endpoints and their encrypted signing secrets, and the job
that fans the alert outbox out to them and delivers with retries (docs/webhooks.md).

A notification's id is its ``webhook-id`` on every delivery and retry. The job claims due
deliveries inside its fenced transaction and sends each in a task of its own, at most
``webhook_concurrency`` at once, each bounded by ``webhook_timeout_s``: a receiver that
hangs or fails holds up neither the evaluator (which only writes the outbox) nor other
receivers.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

from cryptography.fernet import Fernet, InvalidToken
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from minerva_ai.service import store
from minerva_ai.service.config import ServiceConfig
from minerva_ai.service.db import Row, queries
from minerva_ai.service.errors import ApiError, not_found
from minerva_ai.service.jobs import Fenced, Lease
from minerva_ai.service.webhook_delivery import (
    Guard,
    Outcome,
    Refused,
    attempt,
    body_of,
    new_secret,
    retry_delay,
    signed_headers,
)

log = logging.getLogger("minerva_ai.service.webhooks")

Conn = AsyncConnection[Row]
# After a rotation the previous secret keeps signing this long (docs/webhooks.md).
ROTATION_OVERLAP = timedelta(hours=24)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


class SecretBox:
    """Signing secrets encrypted at rest with MINERVA_SECRET_KEY (Fernet: AES-128-CBC and
    HMAC-SHA256), so the service can read them to sign and the database alone cannot."""

    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())

    def seal(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode())

    def open(self, sealed: bytes) -> str:
        try:
            return self._fernet.decrypt(bytes(sealed)).decode()
        except InvalidToken:
            raise RuntimeError(
                "a webhook secret cannot be decrypted: MINERVA_SECRET_KEY is not the key it "
                "was stored with"
            ) from None


class Webhooks:
    """What the routes and the delivery job share: the SSRF guard, the secret box, the clock."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.guard = Guard(config.webhook_allow, config.webhook_resolver)
        self.box = SecretBox(config.secret_key)
        self.clock: Callable[[], datetime] = config.webhook_clock or (lambda: datetime.now(UTC))

    # ------------------------------------------------------------ the endpoints

    async def check_url(self, url: str) -> None:
        """422 naming the reason when ``url`` may not be a webhook target. A name that does
        not resolve yet is accepted: every attempt resolves and checks it again."""
        try:
            await self.guard.check(url)
        except Refused as exc:
            if "does not resolve" in str(exc):
                return
            raise ApiError(
                422,
                f"url {exc}",
                "validation_failed",
                [{"field": "url", "message": str(exc)}],
            ) from None

    async def create(
        self, conn: Conn, organization_id: UUID, created_by: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        await self.check_url(fields["url"])
        feature_ids = [await _feature_id(conn, organization_id, f) for f in fields["features"]]
        secret = new_secret()
        now = self.clock()
        async with conn.transaction():
            row = await (
                await conn.execute(
                    queries()["create_webhook"],
                    {
                        "organization_id": organization_id,
                        "name": fields["name"],
                        "url": fields["url"],
                        "format": fields["format"],
                        "feature_ids": feature_ids,
                        "min_severity": fields["min_severity"],
                        "labels": Jsonb(fields["labels"]),
                        "created_by": created_by,
                        "now": now,
                    },
                )
            ).fetchone()
            if row is None:
                raise ApiError(
                    409,
                    f"a webhook named {fields['name']!r} exists already",
                    details=[{"field": "name", "message": "taken"}],
                )
            await conn.execute(
                queries()["add_webhook_secret"],
                {"webhook_id": row["id"], "encrypted": self.box.seal(secret), "now": now},
            )
        return {**(await self.get(conn, organization_id, str(row["id"]))), "secret": secret}

    async def list(self, conn: Conn, organization_id: UUID) -> list[dict[str, Any]]:
        params = {"organization_id": organization_id, "id": None, "now": self.clock()}
        rows = await (await conn.execute(queries()["list_webhooks"], params)).fetchall()
        return [_view(row) for row in rows]

    async def get(self, conn: Conn, organization_id: UUID, ref: str) -> dict[str, Any]:
        params = {"organization_id": organization_id, "id": _uuid(ref), "now": self.clock()}
        row = await (await conn.execute(queries()["list_webhooks"], params)).fetchone()
        if row is None:
            raise not_found(f"webhook {ref!r}")
        return _view(row)

    async def delete(self, conn: Conn, organization_id: UUID, ref: str) -> dict[str, Any]:
        params = {"organization_id": organization_id, "id": _uuid(ref)}
        async with conn.transaction():
            row = await (await conn.execute(queries()["delete_webhook"], params)).fetchone()
        if row is None:
            raise not_found(f"webhook {ref!r}")
        return {"id": row["id"], "name": row["name"], "deleted": True}

    async def rotate(self, conn: Conn, organization_id: UUID, ref: str) -> dict[str, Any]:
        """A new secret; the previous one keeps signing for ``ROTATION_OVERLAP``."""
        secret = new_secret()
        now = self.clock()
        until = now + ROTATION_OVERLAP
        async with conn.transaction():
            params = {"organization_id": organization_id, "id": _uuid(ref)}
            row = await (await conn.execute(queries()["lock_webhook"], params)).fetchone()
            if row is None:
                raise not_found(f"webhook {ref!r}")
            keys = {"webhook_id": row["id"], "until": until}
            await conn.execute(queries()["retire_webhook_secrets"], keys)
            await conn.execute(
                queries()["add_webhook_secret"],
                {"webhook_id": row["id"], "encrypted": self.box.seal(secret), "now": now},
            )
        return {"id": row["id"], "secret": secret, "previous_secret_expires_at": until}

    async def send_test(self, conn: Conn, organization_id: UUID, ref: str) -> dict[str, Any]:
        """Send a ``webhook.test`` event now, once (no retries), and say what came back."""
        webhook = await self.get(conn, organization_id, ref)
        now = self.clock()
        event_id = uuid.uuid4()
        payload = {
            "type": "webhook.test",
            "timestamp": iso(now),
            "data": {"webhook": {"id": str(webhook["id"]), "name": webhook["name"]}},
        }
        row = await (
            await conn.execute(
                queries()["create_test_delivery"],
                {
                    "organization_id": organization_id,
                    "webhook_id": webhook["id"],
                    "webhook_name": webhook["name"],
                    "event_id": event_id,
                    "payload": Jsonb(payload),
                    "now": now,
                },
            )
        ).fetchone()
        assert row is not None
        delivery = {"id": row["id"], "event_id": event_id, "payload": payload, "attempts": 0}
        outcome = await self._send(
            conn, webhook["id"], webhook["_url"], webhook["format"], delivery
        )
        await _record(conn, delivery, 1, now, outcome, None)
        return {
            "webhook_id": webhook["id"],
            "event_id": event_id,
            "delivered": outcome.delivered,
            "status_code": outcome.status_code,
            "error": outcome.error,
            "duration_ms": round(outcome.duration_ms, 3),
        }

    # ------------------------------------------------------------ delivery

    async def _send(
        self, conn: Conn, webhook_id: UUID, url: str, format: str, delivery: dict[str, Any]
    ) -> Outcome:
        now = self.clock()
        params = {"webhook_id": webhook_id, "now": now}
        sealed = await (await conn.execute(queries()["active_webhook_secrets"], params)).fetchall()
        body = body_of(delivery["payload"], format)
        try:
            secrets_ = [self.box.open(row["encrypted"]) for row in sealed]
        except RuntimeError as exc:  # MINERVA_SECRET_KEY changed: recorded, and retried
            return Outcome(None, str(exc), 0.0)
        headers = signed_headers(secrets_, str(delivery["event_id"]), now, body)
        return await attempt(self.guard, url, body, headers, self.config.webhook_timeout_s)


async def _record(
    conn: Conn,
    delivery: dict[str, Any],
    number: int,
    at: datetime,
    outcome: Outcome,
    next_retry_at: datetime | None,
) -> None:
    if outcome.delivered:
        state = "delivered"
    else:
        state = "pending" if next_retry_at is not None else "failed"
    await conn.execute(
        queries()["record_webhook_attempt"],
        {
            "id": delivery["id"],
            "attempt": number,
            "at": at,
            "duration_ms": outcome.duration_ms,
            "status_code": outcome.status_code,
            "error": outcome.error,
            "next_retry_at": next_retry_at,
            "state": state,
        },
    )


class Dispatcher(Webhooks):
    """The delivery job's leader side: fan out the outbox, claim due deliveries, send each
    in its own task, record every attempt through the lease."""

    def __init__(self, config: ServiceConfig) -> None:
        super().__init__(config)
        self.in_flight: set[UUID] = set()
        self._slot_freed = asyncio.Event()

    async def run(self, lease: Lease) -> None:
        """Deliver while this instance leads the job; returns when the lease is lost."""
        async with asyncio.TaskGroup() as tasks:
            while not lease.lost.is_set():
                self._slot_freed.clear()
                now = self.clock()
                async with lease.transaction() as conn:
                    await conn.execute(queries()["fan_out_notifications"], {"now": now})
                free = self.config.webhook_concurrency - len(self.in_flight)
                if free > 0:
                    for delivery in await self._claim(lease, now, free):
                        self.in_flight.add(delivery["id"])
                        tasks.create_task(self._deliver(lease, delivery))
                try:
                    async with asyncio.timeout(self.config.webhook_interval_s):
                        await self._slot_freed.wait()
                except TimeoutError:
                    pass

    async def _claim(self, lease: Lease, now: datetime, limit: int) -> list[Row]:
        claimed_until = now + timedelta(seconds=self.config.webhook_timeout_s + 30)
        params = {
            "now": now,
            "limit": limit,
            "in_flight": list(self.in_flight),
            "claimed_until": claimed_until,
        }
        async with lease.transaction() as conn:
            return await (
                await conn.execute(queries()["claim_webhook_deliveries"], params)
            ).fetchall()

    async def _deliver(self, lease: Lease, delivery: Row) -> None:
        try:
            async with lease.pool.connection() as conn:
                outcome = await self._send(
                    conn, delivery["webhook_id"], delivery["url"], delivery["format"], delivery
                )
            number = delivery["attempts"] + 1
            at = self.clock()
            retry_at = None
            if not outcome.delivered and number < self.config.webhook_max_attempts:
                retry_at = at + retry_delay(number, self.config.webhook_retry_base_s)
            async with lease.transaction() as conn:
                await _record(conn, delivery, number, at, outcome, retry_at)
        except Fenced:
            pass  # the next leader sends it again, with the same webhook-id
        except Exception as exc:
            log.warning("webhook delivery %s failed: %s", delivery["id"], exc)
        finally:
            self.in_flight.discard(delivery["id"])
            self._slot_freed.set()


async def deliveries_of(conn: Conn, organization_id: UUID, alert_id: UUID) -> list[dict[str, Any]]:
    """Every delivery attempt of an alert's notifications, oldest first: webhook (its name),
    webhook_id, notification_id, event_id, event, delivery_state, attempt, at, duration_ms,
    status_code or error, next_retry_at (null: delivered or given up)."""
    params = {"organization_id": organization_id, "alert_id": alert_id}
    rows = await (await conn.execute(queries()["alert_webhook_deliveries"], params)).fetchall()
    return [dict(row) for row in rows]


async def _feature_id(conn: Conn, organization_id: UUID, ref: str) -> UUID:
    try:
        feature = await store.get_feature(conn, organization_id, ref)
    except ApiError as exc:
        if exc.status != 404:
            raise
        raise ApiError(
            422,
            f"features: no feature {ref!r}",
            "validation_failed",
            [{"field": "features", "message": f"no feature {ref!r}"}],
        ) from None
    feature_id: UUID = feature["id"]
    return feature_id


def _uuid(ref: str) -> UUID:
    try:
        return UUID(ref)
    except ValueError:
        return UUID(int=0)  # matches nothing: a 404 like any unknown id


def shown_url(url: str, format: str) -> str:
    """A Slack incoming-webhook URL is itself a credential: its last segment is masked."""
    if format != "slack":
        return url
    parts = urlsplit(url)
    head, _, last = parts.path.rpartition("/")
    return urlunsplit(parts._replace(path=f"{head}/***" if last else parts.path, query=""))


def _view(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "url": shown_url(row["url"], row["format"]),
        "format": row["format"],
        "features": [str(f) for f in row["feature_ids"]],
        "min_severity": row["min_severity"],
        "labels": row["labels"],
        "created_by": row["created_by"],
        "created_at": row["created_at"],
        "secret_created_at": row["secret_created_at"],
        "previous_secret_expires_at": row["previous_secret_expires_at"],
        "_url": row["url"],
    }


def public(view: dict[str, Any]) -> dict[str, Any]:
    """A webhook as the API shows it (never a secret, nor a Slack URL's hidden part)."""
    return {k: v for k, v in view.items() if not k.startswith("_")}
