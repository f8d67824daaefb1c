"""The typed resource methods of the client (``.features``, ``.settings``, ``.tokens``, ``.logs``,
``.metrics``, ``.alerts``, ``.silences``, ``.webhooks``).

Each request is described once here as a ``Call``; the blocking and the async classes
only differ in how they wait for it. They send through any ``Sender``/``AsyncSender``
(``Client``/``AsyncClient``), so this module does not depend on the client classes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import orjson

from minerva_ai.core.errors import UnreachableError, UsageError, ValidationError
from minerva_ai.core.protocol import EXPORT_FORMATS, LOG_FILTERS

JSON = dict[str, Any]

MAX_BATCH_BYTES = 8 * 1024 * 1024  # under the service's 10 MiB body limit
# An export may think for a long time before its first byte (the service allows an hour).
EXPORT_TIMEOUT = httpx.Timeout(30.0, read=600.0)


@dataclass(frozen=True)
class Call:
    """One request to the service, before it is built for a transport."""

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] | None = None
    content: bytes | None = None  # a body already encoded (``json`` must then be None)
    idempotent: bool = False  # safe to resend after a lost answer, whatever the method


class Sender(Protocol):
    """What the blocking resources send through: ``Client``."""

    @property
    def url(self) -> str: ...

    def data(self, call: Call) -> JSON: ...

    def request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None
    ) -> Any: ...

    def paginate(
        self, path: str, params: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> Iterator[JSON]: ...

    def stream(
        self, call: Call, *, timeout: httpx.Timeout | None = None
    ) -> AbstractContextManager[httpx.Response]: ...


class AsyncSender(Protocol):
    """What the async resources send through: ``AsyncClient``."""

    async def data(self, call: Call) -> JSON: ...

    async def request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None
    ) -> Any: ...

    def paginate(
        self, path: str, params: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> AsyncIterator[JSON]: ...

    def stream(
        self, call: Call, *, timeout: httpx.Timeout | None = None
    ) -> AbstractAsyncContextManager[httpx.Response]: ...


def segment(value: str | int) -> str:
    """A path segment, escaped (features are addressed by id or by name)."""
    return quote(str(value), safe="")


def feature_path(feature: str) -> str:
    return f"/features/{segment(feature)}"


def settings_path(feature: str) -> str:
    return f"{feature_path(feature)}/settings"


def _features_list_params(
    status: str | None, search: str | None, include_metrics: bool, window: str | None
) -> dict[str, Any]:
    metrics = {"include_metrics": True, "window": window} if include_metrics else {}
    return {"status": status, "search": search, **metrics}


def _features_create(
    name: str, display_name: str | None, description: str | None, status: str | None
) -> Call:
    fields = {"display_name": display_name, "description": description, "status": status}
    body = {"name": name} | {k: v for k, v in fields.items() if v is not None}
    return Call("POST", "/features", json=body)


def _features_update(
    feature: str, display_name: str | None, description: str | None, status: str | None
) -> Call:
    fields = {"display_name": display_name, "description": description, "status": status}
    body = {k: v for k, v in fields.items() if v is not None}
    return Call("PATCH", feature_path(feature), json=body)


def _settings_put(
    feature: str, sections: Mapping[str, Any], base_version: int, dry_run: bool = False
) -> Call:
    return Call(
        "PUT",
        settings_path(feature),
        params={"dry_run": "true"} if dry_run else None,
        json={"version": base_version, "settings": sections},
    )


def _settings_version(feature: str, version: int) -> Call:
    return Call("GET", f"{settings_path(feature)}/versions/{segment(version)}")


def _settings_rollback(feature: str, version: int) -> Call:
    return Call("POST", f"{settings_path(feature)}/rollback", json={"version": version})


def _tokens_create(scopes: Sequence[str], name: str | None) -> Call:
    return Call("POST", "/tokens", json={"scopes": list(scopes)} | ({"name": name} if name else {}))


class Features:
    """``client.features``: the feature registry."""

    def __init__(self, client: Sender) -> None:
        self._c = client

    def list(
        self,
        *,
        status: str | None = None,
        search: str | None = None,
        include_metrics: bool = False,
        window: str | None = None,
        limit: int | None = None,
    ) -> list[JSON]:
        """Features ordered by name, across pages (``limit`` None or 0 = all); with
        ``include_metrics``, each with its ``metrics`` over ``window`` (default 5m)."""
        params = _features_list_params(status, search, include_metrics, window)
        return list(self._c.paginate("/features", params, limit))

    def get(self, feature: str) -> JSON:
        return self._c.data(Call("GET", feature_path(feature)))

    def create(
        self,
        name: str,
        *,
        display_name: str | None = None,
        description: str | None = None,
        status: str | None = None,
    ) -> JSON:
        return self._c.data(_features_create(name, display_name, description, status))

    def update(
        self,
        feature: str,
        *,
        display_name: str | None = None,
        description: str | None = None,
        status: str | None = None,
    ) -> JSON:
        """Change the given fields (``None`` leaves a field as it is)."""
        return self._c.data(_features_update(feature, display_name, description, status))

    def delete(self, feature: str) -> JSON:
        return self._c.data(Call("DELETE", feature_path(feature)))


class Settings:
    """``client.settings``: versioned settings (``Client.get_settings`` adds a cache)."""

    def __init__(self, client: Sender) -> None:
        self._c = client

    def get(self, feature: str) -> JSON:
        return self._c.data(Call("GET", settings_path(feature)))

    def put(
        self, feature: str, sections: Mapping[str, Any], base_version: int, dry_run: bool = False
    ) -> JSON:
        """Replace the given sections; ``ConflictError`` when ``base_version`` is stale.

        With ``dry_run`` the service validates and answers the would-be version and its
        ``diff``, writing nothing.
        """
        return self._c.data(_settings_put(feature, sections, base_version, dry_run))

    def history(self, feature: str, *, limit: int | None = None) -> list[JSON]:
        """Versions, newest first, each with its diff against the previous one."""
        return list(self._c.paginate(f"{settings_path(feature)}/history", None, limit))

    def version(self, feature: str, version: int) -> JSON:
        return self._c.data(_settings_version(feature, version))

    def rollback(self, feature: str, version: int) -> JSON:
        """A new version whose settings equal those of ``version``."""
        return self._c.data(_settings_rollback(feature, version))


class Tokens:
    """``client.tokens``: the organization's API tokens (admin scope)."""

    def __init__(self, client: Sender) -> None:
        self._c = client

    def list(self, *, limit: int | None = None) -> list[JSON]:
        return list(self._c.paginate("/tokens", None, limit))

    def create(self, *, scopes: Sequence[str], name: str | None = None) -> JSON:
        """A new token; its secret (``token``) is in this answer only."""
        return self._c.data(_tokens_create(scopes, name))

    def revoke(self, token_id: str) -> JSON:
        return self._c.data(Call("DELETE", f"/tokens/{segment(token_id)}"))


class AsyncFeatures:
    """``client.features`` of ``AsyncClient``."""

    def __init__(self, client: AsyncSender) -> None:
        self._c = client

    async def list(
        self,
        *,
        status: str | None = None,
        search: str | None = None,
        include_metrics: bool = False,
        window: str | None = None,
        limit: int | None = None,
    ) -> list[JSON]:
        """Features ordered by name, across pages (``limit`` None or 0 = all); with
        ``include_metrics``, each with its ``metrics`` over ``window`` (default 5m)."""
        params = _features_list_params(status, search, include_metrics, window)
        return [item async for item in self._c.paginate("/features", params, limit)]

    async def get(self, feature: str) -> JSON:
        return await self._c.data(Call("GET", feature_path(feature)))

    async def create(
        self,
        name: str,
        *,
        display_name: str | None = None,
        description: str | None = None,
        status: str | None = None,
    ) -> JSON:
        return await self._c.data(_features_create(name, display_name, description, status))

    async def update(
        self,
        feature: str,
        *,
        display_name: str | None = None,
        description: str | None = None,
        status: str | None = None,
    ) -> JSON:
        """Change the given fields (``None`` leaves a field as it is)."""
        return await self._c.data(_features_update(feature, display_name, description, status))

    async def delete(self, feature: str) -> JSON:
        return await self._c.data(Call("DELETE", feature_path(feature)))


class AsyncSettings:
    """``client.settings`` of ``AsyncClient``."""

    def __init__(self, client: AsyncSender) -> None:
        self._c = client

    async def get(self, feature: str) -> JSON:
        return await self._c.data(Call("GET", settings_path(feature)))

    async def put(
        self, feature: str, sections: Mapping[str, Any], base_version: int, dry_run: bool = False
    ) -> JSON:
        """Replace the given sections; ``ConflictError`` when ``base_version`` is stale."""
        return await self._c.data(_settings_put(feature, sections, base_version, dry_run))

    async def history(self, feature: str, *, limit: int | None = None) -> list[JSON]:
        """Versions, newest first, each with its diff against the previous one."""
        path = f"{settings_path(feature)}/history"
        return [item async for item in self._c.paginate(path, None, limit)]

    async def version(self, feature: str, version: int) -> JSON:
        return await self._c.data(_settings_version(feature, version))

    async def rollback(self, feature: str, version: int) -> JSON:
        """A new version whose settings equal those of ``version``."""
        return await self._c.data(_settings_rollback(feature, version))


class AsyncTokens:
    """``client.tokens`` of ``AsyncClient``."""

    def __init__(self, client: AsyncSender) -> None:
        self._c = client

    async def list(self, *, limit: int | None = None) -> list[JSON]:
        return [item async for item in self._c.paginate("/tokens", None, limit)]

    async def create(self, *, scopes: Sequence[str], name: str | None = None) -> JSON:
        """A new token; its secret (``token``) is in this answer only."""
        return await self._c.data(_tokens_create(scopes, name))

    async def revoke(self, token_id: str) -> JSON:
        return await self._c.data(Call("DELETE", f"/tokens/{segment(token_id)}"))


def iso_param(key: str, value: datetime) -> str:
    """A query parameter's time, in UTC with ``Z``; a naive time is refused."""
    if value.tzinfo is None:
        raise UsageError(f"{key}: a time needs a timezone ({value.isoformat()})")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def log_params(filters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Query parameters for a log filter: levels may be a list, times aware datetimes."""
    params: dict[str, Any] = {}
    for key, value in (filters or {}).items():
        if key not in LOG_FILTERS:
            raise UsageError(f"unknown log filter {key!r} (use: {', '.join(LOG_FILTERS)})")
        if value is None:
            continue
        if isinstance(value, datetime):
            value = iso_param(key, value)
        elif isinstance(value, list | tuple):
            value = ",".join(value)
        params[key] = value
    return params


@dataclass(frozen=True)
class LogPage:
    """What committed after a cursor (oldest first), where to ask next, and any gap."""

    items: list[JSON]
    next_cursor: str
    gap: JSON | None = None


def _after_params(cursor: str, filters: Mapping[str, Any] | None, limit: int) -> dict[str, Any]:
    return {**log_params(filters), "after": cursor, "limit": limit}


def _log_page(cursor: str, body: JSON) -> LogPage:
    return LogPage(
        list(body.get("data") or []), str(body.get("next_cursor") or cursor), body.get("gap")
    )


def _logs_export(format: str, filters: Mapping[str, Any] | None, csv_raw: bool) -> Call:
    if format not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {format!r} (use: {', '.join(EXPORT_FORMATS)})")
    params = {**log_params(filters), "format": format, "csv_raw": csv_raw or None}
    return Call("GET", "/logs/export", params)


@dataclass
class _Batch:
    """Entries encoded for one request, with their positions in the caller's iterable."""

    positions: list[int] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    rejected: list[JSON] = field(default_factory=list)  # refused before sending
    size: int = 2

    def call(self) -> Call:
        body = b"[" + b",".join(self.bodies) + b"]"
        return Call("POST", "/logs", content=body, idempotent=True)


def _batches(entries: Iterable[Any], batch_size: int, max_bytes: int) -> Iterator[_Batch]:
    """Group entries by count and size; each gets an ``id`` before its first send."""
    batch = _Batch()
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            batch.rejected.append(_local_rejection(position, "an entry must be a JSON object"))
            continue
        if entry.get("id") is None:
            entry["id"] = str(uuid.uuid4())  # in place: a caller's own retry stays idempotent
        try:
            body = orjson.dumps(entry)
        except TypeError as exc:
            batch.rejected.append(_local_rejection(position, f"not JSON-serialisable: {exc}"))
            continue
        if len(body) + 2 > max_bytes:
            reason = f"the entry is {len(body)} bytes; a request carries at most {max_bytes}"
            batch.rejected.append(_local_rejection(position, reason))
            continue
        if batch.bodies and (
            len(batch.bodies) >= batch_size or batch.size + len(body) + 1 > max_bytes
        ):
            yield batch
            batch = _Batch()
        batch.positions.append(position)
        batch.bodies.append(body)
        batch.size += len(body) + 1
    if batch.bodies or batch.rejected:
        yield batch


def _local_rejection(position: int, reason: str) -> JSON:
    return {"index": position, "field": None, "error": reason}


def _refused_batch(exc: ValidationError) -> JSON:
    """A 422 "no entry was accepted": the batch's answer, with every entry rejected."""
    if exc.status != 422 or exc.code != "validation_failed" or not isinstance(exc.details, list):
        raise exc
    return {"stored": 0, "duplicates": 0, "rejected": exc.details, "cursor": None}


def _new_totals() -> JSON:
    return {"stored": 0, "duplicates": 0, "rejected": [], "cursor": None}


def _merge(totals: JSON, batch: _Batch, answer: JSON | None) -> None:
    """Add one batch's answer; service positions become positions in the whole input."""
    rejected = list(batch.rejected)
    if answer is not None:
        totals["stored"] += int(answer.get("stored") or 0)
        totals["duplicates"] += int(answer.get("duplicates") or 0)
        totals["cursor"] = answer.get("cursor") or totals["cursor"]
        for problem in answer.get("rejected") or []:
            index = problem.get("index")
            known = isinstance(index, int) and 0 <= index < len(batch.positions)
            rejected.append(
                {
                    "index": batch.positions[index] if known else None,
                    "field": problem.get("field"),
                    "error": problem.get("error") or problem.get("message"),
                }
            )
    totals["rejected"].extend(sorted(rejected, key=lambda r: (r["index"] is None, r["index"])))


class Logs:
    """``client.logs``: ingest, list, read after a cursor, export."""

    def __init__(self, client: Sender) -> None:
        self._c = client

    def ingest(
        self,
        entries: Iterable[JSON],
        batch_size: int = 1000,
        *,
        max_bytes: int = MAX_BATCH_BYTES,
        on_batch: Callable[[JSON], None] | None = None,
    ) -> JSON:
        """Store entries in batches; ``{"stored", "duplicates", "rejected", "cursor"}``.

        An entry without an ``id`` gets one (a uuid4, set in the dict itself) before it
        is first sent, so the retries after a lost answer, and a caller's own retry of
        the same dicts, store nothing twice. ``rejected`` lists ``{"index", "field",
        "error"}`` with ``index`` the entry's position in ``entries``. ``on_batch`` sees
        the running totals after each batch.
        """
        totals = _new_totals()
        for batch in _batches(entries, batch_size, max_bytes):
            answer = None
            if batch.bodies:
                try:
                    answer = self._c.data(batch.call())
                except ValidationError as exc:
                    answer = _refused_batch(exc)
            _merge(totals, batch, answer)
            if on_batch is not None:
                on_batch(totals)
        return totals

    def list(
        self,
        filters: Mapping[str, Any] | None = None,
        *,
        limit: int | None = 100,
        cursor: str | None = None,
    ) -> list[JSON]:
        """Matching entries, newest first, across pages (``limit`` None or 0 = all);
        with ``cursor``, only entries older than it. Filters: ``LOG_FILTERS``."""
        params = {**log_params(filters), "cursor": cursor}
        return list(self._c.paginate("/logs", params, limit))

    def after(
        self, cursor: str, filters: Mapping[str, Any] | None = None, *, limit: int = 1000
    ) -> LogPage:
        """One page of what committed after ``cursor``, oldest first (the poller's view)."""
        params = _after_params(cursor, filters, limit)
        return _log_page(cursor, self._c.request("GET", "/logs", params=params))

    def export(
        self,
        format: str = "jsonl",
        filters: Mapping[str, Any] | None = None,
        *,
        csv_raw: bool = False,
    ) -> Iterator[bytes]:
        """Every matching entry, oldest first, as the service streams it (json, jsonl or
        csv); ``csv_raw`` keeps cells a spreadsheet would run as formulas unescaped."""
        call = _logs_export(format, filters, csv_raw)
        with self._c.stream(call, timeout=EXPORT_TIMEOUT) as response:
            try:
                yield from response.iter_bytes()
            except httpx.TransportError as exc:
                raise UnreachableError(self._c.url, f"the export broke off: {exc!r}") from None


class AsyncLogs:
    """``client.logs`` of ``AsyncClient``: what a follower needs."""

    def __init__(self, client: AsyncSender) -> None:
        self._c = client

    async def list(
        self,
        filters: Mapping[str, Any] | None = None,
        *,
        limit: int | None = 100,
        cursor: str | None = None,
    ) -> list[JSON]:
        """Matching entries, newest first, across pages (``limit`` None or 0 = all)."""
        params = {**log_params(filters), "cursor": cursor}
        return [item async for item in self._c.paginate("/logs", params, limit)]

    async def after(
        self, cursor: str, filters: Mapping[str, Any] | None = None, *, limit: int = 1000
    ) -> LogPage:
        """One page of what committed after ``cursor``, oldest first (the poller's view)."""
        params = _after_params(cursor, filters, limit)
        return _log_page(cursor, await self._c.request("GET", "/logs", params=params))


def metrics_params(
    window: str | None = None, by: str | None = None, include_tests: bool = False
) -> dict[str, Any]:
    """The query of every metrics read: ``window`` (5m, 1h, 1d), ``by=model``, test traffic."""
    return {"window": window, "by": by, "include_tests": include_tests or None}


def _metrics_current(feature: str, window: str, by: str | None, include_tests: bool) -> Call:
    params = metrics_params(window, by, include_tests)
    return Call("GET", f"{feature_path(feature)}/metrics/current", params)


def _metrics_series(
    feature: str,
    since: datetime | None,
    until: datetime | None,
    step: str | None,
    by: str | None,
    include_tests: bool,
) -> Call:
    times = {k: iso_param(k, v) for k, v in (("since", since), ("until", until)) if v is not None}
    params = {**metrics_params(None, by, include_tests), "step": step, **times}
    return Call("GET", f"{feature_path(feature)}/metrics", params)


class Metrics:
    """``client.metrics``: a feature's current figures and their time series."""

    def __init__(self, client: Sender) -> None:
        self._c = client

    def current(
        self,
        feature: str,
        *,
        window: str = "5m",
        by: str | None = None,
        include_tests: bool = False,
    ) -> JSON:
        """Requests, rates, latency percentiles, cost, health score, trend and status over
        the last ``window``; ``by="model"`` adds ``models``, one entry per model."""
        return self._c.data(_metrics_current(feature, window, by, include_tests))

    def series(
        self,
        feature: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        step: str | None = None,
        by: str | None = None,
        include_tests: bool = False,
    ) -> JSON:
        """The same figures per ``step`` (1m to 1d) from ``since`` to ``until`` (the
        service's defaults: the last hour, by minute): ``{"points": [...], ...}``."""
        return self._c.data(_metrics_series(feature, since, until, step, by, include_tests))


class AsyncMetrics:
    """``client.metrics`` of ``AsyncClient``."""

    def __init__(self, client: AsyncSender) -> None:
        self._c = client

    async def current(
        self,
        feature: str,
        *,
        window: str = "5m",
        by: str | None = None,
        include_tests: bool = False,
    ) -> JSON:
        """Current figures over the last ``window`` (see ``Metrics.current``)."""
        return await self._c.data(_metrics_current(feature, window, by, include_tests))

    async def series(
        self,
        feature: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        step: str | None = None,
        by: str | None = None,
        include_tests: bool = False,
    ) -> JSON:
        """The figures per ``step`` (see ``Metrics.series``)."""
        return await self._c.data(_metrics_series(feature, since, until, step, by, include_tests))


def _alerts_list_params(
    state: str | None, severity: str | None, feature: str | None, labels: Mapping[str, str] | None
) -> dict[str, Any]:
    label = [f"{k}={v}" for k, v in (labels or {}).items()] or None
    return {"state": state, "severity": severity, "feature": feature, "label": label}


def alert_path(alert_id: str) -> str:
    return f"/alerts/{segment(alert_id)}"


def _alert_note(alert_id: str, action: str, note: str | None) -> Call:
    return Call("POST", f"{alert_path(alert_id)}/{action}", json={"note": note} if note else {})


def alert_rules_path(feature: str) -> str:
    return f"{feature_path(feature)}/alert-rules"


def _alert_rule_evaluation(feature: str, rule: str) -> Call:
    return Call("GET", f"{alert_rules_path(feature)}/{segment(rule)}/evaluation")


@dataclass(frozen=True)
class TransitionPage:
    """Alert transitions committed after a cursor (oldest first), and where to ask next."""

    items: list[JSON]
    next_cursor: str


def _transitions_params(cursor: str | None, limit: int) -> dict[str, Any]:
    return {"after": cursor, "limit": limit}


def _transition_page(cursor: str | None, body: JSON) -> TransitionPage:
    next_cursor = body.get("next_cursor") or cursor or "0"
    return TransitionPage(list(body.get("data") or []), str(next_cursor))


class Alerts:
    """``client.alerts``: alerts, their transitions, and each feature's alert rules."""

    def __init__(self, client: Sender) -> None:
        self._c = client

    def rules(self, feature: str) -> list[JSON]:
        """The feature's alert rules, each ``{"rule": {...}, "current": {"state", ...}}``."""
        return list(self._c.request("GET", alert_rules_path(feature)).get("data") or [])

    def list(
        self,
        *,
        state: str | None = None,
        severity: str | None = None,
        feature: str | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> list[JSON]:
        """Alerts, newest first, across pages (``state`` open or resolved; None = both)."""
        params = _alerts_list_params(state, severity, feature, labels)
        return list(self._c.paginate("/alerts", params, limit))

    def get(self, alert_id: str) -> JSON:
        """An alert with its ``transitions``, webhook ``deliveries`` and the feature's
        ``settings_changes`` in the hour before it opened."""
        return self._c.data(Call("GET", alert_path(alert_id)))

    def acknowledge(self, alert_id: str, note: str | None = None) -> JSON:
        """Stop renotifications of an open alert; ``ConflictError`` once it is resolved."""
        return self._c.data(_alert_note(alert_id, "acknowledge", note))

    def resolve(self, alert_id: str, note: str | None = None) -> JSON:
        """Close an open alert by hand; ``ConflictError`` once it is resolved."""
        return self._c.data(_alert_note(alert_id, "resolve", note))

    def transitions(self, cursor: str | None = None, *, limit: int = 1000) -> TransitionPage:
        """One page of the transitions committed after ``cursor``, oldest first."""
        params = _transitions_params(cursor, limit)
        body = self._c.request("GET", "/alerts/transitions", params=params)
        return _transition_page(cursor, body)

    def evaluate_rule(self, feature: str, rule: str) -> JSON:
        """The rule evaluated now, changing nothing: ``state``, ``would_be``, ``value``,
        ``requests``, ``window``, ``reason``."""
        return self._c.data(_alert_rule_evaluation(feature, rule))


class AsyncAlerts:
    """``client.alerts`` of ``AsyncClient``: what the alert follower needs."""

    def __init__(self, client: AsyncSender) -> None:
        self._c = client

    async def get(self, alert_id: str) -> JSON:
        return await self._c.data(Call("GET", alert_path(alert_id)))

    async def transitions(self, cursor: str | None = None, *, limit: int = 1000) -> TransitionPage:
        """One page of the transitions committed after ``cursor``, oldest first."""
        params = _transitions_params(cursor, limit)
        body = await self._c.request("GET", "/alerts/transitions", params=params)
        return _transition_page(cursor, body)


def _silence_create(
    feature: str | None,
    rule: str | None,
    severity: str | None,
    labels: Mapping[str, str] | None,
    starts_at: datetime | None,
    ends_at: datetime | None,
    duration: str | None,
    comment: str,
) -> Call:
    times = {k: iso_param(k, v) for k, v in (("starts_at", starts_at), ("ends_at", ends_at)) if v}
    fields = {"feature": feature, "rule": rule, "severity": severity, "duration": duration}
    body: JSON = {k: v for k, v in fields.items() if v is not None} | times
    body |= {"labels": dict(labels or {}), "comment": comment}
    return Call("POST", "/silences", json=body)


class Silences:
    """``client.silences``: while one matches an alert, its notifications are not sent."""

    def __init__(self, client: Sender) -> None:
        self._c = client

    def list(self, *, include_expired: bool = False, limit: int | None = None) -> list[JSON]:
        """Active and upcoming silences, latest ending first (with ``include_expired``: all)."""
        params = {"include_expired": include_expired or None}
        return list(self._c.paginate("/silences", params, limit))

    def create(
        self,
        comment: str,
        *,
        feature: str | None = None,
        rule: str | None = None,
        severity: str | None = None,
        labels: Mapping[str, str] | None = None,
        starts_at: datetime | None = None,
        ends_at: datetime | None = None,
        duration: str | None = None,
    ) -> JSON:
        """Silence ``feature``'s alerts (None: every feature's), optionally one ``rule``,
        ``severity`` or ``labels``, from ``starts_at`` (now) to ``ends_at`` or for
        ``duration`` (``30m``, ``2h``, ``1d``): exactly one of the two."""
        return self._c.data(
            _silence_create(feature, rule, severity, labels, starts_at, ends_at, duration, comment)
        )

    def expire(self, silence_id: str) -> JSON:
        """End a silence now (it stays listed with ``include_expired``)."""
        return self._c.data(Call("DELETE", f"/silences/{segment(silence_id)}"))


def _webhooks_create(
    name: str,
    url: str,
    format: str,
    features: Sequence[str],
    min_severity: str,
    labels: Mapping[str, str] | None,
) -> Call:
    body = {
        "name": name,
        "url": url,
        "format": format,
        "features": list(features),
        "min_severity": min_severity,
        "labels": dict(labels or {}),
    }
    return Call("POST", "/webhooks", json=body)


def _webhook_call(webhook_id: str, action: str = "") -> Call:
    method = "DELETE" if not action else "POST"
    return Call(method, f"/webhooks/{segment(webhook_id)}{action}")


class Webhooks:
    """``client.webhooks``: where alert notifications are sent (listing: read scope; the
    rest: admin). docs/webhooks.md."""

    def __init__(self, client: Sender) -> None:
        self._c = client

    def list(self, *, limit: int | None = None) -> list[JSON]:
        """The organization's webhooks, without their secrets."""
        return list(self._c.paginate("/webhooks", None, limit))

    def create(
        self,
        name: str,
        url: str,
        *,
        format: str = "json",
        features: Sequence[str] = (),
        min_severity: str = "info",
        labels: Mapping[str, str] | None = None,
    ) -> JSON:
        """A new webhook; its signing secret (``secret``, ``whsec_...``) is in this answer only."""
        return self._c.data(_webhooks_create(name, url, format, features, min_severity, labels))

    def delete(self, webhook_id: str) -> JSON:
        return self._c.data(_webhook_call(webhook_id))

    def rotate_secret(self, webhook_id: str) -> JSON:
        """A new secret (in this answer only); the previous one signs too for 24 hours."""
        return self._c.data(_webhook_call(webhook_id, "/rotate-secret"))

    def test(self, webhook_id: str) -> JSON:
        """Send a ``webhook.test`` event now; what the receiver answered."""
        return self._c.data(_webhook_call(webhook_id, "/test"))


class AsyncWebhooks:
    """``client.webhooks`` of ``AsyncClient``."""

    def __init__(self, client: AsyncSender) -> None:
        self._c = client

    async def list(self, *, limit: int | None = None) -> list[JSON]:
        return [item async for item in self._c.paginate("/webhooks", None, limit)]

    async def create(
        self,
        name: str,
        url: str,
        *,
        format: str = "json",
        features: Sequence[str] = (),
        min_severity: str = "info",
        labels: Mapping[str, str] | None = None,
    ) -> JSON:
        call = _webhooks_create(name, url, format, features, min_severity, labels)
        return await self._c.data(call)

    async def delete(self, webhook_id: str) -> JSON:
        return await self._c.data(_webhook_call(webhook_id))

    async def rotate_secret(self, webhook_id: str) -> JSON:
        return await self._c.data(_webhook_call(webhook_id, "/rotate-secret"))

    async def test(self, webhook_id: str) -> JSON:
        return await self._c.data(_webhook_call(webhook_id, "/test"))
