"""The HTTP API over a real Node (real wasmtime, real files in tmp_path), via aiohttp_client."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import Client, MakeClient, Wat

from assemblexd.api import create_app
from assemblexd.config import MIB, Config
from assemblexd.node import Node

TOKEN = "s3cret-token"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(
        data_dir=tmp_path / "data",
        name="test-node",
        port=4000,
        mdns=False,
        max_upload_mib=1,
        max_payload_mib=1,
        pool_size=2,
    )


@pytest.fixture
async def client(node: Node, aiohttp_client: MakeClient) -> Client:
    return await aiohttp_client(create_app(node))


@pytest.fixture
async def token_client(config: Config, aiohttp_client: MakeClient) -> AsyncIterator[Client]:
    async with Node(dataclasses.replace(config, token=TOKEN)) as node:
        yield await aiohttp_client(create_app(node))


def wasm_form(wasm: bytes, filename: str = "echo.wasm", **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("wasm", wasm, filename=filename, content_type="application/wasm")
    for key, value in fields.items():
        form.add_field(key, value)
    return form


async def deploy_echo(client: Client, wat: Wat, name: str = "echo") -> dict[str, Any]:
    resp = await client.post("/deploy", data=wasm_form(wat("echo"), filename=f"{name}.wasm"))
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def assert_error(resp: aiohttp.ClientResponse, status: int, code: str) -> str:
    """Check a JSON error answer; returns its message."""
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/json"
    body = json.loads(text)
    assert body["error"] == code, body
    assert isinstance(body["message"], str)
    assert body["message"]
    message: str = body["message"]
    return message


# -- deploy ---------------------------------------------------------------------------------------


async def test_deploy_multipart(client: Client, wat: Wat) -> None:
    wasm = wat("echo")
    body = await deploy_echo(client, wat)
    assert body == {
        "name": "echo",
        "version": 1,
        "sha256": hashlib.sha256(wasm).hexdigest(),
        "size": len(wasm),
    }
    again = await deploy_echo(client, wat)
    assert again["version"] == 2


async def test_deploy_multipart_name_and_capabilities_fields(client: Client, wat: Wat) -> None:
    # Text fields after the file, as some clients send them.
    form = wasm_form(wat("echo"), filename="whatever.wasm", name="greeter", capabilities="host, kv")
    resp = await client.post("/deploy", data=form)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["name"] == "greeter"
    shown = await (await client.get("/apps/greeter")).json()
    assert shown["capabilities"] == ["host", "kv"]


async def test_deploy_multipart_file_name_with_path(client: Client, wat: Wat) -> None:
    resp = await client.post("/deploy", data=wasm_form(wat("echo"), filename="dir/sub/hello.wasm"))
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["name"] == "hello"


async def test_deploy_raw(client: Client, wat: Wat) -> None:
    wasm = wat("echo")
    resp = await client.post(
        "/deploy",
        params={"name": "raw-echo", "capabilities": "host"},
        data=wasm,
        headers={"Content-Type": "application/wasm"},
    )
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["name"] == "raw-echo"
    assert body["sha256"] == hashlib.sha256(wasm).hexdigest()
    shown = await (await client.get("/apps/raw-echo")).json()
    assert shown["capabilities"] == ["host"]
    call = await client.post("/call/raw-echo/echo", data=b"hi")
    assert await call.read() == b"hi"


async def test_deploy_raw_chunked(client: Client, wat: Wat) -> None:
    wasm = wat("echo")

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(wasm), 100):
            yield wasm[i : i + 100]

    resp = await client.post(
        "/deploy?name=chunky", data=body(), headers={"Content-Type": "application/wasm"}
    )
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["size"] == len(wasm)


async def test_deploy_raw_needs_a_name(client: Client, wat: Wat) -> None:
    resp = await client.post(
        "/deploy", data=wat("echo"), headers={"Content-Type": "application/wasm"}
    )
    assert "name" in await assert_error(resp, 400, "bad_request")


@pytest.mark.parametrize(
    "name", ["-lead", ".hidden", "a/b", "a b", "x" * 65, "é", "../etc", "a\\b", "name!"]
)
async def test_deploy_bad_name(client: Client, wat: Wat, name: str) -> None:
    resp = await client.post("/deploy", data=wasm_form(wat("echo"), name=name))
    assert "bad app name" in await assert_error(resp, 400, "bad_request")
    assert await (await client.get("/apps")).json() == []


async def test_deploy_good_name_limits(client: Client, wat: Wat) -> None:
    for name in ("a", "A1", "x" * 64, "my_app.v2-beta"):
        resp = await client.post("/deploy", data=wasm_form(wat("echo"), name=name))
        assert resp.status == 201, (name, await resp.text())


async def test_deploy_junk_bytes(client: Client) -> None:
    resp = await client.post("/deploy", data=wasm_form(b"this is not wasm at all"))
    await assert_error(resp, 400, "invalid_module")
    assert await (await client.get("/apps")).json() == []


async def test_deploy_empty_upload(client: Client) -> None:
    resp = await client.post("/deploy", data=wasm_form(b""))
    assert "empty" in await assert_error(resp, 400, "bad_request")
    raw = await client.post(
        "/deploy?name=x", data=b"", headers={"Content-Type": "application/wasm"}
    )
    assert "empty" in await assert_error(raw, 400, "bad_request")


async def test_deploy_multipart_without_wasm_field(client: Client) -> None:
    form = aiohttp.FormData()
    form.add_field("name", "echo")
    form.add_field("other", b"x", filename="x.bin")
    resp = await client.post("/deploy", data=form)
    await assert_error(resp, 400, "bad_request")


@pytest.mark.parametrize(
    "body",
    [
        # The declared boundary never appears in the body.
        b"--other\r\nContent-Disposition: form-data; name=wasm\r\n\r\nxx\r\n--other--\r\n",
        # A part header that is not a header.
        b"--expected\r\nnot a header line\r\n\r\nxx\r\n--expected--\r\n",
        b"",
    ],
)
async def test_deploy_malformed_multipart(client: Client, body: bytes) -> None:
    resp = await client.post(
        "/deploy", data=body, headers={"Content-Type": "multipart/form-data; boundary=expected"}
    )
    assert "multipart" in await assert_error(resp, 400, "bad_request")


async def test_deploy_multipart_without_boundary(client: Client) -> None:
    resp = await client.post(
        "/deploy", data=b"junk", headers={"Content-Type": "multipart/form-data"}
    )
    assert "multipart" in await assert_error(resp, 400, "bad_request")


async def test_deploy_truncated_multipart(client: Client, wat: Wat) -> None:
    body = (
        b'--B\r\nContent-Disposition: form-data; name="wasm"; filename="echo.wasm"\r\n'
        b"Content-Type: application/wasm\r\n\r\n" + wat("echo")[:20]
    )
    resp = await client.post(
        "/deploy", data=body, headers={"Content-Type": "multipart/form-data; boundary=B"}
    )
    await assert_error(resp, 400, "bad_request")


async def test_deploy_wrong_content_type(client: Client, wat: Wat) -> None:
    resp = await client.post(
        "/deploy?name=x", data=wat("echo"), headers={"Content-Type": "text/plain"}
    )
    assert "multipart/form-data" in await assert_error(resp, 400, "bad_request")


async def test_deploy_module_without_guest_call(client: Client, wat: Wat) -> None:
    resp = await client.post("/deploy", data=wasm_form(wat("no_guest_call"), filename="nogc.wasm"))
    assert "__guest_call" in await assert_error(resp, 400, "invalid_module")
    assert await (await client.get("/apps")).json() == []


async def test_deploy_module_with_unknown_import(client: Client, wat: Wat) -> None:
    resp = await client.post("/deploy", data=wasm_form(wat("unknown_import"), filename="unk.wasm"))
    await assert_error(resp, 400, "invalid_module")
    assert await (await client.get("/apps")).json() == []


async def test_deploy_over_upload_limit_multipart(client: Client) -> None:
    resp = await client.post("/deploy", data=wasm_form(b"\0" * (MIB + 1)))
    await assert_error(resp, 413, "too_large")


async def test_deploy_over_upload_limit_raw(client: Client) -> None:
    resp = await client.post(
        "/deploy?name=big", data=b"\0" * (MIB + 1), headers={"Content-Type": "application/wasm"}
    )
    await assert_error(resp, 413, "too_large")


# -- token ----------------------------------------------------------------------------------------


async def test_token_required_for_deploy_and_delete(token_client: Client, wat: Wat) -> None:
    client = token_client
    resp = await client.post("/deploy", data=wasm_form(wat("echo")))
    await assert_error(resp, 401, "unauthorized")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = await client.post(
        "/deploy", data=wasm_form(wat("echo")), headers={"Authorization": "Bearer nope"}
    )
    await assert_error(wrong, 401, "unauthorized")
    basic = await client.post(
        "/deploy", data=wasm_form(wat("echo")), headers={"Authorization": f"Basic {TOKEN}"}
    )
    await assert_error(basic, 401, "unauthorized")
    good = await client.post(
        "/deploy", data=wasm_form(wat("echo")), headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert good.status == 201, await good.text()

    # Calls and reads stay open.
    assert (await client.post("/call/echo/echo", data=b"x")).status == 200
    assert (await client.get("/apps")).status == 200

    await assert_error(await client.delete("/apps/echo"), 401, "unauthorized")
    deleted = await client.delete("/apps/echo", headers={"Authorization": f"Bearer {TOKEN}"})
    assert deleted.status == 204


# -- call -----------------------------------------------------------------------------------------


async def test_call_ok(client: Client, wat: Wat) -> None:
    await deploy_echo(client, wat)
    resp = await client.post("/call/echo/echo", data=b"hello \x00\xff")
    assert resp.status == 200
    assert resp.content_type == "application/octet-stream"
    assert await resp.read() == b"hello \x00\xff"


async def test_call_default_op_is_main(client: Client, wat: Wat) -> None:
    await deploy_echo(client, wat)
    resp = await client.post("/call/echo", data=b"via main")
    assert await resp.read() == b"via main"


async def test_call_with_get(client: Client, wat: Wat) -> None:
    await deploy_echo(client, wat)
    resp = await client.get("/call/echo/echo")
    assert resp.status == 200
    assert await resp.read() == b""


async def test_call_unknown_app(client: Client) -> None:
    resp = await client.post("/call/nope/echo", data=b"x")
    assert "nope" in await assert_error(resp, 404, "unknown_app")


async def test_call_unknown_op_is_guest_error(client: Client, wat: Wat) -> None:
    await deploy_echo(client, wat)
    resp = await client.post("/call/echo/frobnicate", data=b"x")
    message = await assert_error(resp, 500, "guest_error")
    assert "unknown operation: frobnicate" in message


async def test_call_payload_at_limit(client: Client, wat: Wat) -> None:
    await deploy_echo(client, wat)
    payload = bytes(range(256)) * (MIB // 256)
    resp = await client.post("/call/echo/echo", data=payload)
    assert resp.status == 200
    assert await resp.read() == payload


async def test_call_payload_over_limit(client: Client, wat: Wat) -> None:
    await deploy_echo(client, wat)
    resp = await client.post("/call/echo/echo", data=b"\0" * (MIB + 1))
    await assert_error(resp, 413, "too_large")


# -- apps -----------------------------------------------------------------------------------------


async def test_apps_list_show_delete(client: Client, wat: Wat) -> None:
    assert await (await client.get("/apps")).json() == []
    await deploy_echo(client, wat, "one")
    await deploy_echo(client, wat, "two")
    listed = await (await client.get("/apps")).json()
    assert sorted(a["name"] for a in listed) == ["one", "two"]
    for rec in listed:
        assert set(rec) >= {"name", "version", "sha256", "size", "deployed_at", "origin"}
        assert rec["origin"] == "test-node"

    shown = await (await client.get("/apps/one")).json()
    assert shown["name"] == "one"
    assert shown["version"] == 1
    assert shown["sha256"] == hashlib.sha256(wat("echo")).hexdigest()

    resp = await client.delete("/apps/one")
    assert resp.status == 204
    await assert_error(await client.get("/apps/one"), 404, "unknown_app")
    await assert_error(await client.delete("/apps/one"), 404, "unknown_app")
    await assert_error(await client.post("/call/one/echo"), 404, "unknown_app")
    assert [a["name"] for a in await (await client.get("/apps")).json()] == ["two"]


# -- status, blobs, metrics, health ---------------------------------------------------------------


async def test_status_json(client: Client, wat: Wat) -> None:
    await deploy_echo(client, wat)
    resp = await client.get("/status")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    data = await resp.json()
    assert data["node"]["name"] == "test-node"
    assert {"active", "passive", "members", "apps"} <= set(data)
    assert "echo" in json.dumps(data["apps"])


async def test_status_counts_the_live_actors_of_a_lone_node(client: Client, wat: Wat) -> None:
    resp = await client.post("/deploy", data=wasm_form(wat("actor_store"), filename="st.wasm"))
    assert resp.status == 201, await resp.text()
    data = await (await client.get("/status")).json()
    assert [m["actors"] for m in data["members"]] == [0]
    for key in ("a", "b"):
        resp = await client.post(f"/actors/st/{key}/put", data=b"state")
        assert resp.status == 200, await resp.text()
    data = await (await client.get("/status")).json()
    assert [m["actors"] for m in data["members"]] == [2]


async def test_status_html_for_browsers(client: Client, wat: Wat) -> None:
    await deploy_echo(client, wat)
    browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    resp = await client.get("/status", headers={"Accept": browser_accept})
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert "<svg" in page
    assert "test-node" in page
    # Self-contained: no external scripts, styles or images.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    # The embedded JSON is the same document GET /status answers.
    embedded = re.search(
        r'<script id="status-data" type="application/json">(.*?)</script>', page, re.S
    )
    assert embedded is not None
    status_json = await (await client.get("/status")).json()
    embedded_json = json.loads(embedded.group(1))
    for key in ("node", "members", "active", "passive"):
        assert embedded_json[key] == status_json[key]
    assert [a["name"] for a in embedded_json["apps"]] == ["echo"]


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("text/html", True),
        ("application/json, text/html;q=0.5", False),
        ("text/html;q=0.9, application/json", False),
        ("text/*", True),
    ],
)
async def test_status_negotiation(client: Client, accept: str, html: bool) -> None:
    resp = await client.get("/status", headers={"Accept": accept} if accept else {})
    assert resp.status == 200
    assert resp.content_type == ("text/html" if html else "application/json")


async def test_blobs(client: Client, wat: Wat) -> None:
    body = await deploy_echo(client, wat)
    resp = await client.get(f"/blobs/{body['sha256']}")
    assert resp.status == 200
    assert await resp.read() == wat("echo")
    await assert_error(await client.get("/blobs/" + "0" * 64), 404, "not_found")
    await assert_error(await client.get("/blobs/not-a-hash"), 404, "not_found")
    await assert_error(await client.get("/blobs/..%2F..%2Fetc%2Fpasswd"), 404, "not_found")


async def test_metrics(client: Client, wat: Wat) -> None:
    await deploy_echo(client, wat)
    await client.post("/call/echo/echo", data=b"x")
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await resp.text()
    assert "# TYPE" in text


async def test_healthz(client: Client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"ok": True}


# -- errors ---------------------------------------------------------------------------------------


async def test_unknown_route_is_json_404(client: Client) -> None:
    await assert_error(await client.get("/nope"), 404, "not_found")


async def test_wrong_method_is_json_405(client: Client) -> None:
    resp = await client.put("/apps")
    await assert_error(resp, 405, "method_not_allowed")
    assert "GET" in resp.headers["Allow"]


async def test_unexpected_exception_is_json_500(
    client: Client, node: Node, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(node, "status", broken)
    resp = await client.get("/status")
    message = await assert_error(resp, 500, "internal")
    assert "kaboom" not in message  # internals stay in the log
    assert any("kaboom" in (r.exc_text or "") for r in caplog.records)


async def test_overloaded_has_retry_after(
    client: Client, node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assemblexd.errors import Overloaded

    async def overloaded(app: str, op: str, payload: bytes) -> bytes:
        raise Overloaded("too many instances")

    monkeypatch.setattr(node, "call", overloaded)
    resp = await client.post("/call/echo/echo")
    await assert_error(resp, 503, "overloaded")
    assert resp.headers["Retry-After"] == "1"
