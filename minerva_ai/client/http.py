"""The HTTP client of the minerva-ai service: ``Client`` (blocking) and ``AsyncClient``.

Both build requests, retry and map the service's error envelope onto ``minerva_ai.core.errors``
in the same shared code; only the waiting differs. Pass ``transport=`` to inject an httpx
transport (``httpx.MockTransport`` in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx
import orjson

from minerva_ai import __version__
from minerva_ai.client.backoff import Backoff
from minerva_ai.client.model_tests import AsyncModelTests, ModelTests
from minerva_ai.client.resources import (
    Alerts,
    AsyncAlerts,
    AsyncFeatures,
    AsyncLogs,
    AsyncMetrics,
    AsyncSettings,
    AsyncTokens,
    AsyncWebhooks,
    Call,
    Features,
    Logs,
    Metrics,
    Settings,
    Silences,
    Tokens,
    Webhooks,
    segment,
    settings_path,
)
from minerva_ai.client.test_runs import AsyncTestRuns, TestRuns
from minerva_ai.core.errors import ServiceError, UnreachableError, service_error
from minerva_ai.core.protocol import API_PREFIX, HEALTH_PATH, INSTANCE_HEADER, WEBSOCKET_PATH
from minerva_ai.core.urls import normalize_url

MAX_PAGE = 1000
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_GATEWAY_ERRORS = frozenset({502, 503, 504})

JSON = dict[str, Any]
Log = Callable[[str], None]


@dataclass(frozen=True)
class Page:
    """One page of a list: its items and the cursor of the next page (``None`` at the end)."""

    items: list[JSON]
    next_cursor: str | None


def api_path(path: str) -> str:
    """``/features`` -> ``/api/platform/ai-management/features``; ``/api/...`` is kept."""
    return path if path.startswith("/api/") else f"{API_PREFIX}/{path.lstrip('/')}"


def _clean_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        cleaned[key] = ("true" if value else "false") if isinstance(value, bool) else value
    return cleaned


def _page_params(
    params: Mapping[str, Any] | None, cursor: str | None, remaining: int | None
) -> dict[str, Any]:
    page = dict(params or {})
    page["limit"] = min(remaining, MAX_PAGE) if remaining else MAX_PAGE
    if cursor:
        page["cursor"] = cursor
    return page


def _decode(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def error_from_response(response: httpx.Response) -> ServiceError:
    """The ``ServiceError`` subclass for an error answer, from its envelope when it has one."""
    status = response.status_code
    body = _decode(response)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or f"http_{status}")
        message = str(error.get("message") or response.reason_phrase)
        details = error.get("details")
    else:
        code, message, details = f"http_{status}", f"HTTP {status} {response.reason_phrase}", None
    return service_error(status, code, message, details, str(response.request.url))


def _from_a_proxy(response: httpx.Response) -> bool:
    """A 502, 503 or 504 that no instance sent: without ``X-Minerva-Instance`` and not JSON
    (nginx's "502 Bad Gateway" page when every instance is down or unreachable)."""
    return (
        response.status_code in _GATEWAY_ERRORS
        and INSTANCE_HEADER not in response.headers
        and not response.headers.get("content-type", "").startswith("application/json")
    )


def _etag(version: int) -> str:
    return f'"v{version}"'


class _BaseClient:
    """What both clients share: configuration, request building, retry decisions, errors."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retry_for: float = 5.0,
        log: Log | None = None,
    ) -> None:
        self.url = normalize_url(url)
        self.token = token
        self.retry_for = retry_for
        self._log = log
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0))
        self._headers = {"User-Agent": f"minerva-ai/{__version__}", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._settings_cache: dict[str, tuple[str, JSON]] = {}

    def _build(
        self,
        http: httpx.Client | httpx.AsyncClient,
        call: Call,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Request:
        content = call.content if call.json is None else orjson.dumps(call.json)
        return http.build_request(
            call.method,
            api_path(call.path),
            params=_clean_params(call.params),
            content=content,
            headers={
                **({"Content-Type": "application/json"} if content is not None else {}),
                **(call.headers or {}),
            },
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )

    @staticmethod
    def _retryable(call: Call) -> bool:
        return call.idempotent or call.method in IDEMPOTENT_METHODS

    def _debug(self, message: str) -> None:
        if self._log is not None:
            self._log(message)

    def _retry_after_error(
        self, request: httpx.Request, exc: httpx.TransportError, backoff: Backoff, retryable: bool
    ) -> float:
        """The delay before retrying a failed send, or raise ``UnreachableError``."""
        never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
        delay = backoff.next_delay()
        if delay is None or not (never_sent or retryable):
            raise UnreachableError(self.url, str(exc) or type(exc).__name__) from exc
        self._debug(f"{request.method} {request.url}: {exc!r}; retrying in {delay:.1f}s")
        return delay

    def _retry_after_response(
        self,
        response: httpx.Response,
        backoff: Backoff,
        accept: frozenset[int],
        started: float,
        retryable: bool,
    ) -> float | None:
        """The delay before retrying a 503 to an idempotent request, else ``None``.

        A proxy's 502, 503 or 504 means that no instance answered: it is retried like a
        connection error, and is ``UnreachableError`` in the end.
        """
        request = response.request
        if self._log is not None:
            took = (time.monotonic() - started) * 1000
            self._log(f"{request.method} {request.url} -> {response.status_code} in {took:.0f} ms")
        if _from_a_proxy(response):
            reason = f"HTTP {response.status_code} from a proxy: no instance answered"
            delay = backoff.next_delay() if retryable else None
            if delay is None:
                raise UnreachableError(self.url, reason)
            self._debug(f"{request.method} {request.url}: {reason}; retrying in {delay:.1f}s")
            return delay
        if response.status_code != 503 or 503 in accept or not retryable:
            return None
        try:
            at_least = float(response.headers.get("Retry-After", "0"))
        except ValueError:
            at_least = 0.0
        return backoff.next_delay(at_least)

    def _result(self, response: httpx.Response, accept: frozenset[int] = frozenset()) -> Any:
        """The decoded body of a success (or an accepted status); raise on an error."""
        if response.status_code >= 400 and response.status_code not in accept:
            raise error_from_response(response)
        if response.status_code == 304:
            return None
        body = _decode(response)
        if body is None and response.content:
            raise ServiceError(
                response.status_code,
                "bad_response",
                "the service answered with something that is not JSON",
                url=str(response.request.url),
            )
        return body

    def _cache_headers(self, feature: str) -> dict[str, str]:
        cached = self._settings_cache.get(feature)
        return {"If-None-Match": cached[0]} if cached else {}

    def _cached_settings(self, feature: str, response: httpx.Response) -> JSON:
        if response.status_code == 304 and feature in self._settings_cache:
            return copy.deepcopy(self._settings_cache[feature][1])
        settings: JSON = self._result(response)["data"]
        etag = response.headers.get("ETag") or _etag(settings["version"])
        self._settings_cache[feature] = (etag, copy.deepcopy(settings))
        return settings

    def remember_settings_update(self, keys: tuple[str, ...], update: JSON) -> None:
        """Cache the settings a ``settings_update`` message announced."""
        settings = {
            k: update.get(k) for k in ("feature_id", "version", "settings", "created_at", "author")
        }
        for key in keys:
            cached = self._settings_cache.get(key)
            if cached is None or cached[1].get("version", 0) < update["version"]:
                self._settings_cache[key] = (_etag(update["version"]), copy.deepcopy(settings))

    def websocket_url(self, feature: str | None = None) -> str:
        """The WebSocket endpoint (ws:// or wss://), with ``featureId`` (never a token)."""
        scheme = "wss" if self.url.startswith("https://") else "ws"
        host_and_path = self.url.split("://", 1)[1]
        query = f"?featureId={segment(feature)}" if feature is not None else ""
        return f"{scheme}://{host_and_path}{WEBSOCKET_PATH}{query}"

    def auth_headers(self) -> dict[str, str]:
        """The headers that authenticate a request (empty without a token)."""
        return {"Authorization": self._headers["Authorization"]} if self.token else {}


class Client(_BaseClient):
    """A blocking client. Use it as a context manager, or call ``close()``."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retry_for: float = 5.0,
        log: Log | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, token, timeout=timeout, retry_for=retry_for, log=log)
        self._http = httpx.Client(
            base_url=self.url, headers=self._headers, timeout=self._timeout, transport=transport
        )
        self.features = Features(self)
        self.settings = Settings(self)
        self.tokens = Tokens(self)
        self.logs = Logs(self)
        self.metrics = Metrics(self)
        self.alerts = Alerts(self)
        self.silences = Silences(self)
        self.webhooks = Webhooks(self)
        self.tests = ModelTests(self)
        self.test_runs = TestRuns(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(
        self,
        call: Call,
        accept: frozenset[int] = frozenset(),
        *,
        stream: bool = False,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        request = self._build(self._http, call, timeout)
        retryable = self._retryable(call)
        backoff = Backoff(self.retry_for)
        while True:
            started = time.monotonic()
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                time.sleep(self._retry_after_error(request, exc, backoff, retryable))
                continue
            try:
                delay = self._retry_after_response(response, backoff, accept, started, retryable)
            except UnreachableError:
                response.close()
                raise
            if delay is None:
                return response
            response.close()
            time.sleep(delay)

    @contextlib.contextmanager
    def stream(
        self, call: Call, *, timeout: httpx.Timeout | None = None
    ) -> Iterator[httpx.Response]:
        """Send ``call`` and hand over the answer unread (an error answer raises)."""
        response = self._send(call, stream=True, timeout=timeout)
        try:
            if response.status_code >= 400:
                response.read()
                raise error_from_response(response)
            yield response
        finally:
            response.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send a request (with retries) and return the decoded JSON body."""
        return self._result(self._send(Call(method, path, params, json, headers)))

    def data(self, call: Call) -> JSON:
        """Send ``call`` and return the ``data`` of the answer's envelope."""
        result: JSON = self._result(self._send(call))["data"]
        return result

    def iter_pages(
        self, path: str, params: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> Iterator[Page]:
        """Each page of a list, following ``next_cursor`` (``limit`` items at most)."""
        cursor: str | None = None
        seen = 0
        while True:
            remaining = limit - seen if limit else None
            body = self.request("GET", path, params=_page_params(params, cursor, remaining))
            page = Page(list(body.get("data") or []), body.get("next_cursor"))
            seen += len(page.items)
            yield page
            cursor = page.next_cursor
            if not cursor or (limit and seen >= limit):
                return

    def paginate(
        self, path: str, params: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> Iterator[JSON]:
        """Every item of a list across pages; at most ``limit`` items (``None``/0 = all)."""
        count = 0
        for page in self.iter_pages(path, params, limit):
            for item in page.items:
                if limit and count >= limit:
                    return
                count += 1
                yield item

    def whoami(self) -> JSON:
        """The organization and token this client authenticates as."""
        return self.data(Call("GET", "/auth/whoami"))

    def health(self) -> JSON:
        """``GET /api/health``: the body, also when the service answers 503 (down)."""
        result: JSON = self._result(
            self._send(Call("GET", HEALTH_PATH), frozenset({503})), frozenset({503})
        )
        return result

    def get_settings(self, feature: str) -> JSON:
        """A feature's settings, revalidated with ``If-None-Match`` (304 = the cached copy)."""
        call = Call("GET", settings_path(feature), headers=self._cache_headers(feature))
        return self._cached_settings(feature, self._send(call, frozenset({304})))


class AsyncClient(_BaseClient):
    """An asyncio client. Use it as an async context manager, or ``await aclose()``."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retry_for: float = 5.0,
        log: Log | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, token, timeout=timeout, retry_for=retry_for, log=log)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self._headers, timeout=self._timeout, transport=transport
        )
        self.features = AsyncFeatures(self)
        self.settings = AsyncSettings(self)
        self.tokens = AsyncTokens(self)
        self.logs = AsyncLogs(self)
        self.metrics = AsyncMetrics(self)
        self.alerts = AsyncAlerts(self)
        self.webhooks = AsyncWebhooks(self)
        self.tests = AsyncModelTests(self)
        self.test_runs = AsyncTestRuns(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(
        self,
        call: Call,
        accept: frozenset[int] = frozenset(),
        *,
        stream: bool = False,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        request = self._build(self._http, call, timeout)
        retryable = self._retryable(call)
        backoff = Backoff(self.retry_for)
        while True:
            started = time.monotonic()
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                await asyncio.sleep(self._retry_after_error(request, exc, backoff, retryable))
                continue
            try:
                delay = self._retry_after_response(response, backoff, accept, started, retryable)
            except UnreachableError:
                await response.aclose()
                raise
            if delay is None:
                return response
            await response.aclose()
            await asyncio.sleep(delay)

    @contextlib.asynccontextmanager
    async def stream(
        self, call: Call, *, timeout: httpx.Timeout | None = None
    ) -> AsyncIterator[httpx.Response]:
        """Send ``call`` and hand over the answer unread (an error answer raises)."""
        response = await self._send(call, stream=True, timeout=timeout)
        try:
            if response.status_code >= 400:
                await response.aread()
                raise error_from_response(response)
            yield response
        finally:
            await response.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send a request (with retries) and return the decoded JSON body."""
        return self._result(await self._send(Call(method, path, params, json, headers)))

    async def data(self, call: Call) -> JSON:
        """Send ``call`` and return the ``data`` of the answer's envelope."""
        result: JSON = self._result(await self._send(call))["data"]
        return result

    async def iter_pages(
        self, path: str, params: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> AsyncIterator[Page]:
        """Each page of a list, following ``next_cursor`` (``limit`` items at most)."""
        cursor: str | None = None
        seen = 0
        while True:
            remaining = limit - seen if limit else None
            body = await self.request("GET", path, params=_page_params(params, cursor, remaining))
            page = Page(list(body.get("data") or []), body.get("next_cursor"))
            seen += len(page.items)
            yield page
            cursor = page.next_cursor
            if not cursor or (limit and seen >= limit):
                return

    async def paginate(
        self, path: str, params: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> AsyncIterator[JSON]:
        """Every item of a list across pages; at most ``limit`` items (``None``/0 = all)."""
        count = 0
        async for page in self.iter_pages(path, params, limit):
            for item in page.items:
                if limit and count >= limit:
                    return
                count += 1
                yield item

    async def whoami(self) -> JSON:
        """The organization and token this client authenticates as."""
        return await self.data(Call("GET", "/auth/whoami"))

    async def health(self) -> JSON:
        """``GET /api/health``: the body, also when the service answers 503 (down)."""
        accept = frozenset({503})
        result: JSON = self._result(await self._send(Call("GET", HEALTH_PATH), accept), accept)
        return result

    async def get_settings(self, feature: str) -> JSON:
        """A feature's settings, revalidated with ``If-None-Match`` (304 = the cached copy)."""
        call = Call("GET", settings_path(feature), headers=self._cache_headers(feature))
        return self._cached_settings(feature, await self._send(call, frozenset({304})))

    def watch_settings(self, feature: str, *, reconnect: bool = True) -> AsyncIterator[JSON]:
        """Each new settings version of ``feature``, as ``settings_update`` data.

        Subscribes over the WebSocket (token in the ``Authorization`` header); after every
        (re)subscription the current version is fetched, so versions published while the
        socket was down are delivered, never lost or repeated. Also refreshes the cache
        behind ``get_settings``.
        """
        from minerva_ai.client.settings_watch import watch_settings

        return watch_settings(self, feature, reconnect=reconnect)
