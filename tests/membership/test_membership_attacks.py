"""Attacks on the cluster-key handshake and on live links, by a client without the key,
against real nodes over every transport."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import pytest
from membership_cluster import closed_by_peer, cluster, raw_handshake

from membership import ChannelClosed, MembershipError, Peer
from membership._codec import decode, encode
from membership._messages import Direct, Hello, Join, Ping, Proof

ALL_KINDS = ["memory", "tcp", "websocket"]
KEY = b"the cluster key"


async def frames_within(channel: object, seconds: float) -> list[object]:
    """The messages `channel` delivers within `seconds` (until it closes)."""
    got: list[object] = []
    with contextlib.suppress(TimeoutError, ChannelClosed, MembershipError):
        async with asyncio.timeout(seconds):
            while True:
                got.append(decode(await channel.receive()))  # type: ignore[attr-defined]
    return got


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_relaying_one_nodes_handshake_to_another_opens_no_link(kind: str) -> None:
    """An outsider connects to A and B, hands B A's challenge nonce as its own, and passes
    whatever B proves to A while claiming to be B; then asks A to take it as a neighbour."""
    async with cluster(kind) as c:
        a = await c.start("a", cluster_key=KEY)
        b = await c.start("b", cluster_key=KEY)
        to_a = await c.transport.connect(a.me.address)
        to_b = await c.transport.connect(b.me.address)
        hello_a = decode(await to_a.receive())
        hello_b = decode(await to_b.receive())
        assert isinstance(hello_a, Hello)
        assert isinstance(hello_b, Hello)
        await to_b.send(
            encode(Hello(Peer("mallory", "mem://m"), hello_a.nonce, True, hello_b.version))
        )
        from_b = await frames_within(to_b, 1.0)
        proofs = [m for m in from_b if isinstance(m, Proof)]
        await to_a.send(encode(Hello(b.me, hello_b.nonce, True, hello_a.version)))
        await to_a.send(encode(Proof(proofs[0].mac if proofs else secrets.token_bytes(32))))
        with contextlib.suppress(ChannelClosed):  # A may have closed it already
            await to_a.send(encode(Join()))
        assert await closed_by_peer(to_a)
        assert b.me not in a.active_view()
        assert b.me not in a.passive_view()
        assert a.status()["refused"] >= 1
        assert proofs == []  # B proved nothing to a client that had proved nothing
        await to_b.aclose()


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_a_replayed_or_injected_frame_on_a_live_link_drops_it(kind: str) -> None:
    async with cluster(kind) as c:
        a = await c.start("a", cluster_key=KEY)
        for attack in ("replay", "inject", "unsealed"):
            channel, _ = await raw_handshake(c.transport, a.me.address, f"m-{attack}", KEY)
            assert channel.auth is not None
            sealed = channel.auth.seal(encode(Ping()))
            await channel.inner.send(sealed)
            if attack == "replay":
                await channel.inner.send(sealed)
            elif attack == "inject":  # a frame sealed with the wrong keys
                forged = bytearray(channel.auth.seal(encode(Direct(b"x"))))
                forged[-1] ^= 1
                await channel.inner.send(bytes(forged))
            else:
                await channel.inner.send(encode(Join()))
            assert await closed_by_peer(channel), attack


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_an_honest_peer_with_the_key_keeps_its_link(kind: str) -> None:
    """The control for the test above: the same frames, sealed in order, are served."""
    async with cluster(kind) as c:
        a = await c.start("a", cluster_key=KEY)
        channel, _ = await raw_handshake(c.transport, a.me.address, "honest", KEY)
        await channel.send(encode(Ping()))
        await channel.send(encode(Join()))
        await c.wait_until(lambda: any(p.id == "honest" for p in a.active_view()))
        answers = await frames_within(channel, 1.0)  # A's frames open with the link's keys
        assert answers
        assert any(p.id == "honest" for p in a.active_view())
        await channel.aclose()
