"""The transport contract (see `membership._transport`): the library's conformance suite
(`membership.testing`) run against the in-process network, TCP and websockets."""

from __future__ import annotations

import pytest
from helpers import free_port

from membership._memory import MemoryTransport
from membership._transport import TcpTransport
from membership._websocket import WebSocketTransport
from membership.testing import CHECKS, Network

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


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("network", sorted(NETWORKS))
async def test_transport_contract(network: str, check: str) -> None:
    await CHECKS[check](NETWORKS[network])


async def test_a_broken_transport_fails_the_suite() -> None:
    """The suite can fail: a transport that drops every other frame does not pass."""

    class Lossy(TcpTransport):
        async def connect(self, address: str):  # type: ignore[no-untyped-def]
            channel = await super().connect(address)
            send, count = channel.send, [0]

            async def lossy(frame: bytes) -> None:
                count[0] += 1
                if count[0] % 2:
                    await send(frame)

            channel.send = lossy  # type: ignore[method-assign]
            return channel

    broken = Network(lambda limit, _: Lossy(limit), "tcp://127.0.0.1:0", NETWORKS["tcp"].nowhere)
    with pytest.raises(AssertionError):
        await CHECKS["frames_arrive_intact_and_in_order_both_ways"](broken)
