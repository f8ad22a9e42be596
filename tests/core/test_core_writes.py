"""Coalesced socket writes: one send per response turn, large bodies unchanged, nothing lost.

The writer under test wraps a real :class:`asyncio.StreamWriter` on a real loopback connection;
a thin recorder in between shows what reaches the transport and when.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from depot.core import writes
from depot.core.writes import FLUSH_AT, CoalescingWriter


class RecordingWriter:
    """Passes everything to the real writer and remembers each ``write`` it was given."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.writer.write(data)

    def writelines(self, pieces: list[bytes]) -> None:
        """One handover of several pieces (uvloop sends them with one writev): one entry."""
        self.writes.append(b"".join(pieces))
        self.writer.writelines(pieces)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.writer, name)


@asynccontextmanager
async def connection() -> AsyncIterator[tuple[asyncio.StreamReader, RecordingWriter]]:
    """A loopback TCP connection: the client's reader and the server side's recorded writer."""
    accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(writer)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client_reader, client_writer = await asyncio.open_connection("127.0.0.1", port)
    server_writer = await accepted.get()
    try:
        yield client_reader, RecordingWriter(server_writer)
    finally:
        client_writer.close()
        server_writer.close()
        server.close()
        await server.wait_closed()


async def test_small_writes_of_one_turn_leave_as_one_write_in_order() -> None:
    async with connection() as (client, recorder):
        writer = CoalescingWriter(recorder)  # type: ignore[arg-type]
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        writer.write(b"hello")
        writer.write(b"")  # h11's end of a content-length message
        await writer.drain()
        assert recorder.writes == [], "nothing goes out before the loop turn ends"
        await asyncio.sleep(0)
        assert recorder.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]
        expected = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
        assert await client.readexactly(len(expected)) == expected


async def test_large_writes_go_out_at_once_so_bodies_stream_with_back_pressure() -> None:
    chunk = bytes(range(256)) * (4 * 1024)  # 1 MiB
    async with connection() as (client, recorder):
        writer = CoalescingWriter(recorder)  # type: ignore[arg-type]
        writer.write(b"headers\r\n\r\n")
        writer.write(chunk)
        # Handed over before the turn ends, headers first, with the chunk in one handover.
        assert recorder.writes == [b"headers\r\n\r\n" + chunk]
        received = asyncio.ensure_future(client.readexactly(11 + 8 * len(chunk)))
        for _ in range(7):
            writer.write(chunk)
            assert len(recorder.writes[-1]) == len(chunk), "a large chunk is never held back"
            await writer.drain()
        assert await received == b"headers\r\n\r\n" + chunk * 8


async def test_gathered_bytes_go_out_when_they_reach_the_flush_size() -> None:
    async with connection() as (_, recorder):
        writer = CoalescingWriter(recorder)  # type: ignore[arg-type]
        piece = b"x" * (FLUSH_AT // 4)
        for _ in range(4):
            writer.write(piece)
        assert recorder.writes == [piece * 4], "never more than FLUSH_AT bytes are held"


async def test_close_and_write_eof_send_what_was_gathered_first() -> None:
    async with connection() as (client, recorder):
        writer = CoalescingWriter(recorder)  # type: ignore[arg-type]
        writer.write(b"last words")
        writer.write_eof()
        assert await client.read() == b"last words"
    async with connection() as (client, recorder):
        writer = CoalescingWriter(recorder)  # type: ignore[arg-type]
        writer.write(b"goodbye")
        writer.close()
        assert await client.read() == b"goodbye"


async def test_a_write_after_the_peer_vanished_does_not_raise() -> None:
    async with connection() as (client, recorder):
        writer = CoalescingWriter(recorder)  # type: ignore[arg-type]
        recorder.writer.transport.abort()
        writer.write(b"into the void")
        await asyncio.sleep(0)  # the turn-end flush runs and swallows the failure


def test_install_swaps_hypercorns_connection_class_once() -> None:
    from hypercorn.asyncio import run as hypercorn_run

    assert writes.install() is True
    installed = hypercorn_run.TCPServer
    assert getattr(installed, "coalesces_writes", False)
    assert writes.install() is True and hypercorn_run.TCPServer is installed


def test_depot_serve_answers_pipelined_requests_in_order(depot_server: Any) -> None:
    """Responses gathered per turn must still be whole and in order on one connection."""
    paths = ["/nix/nix-cache-info", "/-/health", "/nix/" + "0" * 32 + ".narinfo"]
    requests = len(paths)
    request = "".join(f"GET {p} HTTP/1.1\r\nHost: depot\r\n\r\n" for p in paths).encode()
    with socket.create_connection(("127.0.0.1", depot_server.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        statuses: list[bytes] = []
        while len(statuses) < requests:
            data += sock.recv(65536)
            while b"\r\n\r\n" in data:
                head, rest = data.split(b"\r\n\r\n", 1)
                lines = head.split(b"\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in lines
                    if line.lower().startswith(b"content-length:")
                )
                if len(rest) < length:
                    break
                statuses.append(lines[0])
                data = rest[length:]
    assert [s.split(b" ")[1] for s in statuses] == [b"200", b"200", b"404"]
