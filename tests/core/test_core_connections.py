"""Connections of a real ``depot serve``, driven with raw sockets: every request is answered or
closed, a refused body costs nothing, a closed client frees its socket, SIGTERM is prompt.

Polls have deadlines far below the times they guard against (hypercorn's 75 s keep-alive, the
30 s graceful timeout), so a pass means the behaviour, not a lucky moment.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from depot.core.testing import DepotServer

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")


def connect(server: DepotServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes its end (raises on timeout)."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def open_sockets(pid: int) -> int:
    """TCP sockets the process holds (listening socket included)."""
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            continue
    return count


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def log_lines(server: DepotServer) -> list[dict[str, object]]:
    """Every line of the server's stderr, each of which must be one JSON object."""
    return [json.loads(line) for line in server.log().splitlines() if line.strip()]


@pytest.fixture
def server(make_depot_server: Callable[..., DepotServer]) -> DepotServer:
    return make_depot_server("--request-body-timeout", "1")


def test_an_early_413_closes_the_connection_and_frees_the_body(server: DepotServer) -> None:
    """20 MiB bodies to a route that takes 16 MiB: each 413 closes, memory comes back."""
    assert server.process is not None
    pid = server.process.pid
    body = 20 * 1024 * 1024
    chunk = b"a" * 65536
    baseline_sockets = open_sockets(pid)
    baseline_rss = rss(pid)
    for _ in range(20):
        with connect(server) as sock:
            sock.sendall(
                b"PUT /npm/p/-rev/1-0 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % body
            )
            sent = 0
            try:
                while sent < body:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass  # the server may close before all of it is sent
            answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert b"\r\nconnection: close\r\n" in answer.lower()
    assert wait_for(lambda: open_sockets(pid) <= baseline_sockets, 10)
    assert rss(pid) - baseline_rss < 64 * 1024 * 1024
    assert all(isinstance(line, dict) for line in log_lines(server))


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (b"Content-Length: 18446744073709551616\r\n", b"is larger than any body"),
        (
            b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n",
            b"Content-Length together with Transfer-Encoding",
        ),
    ],
    ids=["content-length-2**64", "content-length-and-chunked"],
)
def test_impossible_framing_is_refused_at_once(
    server: DepotServer, headers: bytes, reason: bytes
) -> None:
    with connect(server) as sock:
        sock.sendall(b"PUT /raw/files/f.txt HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\nabc")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert reason in answer
    assert b"connection: close" in answer.lower()


def test_an_unknown_transfer_coding_is_501(server: DepotServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"PUT /raw/files/f.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 501 ")


def test_a_stalled_body_is_answered_408_and_closed(server: DepotServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"PUT /raw/files/f.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"the request body stalled: no bytes for 1 s" in answer
    assert answer.lower().count(b"connection: close") == 1
    # The access line goes out with the rest of its event-loop turn's lines, just after.
    assert wait_for(lambda: 408 in [line.get("status") for line in log_lines(server)], 5)


def test_a_socket_the_client_closed_is_released_at_once(server: DepotServer) -> None:
    """200 keep-alive clients that close: no CLOSE_WAIT for the 75 s keep-alive timeout."""
    assert server.process is not None
    pid = server.process.pid
    baseline = open_sockets(pid)
    clients = []
    for _ in range(200):
        sock = connect(server)
        sock.sendall(b"GET /-/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        clients.append(sock)
    assert open_sockets(pid) >= 200
    for sock in clients:
        sock.close()
    assert wait_for(lambda: open_sockets(pid) <= baseline, 5), open_sockets(pid) - baseline


def test_sigterm_closes_idle_connections_and_finishes_requests_in_flight(
    make_depot_server: Callable[..., DepotServer],
) -> None:
    """Idle connections close at once, an upload in flight completes, a stalled one gets its
    408 within the shutdown grace instead of holding the stop for the 30 s graceful timeout."""
    server = make_depot_server()  # the default 60 s body timeout
    assert server.process is not None
    # First, so that the server is well into it by the time SIGTERM comes.
    stalled = connect(server)
    stalled.sendall(
        b"PUT /raw/files/stalled.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhel"
    )
    idle = []
    for _ in range(10):
        sock = connect(server)
        sock.sendall(b"GET /-/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        idle.append(sock)
    never_asked = [connect(server) for _ in range(3)]
    upload = connect(server)
    upload.sendall(
        b"PUT /raw/files/term.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello"
    )
    assert server.wait_for_log("/-/health")
    server.process.send_signal(signal.SIGTERM)
    for sock in idle + never_asked:
        assert read_until_closed(sock, timeout=5) == b""
    upload.sendall(b"world")
    assert read_until_closed(upload).startswith(b"HTTP/1.1 201 ")
    answer = read_until_closed(stalled, timeout=15)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"the server is stopping and the request body stalled" in answer
    assert server.process.wait(timeout=15) == 0
    lines = log_lines(server)  # every line JSON
    assert not [line for line in lines if line.get("level") == "error" or "error" in line]
    assert "Traceback" not in server.log()


def test_third_party_log_lines_are_json(server: DepotServer) -> None:
    """python-multipart's parser warnings and hypercorn's own lines come out as JSON too."""
    form = b"--not-the-boundary\r\n\r\n"  # python-multipart warns "Expected boundary character"
    with connect(server) as sock:
        sock.sendall(
            b"POST /python/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: %d\r\n\r\n" % len(form) + form
        )
        assert read_until_closed(sock).startswith(b"HTTP/1.1 400 ")
    assert server.wait_for_log('"path": "/python/"')
    lines = log_lines(server)
    assert any(line["logger"] == "hypercorn.error" for line in lines)
    assert any(str(line["logger"]).startswith(("python_multipart", "multipart")) for line in lines)
