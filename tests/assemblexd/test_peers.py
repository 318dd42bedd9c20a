"""What a node needs from its peers (``assemblexd/peers.py``): a node alone, and the cluster
made before its node and run with it (real Node, real Cluster, no other daemon)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from helpers import MakeClient, Wat

from assemblexd.api import create_app
from assemblexd.cluster import Cluster
from assemblexd.config import Config
from assemblexd.node import Node
from assemblexd.peers import FetchError, NoPeers
from assemblexd.records import AppRecord

RECORD = AppRecord("app", 1, "ab" * 32, 10, 0.0, "elsewhere")


def config(tmp_path: Path) -> Config:
    return Config(data_dir=tmp_path, name="n1", mdns=False, pool_size=1)


async def test_a_node_alone_has_no_peers(tmp_path: Path, aiohttp_client: MakeClient) -> None:
    async with Node(config(tmp_path)) as node:
        assert isinstance(node.peers, NoPeers)
        with pytest.raises(FetchError, match="no peers"):
            await node.peers.fetch_module(RECORD)
        status = node.status()
        assert (status["active"], status["passive"]) == ([], [])
        assert [m["id"] for m in status["members"]] == [node.id]
        assert "assemblex_peer_read_waits" not in node.metrics_text().decode()
        client = await aiohttp_client(create_app(node))
        assert (await client.get("/peer")).status == 503


async def test_a_cluster_not_running_has_no_peers(
    tmp_path: Path, aiohttp_client: MakeClient
) -> None:
    cluster = Cluster()
    with pytest.raises(FetchError, match="not running"):
        await cluster.fetch_module(RECORD)
    assert cluster.views() is None
    assert cluster.peer_read_waits() == {}
    cluster.apps_changed()  # nothing to tell yet: no error
    async with Node(config(tmp_path), peers=cluster) as node:
        assert [m["id"] for m in node.status()["members"]] == [node.id]
        client = await aiohttp_client(create_app(node, peer_handler=cluster.handle_peer))
        resp = await client.get("/peer")
        assert resp.status == 503
        assert "cluster layer is not running" in await resp.text()


async def test_a_running_cluster_is_the_nodes_peers(tmp_path: Path, wat: Wat) -> None:
    cluster = Cluster()
    async with Node(config(tmp_path), peers=cluster) as node:
        async with cluster.running(node):
            views = cluster.views()
            assert views is not None
            assert [m["id"] for m in views[2]] == [node.id]
            assert set(cluster.peer_read_waits()) == {"paced", "held"}
            text = node.metrics_text().decode()
            assert 'assemblex_peer_read_waits_total{reason="paced"} 0.0' in text
            with pytest.raises(RuntimeError, match="running already"):
                async with cluster.running(node):
                    pass
            # The node tells its peers it runs another version: its member record follows.
            key = f"members/{node.id}"

            def record_runs_echo() -> bool:
                raw = node.replica.get(key)
                return raw is not None and json.loads(raw)["apps"] == {"echo": 1}

            async with node.replica.changes() as changes:
                await node.deploy("echo", wat("echo"))
                async with asyncio.timeout(5):
                    async for _ in changes:
                        if record_runs_echo():
                            break
        # Stopped: the node is alone again.
        assert cluster.views() is None
        with pytest.raises(FetchError, match="not running"):
            await cluster.fetch_module(RECORD)
