"""Modules fetched from peers: checked against the record's sha256 before they are stored or
run, and refused past ``--max-upload`` (the node's real ``Cluster.fetch_module`` against a
hand-made peer that serves what a test wants)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from helpers import FakePeers, Wat, free_port

from assemblexd.cluster import Cluster
from assemblexd.config import MIB, Config
from assemblexd.errors import GuestError
from assemblexd.node import FetchError, Node
from assemblexd.records import AppRecord


def sync(a: Node, b: Node) -> None:
    """Full anti-entropy exchange between the two nodes' replicas."""
    b.replica.merge(a.replica.delta(b.replica.digest()))
    a.replica.merge(b.replica.delta(a.replica.digest()))


async def test_a_fetched_module_that_does_not_match_its_sha256_is_neither_stored_nor_run(
    tmp_path: Path, wat: Wat
) -> None:
    """The first fetch gives another (valid) module than the record names; the node refuses
    it, keeps nothing of it, and runs the app once a fetch gives the right bytes."""
    peers = FakePeers()
    async with (
        Node(Config(data_dir=tmp_path / "a", name="a")) as a,
        Node(Config(data_dir=tmp_path / "b", name="b"), peers=peers) as b,
    ):
        impostor = wat("host_echo")  # answers any operation; echo answers "echo" only
        fetches: list[str] = []
        refused = asyncio.Event()

        async def fetch(record: AppRecord) -> bytes:
            fetches.append(record.sha256)
            if len(fetches) == 1:
                return impostor
            refused.set()  # asked again: the first answer was refused
            return a.storage.read_blob(record.sha256)

        peers.fetch = fetch
        running = asyncio.Event()
        peers.on_apps_changed.append(running.set)
        record = await a.deploy("echo", wat("echo"))
        sync(a, b)
        async with asyncio.timeout(10):
            while b.running() != {"echo": 1}:
                if fetches and not refused.is_set():
                    b.peer_up()  # retry now rather than at the end of the backoff
                await asyncio.wait(
                    [asyncio.ensure_future(running.wait()), asyncio.ensure_future(refused.wait())],
                    timeout=0.5,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                running.clear()
        assert fetches == [record.sha256, record.sha256]
        assert not b.storage.has_blob(hashlib.sha256(impostor).hexdigest())
        assert b.storage.has_blob(record.sha256)
        with pytest.raises(GuestError, match="unknown operation: hello"):
            await b.call("echo", "hello", b"x")  # echo's module runs, not the impostor's


# -- Cluster.fetch_module against a hand-made peer ------------------------------------------------


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[Cluster, Node]]:
    """The cluster layer of a node with a 1 MiB upload limit and no peer of its own."""
    port = free_port()
    config = Config(
        data_dir=tmp_path / "node", name="node", port=port, mdns=False, max_upload_mib=1
    )
    layer = Cluster()
    async with Node(config, peers=layer) as node:
        node.url = f"http://127.0.0.1:{port}"
        async with layer.running(node):
            yield layer, node


async def serve_blob(data: bytes) -> tuple[web.AppRunner, str]:
    """A peer that answers every ``GET /blobs/...`` with ``data``, streamed in 64 KiB chunks
    (no Content-Length); its runner and URL."""

    async def blob(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/wasm"})
        await response.prepare(request)
        for i in range(0, len(data), 64 * 1024):
            await response.write(data[i : i + 64 * 1024])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/blobs/{sha256}", blob)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


def introduce(node: Node, name: str, url: str) -> None:
    """Make ``node`` know a member ``name`` at ``url`` (its member record, as a peer's
    would arrive)."""
    record = {"id": f"{name}-id", "name": name, "url": url, "active": [], "apps": {}}
    node.replica.set(f"members/{name}-id", json.dumps({**record, "updated": time.time()}).encode())


def record_of(data: bytes, origin: str) -> AppRecord:
    return AppRecord(
        name="big",
        version=1,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        deployed_at=time.time(),
        origin=origin,
    )


@pytest.mark.parametrize(("size", "refused"), [(MIB, False), (MIB + 1, True)])
async def test_a_fetched_module_over_the_upload_limit_is_refused(
    cluster: tuple[Cluster, Node], size: int, refused: bool
) -> None:
    layer, node = cluster
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    runner, url = await serve_blob(data)
    try:
        introduce(node, "peer", url)
        if refused:
            with pytest.raises(FetchError, match="over the upload limit"):
                await layer.fetch_module(record_of(data, "peer"))
        else:
            assert await layer.fetch_module(record_of(data, "peer")) == data
    finally:
        await runner.cleanup()
