"""A guest built with the waPC authors' own AssemblyScript SDK runs on a real node unchanged.

The guest is `guests/assemblyscript/wapc-official/index.ts`, written against `@wapc/as-guest`
0.3.1 and compiled with the AssemblyScript 0.20.13 that SDK names, by `scripts/build-guests`
(a missing module fails the test). Two builds of the same source:

* `assemblyscript-wapc-official.wasm`: the SDK's documented build (`--use abort=index/abort`),
  so the module imports only `wapc`. Its `abort` sets `__guest_error` and returns, and the
  compiler traps right after it.
* `assemblyscript-wapc-official-envabort.wasm`: asc's default, which imports `env.abort`.

Everything goes through the node's HTTP API (deploy, call, the JSON error with its status), on
one node with the session's real Redis.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import pytest_asyncio
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from helpers import REPO_ROOT

from assemblexd.api import create_app
from assemblexd.config import Config
from assemblexd.node import Node
from assemblexd.runtime.hostfuncs import NAMESPACE_HANDLERS

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.redis]

BUILD_DIR = REPO_ROOT / "guests" / "build"
OFFICIAL = "assemblyscript-wapc-official"
OFFICIAL_ENV_ABORT = "assemblyscript-wapc-official-envabort"
ASSERT_TEXT = "the payload must be 42 bytes long"
REDIS_PREFIX = "wapc-official:"

Client = TestClient[web.Request, web.Application]


def official_wasm(build: str) -> bytes:
    """A built module, or a test failure that says how to build it."""
    path = BUILD_DIR / f"{build}.wasm"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pytest.fail(
            f"{path.relative_to(REPO_ROOT)} is missing: run scripts/build-guests assemblyscript",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def redis_client(redis_server: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server)
    yield client
    for key in client.scan_iter(f"{REDIS_PREFIX}*"):
        client.delete(key)
    client.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(
    tmp_path_factory: pytest.TempPathFactory, redis_server: str
) -> AsyncIterator[Client]:
    data_dir: Path = tmp_path_factory.mktemp("node")
    config = Config(data_dir=data_dir, redis_urls=(("", redis_server),), call_timeout=5.0)
    async with Node(config) as node, TestClient(TestServer(create_app(node))) as c:
        yield c


async def deploy(client: Client, build: str, name: str, capabilities: str | None = None) -> Any:
    """Deploys a build as `name` over HTTP; returns the response (status not checked)."""
    params = {"name": name} | ({} if capabilities is None else {"capabilities": capabilities})
    return await client.post(
        "/deploy",
        data=official_wasm(build),
        params=params,
        headers={"Content-Type": "application/wasm"},
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(client: Client) -> str:
    """The SDK's documented build, deployed with every namespace."""
    resp = await deploy(client, OFFICIAL, "official")
    assert resp.status == 201, await resp.text()
    return "official"


async def call(client: Client, app: str, op: str, payload: bytes = b"") -> bytes:
    """A call that must succeed; returns the response body."""
    resp = await client.post(f"/call/{app}/{op}", data=payload)
    body = await resp.read()
    assert resp.status == 200, body[:500]
    return body


async def call_error(client: Client, app: str, op: str, payload: bytes = b"") -> str:
    """A call that must fail as a guest error (500); returns the error's message."""
    resp = await client.post(f"/call/{app}/{op}", data=payload)
    body = await resp.json()
    assert resp.status == 500, body
    assert body["error"] == "guest_error", body
    message: str = body["message"]
    return message


def host_call(binding: str, namespace: str, operation: str, payload: bytes = b"") -> bytes:
    """The payload of the guest's `host` operation: one host call, passed through."""
    return f"{binding}\n{namespace}\n{operation}\n".encode() + payload


# -- handlers, payloads, log ------------------------------------------------------------------


async def test_handlers(client: Client, app: str) -> None:
    assert await call(client, app, "main", b"Ada") == b"Hello, Ada!"
    assert await call(client, app, "main") == b"Hello, World!"
    assert await call(client, app, "main", "Zoë 🦀".encode()) == "Hello, Zoë 🦀!".encode()
    # Bytes in, bytes out: a payload that is not UTF-8 comes back as it was sent.
    assert await call(client, app, "main", b"\xff\x00x") == b"Hello, \xff\x00x!"
    assert await call(client, app, "echo", bytes(range(256))) == bytes(range(256))
    assert await call(client, app, "echo") == b""


async def test_a_200_kb_payload_in_and_out(client: Client, app: str) -> None:
    big = bytes(range(256)) * 800  # 204,800 bytes
    assert await call(client, app, "echo", big) == big
    assert await call(client, app, "main", big) == b"Hello, " + big + b"!"
    # Through a host call and back: the payload crosses the guest's memory four times.
    assert await call(client, app, "host", host_call("", "host", "echo", big)) == big


async def test_console_log_reaches_the_guest_logger_tagged_with_the_app(
    client: Client, app: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="assemblexd.guest")
    line = "a line from the official SDK: héllo"
    assert await call(client, app, "log", line.encode()) == b"logged"
    records = [r for r in caplog.records if r.name == "assemblexd.guest"]
    assert [r.getMessage() for r in records] == [f"[{app} v1] {line}"]
    assert records[0].levelno == logging.INFO
    assert records[0].app == app  # type: ignore[attr-defined]


# -- host calls to every namespace -------------------------------------------------------------


async def _host(client: Client, app: str, redis_client: redis.Redis) -> None:
    assert await call(client, app, "host", host_call("", "host", "echo", b"\x00echo\xff")) == (
        b"\x00echo\xff"
    )
    assert await call(client, app, "host", host_call("", "host", "sleep", b"1")) == b"1"


async def _kv(client: Client, app: str, redis_client: redis.Redis) -> None:
    assert await call(client, app, "host", host_call("k1", "kv", "set", b"v\x00alue")) == b""
    assert await call(client, app, "host", host_call("k1", "kv", "get")) == b"v\x00alue"
    assert await call(client, app, "host", host_call("hits", "kv", "incr")) == b"1"
    assert await call(client, app, "host", host_call("hits", "kv", "incr", b"41")) == b"42"
    assert await call(client, app, "host", host_call("k1", "kv", "del")) == b""
    assert (
        await call_error(client, app, "host", host_call("k1", "kv", "get"))
        == "kv: no value for key 'k1'"
    )


async def _redis(client: Client, app: str, redis_client: redis.Redis) -> None:
    key = f"{REDIS_PREFIX}greeting"
    set_args = msgpack.packb([key.encode(), b"hello \xff"])
    assert await call(client, app, "host", host_call("", "redis", "SET", set_args)) == b"OK"
    assert redis_client.get(key) == b"hello \xff"
    assert (
        await call(client, app, "host", host_call("", "redis", "GET", key.encode()))
        == b"hello \xff"
    )
    counter = f"{REDIS_PREFIX}counter".encode()
    assert await call(client, app, "host", host_call("", "redis", "INCR", counter)) == b"1"
    assert redis_client.get(counter) == b"1"


async def _call(client: Client, app: str, redis_client: redis.Redis) -> None:
    resp = await deploy(client, OFFICIAL, "official-callee")
    assert resp.status in (200, 201), await resp.text()
    assert (
        await call(client, app, "host", host_call("official-callee", "call", "main", b"Bob"))
        == b"Hello, Bob!"
    )
    # An empty operation is the callee's main; the app may also call itself.
    assert await call(client, app, "host", host_call(app, "call", "", b"me")) == b"Hello, me!"


async def _actor(client: Client, app: str, redis_client: redis.Redis) -> None:
    async def actor(payload: bytes) -> bytes:
        resp = await client.post(f"/actors/{app}/user:7/host", data=payload)
        body = await resp.read()
        assert resp.status == 200, body[:500]
        return body

    assert await actor(host_call("", "actor", "key")) == b"user:7"
    assert await actor(host_call("", "actor", "load")) == b""
    assert await actor(host_call("", "actor", "store", b"st\x00ate")) == b""
    assert await actor(host_call("", "actor", "load")) == b"st\x00ate"
    assert await actor(host_call("", "actor", "alarm", b"60000")) == b""
    assert await actor(host_call("", "actor", "cancel")) == b""
    assert (
        await call_error(client, app, "host", host_call("", "actor", "load"))
        == "actor.load: not in an actor call (call the app at /actors/{app}/{key}/{op})"
    )


NAMESPACE_CHECKS = {
    "host": _host,
    "kv": _kv,
    "redis": _redis,
    "call": _call,
    "actor": _actor,
}


async def test_every_namespace_of_the_host_is_checked() -> None:
    # async only because the module's asyncio mark applies to every test here
    assert set(NAMESPACE_CHECKS) == set(NAMESPACE_HANDLERS)


@pytest.mark.parametrize("namespace", sorted(NAMESPACE_CHECKS))
async def test_host_calls_to_every_namespace(
    client: Client, app: str, redis_client: redis.Redis, namespace: str
) -> None:
    await NAMESPACE_CHECKS[namespace](client, app, redis_client)


# -- errors ------------------------------------------------------------------------------------


async def test_a_host_error_is_passed_on_as_the_calls_error(
    client: Client, app: str, redis_client: redis.Redis
) -> None:
    # The SDK's hostCall gives a Result holding a HostError; the handler returns it as it is.
    assert (
        await call_error(client, app, "host", host_call("missing", "kv", "get"))
        == "kv: no value for key 'missing'"
    )
    assert (
        await call_error(client, app, "host", host_call("", "nope", "x"))
        == "unknown namespace: nope"
    )
    not_a_number = f"{REDIS_PREFIX}not-a-number"
    redis_client.set(not_a_number, "x")
    assert await call_error(
        client, app, "host", host_call("", "redis", "INCR", not_a_number.encode())
    ) == ("redis: value is not an integer or out of range")
    assert (
        await call_error(client, app, "host", host_call("no-such-app", "call", "main"))
        == "call no-such-app/main: no app named 'no-such-app' is deployed"
    )
    assert (
        await call_error(client, app, "host", host_call(app, "call", "fail", b"deep"))
        == f"call {app}/fail: deep"
    )
    # The instance goes on serving after the errors.
    assert await call(client, app, "main", b"again") == b"Hello, again!"


async def test_a_capability_not_granted_is_passed_on(client: Client) -> None:
    resp = await deploy(client, OFFICIAL, "official-kv-only", capabilities="kv")
    assert resp.status == 201, await resp.text()
    assert (
        await call_error(client, "official-kv-only", "host", host_call("", "redis", "PING"))
        == "capability not granted: redis"
    )
    assert await call(client, "official-kv-only", "host", host_call("x", "kv", "incr")) == b"1"


async def test_handler_errors_and_an_unknown_operation(client: Client, app: str) -> None:
    assert await call_error(client, app, "fail", "it broke: é".encode()) == "it broke: é"
    assert await call_error(client, app, "host", b"no newline") == (
        "host expects binding\\nnamespace\\noperation\\npayload"
    )
    # The official SDK's own text for an operation without a handler (Assemblex's SDKs say
    # "unknown operation: nope").
    assert await call_error(client, app, "nope") == 'Could not find function "nope"'


async def test_a_failed_assertion_is_a_500_with_its_text(client: Client, app: str) -> None:
    """The SDK's abort sets __guest_error and returns; the compiler then traps.

    Needs the host to keep the guest's error text when a trap follows it.
    """
    message = await call_error(client, app, "assert", b"short")
    assert ASSERT_TEXT in message
    assert "index.ts" in message
    # The trapped instance is dropped; the next call gets a fresh one.
    assert await call(client, app, "assert", b"x" * 42) == b"x" * 42


async def test_asc_default_build_with_env_abort_deploys_and_reports_a_failed_assertion(
    client: Client,
) -> None:
    """Built without `--use abort=`, the module imports env.abort.

    Needs the host to provide env.abort (its message, file and line become the error).
    """
    resp = await deploy(client, OFFICIAL_ENV_ABORT, "official-env-abort")
    assert resp.status == 201, await resp.text()
    app = "official-env-abort"
    message = await call_error(client, app, "assert", b"short")
    assert ASSERT_TEXT in message
    assert "index.ts" in message
    assert await call(client, app, "main", b"Ada") == b"Hello, Ada!"
