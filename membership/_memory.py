"""An in-process network implementing the transport contract, for tests.

Addresses are ``mem://name``. Channels are pairs of queues: no bytes, no sockets, no clock.
Each end enforces its own frame limit on what it receives, like the real transports, so a
test can build a peer with a larger limit to send an oversized frame. `MemoryTransport.drop`
breaks every channel of an address at once, the way a crashed process's connections reset.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from ._codec import DEFAULT_MAX_FRAME
from ._errors import ChannelClosed, ConnectError, LocalProtocolError, RemoteProtocolError
from ._transport import Channel, ChannelHandler, run_handler

__all__ = ["MemoryChannel", "MemoryTransport"]

_EOF = object()


class MemoryChannel:
    """One end of an in-process channel."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._inbox: asyncio.Queue[bytes | object] = asyncio.Queue()
        self._other: MemoryChannel | None = None
        self._closed = False

    @classmethod
    def pair(
        cls, max_frame: int = DEFAULT_MAX_FRAME, other_max_frame: int | None = None
    ) -> tuple[MemoryChannel, MemoryChannel]:
        """Two connected ends (the second may have its own limit)."""
        a, b = cls(max_frame), cls(max_frame if other_max_frame is None else other_max_frame)
        a._other, b._other = b, a
        return a, b

    async def send(self, frame: bytes) -> None:
        if len(frame) > self.max_frame:
            raise LocalProtocolError(
                f"frame of {len(frame)} bytes is over the {self.max_frame}-byte limit"
            )
        if self._closed or self._other is None or self._other._closed:
            raise ChannelClosed("channel is closed")
        self._other._inbox.put_nowait(bytes(frame))
        await asyncio.sleep(0)  # a send is a scheduling point, as on a socket

    async def receive(self) -> bytes:
        if self._closed:
            raise ChannelClosed("channel is closed")
        frame = await self._inbox.get()
        if not isinstance(frame, bytes):
            self._closed = True
            raise ChannelClosed("closed by the other end")
        if len(frame) > self.max_frame:
            await self.aclose()
            raise RemoteProtocolError(
                f"peer sent a {len(frame)}-byte frame; the limit is {self.max_frame}"
            )
        return frame

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.put_nowait(_EOF)
        if self._other is not None and not self._other._closed:
            self._other._inbox.put_nowait(_EOF)


class MemoryTransport:
    """An in-process network shared by every node of a test.

    Args:
        max_frame: the frame limit of this end's channels (what it accepts and sends).
        network: another `MemoryTransport` whose network this one joins (with its own limit).
    """

    scheme = "mem"

    def __init__(
        self, max_frame: int = DEFAULT_MAX_FRAME, network: MemoryTransport | None = None
    ) -> None:
        self.max_frame = max_frame
        shared = network or self
        self._listeners: dict[str, tuple[asyncio.Queue[MemoryChannel], int]] = (
            {} if network is None else shared._listeners
        )
        self._channels: dict[str, list[MemoryChannel]] = {} if network is None else shared._channels
        self._counter: list[int] = [0] if network is None else shared._counter

    async def connect(self, address: str) -> Channel:
        listener = self._listeners.get(address)
        if listener is None:
            raise ConnectError(f"nothing listens on {address}")
        accept, limit = listener
        mine, theirs = MemoryChannel.pair(self.max_frame, limit)
        self._channels.setdefault(address, []).extend((mine, theirs))
        accept.put_nowait(theirs)
        await asyncio.sleep(0)
        return mine

    async def drop(self, address: str) -> None:
        """Reset every channel to or from `address` (its listener stays)."""
        for channel in self._channels.pop(address, []):
            await channel.aclose()

    @contextlib.asynccontextmanager
    async def serve(self, address: str, handler: ChannelHandler) -> AsyncIterator[str]:
        if not address.startswith("mem://"):
            raise LocalProtocolError(f"not a mem:// address: {address!r}")
        if address.endswith(":0") or address == "mem://":
            self._counter[0] += 1
            address = f"mem://node-{self._counter[0]}"
        if address in self._listeners:
            raise LocalProtocolError(f"{address} is already served")
        accept: asyncio.Queue[MemoryChannel] = asyncio.Queue()
        self._listeners[address] = (accept, self.max_frame)
        tasks: set[asyncio.Task[None]] = set()
        try:
            async with asyncio.TaskGroup() as group:

                async def acceptor() -> None:
                    while True:
                        channel = await accept.get()
                        task = group.create_task(run_handler(handler, channel))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)

                loop_task = group.create_task(acceptor())
                try:
                    yield address
                finally:
                    loop_task.cancel()
                    for task in list(tasks):
                        task.cancel()
        finally:
            del self._listeners[address]
            await self.drop(address)
