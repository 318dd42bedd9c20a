"""A client without the cluster key attacks the peer protocol of real daemons.

Two nodes with a cluster key, joined, each serving an app. The client connects to both nodes'
``/peer`` websockets and tries to relay one node's handshake to the other: it gives node1
node0's challenge nonce as its own, and passes what node1 proves to node0 while claiming
node1's id (read from node0's ``/status``). Had node0 taken the link, the client could send it
records of its own (a member pointing at its server, an app naming its module), as it once
could. It must get nothing: node1 proves nothing to a client that has proved nothing, node0
refuses the link, and both nodes keep serving their app.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator

import aiohttp
import pytest
from cluster import LocalCluster, poll, tagged_guest, whole_cluster

from membership._codec import decode, encode
from membership._messages import Hello, Join, Peer, Proof

pytestmark = pytest.mark.e2e

KEY = "peer-attack-cluster-key"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("keyed"), args=["--cluster-key", KEY])
    try:
        local.start(2)
        yield local
    finally:
        local.close()


@pytest.fixture(autouse=True)
def _whole_cluster(keyed: LocalCluster, request: pytest.FixtureRequest) -> Iterator[None]:
    yield from whole_cluster(keyed, request)


async def _frames(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> tuple[list[object], bool]:
    """What ``ws`` delivers within ``seconds``, and whether the node closed it by then."""
    got: list[object] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    got.append(decode(msg.data))
            return got, True
    return got, ws.closed


async def _relay(node0: str, node1: str, node1_id: str) -> tuple[list[object], bool]:
    async with aiohttp.ClientSession() as session:
        ws0 = await session.ws_connect(node0.replace("http", "ws") + "/peer")
        ws1 = await session.ws_connect(node1.replace("http", "ws") + "/peer")
        hello0 = decode((await ws0.receive()).data)
        hello1 = decode((await ws1.receive()).data)
        assert isinstance(hello0, Hello)
        assert isinstance(hello1, Hello)
        me = Peer("mallory", "ws://127.0.0.1:9/peer")
        await ws1.send_bytes(encode(Hello(me, hello0.nonce, True, hello1.version)))
        from_node1, _ = await _frames(ws1, 1.0)
        proofs = [m for m in from_node1 if isinstance(m, Proof)]
        impostor = Peer(node1_id, hello1.peer.address)
        await ws0.send_bytes(encode(Hello(impostor, hello1.nonce, True, hello0.version)))
        mac = proofs[0].mac if proofs else secrets.token_bytes(32)
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await ws0.send_bytes(encode(Proof(mac)))
            await ws0.send_bytes(encode(Join()))
        _, closed = await _frames(ws0, 5.0)
        await ws1.close()
        await ws0.close()
        return proofs, closed


def test_a_relayed_handshake_opens_no_link(keyed: LocalCluster) -> None:
    node0, node1 = keyed.nodes
    for node in keyed.nodes:
        node.deploy(f"own-{node.name}", tagged_guest(f"served-by-{node.name}"))
    for node in keyed.nodes:
        for app in ("own-node0", "own-node1"):
            poll(lambda n=node, a=app: n.call(a)[0] == 200, f"{app} on {node.name}")
    node1_id = node1.status()["node"]["id"]
    proofs, closed = asyncio.run(_relay(node0.url, node1.url, node1_id))
    assert proofs == [], "node1 proved the key to a client that had proved nothing"
    assert closed, "node0 kept the impostor's link open"
    active = {p["id"] for p in node0.status()["active"]}
    assert active == {node1_id}  # the real node1 only, through its own link
    for node in keyed.nodes:
        for app in ("own-node0", "own-node1"):
            status, body = node.call(app)
            assert (status, body) == (200, f"served-by-{app[4:]}".encode())
