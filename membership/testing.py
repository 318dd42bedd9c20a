"""The transport contract's conformance suite, for anyone who writes a `Transport`.

Every check is an async function of a `Network` (how to make the transport under test and
where to listen) that raises `AssertionError` when the transport breaks the contract of
`membership._transport`; `CHECKS` names them all and `check_transport` runs them in turn. The
project runs them against its own three transports (``tests/membership/``), as trio ships
``check_two_way_stream`` for streams::

    @pytest.mark.parametrize("check", sorted(membership.testing.CHECKS))
    async def test_my_transport(check):
        await membership.testing.CHECKS[check](Network(make_mine, "my://:0", nowhere))
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

from ._errors import ChannelClosed, ConnectError, LocalProtocolError, RemoteProtocolError
from ._transport import Channel, Transport

__all__ = ["CHECKS", "LIMIT", "TIMEOUT", "Network", "check_transport"]

LIMIT = 4096
"""The frame limit the checks give the transport under test."""


@dataclass
class Network:
    """How to build the transports under test and their addresses.

    Attributes:
        make: ``make(limit, other)``: a transport with frame limit ``limit``; ``other``, when
            given, is a transport of the same network it must be able to reach (the in-process
            network needs it; others ignore it).
        listen: the address to serve on (port 0 for any).
        nowhere: a fresh address nobody serves.
    """

    make: Callable[[int, Transport | None], Transport]
    listen: str
    nowhere: Callable[[], str]


@contextlib.contextmanager
def _raises(kind: type[BaseException]) -> Iterator[None]:
    try:
        yield
    except kind:
        return
    raise AssertionError(f"expected {kind.__name__}")


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


async def check_frames_arrive_intact_and_in_order_both_ways(network: Network) -> None:
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


async def check_close_ends_the_other_side(network: Network) -> None:
    async with serving(network) as (transport, server, address):
        client = await transport.connect(address)
        accepted = await server.next()
        await client.send(b"last words")
        await client.aclose()
        await client.aclose()  # idempotent
        assert await accepted.receive() == b"last words"
        with _raises(ChannelClosed):
            await accepted.receive()
        with _raises(ChannelClosed):
            await client.send(b"after close")
        with _raises(ChannelClosed):
            await client.receive()


async def check_server_side_close_ends_the_client(network: Network) -> None:
    async with serving(network) as (transport, server, address):
        client = await transport.connect(address)
        accepted = await server.next()
        await accepted.aclose()
        with _raises(ChannelClosed):
            async with asyncio.timeout(5):
                await client.receive()


async def check_oversized_frame_from_the_peer_closes_that_channel_only(network: Network) -> None:
    async with serving(network) as (transport, server, address):
        big = network.make(4 * LIMIT, transport)
        rogue = await big.connect(address)
        rogue_accepted = await server.next()
        honest = await transport.connect(address)
        honest_accepted = await server.next()
        await rogue.send(b"z" * (LIMIT + 1))
        with _raises(RemoteProtocolError):
            async with asyncio.timeout(5):
                await rogue_accepted.receive()
        with _raises(ChannelClosed):
            await rogue_accepted.receive()
        await honest.send(b"still fine")
        assert await honest_accepted.receive() == b"still fine"
        await honest.aclose()
        await rogue.aclose()


async def check_sending_an_oversized_frame_is_a_local_error(network: Network) -> None:
    async with serving(network) as (transport, server, address):
        client = await transport.connect(address)
        accepted = await server.next()
        with _raises(LocalProtocolError):
            await client.send(b"z" * (LIMIT + 1))
        await client.send(b"usable")
        assert await accepted.receive() == b"usable"
        await client.aclose()


async def check_connecting_to_nothing_is_a_connect_error(network: Network) -> None:
    transport = network.make(LIMIT, None)
    with _raises(ConnectError):
        await transport.connect(network.nowhere())


async def check_concurrent_senders_never_interleave_frames(network: Network) -> None:
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


async def check_leaving_serve_ends_the_handlers(network: Network) -> None:
    transport = network.make(LIMIT, None)
    server = Server()
    async with transport.serve(network.listen, server.handler) as address:
        client = await transport.connect(address)
        await server.next()
    assert server.handlers_ended == 1
    with _raises(ChannelClosed):
        async with asyncio.timeout(5):
            await client.receive()
    await client.aclose()


TIMEOUT = 10.0
"""Seconds a check may take: one that hangs (a lost frame) fails instead."""


def _bounded(
    check: Callable[[Network], Awaitable[None]],
) -> Callable[[Network], Awaitable[None]]:
    async def run(network: Network) -> None:
        try:
            async with asyncio.timeout(TIMEOUT):
                await check(network)
        except TimeoutError:
            raise AssertionError(f"{check.__name__} did not finish in {TIMEOUT:g} s") from None

    return run


CHECKS: dict[str, Callable[[Network], Awaitable[None]]] = {
    check.__name__.removeprefix("check_"): _bounded(check)
    for check in (
        check_frames_arrive_intact_and_in_order_both_ways,
        check_close_ends_the_other_side,
        check_server_side_close_ends_the_client,
        check_oversized_frame_from_the_peer_closes_that_channel_only,
        check_sending_an_oversized_frame_is_a_local_error,
        check_connecting_to_nothing_is_a_connect_error,
        check_concurrent_senders_never_interleave_frames,
        check_leaving_serve_ends_the_handlers,
    )
}
"""Every check of the contract, by name."""


async def check_transport(network: Network) -> None:
    """Run every check in turn; the first that fails raises `AssertionError`."""
    for check in CHECKS.values():
        await check(network)
