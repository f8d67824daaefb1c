"""The service's settings, read once from the environment and validated at start."""

from __future__ import annotations

import base64
import ipaddress
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from minerva_ai.core.errors import ConfigError
from minerva_ai.service.instance import default_instance_id
from minerva_ai.service.providers.policy import AddressPolicy, KeyPolicy, PolicyError


def _number(name: str, default: float, minimum: float = 0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _switch(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "on", "yes"):
        return True
    if raw in ("0", "false", "off", "no"):
        return False
    raise ConfigError(f"{name}={os.environ[name]!r} must be on or off")


def _instance(raw: str) -> str:
    """MINERVA_INSTANCE: the name in X-Minerva-Instance; unset, ``hostname:pid``."""
    raw = raw.strip()
    if not raw:
        return default_instance_id()
    if len(raw) > 100 or not all(33 <= ord(c) < 127 for c in raw):
        raise ConfigError(
            f"MINERVA_INSTANCE={raw!r} must be at most 100 printable ASCII characters "
            "without spaces (it is sent as the X-Minerva-Instance header)"
        )
    return raw


def _days(name: str, default: int) -> timedelta:
    """A whole number of days, as ``30`` or ``30d`` (logs are kept in daily partitions)."""
    raw = os.environ.get(name, "").strip().lower().removesuffix("d")
    if not raw:
        return timedelta(days=default)
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name}={os.environ[name]!r} must be a whole number of days, e.g. 30d")
    return timedelta(days=int(raw))


# Resolves a host name and port to IP addresses (webhook targets; tests inject their own).
Resolver = Callable[[str, int], Awaitable[list[str]]]


def _webhook_allow(raw: str) -> tuple[str, ...]:
    """MINERVA_WEBHOOK_ALLOW: comma-separated host names and CIDRs (an IP is a /32 or /128)."""
    allowed: list[str] = []
    for item in (part.strip().lower() for part in raw.split(",")):
        if not item:
            continue
        if "/" in item or item.replace(".", "").isdigit() or ":" in item:
            try:
                item = str(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigError(
                    f"MINERVA_WEBHOOK_ALLOW: {item!r} is neither a host name nor a CIDR"
                ) from None
        allowed.append(item)
    return tuple(allowed)


def _secret_key(raw: str) -> str:
    """MINERVA_SECRET_KEY: 32 bytes in URL-safe base64 (a Fernet key); unset: a key of this
    process's own (`server start` always sets one: see ``ServiceConfig.secret_key``)."""
    raw = raw.strip()
    if not raw:
        return new_secret_key()
    try:
        decoded = base64.urlsafe_b64decode(raw.encode())
    except ValueError:
        decoded = b""
    if len(decoded) != 32:
        raise ConfigError(
            "MINERVA_SECRET_KEY must be 32 bytes in URL-safe base64 (a Fernet key), e.g. from "
            "python -c 'import base64, os; "
            "print(base64.urlsafe_b64encode(os.urandom(32)).decode())'"
        )
    return raw


def new_secret_key() -> str:
    """A fresh key in MINERVA_SECRET_KEY's form."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def provide_secret_key(home: Path, embedded_database: bool) -> None:
    """Put MINERVA_SECRET_KEY in the environment of `server start` and its workers: as
    given; else the key of ``home`` (``secret.key``, 0600), made on first start of an
    embedded database and read by an instance that joins it; else, against an external
    database, refuse: a key of this instance's own could not read what others stored."""
    given = os.environ.get("MINERVA_SECRET_KEY", "").strip()
    if given:
        _secret_key(given)
        return
    path = home / "secret.key"
    if not path.exists() and embedded_database:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(new_secret_key() + "\n")
    if path.exists():
        os.environ["MINERVA_SECRET_KEY"] = _secret_key(path.read_text())
        return
    raise ConfigError(
        "MINERVA_SECRET_KEY is not set: against an external database every instance needs "
        "the same key, to encrypt and read webhook signing secrets (docs/webhooks.md)"
    )


@dataclass(frozen=True)
class ServiceConfig:
    database_url: str
    redis_url: str
    statement_timeout_ms: int = 5000
    export_timeout_s: float = 3600
    max_body_bytes: int = 10 * 1024 * 1024
    ws_heartbeat_s: float = 15.0
    ws_auth_timeout_s: float = 10.0
    pool_max_size: int = 20
    log_retention: timedelta = timedelta(days=30)
    # A job leader that stops renewing is replaced within this plus a third of it.
    job_lease_s: float = 15.0
    # Off: this instance never leads a background job (others must run them).
    run_jobs: bool = True
    # A revoked token's live streams end within this even when Redis is down (at once else).
    token_recheck_s: float = 10.0
    # How often live metrics (WebSocket `metrics_update`, SSE) are computed and sent.
    metrics_interval_s: float = 5.0
    # Minute rollups are kept this long: never shorter than the logs they summarise.
    metrics_retention: timedelta = timedelta(days=90)
    # Encrypts webhook signing secrets at rest (MINERVA_SECRET_KEY). `server start` always
    # sets it (generated under MINERVA_HOME in embedded mode, required otherwise); a config
    # built in code without one gets a key of its own, good for that process only.
    secret_key: str = field(default_factory=new_secret_key, repr=False)
    # Webhook targets allowed although they resolve to loopback, private or link-local
    # addresses: host names and CIDRs (MINERVA_WEBHOOK_ALLOW).
    webhook_allow: tuple[str, ...] = ()
    # One delivery attempt's bound, connect to last byte (MINERVA_WEBHOOK_TIMEOUT).
    webhook_timeout_s: float = 10.0
    # How often due deliveries are looked for (MINERVA_WEBHOOK_INTERVAL).
    webhook_interval_s: float = 1.0
    # Attempts in flight at once, across all webhooks.
    webhook_concurrency: int = 16
    # Retries wait base * 2^(attempt-1), at most an hour; a delivery gives up after this many.
    webhook_retry_base_s: float = 5.0
    webhook_max_attempts: int = 10
    # Seams for tests: name resolution of webhook targets, and the delivery clock.
    webhook_resolver: Resolver | None = None
    webhook_clock: Callable[[], datetime] | None = None
    # How often alert rules are evaluated (one instance at a time).
    alert_interval_s: float = 15.0
    # The variables a model definition may name as its key (MINERVA_PROVIDER_KEYS), and the
    # loopback/private hosts or networks providers may call (MINERVA_PROVIDER_ALLOW).
    provider_keys: KeyPolicy = field(default_factory=KeyPolicy)
    provider_allow: AddressPolicy = field(default_factory=AddressPolicy)
    # How long an answer stays in the shared test cache (MINERVA_TEST_CACHE_TTL, seconds).
    test_cache_ttl_s: int = 86400
    # Sent as X-Minerva-Instance on every response (MINERVA_INSTANCE; hostname:pid else).
    instance: str = field(default_factory=default_instance_id)
    # On SIGTERM, /api/health/ready answers 503 this long before the drain starts, so a
    # load balancer polling it stops sending new work first (MINERVA_DRAIN_DELAY).
    drain_delay_s: float = 0.0
    # The rate limiter's clock (seconds since the epoch): tests drive it.
    clock: Callable[[], float] = time.time

    @classmethod
    def from_env(cls) -> ServiceConfig:
        database_url = os.environ.get("DATABASE_URL", "")
        redis_url = os.environ.get("REDIS_URL", "")
        if not database_url or not redis_url:
            raise ConfigError(
                "the service needs DATABASE_URL and REDIS_URL "
                "(`minerva-ai server start` sets them, or starts embedded servers)"
            )
        log_retention = _days("MINERVA_LOG_RETENTION", 30)
        metrics_retention = _days("MINERVA_METRICS_RETENTION", 90)
        if metrics_retention < log_retention:
            raise ConfigError(
                f"MINERVA_METRICS_RETENTION ({metrics_retention.days}d) must be at least "
                f"MINERVA_LOG_RETENTION ({log_retention.days}d): metrics summarise the logs"
            )
        return cls(
            database_url=database_url,
            redis_url=redis_url,
            statement_timeout_ms=int(_number("MINERVA_STATEMENT_TIMEOUT_MS", 5000, 1)),
            export_timeout_s=_number("MINERVA_EXPORT_TIMEOUT", 3600, 1),
            max_body_bytes=int(_number("MINERVA_MAX_BODY_BYTES", 10 * 1024 * 1024, 1024)),
            ws_heartbeat_s=_number("MINERVA_WS_HEARTBEAT", 15.0, 0.05),
            ws_auth_timeout_s=_number("MINERVA_WS_AUTH_TIMEOUT", 10.0, 0.05),
            pool_max_size=int(_number("MINERVA_POOL_SIZE", 20, 2)),
            log_retention=log_retention,
            job_lease_s=_number("MINERVA_JOB_LEASE", 15.0, 0.5),
            run_jobs=_switch("MINERVA_JOBS", True),
            token_recheck_s=_number("MINERVA_TOKEN_RECHECK", 10.0, 0.1),
            metrics_interval_s=_number("MINERVA_METRICS_INTERVAL", 5.0, 0.05),
            metrics_retention=metrics_retention,
            secret_key=_secret_key(os.environ.get("MINERVA_SECRET_KEY", "")),
            webhook_allow=_webhook_allow(os.environ.get("MINERVA_WEBHOOK_ALLOW", "")),
            webhook_timeout_s=_number("MINERVA_WEBHOOK_TIMEOUT", 10.0, 0.1),
            webhook_interval_s=_number("MINERVA_WEBHOOK_INTERVAL", 1.0, 0.05),
            alert_interval_s=_number("MINERVA_ALERT_INTERVAL", 15.0, 0.1),
            test_cache_ttl_s=int(_number("MINERVA_TEST_CACHE_TTL", 86400, 1)),
            provider_keys=KeyPolicy.from_env(),
            provider_allow=_address_policy(),
            instance=_instance(os.environ.get("MINERVA_INSTANCE", "")),
            drain_delay_s=_number("MINERVA_DRAIN_DELAY", 0.0, 0),
        )


def _address_policy() -> AddressPolicy:
    try:
        return AddressPolicy.from_env()
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None
