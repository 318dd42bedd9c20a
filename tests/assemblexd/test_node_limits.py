"""What one app can take from a node is bounded: live instances (idle ones give way), metrics
series, console log lines, and ``kv`` bytes and keys. Real wasmtime, real WAT guests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from assemblexd.config import Config
from assemblexd.errors import Overloaded
from assemblexd.node import Node

Wat = Callable[[str], bytes]


@pytest.fixture
async def make_node(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Node]]]:
    """``await make_node(**config)``: a node on ``tmp_path`` entered for the test."""
    nodes: list[Node] = []

    async def make(**kwargs: object) -> Node:
        node = Node(Config(data_dir=tmp_path, gc_interval=0, **kwargs))  # type: ignore[arg-type]
        await node.__aenter__()
        nodes.append(node)
        return node

    yield make  # type: ignore[misc]
    for node in reversed(nodes):
        await node.__aexit__(None, None, None)


def sample(node: Node, name: str, **labels: str) -> float | None:
    """The value of one series of the node's metrics, or None if it is not there."""
    value = node.metrics.registry.get_sample_value(name, labels)
    return None if value is None else float(value)


async def poll_until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Wait until ``predicate()`` holds, checked every 5 ms: the node has no event for
    instances being created or freed."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


# -- the instance cap ----------------------------------------------------------------------


async def test_idle_instances_of_other_apps_give_way_at_the_cap(
    make_node: Callable[..., Awaitable[Node]], wat: Wat
) -> None:
    node = await make_node(max_instances=3)
    for name in ("a", "b", "c", "d"):
        await node.deploy(name, wat("echo"))
    for name in ("a", "b", "c"):  # one call each leaves one idle instance each: the cap
        assert await node.call(name, "echo", b"x") == b"x"
    assert node.status()["instances"]["live"] == 3
    await node.call("a", "echo", b"x")  # "a" is now the most recently used

    assert await node.call("d", "echo", b"x") == b"x"  # was 503 while the others idled

    pools = {app["name"]: app["pool"]["idle"] for app in node.status()["apps"]}
    assert pools == {"a": 1, "b": 0, "c": 1, "d": 1}  # b, the least recently used, went
    assert node.status()["instances"]["live"] == 3
    assert sample(node, "assemblex_instances_freed_total", reason="evicted") == 1


async def test_the_cap_still_refuses_when_every_instance_is_busy(
    make_node: Callable[..., Awaitable[Node]], wat: Wat
) -> None:
    node = await make_node(max_instances=2)
    await node.deploy("sleepy", wat("host_sleep"))
    await node.deploy("echo", wat("echo"))
    busy = [asyncio.ensure_future(node.call("sleepy", "main", b"300")) for _ in range(2)]
    await poll_until(lambda: node.status()["instances"]["live"] == 2)  # both created, busy
    with pytest.raises(Overloaded, match="all busy"):
        await node.call("echo", "echo", b"x")
    assert await asyncio.gather(*busy) == [b"300", b"300"]
    assert await node.call("echo", "echo", b"x") == b"x"  # their instances now idle: evicted


async def test_idle_instances_expire(make_node: Callable[..., Awaitable[Node]], wat: Wat) -> None:
    node = await make_node(idle_timeout=0.1)
    await node.deploy("sleepy", wat("host_sleep"))
    await asyncio.gather(*(node.call("sleepy", "main", b"1") for _ in range(3)))
    assert node.status()["instances"]["live"] == 3
    await poll_until(lambda: node.status()["instances"]["live"] == 0)  # expirer: every 0.05 s
    assert sample(node, "assemblex_instances_freed_total", reason="expired") == 3
    assert await node.call("sleepy", "main", b"0") == b"0"  # a new one is made on demand


async def test_expiry_frees_only_instances_idle_long_enough(
    make_node: Callable[..., Awaitable[Node]], wat: Wat
) -> None:
    node = await make_node(idle_timeout=0)  # no expirer task: expire() is driven by hand
    await node.deploy("a", wat("echo"))
    await node.deploy("b", wat("echo"))
    await node.call("a", "echo", b"x")
    released_a = time.monotonic()
    await node.call("b", "echo", b"x")
    cap = node._cap
    assert cap.expire(60, now=released_a + 30) == 0
    assert cap.expire(60, now=released_a + 60) == 1  # a's, released before released_a
    idle = {app["name"]: app["pool"]["idle"] for app in node.status()["apps"]}
    assert idle == {"a": 0, "b": 1}
    assert cap.expire(60, now=time.monotonic() + 60) == 1
    assert cap.live == 0
    assert cap.idle == 0
    assert await node.call("a", "echo", b"x") == b"x"
