"""The transport contract, and its TCP implementation (the default).

A transport moves *frames* (byte strings up to a size limit) between two endpoints, in order,
over a `Channel`; it knows nothing of messages or peers. The contract, checked by one
conformance suite against every implementation (``tests/membership/test_membership_transport.py``):

* `Transport.connect(address)` returns an open `Channel` or raises `ConnectError`;
  `Transport.serve(address, handler)` is an async context manager that accepts channels,
  calls ``handler(channel)`` for each in a task it owns (the channel is closed when the
  handler returns, and pending handlers are cancelled when the context exits), and yields
  the bound address (a port of 0 is resolved).
* `Channel.send(frame)` delivers `frame` intact and in order, or raises `ChannelClosed`; a
  frame over the limit raises `LocalProtocolError` and leaves the channel usable.
* `Channel.receive()` returns the next frame, or raises `ChannelClosed` once the channel is
  closed by either end or broken. A frame from the peer over the limit raises
  `RemoteProtocolError` and closes that channel (and nothing else).
* `Channel.aclose()` is idempotent; the other end's `receive` then raises `ChannelClosed`.

Implementations: TCP with length-prefixed frames (here), an in-process network for tests
(`_memory.py`), and websockets with one frame per binary message (`_websocket.py`), which the
daemon can mount on its HTTP port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol
from urllib.parse import urlsplit

from ._codec import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame
from ._errors import ChannelClosed, ConnectError, LocalProtocolError, RemoteProtocolError

__all__ = [
    "Channel",
    "ChannelHandler",
    "TcpChannel",
    "TcpTransport",
    "Transport",
    "run_handler",
    "split_address",
]

_log = logging.getLogger("membership.transport")


class Channel(Protocol):
    """A bidirectional, ordered stream of frames (see the module doc for the contract)."""

    max_frame: int

    async def send(self, frame: bytes) -> None: ...

    async def receive(self) -> bytes: ...

    async def aclose(self) -> None: ...


ChannelHandler = Callable[[Channel], Awaitable[None]]
"""Serves one accepted channel until it returns."""


class Transport(Protocol):
    """Dials and accepts channels (see the module doc for the contract)."""

    async def connect(self, address: str) -> Channel: ...

    def serve(self, address: str, handler: ChannelHandler) -> AbstractAsyncContextManager[str]: ...


def split_address(address: str, scheme: str) -> tuple[str, int]:
    """``scheme://host:port`` -> (host, port).

    Raises:
        LocalProtocolError: another scheme, or no host or port.
    """
    parts = urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != scheme or not parts.hostname or port is None:
        raise LocalProtocolError(f"not a {scheme}://host:port address: {address!r}")
    return parts.hostname, port


async def run_handler(handler: ChannelHandler, channel: Channel) -> None:
    """Run `handler` on an accepted channel, then close it; one connection's failure is
    logged and stops there."""
    try:
        await handler(channel)
    except Exception:
        _log.exception("handler of an accepted channel failed")
    finally:
        await channel.aclose()


class TcpChannel:
    """A channel over an asyncio stream: a 4-byte big-endian length, then the frame."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self.max_frame = max_frame
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()
        self._closed = False

    async def send(self, frame: bytes) -> None:
        data = encode_frame(frame, self.max_frame)
        if self._closed:
            raise ChannelClosed("channel is closed")
        try:
            async with self._lock:
                self._writer.write(data)
                await self._writer.drain()
        except (ConnectionError, OSError, RuntimeError) as exc:
            await self.aclose()
            raise ChannelClosed(f"send failed: {exc!r}") from None

    async def receive(self) -> bytes:
        if self._closed:
            raise ChannelClosed("channel is closed")
        try:
            header = await self._reader.readexactly(4)
            length = FrameDecoder.header_length(header)
            if length > self.max_frame:
                await self.aclose()
                raise RemoteProtocolError(
                    f"peer announced a {length}-byte frame; the limit is {self.max_frame}"
                )
            return await self._reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            await self.aclose()
            raise ChannelClosed(f"connection ended: {exc!r}") from None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


class TcpTransport:
    """Frames over TCP, addressed as ``tcp://host:port``.

    Args:
        max_frame: the frame size limit, both ways.
        connect_timeout: limit on establishing a connection.
    """

    scheme = "tcp"

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, connect_timeout: float = 5.0) -> None:
        self.max_frame = max_frame
        self.connect_timeout = connect_timeout

    async def connect(self, address: str) -> Channel:
        host, port = split_address(address, self.scheme)
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            raise ConnectError(f"cannot connect to {address}: {exc!r}") from None
        return TcpChannel(reader, writer, self.max_frame)

    @contextlib.asynccontextmanager
    async def serve(self, address: str, handler: ChannelHandler) -> AsyncIterator[str]:
        host, port = split_address(address, self.scheme)
        tasks: set[asyncio.Task[None]] = set()
        async with asyncio.TaskGroup() as group:

            async def serve_one(channel: TcpChannel) -> None:
                await run_handler(handler, channel)

            def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                task = group.create_task(serve_one(TcpChannel(reader, writer, self.max_frame)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

            server = await asyncio.start_server(accepted, host, port)
            try:
                bound = server.sockets[0].getsockname()[1]
                yield f"{self.scheme}://{host}:{bound}"
            finally:
                server.close()
                for task in list(tasks):
                    task.cancel()
                await server.wait_closed()
