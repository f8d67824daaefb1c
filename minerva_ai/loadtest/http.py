"""A lean HTTP/1.1 keep-alive client on an asyncio protocol: the load generator's engine.

httpx tops out near 500 req/s (encode/httpx#3215), and asyncio's streams cost a few times
what the exchange itself does; this does one thing, fast: send a request on an open
connection and read the whole response (Content-Length, chunked, or up to the close),
parsing the head in one pass over bytes. A body is kept up to ``MAX_BODY`` bytes and the
rest read and dropped, so no response can fill the generator's memory. Request targets are
made valid here too (``request_target``), and what cannot be sent is named
(``target_problem``).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote, urlsplit

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024  # a response body is kept up to this; the rest is read and dropped
MAX_CHUNK_LINE = 4096
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_HEX = re.compile(rb"[0-9A-Fa-f]+")

# RFC 3986: what an origin-form target (path ["?" query]) may hold as it is, besides the
# unreserved characters (which quote() always keeps) and percent-escapes (kept apart).
TARGET_SAFE = "/?:@!$&'()*+,;="
_ESCAPE = re.compile(r"(%[0-9A-Fa-f]{2})")
_UNSENDABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # controls, lone surrogates
_OUTSIDE_TARGET = re.compile(r"[^!-~]")  # a space, a control or a non-ASCII character


def request_target(text: str) -> str:
    """``text`` as a request target, what curl, httpx and k6 send for it: the fragment
    (``#...``) dropped; percent-escapes (``%2F``) and the characters that give a target its
    structure (``/ ? & = + : @`` ...) kept; anything else percent-encoded, non-ASCII as
    UTF-8 (a space is ``%20``, ``é`` is ``%C3%A9``, a ``%`` without two hex digits ``%25``,
    a control character such as LF ``%0A``)."""
    pieces = _ESCAPE.split(text.partition("#")[0])
    # split() with a group: the escapes are at the odd indexes, kept as they are.
    return "".join(
        piece if index % 2 else quote(piece, safe=TARGET_SAFE) for index, piece in enumerate(pieces)
    )


def target_problem(text: str) -> str | None:
    """Why ``text``, typed as a path, cannot be a request target (a control character, as
    a CR or LF that would end the request line, or a lone surrogate), or None."""
    bad = _UNSENDABLE.search(text)
    if bad is None:
        return None
    char = bad[0]
    if "\ud800" <= char <= "\udfff":
        return f"it holds U+{ord(char):04X}, a lone surrogate (bytes that are not UTF-8?)"
    return (
        f"it holds the control character U+{ord(char):04X}, which has no place in a "
        f"request line (write {quote(char, safe='')} if you mean that byte)"
    )


class ConnectionFailed(Exception):
    """The connection could not be opened, or broke (or spoke nonsense) during the exchange."""


@dataclass(frozen=True)
class Response:
    """``body`` is at most ``MAX_BODY`` bytes (``truncated`` when the server sent more);
    ``size`` counts every byte of the head and the body that was read."""

    status: int
    body: bytes
    size: int
    truncated: bool = False


@dataclass(frozen=True)
class Target:
    """Where requests go: scheme, host, port, and the path prefix of the service URL."""

    scheme: str
    host: str
    port: int
    prefix: str

    @classmethod
    def from_url(cls, url: str) -> Target:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or (443 if scheme == "https" else 80)
        prefix = request_target(parts.path.rstrip("/"))
        return cls(scheme, parts.hostname or "127.0.0.1", port, prefix)

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def _header(head: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (lower case, with its colon) in a lower-cased head."""
    start = head.find(b"\r\n" + name)
    if start < 0:
        return None
    start += 2 + len(name)
    return head[start : head.find(b"\r\n", start)].strip()


class _Exchange(asyncio.Protocol):
    """One connection's parser: the response to the request in flight resolves ``waiter``.

    The buffer holds at most a head, a chunk-size line or a body of up to ``MAX_BODY``
    bytes (plus one read): a longer body (by its Content-Length, its chunks, or up to the
    close) moves through ``body``, which keeps its first ``MAX_BODY`` bytes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[Response, bool]] | None = None
        self.received = False  # any byte of the response in flight
        self._reset(head_only=False)

    def _reset(self, *, head_only: bool) -> None:
        self.head_only = head_only
        self.status = 0  # 0 until the head is parsed
        self.head_size = 0
        self.length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.body = bytearray()  # what is kept of a body that is not read in one piece
        self.body_read = 0  # body bytes read, kept or dropped
        self.chunk_left: int | None = None  # chunked: None before a chunk-size line

    def expect(self, waiter: asyncio.Future[tuple[Response, bool]], *, head_only: bool) -> None:
        self._reset(head_only=head_only)
        self.received = False
        self.waiter = waiter

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.received = True
        if self.waiter is None:  # bytes nobody asked for: this connection is out of step
            if self.transport is not None:
                self.transport.close()
            return
        try:
            self._parse()
        except ValueError as exc:
            self._fail(f"malformed response: {exc}")

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost decides

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is None or self.waiter.done():
            return
        if self.status and self.length is None and not self.chunked and exc is None:
            self._done(keep_alive=False)  # a body that runs to the close
        else:
            self._fail(str(exc) if exc else "the server closed the connection")

    # parsing

    def _parse(self) -> None:
        if not self.status and not self._parse_head():
            return
        if self.chunked:
            self._parse_chunks()
        elif self.length is None:  # up to the close
            self._consume(len(self.buffer))
        elif self.length <= MAX_BODY:  # the common case: the body in one piece
            if len(self.buffer) >= self.length:
                self.body = self.buffer[: self.length]
                self.body_read = self.length
                del self.buffer[: self.length]
                self._done(self.keep_alive)
        else:
            self._consume(min(self.length - self.body_read, len(self.buffer)))
            if self.body_read == self.length:
                self._done(self.keep_alive)

    def _consume(self, count: int) -> None:
        """Move ``count`` bytes of body out of the buffer: kept up to ``MAX_BODY``."""
        room = MAX_BODY - len(self.body)
        if room > 0:
            self.body += self.buffer[: min(count, room)]
        del self.buffer[:count]
        self.body_read += count

    def _parse_head(self) -> bool:
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    raise ValueError(f"a response head over {MAX_HEAD} bytes")
                return False
            head = bytes(self.buffer[: end + 2])
            del self.buffer[: end + 4]
            status_line, _, _ = head.partition(b"\r\n")
            parts = status_line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise ValueError(f"status line {status_line[:80]!r}")
            status = int(parts[1])
            if 100 <= status < 200:  # an interim response: the real one follows
                continue
            self.status = status
            self.head_size = end + 4
            lowered = head.lower()
            connection = _header(lowered, b"connection:")
            self.keep_alive = connection != b"close" and parts[0] != b"HTTP/1.0"
            if self.head_only or status in (204, 304):
                self.length = 0
            elif b"chunked" in (_header(lowered, b"transfer-encoding:") or b""):
                self.chunked = True
            else:
                length = _header(lowered, b"content-length:")
                if length is not None and not length.isdigit():
                    raise ValueError(f"Content-Length {length[:20]!r}")
                self.length = None if length is None else int(length)
            return True

    def _parse_chunks(self) -> None:
        buffer = self.buffer
        while True:
            if self.chunk_left is None:  # a chunk-size line
                line_end = buffer.find(b"\r\n")
                if line_end < 0:
                    if len(buffer) > MAX_CHUNK_LINE:
                        raise ValueError(f"a chunk-size line over {MAX_CHUNK_LINE} bytes")
                    return
                field = bytes(buffer[:line_end]).split(b";", 1)[0].strip()
                if not _HEX.fullmatch(field):
                    raise ValueError(f"chunk size {field[:20]!r}")
                size = int(field, 16)
                if size == 0:
                    self._parse_trailers(line_end)
                    return
                del buffer[: line_end + 2]
                self.chunk_left = size
            if self.chunk_left:  # the chunk's data, as much of it as has come
                count = min(self.chunk_left, len(buffer))
                self._consume(count)
                self.chunk_left -= count
                if self.chunk_left:
                    return
            if len(buffer) < 2:
                return
            if buffer[:2] != b"\r\n":
                raise ValueError("a chunk longer than its size")
            del buffer[:2]
            self.chunk_left = None

    def _parse_trailers(self, line_end: int) -> None:
        """After the last chunk's size line: an empty line, or trailers up to one."""
        buffer = self.buffer
        if buffer[line_end + 2 : line_end + 4] == b"\r\n":
            end = line_end + 4
        else:
            trailers = buffer.find(b"\r\n\r\n", line_end)
            if trailers < 0:
                if len(buffer) > MAX_HEAD:
                    raise ValueError(f"trailers over {MAX_HEAD} bytes")
                return
            end = trailers + 4
        del buffer[:end]
        self._done(self.keep_alive)

    def _done(self, keep_alive: bool) -> None:
        if self.buffer:  # more than the response: never reuse a connection out of step
            keep_alive = False
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            body = bytes(self.body)
            response = Response(
                self.status, body, self.head_size + self.body_read, self.body_read > len(body)
            )
            waiter.set_result((response, keep_alive))

    def _fail(self, reason: str) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionFailed(reason))
        if self.transport is not None:
            self.transport.close()


class Connection:
    """One keep-alive connection; reconnects lazily after the server closed it."""

    def __init__(self, target: Target, headers: dict[str, str]) -> None:
        self.target = target
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._fixed = f"Host: {target.host_header}\r\nUser-Agent: minerva-ai-load-test\r\n{extra}"
        self._exchange: _Exchange | None = None
        self.connects = 0  # TCP connections opened, reconnections included

    async def _connect(self) -> _Exchange:
        ssl = self.target.scheme == "https" or None
        loop = asyncio.get_running_loop()
        try:
            _transport, exchange = await loop.create_connection(
                _Exchange, self.target.host, self.target.port, ssl=ssl
            )
        except OSError as exc:
            raise ConnectionFailed(str(exc) or type(exc).__name__) from exc
        self._exchange = exchange
        self.connects += 1
        return exchange

    async def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        content_type: str = "",
        *,
        timeout: float | None = None,
    ) -> Response:
        """Send one request and read its response; ``ConnectionFailed`` on a broken socket,
        ``TimeoutError`` when the whole exchange (connecting included) takes over ``timeout``
        seconds (the connection is then closed: it is mid-response). ``target`` is sent as
        it is: pass it through ``request_target()`` first (a space, a control or a
        non-ASCII character in it is a ``ValueError``, before anything is sent)."""
        if _OUTSIDE_TARGET.search(target):
            raise ValueError(f"not a request target: {target!r} (see request_target())")
        loop = asyncio.get_running_loop()
        if timeout is None:
            return await self._request(loop, method, target, body, content_type)
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = loop.call_later(timeout, expire)
        try:
            return await self._request(loop, method, target, body, content_type)
        except asyncio.CancelledError:
            if expired and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            timer.cancel()

    async def _request(
        self,
        loop: asyncio.AbstractEventLoop,
        method: str,
        target: str,
        body: bytes | None,
        content_type: str,
    ) -> Response:
        head = f"{method} {self.target.prefix}{target} HTTP/1.1\r\n{self._fixed}"
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        payload = (head + "\r\n").encode("latin-1") + (body or b"")
        exchange = self._exchange
        if exchange is None or exchange.closed:
            return await self._send(loop, await self._connect(), payload, method)
        try:
            return await self._send(loop, exchange, payload, method)
        except ConnectionFailed:
            # A kept connection the server closed as the request left (the keep-alive
            # race): nothing came back, so an idempotent request is sent once more.
            if exchange.received or method not in IDEMPOTENT:
                raise
        return await self._send(loop, await self._connect(), payload, method)

    async def _send(
        self, loop: asyncio.AbstractEventLoop, exchange: _Exchange, payload: bytes, method: str
    ) -> Response:
        waiter: asyncio.Future[tuple[Response, bool]] = loop.create_future()
        exchange.expect(waiter, head_only=method == "HEAD")
        assert exchange.transport is not None
        try:
            exchange.transport.write(payload)
            response, keep_alive = await waiter
        except ConnectionFailed:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise ConnectionFailed(str(exc) or type(exc).__name__) from exc
        except BaseException:
            self.close()  # a timeout or cancellation leaves the connection mid-response
            raise
        if not keep_alive:
            self.close()
        return response

    def close(self) -> None:
        if self._exchange is not None and self._exchange.transport is not None:
            self._exchange.transport.close()
        self._exchange = None
