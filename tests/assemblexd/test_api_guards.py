"""The HTTP API's guards: the read token, the anonymous /status, binary modules only, limits
stated in bytes, and the body timeout (real Node, real wasmtime, aiohttp's test server)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import WAT_DIR, Client, MakeClient, Wat

from assemblexd.api import NODE, create_app
from assemblexd.config import Config
from assemblexd.node import Node
from assemblexd.peers import NoPeers

READ = "read-s3cret"
DEPLOY = "deploy-s3cret"
PEER_ID = "feedfacecafebeef"
PEER_ADDRESS = "ws://10.9.8.7:4123/peer"
PEER_URL = "http://10.9.8.7:4123"


class FakeCluster(NoPeers):
    """The views of a node with one peer, as the cluster layer reports them (``node`` is set
    once the node is made, as ``Cluster.running(node)`` gives it the real one)."""

    def __init__(self) -> None:
        self.node: Node | None = None

    def views(self) -> tuple[list[Any], list[Any], list[dict[str, Any]]]:
        assert self.node is not None
        me = {"id": self.node.id, "name": self.node.name, "url": self.node.url}
        peer = {"id": PEER_ID, "name": "peer", "url": PEER_URL}
        return (
            [{"id": PEER_ID, "address": PEER_ADDRESS}],
            [{"id": "0123456789abcdef", "address": "ws://10.9.8.6:4000/peer"}],
            [
                {**me, "active": [PEER_ID], "apps": {}, "alive": True},
                {**peer, "active": [self.node.id], "apps": {}, "alive": True},
            ],
        )


def config(tmp_path: Path, **changes: Any) -> Config:
    base = Config(data_dir=tmp_path / "data", name="guarded", mdns=False, pool_size=1)
    return dataclasses.replace(base, **changes)


@pytest.fixture
async def make(
    tmp_path: Path, aiohttp_client: MakeClient
) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """``await make(**config_changes)``: a client of a node with one (fake) peer."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**changes: Any) -> Client:
            peers = FakeCluster()
            node = await stack.enter_async_context(Node(config(tmp_path, **changes), peers=peers))
            peers.node = node
            return await aiohttp_client(create_app(node))

        yield start


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(password: str) -> dict[str, str]:
    raw = base64.b64encode(f"operator:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


# -- reads --------------------------------------------------------------------------------------

GUARDED = ["/status", "/apps", "/apps/none", "/metrics"]


async def test_read_token_guards_reads(make: Callable[..., Awaitable[Client]]) -> None:
    client = await make(read_token=READ, token=DEPLOY)
    for path in GUARDED:
        resp = await client.get(path)
        assert resp.status == 401, path
        assert (await resp.json())["error"] == "unauthorized"
        # A browser asks its user for the token (HTTP Basic), a script sees Bearer.
        challenge = resp.headers["WWW-Authenticate"]
        assert "Bearer" in challenge
        assert "Basic" in challenge
        assert (await client.get(path, headers=bearer("wrong"))).status == 401, path
        for headers in (bearer(READ), bearer(DEPLOY), basic(READ)):
            assert (await client.get(path, headers=headers)).status in (200, 404), path
    page = await client.get("/status", headers={"Accept": "text/html"})
    assert page.status == 401
    assert page.headers["WWW-Authenticate"].startswith("Basic ")  # the browser prompts
    for path in ("/healthz", "/openapi.json"):  # liveness and the API description stay open
        assert (await client.get(path)).status == 200


async def test_each_token_opens_its_own_door_only(
    make: Callable[..., Awaitable[Client]], wat: Callable[[str], bytes]
) -> None:
    """The call token reads nothing and the read token deploys and calls nothing; the deploy
    token reads (an operator's), but does not call."""
    call = "call-s3cret"
    client = await make(read_token=READ, token=DEPLOY, call_token=call)
    for path in GUARDED:
        assert (await client.get(path, headers=bearer(call))).status == 401, path
    module = wat("echo")
    for token in (READ, call):
        resp = await client.post(
            "/deploy?name=x",
            data=module,
            headers={**bearer(token), "Content-Type": "application/wasm"},
        )
        assert resp.status == 401, token
    for token in (READ, DEPLOY):
        assert (await client.post("/call/x/main", data=b"", headers=bearer(token))).status == 401
    resp = await client.post(
        "/deploy?name=x",
        data=module,
        headers={**bearer(DEPLOY), "Content-Type": "application/wasm"},
    )
    assert resp.status == 201
    resp = await client.post("/call/x/echo", data=b"hi", headers=bearer(call))
    assert (resp.status, await resp.read()) == (200, b"hi")


async def test_anonymous_status_names_no_peer(make: Callable[..., Awaitable[Client]]) -> None:
    client = await make(token=DEPLOY)  # no read token: reads are open, to the anonymous view
    node_id = client.app[NODE].id
    for accept in ("application/json", "text/html"):
        text = await (await client.get("/status", headers={"Accept": accept})).text()
        for secret in (PEER_ID, PEER_ADDRESS, PEER_URL, "10.9.8", node_id, "0123456789abcdef"):
            assert secret not in text, (accept, secret)
    data = await (await client.get("/status")).json()
    # The graph still links up: the peer's alias in this node's view is its member's id.
    (peer,) = [m for m in data["members"] if m["name"] == "peer"]
    assert data["active"] == [{"id": peer["id"]}]
    (me,) = [m for m in data["members"] if m["name"] == "guarded"]
    assert peer["active"] == [me["id"]]
    assert me["active"] == [peer["id"]]
    assert data["node"]["id"] == me["id"]
    assert all("url" not in m for m in data["members"])

    # The operator with a token sees everything.
    full = await (await client.get("/status", headers=bearer(DEPLOY))).json()
    assert full["active"] == [{"id": PEER_ID, "address": PEER_ADDRESS}]
    assert {m["url"] for m in full["members"]} >= {PEER_URL}
    page = await (
        await client.get("/status", headers={"Accept": "text/html", **basic(DEPLOY)})
    ).text()
    assert PEER_URL in page


# -- deploy ---------------------------------------------------------------------------------------


async def test_deploy_refuses_webassembly_text(
    make: Callable[..., Awaitable[Client]], wat: Wat
) -> None:
    client = await make()
    text = (WAT_DIR / "echo.wat").read_bytes()
    raw = await client.post(
        "/deploy?name=t", data=text, headers={"Content-Type": "application/wasm"}
    )
    assert raw.status == 400
    body = await raw.json()
    assert body["error"] == "invalid_module"
    assert "binary" in body["message"]
    assert "\\0asm" in body["message"]
    form = aiohttp.FormData()
    form.add_field("wasm", text, filename="echo.wat", content_type="application/wasm")
    assert (await client.post("/deploy?name=t", data=form)).status == 400
    assert await (await client.get("/apps")).json() == []
    # The same module compiled to binary deploys.
    ok = await client.post(
        "/deploy?name=t", data=wat("echo"), headers={"Content-Type": "application/wasm"}
    )
    assert ok.status == 201, await ok.text()


async def test_small_limits_are_stated_in_bytes(
    make: Callable[..., Awaitable[Client]], wat: Wat
) -> None:
    client = await make()
    form = aiohttp.FormData()
    form.add_field("wasm", wat("echo"), filename="echo.wasm", content_type="application/wasm")
    form.add_field("name", "n" * 5000)
    resp = await client.post("/deploy", data=form)
    assert resp.status == 413
    message = (await resp.json())["message"]
    assert "4,096 bytes" in message
    assert "0 MiB" not in message


async def test_body_timeout(make: Callable[..., Awaitable[Client]]) -> None:
    """A body that stops coming gets 408 after --body-timeout, with ``Connection: close``
    (aiohttp then lingers a few seconds reading what still comes, and closes)."""
    client = await make(body_timeout=0.5)
    assert client.port is not None
    port = client.port

    def trickle() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /call/x/main HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nab")
            data = b""
            while b"}" not in data:  # the whole JSON answer
                chunk = sock.recv(4096)
                assert chunk, data
                data += chunk
            return data

    data = await asyncio.wait_for(asyncio.to_thread(trickle), 15)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), data
    assert b"Connection: close" in head
    answer = json.loads(body)
    assert answer["error"] == "request_timeout"
    assert re.search(r"within 0\.5 s", answer["message"])
