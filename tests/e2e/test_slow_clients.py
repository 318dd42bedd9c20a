"""Slow and greedy clients against a real daemon, with raw sockets: the header deadline
(``--header-timeout``), the body timeout (``--body-timeout``) and the cap of connections per
client address (``--max-client-conns``)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest
from cluster import Daemon

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 1.0
CAP = 6


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    base = tmp_path_factory.mktemp("slow")
    args = [
        "--header-timeout", str(HEADER_TIMEOUT),
        "--body-timeout", "1",
        "--max-client-conns", str(CAP),
    ]  # fmt: skip
    d = Daemon("slow", base / "data", base / "slow.log", args=args)
    d.start()
    try:
        d.wait_listening()
        yield d
    finally:
        d.kill()


def connect(d: Daemon) -> socket.socket:
    return socket.create_connection(("127.0.0.1", d.port), timeout=10)


def closed_after(sock: socket.socket, trickle: bytes, every: float, limit: float) -> float:
    """Send ``trickle`` one byte every ``every`` seconds until the server closes the
    connection; the seconds that took (fails past ``limit``)."""
    start = time.monotonic()
    sock.settimeout(every)
    for byte in trickle:
        assert time.monotonic() - start < limit, "the server kept the connection open"
        try:
            sock.sendall(bytes([byte]))
            if sock.recv(4096) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue  # nothing to read: still open
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
    raise AssertionError("ran out of bytes before the server closed")


def test_headers_trickled_a_byte_at_a_time_are_cut_off(daemon: Daemon) -> None:
    head = b"GET /status HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
    with connect(daemon) as sock:
        took = closed_after(sock, head, every=0.2, limit=HEADER_TIMEOUT + 5)
    assert took >= HEADER_TIMEOUT - 0.2


def test_a_silent_connection_is_cut_off(daemon: Daemon) -> None:
    with connect(daemon) as sock:
        start = time.monotonic()
        sock.settimeout(HEADER_TIMEOUT + 5)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b""
        assert time.monotonic() - start >= HEADER_TIMEOUT - 0.2


def test_kept_alive_connection_serves_more_requests(daemon: Daemon) -> None:
    """The deadline runs per request: a prompt client keeps its connection across requests
    taking longer than the deadline in all."""
    with connect(daemon) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"}"):
                chunk = sock.recv(4096)
                assert chunk, "closed"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 ")
            time.sleep(HEADER_TIMEOUT * 0.6)


def test_a_trickled_body_gets_408(daemon: Daemon) -> None:
    with connect(daemon) as sock:
        sock.sendall(b"POST /call/none HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        data = b""
        sock.settimeout(0.3)
        deadline = time.monotonic() + 10
        while b"}" not in data and time.monotonic() < deadline:
            try:
                sock.sendall(b"x")
                data += sock.recv(4096)
            except TimeoutError:
                continue
        assert data.startswith(b"HTTP/1.1 408 "), data


def test_connections_per_client_address_are_capped(daemon: Daemon) -> None:
    held = [connect(daemon) for _ in range(CAP)]
    try:
        with connect(daemon) as extra:
            answer = extra.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503 "), answer
            assert b"too many connections" in answer
    finally:
        for sock in held:
            sock.close()
    # Closed connections no longer count: a new one is served (once the daemon saw them go).
    deadline = time.monotonic() + 10
    while True:
        with connect(daemon) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = sock.recv(4096)
        if answer.startswith(b"HTTP/1.1 200 ") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
