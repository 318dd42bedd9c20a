"""`SyncNode`: the asyncio adapter that runs `AntiEntropy` for a `Replica` over any transport.

It is deliberately thin, like `membership.Node` and aioquic's ``asyncio/protocol.py``: it feeds
the core who the peers are and what they sent, ticks it at its deadlines and at once after
local writes (so they are pushed), and hands what it wants sent to ``send``. Everything that
decides anything is in the core.

Threads. The core is not thread-safe, and a merge may wait on the log's fsync, so every call
into it runs on one thread of its own, in the order the calls were made; the messages it wants
sent are encoded there and handed to ``send`` on the event loop. Local writes, made on any
thread, wake the loop through `Replica.subscribe`.

Errors. A peer's malformed message raises `RemoteError` out of `receive`, with nothing changed
and nothing sent; the caller decides what to do with that peer. A message ``send`` cannot
deliver is the transport's to drop: anti-entropy rounds repair what is lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
from collections.abc import Callable
from functools import partial
from types import TracebackType

from ._replica import Replica
from ._sync import AntiEntropy, SyncConfig
from ._wire import decode_message, encode_message

__all__ = ["SyncNode"]

Send = Callable[[str, bytes], None]
"""``send(peer_id, data)``: deliver ``data`` to that peer's `SyncNode.receive`, or drop it."""


class SyncNode:
    """Keeps ``replica`` in step with the peers it is told of.

    Use as ``async with SyncNode(replica, send) as sync:``; leaving the block stops it.

    Args:
        replica: the replica to keep in step.
        send: called on the event loop with each message for a peer, already encoded.
        config: anti-entropy timing and fan-out (defaults when None).
        rng: all randomness of the core (a fresh unseeded generator by default).
    """

    def __init__(
        self,
        replica: Replica,
        send: Send,
        config: SyncConfig | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.replica = replica
        self._send = send
        self._core = AntiEntropy(replica, rng or random.Random(), config)
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "crdt-sync")
        self._wake = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SyncNode:
        loop = asyncio.get_running_loop()

        def on_change(_key: str) -> None:
            loop.call_soon_threadsafe(self._wake.set)

        stack = self._stack
        stack.push_async_callback(asyncio.to_thread, self._thread.shutdown, True)
        group = await stack.enter_async_context(asyncio.TaskGroup())
        stack.callback(self.replica.subscribe(on_change))
        self._task = group.create_task(self._tick_loop())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._stack.aclose()

    @property
    def peers(self) -> tuple[str, ...]:
        """The peers anti-entropy runs with now."""
        return self._core.peers

    async def add_peer(self, peer_id: str) -> None:
        """A peer came up: it is sent our digest at once (and catches us up, or we it)."""
        now = asyncio.get_running_loop().time()
        await self._in_core(partial(self._core.add_peer, peer_id, now))

    async def remove_peer(self, peer_id: str) -> None:
        """A peer went away (its messages in flight are still accepted)."""
        await self._in_core(partial(self._core.remove_peer, peer_id))

    async def receive(self, peer_id: str, data: bytes) -> None:
        """Handle a message ``peer_id`` sent.

        Raises:
            RemoteError: the message is malformed or over the replica's limits; nothing
                changed and nothing was sent.
        """
        msg = decode_message(data, self.replica.limits)
        now = asyncio.get_running_loop().time()
        await self._in_core(partial(self._core.on_message, peer_id, msg, now))

    async def _in_core(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` (a call into the core) on the core's thread, then send its outbox."""

        def step() -> list[tuple[str, bytes]]:
            fn()
            # Taken on the core's thread too: the outbox is the core's state.
            return [(peer, encode_message(msg)) for peer, msg in self._core.take_outbox()]

        loop = asyncio.get_running_loop()
        for peer_id, data in await loop.run_in_executor(self._thread, step):
            self._send(peer_id, data)

    async def _tick_loop(self) -> None:
        """Tick the core when it is due, and at once after local writes (to push them)."""
        loop = asyncio.get_running_loop()
        core = self._core
        while True:
            self._wake.clear()
            await self._in_core(partial(core.tick, loop.time()))
            deadline = core.next_deadline()
            delay = None if deadline is None else max(0.0, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
