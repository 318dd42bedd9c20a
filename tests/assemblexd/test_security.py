"""Who may call, deploy, roll back and fetch modules: tokens and the cluster key over HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from assemblexd.api import create_app
from assemblexd.auth import blob_proof, check_blob_proof
from assemblexd.config import Config
from assemblexd.node import Node

Wat = Callable[[str], bytes]
MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]


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
    assert (await client.get(f"/blobs/{sha}")).status == 401
    wrong = blob_proof("other-key", sha, time.time())
    assert (await client.get(f"/blobs/{sha}", headers={"Authorization": wrong})).status == 401
    stale = blob_proof("k", sha, time.time() - 3600)
    assert (await client.get(f"/blobs/{sha}", headers={"Authorization": stale})).status == 401
    # A proof for one module does not open another.
    other = node.registry.get("echo").history[0].sha256  # type: ignore[union-attr]
    proof = blob_proof("k", other, time.time())
    assert (await client.get(f"/blobs/{sha}", headers={"Authorization": proof})).status == 401
    good = blob_proof("k", sha, time.time())
    resp = await client.get(f"/blobs/{sha}", headers={"Authorization": good})
    assert resp.status == 200
    assert await resp.read() == node.storage.read_blob(sha)


def test_blob_proof_rejects_garbage() -> None:
    for header in ("", "Bearer x", "Assemblex", "Assemblex ts=x,mac=y", "Assemblex mac=00"):
        assert not check_blob_proof("k", "ab" * 32, header, time.time())
    assert check_blob_proof("k", "ab" * 32, blob_proof("k", "ab" * 32, 1000.0), 1100.0)
    assert not check_blob_proof("k", "ab" * 32, blob_proof("k", "ab" * 32, 1000.0), 2000.0)


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
            proof = blob_proof(key, sha, time.time())
            resp = await client.get(f"/blobs/{sha}", headers={"Authorization": proof})
            assert resp.status == status, key
    assert check_blob_proof("new", sha, blob_proof("old", sha, 10.0), 10.0, ("old",))
    assert not check_blob_proof("new", sha, blob_proof("old", sha, 10.0), 10.0)
