"""Guests that attack the node: each is contained, and the node keeps serving others.

Each test keeps attack calls in flight, made again as each one fails, beside a stream of echo
calls, until echo calls have started and finished during an attack call, and prints their
latency (figures for the record, not assertions on time: the echo calls must all succeed)."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from helpers import Wat

from assemblexd.config import Config
from assemblexd.errors import AssemblexError, CallTimeout, GuestError
from assemblexd.node import Node

ATTACKERS = 2
"""Attack calls kept in flight at once."""
DURING = 3
"""Echo calls that must start and finish during an attack call."""
ATTACK_LIMIT = 20.0
"""Seconds to get them (the attacks are made again and again until then)."""


async def beside_echo(
    node: Node, attack: Callable[[], Awaitable[bytes]], label: str, *, during: bool = True
) -> BaseException:
    """Keep ``ATTACKERS`` ``attack()`` calls in flight, each made again as soon as it fails,
    beside a stream of echo calls, until ``DURING`` echo calls have started and finished while
    an attack call that was in flight when they started still was. Every echo call must
    succeed and every attack call fail alike. Returns the attack's exception.

    What is checked is that the node serves others *while* a guest attacks, not only before
    or after: an attack too short for an echo call to fit in it is simply made again.
    ``during=False`` is for an attack call that never leaves the loop thread (it ends within
    its first poll): echo calls then count between attack calls.
    """
    loop = asyncio.get_running_loop()
    in_flight: set[int] = set()
    errors: list[BaseException] = []
    inside: list[float] = []  # latencies of the echo calls made during an attack call
    echoes = 0
    stop = asyncio.Event()
    enough = asyncio.Event()

    async def attack_stream(first: int) -> None:
        ident = first
        while not stop.is_set():
            ident += ATTACKERS
            in_flight.add(ident)
            try:
                with pytest.raises(AssemblexError) as info:
                    await attack()
            finally:
                in_flight.discard(ident)
            errors.append(info.value)
            await asyncio.sleep(0)

    async def echo_stream() -> None:
        nonlocal echoes
        while not stop.is_set():
            attacking, t0 = set(in_flight), loop.time()
            assert await node.call("echo", "echo", b"ping") == b"ping"
            echoes += 1
            if attacking & in_flight or (not during and errors):
                inside.append(loop.time() - t0)
                if len(inside) >= DURING:
                    enough.set()
            await asyncio.sleep(0)

    streams = [asyncio.create_task(attack_stream(k)) for k in range(ATTACKERS)]
    streams.append(asyncio.create_task(echo_stream()))
    waiter = asyncio.create_task(enough.wait())
    try:
        done, _ = await asyncio.wait(
            [waiter, *streams], timeout=ATTACK_LIMIT, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stop.set()
        waiter.cancel()
        # A stream's failure (an echo call failed, an attack call did not) is the test's.
        for stream in streams:
            await stream
    assert waiter in done, (
        f"{label}: {len(inside)} echo calls during attack calls ({echoes} in all,"
        f" {len(errors)} attack calls) in {ATTACK_LIMIT} s"
    )
    assert {(type(e), str(e)) for e in errors} == {(type(errors[0]), str(errors[0]))}
    p50 = statistics.median(inside) * 1000
    print(
        f"{label}: {len(errors)} attack calls, {len(inside)} echo calls"
        f" {'during' if during else 'between'} them"
        f" (p50 {p50:.2f} ms, max {max(inside) * 1000:.2f} ms), {echoes} in all"
    )
    assert node.status()["apps"]  # the node is alive and answers
    return errors[0]


@pytest.fixture
async def node(tmp_path: Path, wat: Wat) -> AsyncIterator[Node]:
    config = Config(data_dir=tmp_path, call_timeout=1.0, max_memory_mib=16, max_payload_mib=4,
                    max_host_calls=2_000)  # fmt: skip
    async with Node(config) as n:
        await n.deploy("echo", wat("echo"))
        yield n


async def test_memory_bomb(node: Node, wat: Wat) -> None:
    await node.deploy("bomb", wat("memhog"))
    # --max-memory is the store's own limit, so the guest's growing fails, and it traps, well
    # within its first poll on the loop thread: echo calls run between attack calls.
    exc = await beside_echo(
        node, lambda: node.call("bomb", "main", b""), "memory bomb", during=False
    )
    assert isinstance(exc, GuestError)
    assert node.status()["instances"]["live"] == 1  # only echo's


async def test_deep_recursion(node: Node, wat: Wat) -> None:
    await node.deploy("deep", wat("stack_overflow"))
    # The stack runs out within the first poll, on the loop thread: echo calls run between.
    exc = await beside_echo(
        node, lambda: node.call("deep", "main", b""), "deep recursion", during=False
    )
    assert isinstance(exc, GuestError)
    assert "call stack exhausted" in str(exc)


async def test_infinite_loop_in_start(node: Node, wat: Wat) -> None:
    await node.deploy("stuck", wat("start_loop"))
    exc = await beside_echo(node, lambda: node.call("stuck", "main", b""), "loop in _start")
    assert isinstance(exc, CallTimeout)
    assert node.status()["instances"]["live"] == 1


async def test_huge_response(node: Node, wat: Wat) -> None:
    await node.deploy("huge", wat("response_flood"))
    # The guest grows its memory and hands its response over within its first poll, on the
    # loop thread (the response is read whole before its size is checked): no echo call can
    # run during one, only between them.
    exc = await beside_echo(
        node, lambda: node.call("huge", "main", b""), "huge response", during=False
    )
    assert isinstance(exc, GuestError)
    assert "over the 4 MiB limit" in str(exc)


async def test_flood_of_host_calls(node: Node, wat: Wat) -> None:
    await node.deploy("flood", wat("hostcall_flood"))
    exc = await beside_echo(node, lambda: node.call("flood", "main", b""), "host call flood")
    assert isinstance(exc, GuestError)
    assert "more than 2000 host calls" in str(exc)


async def test_call_chain_that_loops(node: Node, wat: Wat) -> None:
    await node.deploy("recursion", wat("recursion"))
    # The 32 nested calls are each a host call that never waits (the callee's first poll
    # answers it), and together stay within a guest's loop-thread slice (docs/runtime.md):
    # the chain usually ends before the loop runs anything else, so echo calls count between.
    exc = await beside_echo(
        node, lambda: node.call("recursion", "main", b"x" * 1000), "call loop", during=False
    )
    assert isinstance(exc, GuestError)
    assert "depth limit" in str(exc)
    assert node.supervisors.loaded["recursion"].pool.busy == 0
