"""The HTTP layer's limits, on the daemon's own server (``assemblexd.__main__.serve``) and over
raw sockets, so that what is tested is when the node answers, not only what.

- A ``Content-Length`` over the upload or payload limit is refused before the body is read:
  the client sends the headers alone and gets the 413.
- A chunked body is refused as soon as it passes the limit: the client sends a little more
  than the limit, never the last chunk, and gets the 413.
- The request target, a header field and the number of headers are bounded (400), and what
  is at the bound passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import free_port

from assemblexd.__main__ import serve
from assemblexd.config import MIB, Config

ANSWER_TIMEOUT = 10.0
"""Seconds to wait for the node's answer: a node that waits for the rest of the body never
answers, and the test fails on this timeout."""
MAX_LINE = 8190
MAX_FIELD = 8190
MAX_HEADERS = 128


@dataclass
class Served:
    host: str
    port: int


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """A node served as ``assemblexd run`` serves it, on a free port of 127.0.0.1, with 1 MiB
    upload and payload limits."""
    port = free_port()
    config = Config(
        data_dir=tmp_path / "data",
        name="limits",
        port=port,
        mdns=False,
        max_upload_mib=1,
        max_payload_mib=1,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(config, stop))
    try:
        async with asyncio.timeout(30):
            while True:
                if task.done():
                    raise AssertionError(f"serve() ended early: {task.result()}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                break
        yield Served("127.0.0.1", port)
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 response."""
    async with asyncio.timeout(ANSWER_TIMEOUT):
        status_line = await reader.readline()
        assert status_line.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), status_line
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


@contextlib.asynccontextmanager
async def connection(
    served: Served,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(served.host, served.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def error_code(body: bytes) -> str:
    code: str = json.loads(body)["error"]
    return code


# -- bodies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "limit"),
    [
        ("/deploy?name=big", "application/wasm", MIB),
        ("/deploy", "multipart/form-data; boundary=xyz", 2 * MIB),  # past the form's slack
        ("/call/echo/echo", "application/octet-stream", MIB),
    ],
)
async def test_a_content_length_over_the_limit_is_refused_before_the_body(
    served: Served, path: str, content_type: str, limit: int
) -> None:
    """Headers only, no body byte sent: the 413 can only come from the Content-Length."""
    async with connection(served) as (reader, writer):
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {limit + 1}\r\n\r\n".encode()
        )
        await writer.drain()
        status, _, body = await read_response(reader)
    assert status == 413, body
    assert error_code(body) == "too_large"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/deploy?name=big", "application/wasm"), ("/call/echo/echo", "application/octet-stream")],
)
async def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(
    served: Served, path: str, content_type: str
) -> None:
    """A little more than the limit is sent, and no last chunk: the body never ends, so a node
    that reads it to the end before checking never answers."""
    chunk = b"\0" * (64 * 1024)
    async with connection(served) as (reader, writer):
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        for _ in range(MIB // len(chunk) + 2):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        status, _, body = await read_response(reader)
    assert status == 413, body
    assert error_code(body) == "too_large"


async def test_a_body_at_the_limit_is_read(served: Served) -> None:
    """The other side of the bounds above: a chunked module of exactly the limit is read to its
    end (and refused as a module, 400, not as too large)."""
    chunk = b"\0" * (64 * 1024)
    async with connection(served) as (reader, writer):
        writer.write(
            b"POST /deploy?name=big HTTP/1.1\r\nHost: x\r\nContent-Type: application/wasm\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(MIB // len(chunk)):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        status, _, body = await read_response(reader)
    assert status == 400, body
    assert error_code(body) == "invalid_module"


# -- request line and headers ---------------------------------------------------------------------


async def request_status(served: Served, head: bytes) -> int:
    async with connection(served) as (reader, writer):
        writer.write(head)
        await writer.drain()
        status, _, _ = await read_response(reader)
    return status


def target_of(size: int) -> bytes:
    """A request target (``/healthz?pad=...``) of ``size`` bytes."""
    base = b"/healthz?pad="
    return base + b"a" * (size - len(base))


async def test_the_request_target_is_bounded(served: Served) -> None:
    """aiohttp bounds the target (the URL) of the request line."""

    def head(size: int) -> bytes:
        return b"GET " + target_of(size) + b" HTTP/1.1\r\nHost: x\r\n\r\n"

    assert await request_status(served, head(MAX_LINE)) == 200
    assert await request_status(served, head(MAX_LINE + 1)) == 400


async def test_a_header_field_is_bounded(served: Served) -> None:
    """A header's value (its name is bounded alike)."""

    def head(size: int) -> bytes:
        field = b"X-Pad: " + b"a" * size
        return b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + field + b"\r\n\r\n"

    assert await request_status(served, head(MAX_FIELD)) == 200
    assert await request_status(served, head(MAX_FIELD + 1)) == 400


async def test_the_number_of_headers_is_bounded(served: Served) -> None:
    def head(count: int) -> bytes:
        fields = b"".join(b"X-H%d: v\r\n" % i for i in range(count - 1))
        return b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"

    assert await request_status(served, head(MAX_HEADERS)) == 200
    assert await request_status(served, head(MAX_HEADERS + 1)) == 400
