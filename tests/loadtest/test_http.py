"""The load generator's HTTP/1.1 client against loopback servers that frame responses in
every way HTTP/1.1 allows, split anywhere, or break mid-way."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest

from minerva_ai.loadtest.http import Connection, ConnectionFailed, Response, Target

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    if b"Content-Length: " in head:
        length = int(head.split(b"Content-Length: ")[1].split(b"\r")[0])
        head += await reader.readexactly(length)
    return head


def replying(replies: list[bytes], *, split: int = 0, seen: list[bytes] | None = None) -> Serve:
    """Answer each request on a connection with the next reply, then close; ``split`` > 0
    writes each reply in pieces of that many bytes, flushed one by one."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while replies:
                request = await read_request(reader)
                if seen is not None:
                    seen.append(request)
                reply = replies.pop(0)
                pieces = (
                    [reply[i : i + split] for i in range(0, len(reply), split)]
                    if split
                    else [reply]
                )
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    if split:
                        await asyncio.sleep(0)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return serve


async def exchange(serve: Serve, requests: list[tuple[str, bytes | None]]) -> list[Response]:
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = Connection(Target.from_url(f"http://127.0.0.1:{port}/base"), {"X-A": "1"})
    try:
        return [
            await connection.request(m, "/p?q=1", body, "application/json") for m, body in requests
        ]
    finally:
        connection.close()
        server.close()


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
)
TRAILERS = b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n"
LENGTH = b"HTTP/1.1 404 Not Found\r\nCONTENT-LENGTH: 2\r\n\r\nno"
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
INTERIM = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nnew"
HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"


@pytest.mark.parametrize("split", [0, 1, 7])
def test_every_framing_on_one_connection_however_the_bytes_arrive(split: int) -> None:
    seen: list[bytes] = []
    replies = [CHUNKED, TRAILERS, LENGTH, NO_CONTENT, INTERIM, HEAD]
    responses = asyncio.run(
        exchange(
            replying(list(replies), split=split, seen=seen),
            [
                ("GET", None),
                ("GET", None),
                ("POST", b"{}"),
                ("DELETE", None),
                ("PUT", b"[]"),
                ("HEAD", None),
            ],
        )
    )
    assert [(r.status, r.body) for r in responses] == [
        (200, b"hello world"),
        (200, b"ok"),
        (404, b"no"),
        (204, b""),
        (201, b"new"),
        (200, b""),
    ]
    assert responses[2].size == len(LENGTH)
    assert len(seen) == 6  # one connection carried them all
    assert seen[0].startswith(b"GET /base/p?q=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"X-A: 1\r\n" in seen[0]
    assert seen[2].endswith(b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")


def test_a_body_up_to_the_close_and_connection_close_reconnect() -> None:
    until_close = b"HTTP/1.1 200 OK\r\n\r\nall of it"
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nby"
    queue = [until_close, closing, LENGTH]
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await replying([queue.pop(0)])(reader, writer)

    responses = asyncio.run(exchange(serve, [("GET", None)] * 3))
    assert [(r.status, r.body) for r in responses] == [
        (200, b"all of it"),
        (200, b"by"),
        (404, b"no"),
    ]
    assert connections == 3


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "the server closed the connection"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "malformed response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n", "Content-Length b'many'"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\nabcdef", "Content-Length b'-3'"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-f\r\n", "chunk size b'-f'"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nok\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nok\r\n", "longer than"),
    ],
)
def test_a_broken_or_foreign_response_is_a_connection_failure(reply: bytes, problem: str) -> None:
    async def main() -> None:
        async with asyncio.timeout(10):  # a parser that loops would never get here
            await exchange(replying([reply]), [("GET", None)])

    with pytest.raises(ConnectionFailed, match=re.escape(problem)):
        asyncio.run(main())


def test_a_timeout_closes_the_connection_and_the_next_request_reconnects() -> None:
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            await read_request(reader)
            if connections == 1:
                await asyncio.sleep(5)  # never answers in time
            writer.write(LENGTH)
            await writer.drain()
        finally:
            writer.close()

    async def main() -> Response:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        connection = Connection(Target.from_url(f"http://127.0.0.1:{port}"), {})
        try:
            with pytest.raises(TimeoutError):
                await connection.request("GET", "/", timeout=0.1)
            response = await connection.request("GET", "/", timeout=5)
            assert connection.connects == 2
            return response
        finally:
            connection.close()
            server.close()

    assert asyncio.run(main()).status == 404
    assert connections == 2


def test_a_refused_connection_fails_fast() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connection = Connection(Target.from_url(f"http://127.0.0.1:{port}"), {})
    with pytest.raises(ConnectionFailed):
        asyncio.run(connection.request("GET", "/"))


def test_bytes_beyond_the_response_retire_the_connection() -> None:
    """A 200 followed by stray bytes that look like a response: the next request gets its
    own answer, on a new connection, not the stray one."""
    stray = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"
    )
    queue = [stray, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"]
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await replying([queue.pop(0)])(reader, writer)

    responses = asyncio.run(exchange(serve, [("GET", None), ("GET", None)]))
    assert [(r.status, r.body) for r in responses] == [(200, b"ok"), (201, b"")]
    assert connections == 2


def test_a_reset_before_a_read_to_close_body_ends_is_a_failure() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\npart of")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST, not FIN

    with pytest.raises(ConnectionFailed):
        asyncio.run(exchange(serve, [("GET", None)]))


@pytest.mark.parametrize(("method", "retried"), [("GET", True), ("POST", False)])
def test_a_kept_connection_closed_as_the_request_leaves(method: str, retried: bool) -> None:
    """The keep-alive race: the server closes a kept connection on reading the next request,
    answering nothing. An idempotent request goes again on a new connection; a POST fails."""
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            await read_request(reader)
            writer.write(LENGTH)
            await writer.drain()
            if connections == 1:
                await read_request(reader)  # the second request: closed unanswered
        finally:
            writer.close()

    requests: list[tuple[str, bytes | None]] = [("GET", None), (method, None)]
    if retried:
        responses = asyncio.run(exchange(serve, requests))
        assert [r.status for r in responses] == [404, 404]
        assert connections == 2
    else:
        with pytest.raises(ConnectionFailed):
            asyncio.run(exchange(serve, requests))
