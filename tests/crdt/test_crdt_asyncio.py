"""`SyncNode`, the asyncio adapter of anti-entropy: replicas kept in step over a send function,
with writes made on other threads, malformed messages refused, and peers coming and going."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable

import pytest

import crdt
from crdt import Replica, SyncConfig, SyncNode

FAST = SyncConfig(interval=0.05)


class Wire:
    """Nodes that deliver to each other through a queue per node, as a transport would."""

    def __init__(self) -> None:
        self.nodes: dict[str, SyncNode] = {}
        self.inbox: dict[str, asyncio.Queue[tuple[str, bytes]]] = {}
        self.cut: set[str] = set()
        self.refused: list[crdt.RemoteError] = []

    def sender(self, me: str) -> Callable[[str, bytes], None]:
        def send(peer: str, data: bytes) -> None:
            if me not in self.cut and peer not in self.cut:
                self.inbox[peer].put_nowait((me, data))

        return send

    async def pump(self, name: str) -> None:
        inbox = self.inbox[name]
        while True:
            src, data = await inbox.get()
            try:
                await self.nodes[name].receive(src, data)
            except crdt.RemoteError as exc:
                self.refused.append(exc)


async def until(replica: Replica, condition: Callable[[], bool]) -> None:
    """Wait, woken by the replica's changes, until ``condition()`` holds (5 s at most)."""
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    unsubscribe = replica.subscribe(lambda _key: loop.call_soon_threadsafe(changed.set))
    try:
        async with asyncio.timeout(5):
            while not condition():
                changed.clear()
                await changed.wait()
    finally:
        unsubscribe()


@contextlib.asynccontextmanager
async def nodes(*names: str) -> AsyncIterator[tuple[Wire, dict[str, Replica]]]:
    wire = Wire()
    replicas = {name: Replica(name) for name in names}
    pumps: list[asyncio.Task[None]] = []
    async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as group:
        for name in names:
            wire.inbox[name] = asyncio.Queue()
            node = SyncNode(replicas[name], wire.sender(name), FAST, rng=random.Random(name))
            wire.nodes[name] = await stack.enter_async_context(node)
            pumps.append(group.create_task(wire.pump(name)))
        for a in names:
            for b in names:
                if a != b:
                    await wire.nodes[a].add_peer(b)
        try:
            yield wire, replicas
        finally:
            for task in pumps:
                task.cancel()


async def test_a_write_made_on_another_thread_reaches_every_peer() -> None:
    async with nodes("a", "b", "c") as (_, replicas):
        await asyncio.to_thread(replicas["a"].incr, "apps/x/version")
        for name in ("b", "c"):
            async with asyncio.timeout(5):
                assert await replicas[name].read("apps/x/version", 1) == 1


async def test_a_peer_added_later_catches_up() -> None:
    async with nodes("a", "b") as (wire, replicas):
        for i in range(5):
            replicas["a"].set(f"k{i}", b"v")
        late = Replica("late")
        wire.inbox["late"] = asyncio.Queue()
        async with SyncNode(late, wire.sender("late"), FAST) as node, asyncio.TaskGroup() as tg:
            wire.nodes["late"] = node
            pump = tg.create_task(wire.pump("late"))
            await node.add_peer("a")
            await wire.nodes["a"].add_peer("late")
            await until(late, lambda: sorted(late.keys("k")) == [f"k{i}" for i in range(5)])
            pump.cancel()


async def test_a_malformed_message_raises_remote_error_and_changes_nothing() -> None:
    async with nodes("a") as (wire, replicas):
        before = replicas["a"].digest()
        with pytest.raises(crdt.RemoteError):
            await wire.nodes["a"].receive("mallory", b"\x00garbage")
        assert replicas["a"].digest() == before


async def test_rounds_repair_what_a_cut_lost() -> None:
    async with nodes("a", "b") as (wire, replicas):
        wire.cut.add("b")
        replicas["a"].set("during-the-cut", b"1")  # its push is lost
        await asyncio.sleep(0.2)
        assert replicas["b"].get("during-the-cut") is None
        wire.cut.clear()
        await until(replicas["b"], lambda: replicas["b"].get("during-the-cut") == b"1")
        assert wire.refused == []
