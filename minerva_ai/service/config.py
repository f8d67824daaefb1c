"""The service's settings, read once from the environment and validated at start."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from minerva_ai.core.errors import ConfigError
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


def _days(name: str, default: int) -> timedelta:
    """A whole number of days, as ``30`` or ``30d`` (logs are kept in daily partitions)."""
    raw = os.environ.get(name, "").strip().lower().removesuffix("d")
    if not raw:
        return timedelta(days=default)
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name}={os.environ[name]!r} must be a whole number of days, e.g. 30d")
    return timedelta(days=int(raw))


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
    # The variables a model definition may name as its key (MINERVA_PROVIDER_KEYS), and the
    # loopback/private hosts or networks providers may call (MINERVA_PROVIDER_ALLOW).
    provider_keys: KeyPolicy = field(default_factory=KeyPolicy)
    provider_allow: AddressPolicy = field(default_factory=AddressPolicy)
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
        return cls(
            database_url=database_url,
            redis_url=redis_url,
            statement_timeout_ms=int(_number("MINERVA_STATEMENT_TIMEOUT_MS", 5000, 1)),
            export_timeout_s=_number("MINERVA_EXPORT_TIMEOUT", 3600, 1),
            max_body_bytes=int(_number("MINERVA_MAX_BODY_BYTES", 10 * 1024 * 1024, 1024)),
            ws_heartbeat_s=_number("MINERVA_WS_HEARTBEAT", 15.0, 0.05),
            ws_auth_timeout_s=_number("MINERVA_WS_AUTH_TIMEOUT", 10.0, 0.05),
            pool_max_size=int(_number("MINERVA_POOL_SIZE", 20, 2)),
            log_retention=_days("MINERVA_LOG_RETENTION", 30),
            job_lease_s=_number("MINERVA_JOB_LEASE", 15.0, 0.5),
            run_jobs=_switch("MINERVA_JOBS", True),
            token_recheck_s=_number("MINERVA_TOKEN_RECHECK", 10.0, 0.1),
            provider_keys=KeyPolicy.from_env(),
            provider_allow=_address_policy(),
        )


def _address_policy() -> AddressPolicy:
    try:
        return AddressPolicy.from_env()
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None
