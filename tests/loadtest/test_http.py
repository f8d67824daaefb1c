"""The load generator's HTTP/1.1 client against loopback servers that frame responses in
every way HTTP/1.1 allows, split anywhere, or break mid-way."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import tracemalloc
from collections.abc import Awaitable, Callable

import pytest

from minerva_ai.loadtest.http import (
    MAX_BODY,
    Connection,
    ConnectionFailed,
    Response,
    Target,
    request_target,
    target_problem,
)

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


@pytest.mark.parametrize(
    ("typed", "sent"),
    [
        ("/features?search=photo tagging", "/features?search=photo%20tagging"),
        ("/caf\u00e9/\u00fc?q=\u65e5\u672c", "/caf%C3%A9/%C3%BC?q=%E6%97%A5%E6%9C%AC"),
        ("/p%2Fq?r=%41&s=50%&t=%zz&u=%4", "/p%2Fq?r=%41&s=50%25&t=%25zz&u=%254"),
        ("/a/b:c@d?x=1+2&y=!$'()*,;=/?", "/a/b:c@d?x=1+2&y=!$'()*,;=/?"),
        ('/"<>\\^`{|}[]', "/%22%3C%3E%5C%5E%60%7B%7C%7D%5B%5D"),
        ("/page?x=1#section 2", "/page?x=1"),
        ("/x\r\nX-Injected: 1\x00", "/x%0D%0AX-Injected:%201%00"),
    ],
)
def test_request_target_encodes_only_what_a_request_line_cannot_hold(typed: str, sent: str) -> None:
    assert request_target(typed) == sent
    assert request_target(sent) == sent  # a valid target is left as it is


def test_what_cannot_be_a_target_is_named() -> None:
    assert target_problem("/features?search=photo tagging&x=%zz\u00e9") is None
    assert "U+000A" in (target_problem("/x\ny") or "") and "%0A" in (target_problem("/x\ny") or "")
    assert "U+0000" in (target_problem("/x\x00") or "")
    assert "U+0085" in (target_problem("/x\x85") or "")  # C1 controls too
    assert "lone surrogate" in (target_problem("/x\udcff") or "")


def test_an_unencoded_target_is_refused_before_anything_is_sent() -> None:
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        connection = Connection(Target.from_url(f"http://127.0.0.1:{port}"), {})
        try:
            for target in ("/a b", "/x\r\nX-Injected: 1", "/caf\u00e9"):
                with pytest.raises(ValueError, match="not a request target"):
                    await connection.request("GET", target)
        finally:
            connection.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
    assert connections == 0


BIG = 32 * MAX_BODY
PIECE = bytes(range(256)) * 256  # 64 KiB


def big_reply(framing: str) -> list[bytes]:
    """A 200 with a ``BIG`` body made of ``PIECE``s, in writes of at most a piece or so."""
    pieces = [PIECE] * (BIG // len(PIECE))
    if framing == "length":
        return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG, *pieces]
    if framing == "one chunk":
        return [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % BIG, *pieces,
                b"\r\n0\r\n\r\n"]  # fmt: skip
    if framing == "chunks":
        chunks = [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces]
        return [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", *chunks, b"0\r\n\r\n"]
    return [b"HTTP/1.1 200 OK\r\n\r\n", *pieces]  # up to the close


@pytest.mark.parametrize("framing", ["length", "one chunk", "chunks", "to the close"])
def test_a_body_over_the_cap_is_read_to_its_end_and_kept_up_to_the_cap(framing: str) -> None:
    """32 MiB in each framing: the body kept is its first MAX_BODY bytes, the size counts
    every byte, the memory the exchange takes stays near the cap, and a connection whose
    response had an end carries the next request."""
    reply = big_reply(framing)
    head_size = len(reply[0]) if framing in ("length", "to the close") else None

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_request(reader)
            for part in reply:
                writer.write(part)
                await writer.drain()
            if framing != "to the close":
                await read_request(reader)
                writer.write(LENGTH)
                await writer.drain()
        finally:
            writer.close()

    async def main() -> tuple[Response, Response, int]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        connection = Connection(Target.from_url(f"http://127.0.0.1:{port}"), {})
        try:
            tracemalloc.start()
            tracemalloc.reset_peak()
            big = await connection.request("GET", "/big", timeout=60)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            if framing == "to the close":
                return big, big, peak
            return big, await connection.request("GET", "/next", timeout=60), peak
        finally:
            connection.close()
            server.close()

    big, following, peak = asyncio.run(main())
    assert (big.status, big.truncated, len(big.body)) == (200, True, MAX_BODY)
    assert big.body == PIECE * (MAX_BODY // len(PIECE))
    assert big.size >= BIG
    if head_size is not None:
        assert big.size == head_size + BIG
    assert peak < 6 * MAX_BODY, f"{peak:,} bytes traced while reading {BIG:,}"
    if framing != "to the close":
        assert (following.status, following.body, following.truncated) == (404, b"no", False)
