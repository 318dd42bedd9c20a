"""The transport contract (see `membership._transport`), one suite run against the in-process
network, TCP and websockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from helpers import free_port

from membership import ChannelClosed, ConnectError, LocalProtocolError, RemoteProtocolError
from membership._memory import MemoryTransport
from membership._transport import Channel, TcpTransport, Transport
from membership._websocket import WebSocketTransport

LIMIT = 4096


@dataclass
class Network:
    """How to build each implementation's transports and addresses."""

    make: Callable[[int, Transport | None], Transport]
    listen: str
    nowhere: Callable[[], str]


NETWORKS = {
    "memory": Network(
        lambda limit, other: MemoryTransport(
            limit, other if isinstance(other, MemoryTransport) else None
        ),
        "mem://:0",
        lambda: "mem://nobody",
    ),
    "tcp": Network(
        lambda limit, _: TcpTransport(limit),
        "tcp://127.0.0.1:0",
        lambda: f"tcp://127.0.0.1:{free_port()}",
    ),
    "websocket": Network(
        lambda limit, _: WebSocketTransport(limit),
        "ws://127.0.0.1:0",
        lambda: f"ws://127.0.0.1:{free_port()}/membership",
    ),
}


@pytest.fixture(params=sorted(NETWORKS))
def network(request: pytest.FixtureRequest) -> Network:
    return NETWORKS[request.param]


class Server:
    """Accepted channels, kept open until the test ends."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[Channel] = asyncio.Queue()
        self.done = asyncio.Event()
        self.handlers_ended = 0

    async def handler(self, channel: Channel) -> None:
        self.accepted.put_nowait(channel)
        try:
            await self.done.wait()
        finally:
            self.handlers_ended += 1

    async def next(self) -> Channel:
        async with asyncio.timeout(5):
            return await self.accepted.get()


@contextlib.asynccontextmanager
async def serving(
    network: Network, limit: int = LIMIT
) -> AsyncIterator[tuple[Transport, Server, str]]:
    transport = network.make(limit, None)
    server = Server()
    async with transport.serve(network.listen, server.handler) as address:
        try:
            yield transport, server, address
        finally:
            server.done.set()


async def test_frames_arrive_intact_and_in_order_both_ways(network: Network) -> None:
    async with serving(network) as (transport, server, address):
        client = await transport.connect(address)
        accepted = await server.next()
        frames = [b"", b"x", bytes(range(256)) * 3, b"y" * LIMIT]
        for frame in frames:
            await client.send(frame)
        assert [await accepted.receive() for _ in frames] == frames
        for frame in reversed(frames):
            await accepted.send(frame)
        assert [await client.receive() for _ in frames] == frames[::-1]
        await client.aclose()


async def test_close_ends_the_other_side(network: Network) -> None:
    async with serving(network) as (transport, server, address):
        client = await transport.connect(address)
        accepted = await server.next()
        await client.send(b"last words")
        await client.aclose()
        await client.aclose()  # idempotent
        assert await accepted.receive() == b"last words"
        with pytest.raises(ChannelClosed):
            await accepted.receive()
        with pytest.raises(ChannelClosed):
            await client.send(b"after close")
        with pytest.raises(ChannelClosed):
            await client.receive()


async def test_server_side_close_ends_the_client(network: Network) -> None:
    async with serving(network) as (transport, server, address):
        client = await transport.connect(address)
        accepted = await server.next()
        await accepted.aclose()
        with pytest.raises(ChannelClosed):
            async with asyncio.timeout(5):
                await client.receive()


async def test_oversized_frame_from_the_peer_closes_that_channel_only(network: Network) -> None:
    async with serving(network) as (transport, server, address):
        big = network.make(4 * LIMIT, transport)
        rogue = await big.connect(address)
        rogue_accepted = await server.next()
        honest = await transport.connect(address)
        honest_accepted = await server.next()
        await rogue.send(b"z" * (LIMIT + 1))
        with pytest.raises(RemoteProtocolError):
            async with asyncio.timeout(5):
                await rogue_accepted.receive()
        with pytest.raises(ChannelClosed):
            await rogue_accepted.receive()
        await honest.send(b"still fine")
        assert await honest_accepted.receive() == b"still fine"
        await honest.aclose()
        await rogue.aclose()


async def test_sending_an_oversized_frame_is_a_local_error(network: Network) -> None:
    async with serving(network) as (transport, server, address):
        client = await transport.connect(address)
        accepted = await server.next()
        with pytest.raises(LocalProtocolError):
            await client.send(b"z" * (LIMIT + 1))
        await client.send(b"usable")
        assert await accepted.receive() == b"usable"
        await client.aclose()


async def test_connecting_to_nothing_is_a_connect_error(network: Network) -> None:
    transport = network.make(LIMIT, None)
    with pytest.raises(ConnectError):
        await transport.connect(network.nowhere())


async def test_concurrent_senders_never_interleave_frames(network: Network) -> None:
    async with serving(network) as (transport, server, address):
        client = await transport.connect(address)
        accepted = await server.next()

        async def sender(tag: int) -> None:
            for i in range(20):
                await client.send(bytes([tag]) * (100 + i * 50))

        async with asyncio.TaskGroup() as group:
            for tag in range(8):
                group.create_task(sender(tag))
        got = [await accepted.receive() for _ in range(8 * 20)]
        assert all(len(set(frame)) == 1 for frame in got)
        for tag in range(8):
            mine = [len(f) for f in got if f[0] == tag]
            assert mine == [100 + i * 50 for i in range(20)]  # in order per sender
        await client.aclose()


async def test_leaving_serve_ends_the_handlers(network: Network) -> None:
    transport = network.make(LIMIT, None)
    server = Server()
    async with transport.serve(network.listen, server.handler) as address:
        client = await transport.connect(address)
        await server.next()
    assert server.handlers_ended == 1
    with pytest.raises(ChannelClosed):
        async with asyncio.timeout(5):
            await client.receive()
    await client.aclose()
