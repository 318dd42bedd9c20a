"""Redis commands beyond the client's pool wait for a connection instead of failing (real
redis-server, real guests). The pool is made small here (``REDIS_CONNECTIONS``) so that a
few dozen calls are more than it holds; the daemon's is 256."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgpack
import pytest
from helpers import Wat

from assemblexd.config import Config
from assemblexd.node import Node
from assemblexd.runtime import hostfuncs

POOL = 4
CALLS = 40


def hostcall(binding: str, namespace: str, operation: str, body: bytes = b"") -> bytes:
    """The payload of guests/wat/hostcall.wat: which host call to make."""
    return b"\0".join([binding.encode(), namespace.encode(), operation.encode(), body])


@pytest.mark.redis
async def test_commands_beyond_the_pool_wait_for_a_connection(
    tmp_path: Path, wat: Wat, redis_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hostfuncs, "REDIS_CONNECTIONS", POOL)
    config = Config(data_dir=tmp_path, redis_urls=(("", redis_server),), pool_size=CALLS)
    async with Node(config) as node:
        await node.deploy("hc", wat("hostcall"))
        set_args = msgpack.packb([b"pooled", b"v"])
        assert await node.call("hc", "main", hostcall("", "redis", "SET", set_args)) == b"OK"
        # Every call is in flight at once: ten times as many commands as connections.
        answers = await asyncio.gather(
            *(
                node.call("hc", "main", hostcall("", "redis", "GET", b"pooled"))
                for _ in range(CALLS)
            )
        )
        assert answers == [b"v"] * CALLS
        assert node._host is not None
        client = node._host._redis[""]  # the small pool was the one used
        assert client.connection_pool.max_connections == POOL
