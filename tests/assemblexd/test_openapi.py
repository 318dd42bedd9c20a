"""The running API and /openapi.json describe the same operations, and answers fit the spec."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import Client, MakeClient, Wat

from assemblexd.api import create_app
from assemblexd.config import Config
from assemblexd.node import Node

RAW = {"Content-Type": "application/wasm"}


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: MakeClient) -> AsyncIterator[Client]:
    async with Node(Config(data_dir=tmp_path, mdns=False)) as node:
        yield await aiohttp_client(create_app(node))


def routes(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD" and path:
            out.add((route.method.lower(), path))
    return out


async def test_spec_names_every_route_and_nothing_else(client: Client) -> None:
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    spec = await resp.json()
    documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert documented == routes(client.app)


def check(schema: dict[str, Any], value: Any, spec: dict[str, Any]) -> None:
    """A small JSON-schema check for the subset the spec uses."""
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    kind = schema.get("type")
    types = {
        "object": dict, "array": list, "string": str, "integer": int, "number": (int, float),
        "boolean": bool,
    }  # fmt: skip
    if kind:
        assert isinstance(value, types[kind]), (schema, value)
    for key in schema.get("required", []):
        assert key in value, (key, value)
    for key, sub in schema.get("properties", {}).items():
        if key in value:
            check(sub, value[key], spec)
    if kind == "array":
        for item in value:
            check(schema.get("items", {}), item, spec)


async def test_answers_match_the_spec(client: Client, wat: Wat) -> None:
    spec = await (await client.get("/openapi.json")).json()
    form = aiohttp.FormData()
    form.add_field("wasm", wat("echo"), filename="echo.wasm")
    calls = [
        ("post", "/deploy", "/deploy", {"data": form}),
        ("post", "/deploy", "/deploy", {"data": b"junk", "headers": RAW}),
        ("get", "/apps", "/apps", {}),
        ("get", "/apps/{app}", "/apps/echo", {}),
        ("get", "/apps/{app}", "/apps/ghost", {}),
        ("post", "/call/{app}/{op}", "/call/echo/echo", {"data": b"x"}),
        ("post", "/call/{app}/{op}", "/call/echo/nope", {}),
        ("get", "/call/{app}", "/call/ghost", {}),
        ("post", "/apps/{app}/rollback", "/apps/echo/rollback", {}),
        ("get", "/status", "/status", {}),
        ("get", "/blobs/{sha256}", "/blobs/" + "0" * 64, {}),
        ("get", "/healthz", "/healthz", {}),
        ("get", "/metrics", "/metrics", {}),
        ("get", "/peer", "/peer", {}),
        ("delete", "/apps/{app}", "/apps/echo", {}),
    ]  # fmt: skip
    for method, template, url, kwargs in calls:
        resp = await getattr(client, method)(url, **kwargs)
        responses = spec["paths"][template][method]["responses"]
        assert str(resp.status) in responses, (method, url, resp.status)
        documented = responses[str(resp.status)]
        if re.match(r"application/json", resp.headers.get("Content-Type", "")):
            schema = documented["content"]["application/json"]["schema"]
            check(schema, await resp.json(), spec)
