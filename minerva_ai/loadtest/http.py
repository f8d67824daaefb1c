"""A lean HTTP/1.1 keep-alive client on asyncio streams: the load generator's engine.

httpx tops out near 500 req/s (encode/httpx#3215); this does one thing, fast: send a
request on an open connection and read the whole response (Content-Length or chunked).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit


class ConnectionFailed(Exception):
    """The connection could not be opened, or broke during the exchange."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    size: int


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
        return cls(scheme, parts.hostname or "127.0.0.1", port, parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class Connection:
    """One keep-alive connection; reconnects lazily after the server closed it."""

    def __init__(self, target: Target, headers: dict[str, str]) -> None:
        self.target = target
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._fixed = f"Host: {target.host_header}\r\nUser-Agent: minerva-ai-load-test\r\n{extra}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        ssl = self.target.scheme == "https" or None
        try:
            self._reader, self._writer = await asyncio.open_connection(
                self.target.host, self.target.port, ssl=ssl
            )
        except OSError as exc:
            raise ConnectionFailed(str(exc) or type(exc).__name__) from exc

    async def request(
        self, method: str, target: str, body: bytes | None = None, content_type: str = ""
    ) -> Response:
        """Send one request and read its response; ``ConnectionFailed`` on a broken socket."""
        if self._writer is None:
            await self._connect()
        head = f"{method} {self.target.prefix}{target} HTTP/1.1\r\n{self._fixed}"
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        payload = (head + "\r\n").encode("latin-1") + (body or b"")
        try:
            return await self._exchange(payload)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self.close()
            raise ConnectionFailed(str(exc) or type(exc).__name__) from exc
        except BaseException:
            self.close()  # a timeout or cancellation leaves the stream mid-response
            raise

    async def _exchange(self, payload: bytes) -> Response:
        assert self._reader is not None and self._writer is not None
        self._writer.write(payload)
        await self._writer.drain()
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length: int | None = None
        chunked = close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif name == "connection":
                close = value.strip().lower() == "close"
        if chunked:
            body = await self._read_chunked()
        elif length is not None:
            body = await self._reader.readexactly(length)
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            body = await self._reader.read()
            close = True
        if close:
            self.close()
        return Response(status, body, len(head) + len(body))

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size_line = await self._reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await self._reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
