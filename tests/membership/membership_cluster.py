"""Helpers to run in-process clusters of `Node`s over the in-process network or TCP.

Waiting is event-driven: `wait_until` re-checks its condition whenever any node reports an
event, under one overall timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import replace

from membership import ChannelClosed, HyParViewConfig, Node, NodeConfig, Peer, Subscription
from membership._auth import Handshake, LinkAuth
from membership._codec import decode, encode
from membership._memory import MemoryTransport
from membership._messages import Hello, Proof
from membership._transport import Channel, TcpTransport, Transport
from membership._websocket import WebSocketTransport

FAST = NodeConfig(
    node_id="template",
    hyparview=HyParViewConfig(
        active_size=3,
        passive_size=6,
        shuffle_interval=0.5,
        repair_backoff=0.1,
        repair_backoff_max=0.5,
        neighbor_timeout=2.0,
    ),
    keepalive_interval=0.2,
    keepalive_timeout=3.0,  # shorter ones fire spuriously on a loaded machine
    idle_timeout=1.0,
    connect_timeout=2.0,
    seed_backoff=0.05,
    seed_backoff_max=0.2,
)


def peer(name: str) -> Peer:
    """A peer with a made-up address, for the pure cores."""
    return Peer(name, f"mem://{name}")


def make_transport(kind: str) -> tuple[Transport, str]:
    """A transport of `kind` ("memory", "tcp" or "websocket") and the address to listen on."""
    if kind == "memory":
        return MemoryTransport(), "mem://:0"
    if kind == "websocket":
        return WebSocketTransport(), "ws://127.0.0.1:0"
    return TcpTransport(), "tcp://127.0.0.1:0"


class Cluster:
    """Nodes sharing one transport, plus a merged view of their events."""

    def __init__(
        self,
        transport: Transport,
        listen: str,
        stack: contextlib.AsyncExitStack,
        group: asyncio.TaskGroup,
    ) -> None:
        self.transport = transport
        self.listen = listen
        self.nodes: list[Node] = []
        self._stack = stack
        self._group = group
        self._changed = asyncio.Event()
        self._subscriptions: list[Subscription] = []

    async def start(self, node_id: str, *, join: Iterable[str] = (), **changes: object) -> Node:
        config = replace(FAST, node_id=node_id, listen=self.listen, join=tuple(join), **changes)
        node = Node(config, self.transport, rng=random.Random(node_id))
        await self._stack.enter_async_context(node)
        self.nodes.append(node)
        self._watch(node)
        return node

    def _watch(self, node: Node) -> None:
        subscription = node.events()
        self._subscriptions.append(subscription)

        async def pump() -> None:  # ends when the node stops and closes the subscription
            async for _ in subscription:
                self._changed.set()

        self._group.create_task(pump())

    async def wait_until(self, condition: Callable[[], bool], limit: float = 30.0) -> None:
        """Return once `condition()` holds, re-checked at every event of any node."""
        async with asyncio.timeout(limit):
            while not condition():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):  # some conditions move without events
                        await self._changed.wait()

    def symmetric(self, nodes: list[Node] | None = None) -> bool:
        """Every node has a neighbour, and every active link is known at both ends."""
        nodes = self.nodes if nodes is None else nodes
        by_peer = {n.me: n for n in nodes}
        for node in nodes:
            if not node.active_view():
                return False
            for peer in node.active_view():
                other = by_peer.get(peer)
                if other is None or node.me not in other.active_view():
                    return False
        return True

    def connected(self, nodes: list[Node] | None = None) -> bool:
        """The active-view graph of `nodes` is one component."""
        nodes = self.nodes if nodes is None else nodes
        if not nodes:
            return True
        members = {n.me for n in nodes}
        adjacency = {n.me: set(n.active_view()) & members for n in nodes}
        seen, todo = {nodes[0].me}, [nodes[0].me]
        while todo:
            for other in adjacency[todo.pop()]:
                if other not in seen:
                    seen.add(other)
                    todo.append(other)
        return seen == members


@contextlib.asynccontextmanager
async def cluster(kind: str) -> AsyncIterator[Cluster]:
    transport, listen = make_transport(kind)
    async with contextlib.AsyncExitStack() as stack:
        group = await stack.enter_async_context(asyncio.TaskGroup())
        yield Cluster(transport, listen, stack, group)


async def closed_by_peer(channel: Channel) -> bool:
    """Read (pings and all) until the node closes `channel`; True if it did within 5 s."""
    try:
        async with asyncio.timeout(5):
            while True:
                await channel.receive()
    except ChannelClosed:
        return True
    except TimeoutError:
        return False


class SealedChannel:
    """A hand-made peer's side of an authenticated link: frames sealed and opened with the
    link's keys, as a node does (plain when the cluster is open)."""

    def __init__(self, channel: Channel, auth: LinkAuth | None) -> None:
        self.inner = channel
        self.auth = auth
        self.max_frame = channel.max_frame

    async def send(self, frame: bytes) -> None:
        await self.inner.send(frame if self.auth is None else self.auth.seal(frame))

    async def receive(self) -> bytes:
        frame = await self.inner.receive()
        return frame if self.auth is None else self.auth.open(frame)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def raw_handshake(
    transport: Transport, address: str, node_id: str, key: bytes | None
) -> tuple[SealedChannel, Peer]:
    """Dial `address` as a hand-made peer and authenticate with `key`; returns the channel
    (sealing and opening frames as the link's keys ask) and the node's `Peer`."""
    channel = await transport.connect(address)
    handshake = Handshake(
        Peer(node_id, f"mem://{node_id}"), key, secrets.token_bytes(32), initiator=True
    )
    await channel.send(encode(handshake.hello()))
    hello = decode(await channel.receive())
    assert isinstance(hello, Hello)
    proof = handshake.on_hello(hello)
    assert proof is not None
    await channel.send(encode(proof))
    answer = decode(await channel.receive())
    assert isinstance(answer, Proof)
    assert handshake.on_proof(answer) is None
    return SealedChannel(channel, handshake.link), handshake.peer
