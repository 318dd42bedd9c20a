"""`Node` over the in-process network and over real TCP on 127.0.0.1: joining, broadcast,
direct messages, failure detection, keepalive, seeds with backoff, the cluster key, and
garbage or oversized frames."""

from __future__ import annotations

import asyncio

import pytest
from membership_cluster import closed_by_peer, cluster, raw_handshake

from membership import (
    BroadcastReceived,
    DirectReceived,
    Event,
    LocalProtocolError,
    MembershipError,
    MemoryTransport,
    NeighborDown,
    NeighborUp,
    NotNeighborError,
    Subscription,
    TcpTransport,
)
from membership._codec import encode
from membership._messages import Direct, Neighbor

KINDS = ["memory", "tcp"]
ALL_KINDS = [*KINDS, "websocket"]  # the daemon may carry the peer protocol on its HTTP port


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_nodes_join_into_a_symmetric_connected_overlay(kind: str) -> None:
    async with cluster(kind) as c:
        seed = await c.start("n0")
        for i in range(1, 6):
            await c.start(f"n{i}", join=[seed.me.address])
        await c.wait_until(lambda: c.symmetric() and c.connected())
        for node in c.nodes:
            assert 1 <= len(node.active_view()) <= 3
            status = node.status()
            assert status["id"] == node.me.id
            assert {p["id"] for p in status["active"]} == {p.id for p in node.active_view()}


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_broadcast_reaches_every_node_exactly_once(kind: str) -> None:
    async with cluster(kind) as c:
        seed = await c.start("n0")
        for i in range(1, 6):
            await c.start(f"n{i}", join=[seed.me.address])
        await c.wait_until(lambda: c.symmetric() and c.connected())
        subscriptions = [n.events() for n in c.nodes[1:]]
        first = seed.broadcast(b"one")
        second = c.nodes[3].broadcast(b"two")
        for node, subscription in zip(c.nodes[1:], subscriptions, strict=True):
            want = {first} | ({second} if node is not c.nodes[3] else set())
            got: list[int] = []
            async with asyncio.timeout(10):
                async for event in subscription:
                    if isinstance(event, BroadcastReceived):
                        got.append(event.msg_id)
                        if set(got) == want:
                            break
            assert sorted(got) == sorted(want)  # no duplicate before both arrived


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_direct_messages_reach_one_neighbour(kind: str) -> None:
    async with cluster(kind) as c:
        a = await c.start("a")
        b = await c.start("b", join=[a.me.address])
        await c.wait_until(lambda: c.symmetric())
        events = a.events()
        b.send(a.me, b"digest")
        async with asyncio.timeout(5):
            async for event in events:
                if isinstance(event, DirectReceived):
                    assert event == DirectReceived(b.me, b"digest")
                    break
        stranger = a.me._replace(id="nobody")
        with pytest.raises(NotNeighborError):
            b.send(stranger, b"x")


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_stopped_node_is_reported_down_and_replaced(kind: str) -> None:
    async with cluster(kind) as c:
        seed = await c.start("n0")
        for i in range(1, 6):
            await c.start(f"n{i}", join=[seed.me.address])
        await c.wait_until(lambda: c.symmetric() and c.connected())
        victim = c.nodes[2]
        watchers = [n for n in c.nodes if victim.me in n.active_view()]
        subscriptions = [n.events() for n in watchers]
        await victim.__aexit__(None, None, None)
        c.nodes.remove(victim)
        for subscription in subscriptions:
            async with asyncio.timeout(5):
                async for event in subscription:
                    if event == NeighborDown(victim.me):
                        break
        # Five nodes of degree 3 cannot all be full (odd degree sum): at least 2 each.
        await c.wait_until(
            lambda: (
                c.symmetric()
                and c.connected()
                and all(len(n.active_view()) >= 2 for n in c.nodes)
                and sum(len(n.active_view()) for n in c.nodes) >= 14
            )
        )


async def test_seed_is_dialled_again_with_backoff_until_it_comes_up() -> None:
    async with cluster("memory") as c:
        late = await c.start("late-joiner", join=["mem://seed"])
        events = late.events()
        c.listen = "mem://seed"
        seed = await c.start("seed")
        async with asyncio.timeout(5):
            async for event in events:
                if event == NeighborUp(seed.me):
                    break


@pytest.mark.parametrize("kind", KINDS)
async def test_a_key_rotation_keeps_neighbouring_phases_together(kind: str) -> None:
    """Mid-rotation: ``a`` proves the new key and accepts the old, ``b`` the reverse; both
    link. ``c``, still on the old key alone, links with ``b`` but refuses ``a``'s new key."""
    old, new = b"old-key", b"new-key"
    async with cluster(kind) as c:
        a = await c.start("a", cluster_key=new, accepted_keys=(old,))
        b = await c.start("b", join=[a.me.address], cluster_key=old, accepted_keys=(new,))
        await c.wait_until(lambda: c.symmetric())
        assert [p.id for p in a.active_view()] == ["b"]
        behind = await c.start("c", join=[b.me.address], cluster_key=old)
        await c.wait_until(lambda: b.me in behind.active_view() and behind.me in b.active_view())
        # b forwards c's join to a, which dials c: c refuses a's proof of the new key.
        await c.wait_until(lambda: behind.status()["refused"] >= 1)
        assert a.me not in behind.active_view()
        assert behind.me not in a.active_view()


@pytest.mark.parametrize("kind", KINDS)
async def test_wrong_key_and_no_key_are_kept_out(kind: str) -> None:
    async with cluster(kind) as c:
        a = await c.start("a", cluster_key=b"right")
        b = await c.start("b", join=[a.me.address], cluster_key=b"right")
        await c.wait_until(lambda: c.symmetric())
        wrong = await c.start("wrong", join=[a.me.address], cluster_key=b"wrong")
        open_node = await c.start("open", join=[b.me.address])
        await c.wait_until(lambda: a.status()["refused"] >= 2 and b.status()["refused"] >= 2)
        for node in (a, b):
            assert {p.id for p in node.active_view()} <= {"a", "b"}
            assert {p.id for p in node.passive_view()} <= {"a", "b"}
        assert wrong.active_view() == ()
        assert open_node.active_view() == ()
        with pytest.raises(MembershipError):  # a hand-made peer with a wrong key
            await raw_handshake(c.transport, a.me.address, "intruder", b"guess")


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_garbage_frame_closes_that_connection_only(kind: str) -> None:
    async with cluster(kind) as c:
        a = await c.start("a")
        b = await c.start("b", join=[a.me.address])
        await c.wait_until(lambda: c.symmetric())
        channel, _ = await raw_handshake(c.transport, a.me.address, "rogue", None)
        await channel.send(b"\xc1 this is not msgpack")
        assert await closed_by_peer(channel)
        assert b.me in a.active_view()
        events = b.events()
        a.broadcast(b"still connected")
        async with asyncio.timeout(5):
            async for event in events:
                if isinstance(event, BroadcastReceived):
                    break


@pytest.mark.parametrize("kind", KINDS)
async def test_oversized_frame_closes_that_connection_only(kind: str) -> None:
    async with cluster(kind) as c:
        a = await c.start("a")
        b = await c.start("b", join=[a.me.address])
        await c.wait_until(lambda: c.symmetric())
        limit = a.config.max_frame
        big = (
            MemoryTransport(4 * limit, c.transport)
            if isinstance(c.transport, MemoryTransport)
            else TcpTransport(4 * limit)
        )
        channel, _ = await raw_handshake(big, a.me.address, "rogue", None)
        await channel.send(b"\x00" * (limit + 10))
        assert await closed_by_peer(channel)
        assert b.me in a.active_view()


@pytest.mark.parametrize("kind", KINDS)
async def test_silent_neighbour_is_dropped_by_the_keepalive(kind: str) -> None:
    async with cluster(kind) as c:
        a = await c.start("a")
        events = a.events()
        channel, _ = await raw_handshake(c.transport, a.me.address, "mute", None)
        await channel.send(encode(Neighbor(high_priority=True)))
        async with asyncio.timeout(5):
            async for event in events:
                if isinstance(event, NeighborUp):
                    mute = event.peer
                    break
        async with asyncio.timeout(a.config.keepalive_timeout + 5):
            async for event in events:  # it never pings back: the reader times out
                if event == NeighborDown(mute):
                    break
        await channel.aclose()


async def test_payloads_up_to_the_limit_pass_and_larger_ones_are_refused() -> None:
    async with cluster("memory") as c:
        a = await c.start("a", max_frame=4096)
        b = await c.start("b", join=[a.me.address], max_frame=4096)
        await c.wait_until(c.symmetric)
        events = b.events()
        a.broadcast(b"x" * a.max_payload)
        a.send(b.me, b"y" * a.max_payload)
        with pytest.raises(LocalProtocolError):
            a.broadcast(b"x" * (a.max_payload + 1))
        with pytest.raises(LocalProtocolError):
            a.send(b.me, b"y" * (a.max_payload + 1))
        kinds = set()
        async with asyncio.timeout(5):
            async for event in events:
                if isinstance(event, BroadcastReceived | DirectReceived):
                    assert len(event.payload) == a.max_payload
                    kinds.add(type(event))
                    if len(kinds) == 2:
                        break


async def test_a_node_served_by_an_aiohttp_app_of_its_own(unused_tcp_port: int) -> None:
    """The daemon's way: no listener of the node's own, a route on the HTTP port instead."""
    from aiohttp import web

    from membership import Node, NodeConfig, WebSocketTransport, websocket_handler

    address = f"ws://127.0.0.1:{unused_tcp_port}/peer"
    config = NodeConfig("daemon", advertise=address, mdns=False)
    async with Node(config, WebSocketTransport()) as node:
        app = web.Application()
        app.router.add_get("/peer", websocket_handler(node.handle_channel, config.max_frame))
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
            async with cluster("websocket") as c:
                other = await c.start("other", join=[address])
                await c.wait_until(
                    lambda: node.me in other.active_view() and other.me in node.active_view()
                )
        finally:
            await runner.cleanup()


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_a_fast_peer_is_paced_to_the_rate_and_loses_nothing(kind: str) -> None:
    async with cluster(kind) as c:
        a = await c.start("a", peer_rate=1000.0, peer_burst=100)
        events = a.events()
        channel, _ = await raw_handshake(c.transport, a.me.address, "fast", None)
        await channel.send(encode(Neighbor(high_priority=True)))
        frames = 1100
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(frames):
            await channel.send(encode(Direct(b"%d" % i)))
        got = await _direct_payloads(events, frames)
        elapsed = loop.time() - start
        assert got == [b"%d" % i for i in range(frames)]
        # 100 frames of burst, then 1000 at 1000/s: at least a second (a lower bound only).
        assert elapsed >= 0.95, elapsed
        assert a.status()["paced"] > 0
        await channel.aclose()


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_a_peer_is_not_read_past_a_subscriber_backlog(kind: str) -> None:
    async with cluster(kind) as c:
        limit = 16
        a = await c.start("a", max_pending_direct=limit)
        slow = a.events()  # never read until the end
        channel, _ = await raw_handshake(c.transport, a.me.address, "eager", None)
        await channel.send(encode(Neighbor(high_priority=True)))
        frames = 500

        async def flood() -> None:
            for i in range(frames):
                await channel.send(encode(Direct(b"%d" % i)))

        sender = asyncio.create_task(flood())
        await c.wait_until(lambda: a.status()["held"] > 0, limit=10)
        await asyncio.sleep(0.3)  # time enough to read on, if the node did
        direct = [e for e in _queued(slow) if isinstance(e, DirectReceived)]
        assert len(direct) == limit
        # Reading the backlog lets the link be read again: every message arrives, in order.
        got = [e.payload for e in direct] + await _direct_payloads(slow, frames - limit)
        assert got == [b"%d" % i for i in range(frames)]
        await sender
        await channel.aclose()


def _queued(subscription: Subscription) -> list[Event]:
    """Take every event queued in `subscription` now, without waiting."""
    out = []
    while (event := subscription.pop_nowait()) is not None:
        out.append(event)
    return out


async def _direct_payloads(subscription: Subscription, count: int) -> list[bytes]:
    """The payloads of the next `count` direct messages of `subscription`."""
    got: list[bytes] = []
    async with asyncio.timeout(20):
        async for event in subscription:
            if isinstance(event, DirectReceived):
                got.append(event.payload)
                if len(got) == count:
                    break
    return got


@pytest.mark.parametrize("kind", KINDS)
async def test_a_peer_whose_send_queue_overflows_is_dropped(kind: str) -> None:
    """More frames for a neighbour than its send queue holds, before its writer can send one:
    the link is dropped (and the neighbour reported down), the frames are not queued on. The
    keepalive is long, so that only the overflow can drop the link within the test."""
    async with cluster(kind) as c:
        queue = 8
        a = await c.start("a", send_queue=queue, keepalive_timeout=60.0)
        events = a.events()
        channel, _ = await raw_handshake(c.transport, a.me.address, "slow", None)
        await channel.send(encode(Neighbor(high_priority=True)))
        async with asyncio.timeout(5):
            async for event in events:
                if isinstance(event, NeighborUp):
                    slow = event.peer
                    break
        for i in range(queue + 1):  # no await in between: the writer sends none of them yet
            a.send(slow, b"%d" % i)
        async with asyncio.timeout(5):
            async for event in events:
                if event == NeighborDown(slow):
                    break
        assert await closed_by_peer(channel)
        assert slow not in a.active_view()
