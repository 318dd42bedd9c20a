"""Who may call, deploy, roll back and fetch modules: tokens and the cluster key over HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers import Client, MakeClient, Wat

from assemblexd.api import create_app
from assemblexd.auth import BlobGuard, blob_proof
from assemblexd.config import Config
from assemblexd.node import Node


@pytest.fixture
async def secured(
    tmp_path: Path, aiohttp_client: MakeClient, wat: Wat
) -> AsyncIterator[tuple[Client, Node]]:
    config = Config(
        data_dir=tmp_path, mdns=False, token="deploy-t", call_token="call-t", cluster_key="k"
    )
    async with Node(config) as node:
        await node.deploy("echo", wat("echo"))
        await node.deploy("echo", wat("host_echo"))
        yield await aiohttp_client(create_app(node)), node


async def test_calls_need_the_call_token(secured: tuple[Client, Node]) -> None:
    client, _ = secured
    resp = await client.post("/call/echo/main", data=b"x")
    assert resp.status == 401
    assert (await resp.json())["error"] == "unauthorized"
    resp = await client.post("/call/echo/main", data=b"x", headers={"Authorization": "Bearer no"})
    assert resp.status == 401
    resp = await client.post(
        "/call/echo/main", data=b"x", headers={"Authorization": "Bearer call-t"}
    )
    assert resp.status == 200
    assert await resp.read() == b"x"


async def test_rollback_needs_the_deploy_token(secured: tuple[Client, Node]) -> None:
    client, node = secured
    assert (await client.post("/apps/echo/rollback")).status == 401
    # The call token is not the deploy token.
    auth = {"Authorization": "Bearer call-t"}
    assert (await client.post("/apps/echo/rollback", headers=auth)).status == 401
    assert node.app("echo").version == 2
    resp = await client.post("/apps/echo/rollback", headers={"Authorization": "Bearer deploy-t"})
    assert resp.status == 200
    assert (await resp.json())["version"] == 3
    resp = await client.post("/apps/ghost/rollback", headers={"Authorization": "Bearer deploy-t"})
    assert resp.status == 404


async def test_blobs_need_a_proof_of_the_cluster_key(secured: tuple[Client, Node]) -> None:
    client, node = secured
    sha = node.app("echo").sha256

    async def status(proof: str) -> int:
        return (await client.get(f"/blobs/{sha}", headers={"Authorization": proof})).status

    assert (await client.get(f"/blobs/{sha}")).status == 401
    assert await status(blob_proof("other-key", node.id, sha, time.time())) == 401
    assert await status(blob_proof("k", node.id, sha, time.time() - 3600)) == 401
    # A proof for one module does not open another.
    other = node.registry.get("echo").history[0].sha256  # type: ignore[union-attr]
    assert await status(blob_proof("k", node.id, other, time.time())) == 401
    # A proof made for another node, relayed here, does not pass.
    assert await status(blob_proof("k", "another-node", sha, time.time())) == 401
    good = blob_proof("k", node.id, sha, time.time())
    resp = await client.get(f"/blobs/{sha}", headers={"Authorization": good})
    assert resp.status == 200
    assert await resp.read() == node.storage.read_blob(sha)
    # Replayed, the same proof is refused: each is good once.
    assert await status(good) == 401


def test_blob_proof_rejects_garbage_and_spent_proofs() -> None:
    sha = "ab" * 32
    guard = BlobGuard("n1", "k")
    for header in (
        "",
        "Bearer x",
        "Assemblex",
        "Assemblex ts=x,mac=y",
        "Assemblex mac=00",
        "Assemblex ts=1000,nonce=short,mac=00",
    ):
        assert not guard.check(sha, header, time.time())
    assert guard.check(sha, blob_proof("k", "n1", sha, 1000.0), 1100.0)
    assert not guard.check(sha, blob_proof("k", "n1", sha, 1000.0), 2000.0)  # too old
    spent = blob_proof("k", "n1", sha, 1000.0, nonce="0" * 32)
    assert guard.check(sha, spent, 1000.0)
    assert not guard.check(sha, spent, 1001.0)
    assert not BlobGuard("n2", "k").check(sha, blob_proof("k", "n1", sha, 1000.0), 1000.0)


def test_a_full_nonce_memory_refuses_rather_than_forgets() -> None:
    sha = "ab" * 32
    guard = BlobGuard("n1", "k", max_remembered=2)
    assert guard.check(sha, blob_proof("k", "n1", sha, 1000.0), 1000.0)
    assert guard.check(sha, blob_proof("k", "n1", sha, 1000.0), 1000.0)
    assert not guard.check(sha, blob_proof("k", "n1", sha, 1000.0), 1000.0)
    # Once the first ones have expired, there is room again.
    later = 1000.0 + 301
    assert guard.check(sha, blob_proof("k", "n1", sha, later), later)


async def test_blobs_during_a_key_rotation(
    tmp_path: Path, aiohttp_client: MakeClient, wat: Wat
) -> None:
    """A node proving the new key and accepting the old serves peers that prove either."""
    config = Config(
        data_dir=tmp_path, mdns=False, cluster_key="new", accepted_cluster_keys=("old",)
    )
    async with Node(config) as node:
        sha = (await node.deploy("echo", wat("echo"))).sha256
        client = await aiohttp_client(create_app(node))
        for key, status in (("new", 200), ("old", 200), ("third", 401)):
            proof = blob_proof(key, node.id, sha, time.time())
            resp = await client.get(f"/blobs/{sha}", headers={"Authorization": proof})
            assert resp.status == status, key
    rotating = BlobGuard("n", "new", ("old",))
    assert rotating.check(sha, blob_proof("old", "n", sha, 10.0), 10.0)
    assert not BlobGuard("n", "new").check(sha, blob_proof("old", "n", sha, 10.0), 10.0)
