"""Guests that attack the node: each is contained, and the node keeps serving others.

Each test runs the attack beside a stream of echo calls and prints their latency (figures for
the record, not assertions on time: the echo calls must all succeed, and finish while the
attack is still running where the attack lasts)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from assemblexd.config import Config
from assemblexd.errors import AssemblexError, CallTimeout, GuestError
from assemblexd.node import Node

Wat = Callable[[str], bytes]


async def beside_echo(node: Node, attack: Awaitable[bytes], label: str) -> BaseException:
    """Run ``attack`` while calling echo; return the attack's exception."""
    task = asyncio.ensure_future(attack)
    latencies = []
    while not task.done() and len(latencies) < 200:
        t0 = time.perf_counter()
        assert await node.call("echo", "echo", b"ping") == b"ping"
        latencies.append(time.perf_counter() - t0)
        await asyncio.sleep(0.001)
    with pytest.raises(AssemblexError) as info:
        await task
    if latencies:
        p50 = statistics.median(latencies) * 1000
        worst = max(latencies) * 1000
        print(
            f"{label}: {len(latencies)} echo calls beside it, p50 {p50:.2f} ms, max {worst:.2f} ms"
        )
    assert node.status()["apps"]  # the node is alive and answers
    return info.value


@pytest.fixture
async def node(tmp_path: Path, wat: Wat) -> Node:
    config = Config(data_dir=tmp_path, call_timeout=1.0, max_memory_mib=16, max_payload_mib=4,
                    max_host_calls=2_000)  # fmt: skip
    async with Node(config) as n:
        await n.deploy("echo", wat("echo"))
        yield n  # type: ignore[misc]


async def test_memory_bomb(node: Node, wat: Wat) -> None:
    await node.deploy("bomb", wat("memhog"))
    exc = await beside_echo(node, node.call("bomb", "main", b""), "memory bomb")
    assert isinstance(exc, GuestError)
    assert node.status()["instances"]["live"] == 1  # only echo's


async def test_deep_recursion(node: Node, wat: Wat) -> None:
    await node.deploy("deep", wat("stack_overflow"))
    exc = await beside_echo(node, node.call("deep", "main", b""), "deep recursion")
    assert isinstance(exc, GuestError)
    assert "call stack exhausted" in str(exc)


async def test_infinite_loop_in_start(node: Node, wat: Wat) -> None:
    await node.deploy("stuck", wat("start_loop"))
    exc = await beside_echo(node, node.call("stuck", "main", b""), "loop in _start")
    assert isinstance(exc, CallTimeout)
    assert node.status()["instances"]["live"] == 1


async def test_huge_response(node: Node, wat: Wat) -> None:
    await node.deploy("huge", wat("response_flood"))
    exc = await beside_echo(node, node.call("huge", "main", b""), "huge response")
    assert isinstance(exc, GuestError)
    assert "over the 4 MiB limit" in str(exc)


async def test_flood_of_host_calls(node: Node, wat: Wat) -> None:
    await node.deploy("flood", wat("hostcall_flood"))
    exc = await beside_echo(node, node.call("flood", "main", b""), "host call flood")
    assert isinstance(exc, GuestError)
    assert "more than 2000 host calls" in str(exc)


async def test_call_chain_that_loops(node: Node, wat: Wat) -> None:
    await node.deploy("recursion", wat("recursion"))
    exc = await beside_echo(node, node.call("recursion", "main", b"x" * 1000), "call loop")
    assert isinstance(exc, GuestError)
    assert "depth limit" in str(exc)
    assert node.supervisors.loaded["recursion"].pool.busy == 0
